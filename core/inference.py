"""Run a video classifier on one clip."""

from __future__ import annotations

import torch
from torch import nn

from core.checks import check_video
from core.device import DeviceLike, get_device
from core.models.registry import ModelSpec
from core.video import fit_clip


def prepare(video: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Fit a ``(T, 3, H, W)`` video to the model's input (uniform frames, resize, centre crop)."""
    check_video(video, min_frames=1)
    return fit_clip(video, spec.frames, spec.size)


@torch.no_grad()
def predict(model: nn.Module, spec: ModelSpec, video: torch.Tensor, device: DeviceLike = None) -> dict:
    """Classify one clip.

    Returns:
        ``{model, label, label_index, confidence, probs: {class: p}}`` (flat, JSON-serialisable).
    """
    dev = get_device(device) if device is not None else next(iter(model.parameters()), torch.empty(0)).device
    x = prepare(video, spec).unsqueeze(0).to(dev)
    probs = torch.softmax(model(x).float(), dim=1)[0].cpu()
    k = int(probs.argmax())
    return {
        "model": spec.name,
        "label": spec.classes[k],
        "label_index": k,
        "confidence": float(probs[k]),
        "probs": {c: float(p) for c, p in zip(spec.classes, probs.tolist())},
    }
