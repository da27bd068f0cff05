"""One object for a video classifier (ART's estimator idea, torchattacks' call style kept).

:class:`VideoClassifier` wraps an ``nn.Module`` mapping ``(B, T, 3, H, W)`` in [0, 1] to logits
``(B, K)`` together with its :class:`~core.models.registry.ModelSpec` and device. It is the one
place that knows:

* **which device** the model is on (inputs are moved there; results come back as asked);
* **softmax, prediction, margin and input gradients** — gradients by ``torch.autograd.grad`` only,
  so nothing is ever written into the model's parameters (they are frozen:
  ``requires_grad=False``), which matters because the app shares one model between sessions;
* the optional **N_C / N_R split** (Wu & Kwiatkowska Eq. 8) a model *declares* through
  ``model.feature_split()`` → :class:`FeatureSplit`, instead of callers sniffing attributes;
* **query counting**: every clip of every batch that goes through the model counts as one query,
  every input gradient as one gradient (``reset_counts()`` to start again).

Attacks, the MSR evaluator, sweeps and inference take a ``VideoClassifier``; a bare ``nn.Module``
still works everywhere through :func:`as_classifier`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.device import DeviceLike, get_device
from core.errors import ParameterError


@dataclass(frozen=True)
class FeatureSplit:
    """A model's declared N_C / N_R split.

    Attributes:
        features: ``(x (B, T, 3, H, W), steps | None) -> η (B, S, F)`` — N_C on the given steps.
        head: ``η (B, T, F) -> logits (B, K)`` — N_R.
        affected_steps: ``(changed frames, T) -> steps`` whose features change with those frames.
    """

    features: Callable[..., torch.Tensor]
    head: Callable[[torch.Tensor], torch.Tensor]
    affected_steps: Callable[[list[int], int], list[int]]


class VideoClassifier:
    """A frozen video classifier with its spec, device and query counters.

    Args:
        model: ``(B, T, 3, H, W) -> (B, K)`` logits; put in eval mode, parameters frozen.
        spec: what the model expects (frames, size, classes); optional for bare modules.
        device: where to run; default: the device of the model's parameters (CPU if none).
    """

    def __init__(self, model: nn.Module, spec=None, device: DeviceLike = None) -> None:
        if isinstance(model, VideoClassifier):
            raise ParameterError("model is already a VideoClassifier; use as_classifier()")
        if not isinstance(model, nn.Module):
            raise ParameterError(f"expected a torch nn.Module, got {type(model).__name__}")
        param = next(iter(model.parameters()), None)
        self.device = get_device(device) if device is not None else (param.device if param is not None
                                                                    else torch.device("cpu"))
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.spec = spec
        declared = getattr(model, "feature_split", None)
        self.split: FeatureSplit | None = declared() if callable(declared) else None
        self.queries = 0
        self.gradients = 0

    # -- identity ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name if self.spec is not None else type(self.model).__name__

    @property
    def classes(self) -> list[str] | None:
        return list(self.spec.classes) if self.spec is not None else None

    def class_name(self, k: int) -> str | int:
        return self.spec.classes[k] if self.spec is not None else k

    def reset_counts(self) -> None:
        self.queries = self.gradients = 0

    def fork(self) -> VideoClassifier:
        """The same frozen model with counters of its own (one per attack run or session, so
        concurrent users of one shared model never mix their query counts)."""
        other = object.__new__(VideoClassifier)
        other.__dict__.update(self.__dict__)
        other.queries = other.gradients = 0
        return other

    # -- forward -------------------------------------------------------------------------------
    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(0)
        if x.dim() != 5:
            raise ParameterError(f"expected a clip (T, 3, H, W) or a batch (B, T, 3, H, W), got {tuple(x.shape)}")
        return x.to(self.device)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` float32 of a clip or batch (differentiable w.r.t. ``x``; counted)."""
        xb = self._batch(x)
        self.queries += xb.shape[0]
        return self.model(xb).float()

    @torch.no_grad()
    def clean_features(self, video: torch.Tensor) -> torch.Tensor | None:
        """N_C features η ``(1, T, F)`` of a clip ``(T, 3, H, W)``, or None without a declared split."""
        if self.split is None:
            return None
        return self.split.features(video.unsqueeze(0).to(self.device))

    def partial_logits(self, video: torch.Tensor, frames: list[int],
                       features: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function ``x (B, T, 3, H, W) -> logits (B, K)`` for clips that differ from ``video``
        ``(T, 3, H, W)`` only on ``frames`` (differentiable, counted like :meth:`logits`).

        With a declared N_C / N_R split (Wu & Kwiatkowska Eq. 8), the clean features η of
        ``video`` (``features`` from :meth:`clean_features`, computed here if not given) are reused
        and N_C runs only on the steps the changed frames affect, so a key-frame attack on K of T
        frames pays K/T of the encoder; without a split it is :meth:`logits`. Same values either way
        (tested).
        """
        if video.dim() != 4:
            raise ParameterError(f"expected a clip (T, 3, H, W), got {tuple(video.shape)}")
        split = self.split
        if split is None:
            return self.logits
        steps = split.affected_steps(sorted(int(f) for f in frames), video.shape[0])
        eta0 = self.clean_features(video) if features is None else features

        def fn(x: torch.Tensor) -> torch.Tensor:
            xb = self._batch(x)
            self.queries += xb.shape[0]
            eta = eta0.expand(xb.shape[0], -1, -1).clone()
            eta[:, steps] = split.features(xb, steps)  # N_C on the affected steps only
            return split.head(eta).float()

        return fn

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(B, K)``."""
        return torch.softmax(self.logits(x), dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[int, float, torch.Tensor]:
        """``(label, confidence, probs (K,) on the CPU)`` of one clip."""
        p = self.probs(x)[0].cpu()
        k = int(p.argmax())
        return k, float(p[k]), p

    @staticmethod
    def margin_of(logits: torch.Tensor, label: int) -> torch.Tensor:
        """``logit_y − max_{c≠y} logit_c`` over the last axis (< 0 ⇔ not classified as ``label``)."""
        other = logits.clone()
        other[..., label] = -torch.inf
        return logits[..., label] - other.max(dim=-1).values

    def loss_gradient(self, x: torch.Tensor, label: int) -> torch.Tensor:
        """``∇_x`` of the cross-entropy ``C(θ, x, y)`` (Inkawhich Eq. 3.1–3.2), shape of ``x``.

        By ``torch.autograd.grad``: the model's parameters (frozen) receive nothing.
        """
        xx = x.detach().clone().to(self.device).requires_grad_(True)
        logits = self.logits(xx)
        loss = F.cross_entropy(logits, torch.full((logits.shape[0],), int(label), device=self.device))
        (g,) = torch.autograd.grad(loss, xx)
        self.gradients += 1
        return g.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


def as_classifier(model, spec=None, device: DeviceLike = None) -> VideoClassifier:
    """A :class:`VideoClassifier` for a classifier or a bare ``nn.Module`` (spec/device kept)."""
    if isinstance(model, VideoClassifier):
        if spec is not None and model.spec is None:
            model.spec = spec
        return model
    return VideoClassifier(model, spec, device)


__all__ = ["FeatureSplit", "VideoClassifier", "as_classifier"]
