"""Run a video classifier on one clip."""

from __future__ import annotations

import torch

from core.checks import check_video
from core.classifier import VideoClassifier, as_classifier
from core.models.registry import ModelSpec
from core.video import fit_clip


def prepare(video: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Fit a ``(T, 3, H, W)`` video to the model's input (uniform frames, resize, centre crop)."""
    check_video(video, min_frames=1)
    return fit_clip(video, spec.frames, spec.size)


def predict(model: VideoClassifier | torch.nn.Module, spec: ModelSpec | None, video: torch.Tensor) -> dict:
    """Classify one clip (fitted to the model's input first).

    Args:
        model: a :class:`VideoClassifier` (or a bare module, wrapped).
        spec: the model's spec (``None``: the classifier's own).
        video: ``(T, 3, H, W)`` in [0, 1], any length and size.

    Returns:
        ``{model, label, label_index, confidence, probs: {class: p}, logits}`` (flat, JSON-serialisable).
    """
    clf = as_classifier(model, spec)
    spec = spec or clf.spec
    run = clf.fork()
    with torch.no_grad():
        logits = run.logits(prepare(video, spec).unsqueeze(0))[0].cpu()
    probs = torch.softmax(logits.double(), -1).float()
    k = int(probs.argmax())
    conf = float(probs[k])
    return {
        "model": spec.name,
        "label": spec.classes[k],
        "label_index": k,
        "confidence": conf,
        "probs": {c: float(p) for c, p in zip(spec.classes, probs.tolist())},
        "logits": [float(v) for v in logits.tolist()],
    }
