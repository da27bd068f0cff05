"""One-shot attack (Inkawhich et al., thesis ch. 3, Eq. 3.3): FGSM on every frame.

    i'_n = clip(i_n + ε · sign(∇_{i_n} C(θ, i, y)), 0, 1)     for all frames n

One forward and one backward pass; dense in time (every frame is perturbed), ℓ∞ = ε.
"""

from __future__ import annotations

import torch

from core.attacks.base import Attack
from core.checks import check_range


class OneShot(Attack):
    """``OneShot(model, eps=0.01)(video, label)`` — thesis default ε = 0.01 (of the [0, 1] range)."""

    name = "one-shot"

    def __init__(self, model, eps: float = 0.01, **kw) -> None:
        super().__init__(model, **kw)
        self.eps = check_range("eps", eps, 0.0, 1.0)

    def params(self) -> dict:
        return {"eps": self.eps}

    def run(self, video: torch.Tensor, label: int):
        g = self.input_grad(video, label)
        adv = (video + self.eps * torch.sign(g)).clamp(0.0, 1.0)
        return adv, list(range(video.shape[0])), 1, {}
