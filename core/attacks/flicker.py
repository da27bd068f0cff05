"""Sparse Flickering baseline (after Pony et al., CVPR 2021): a uniform RGB offset per frame,

    x̂_t = clip(x_t + δ_t·1),   δ_t ∈ ℝ³, only on the masked frames,

    min_δ  λ·(mean_t ‖δ_t‖₂ + β·Σ_t ‖δ_t − δ_{t−1}‖₂²) + max(log p_y − max_{c≠y} log p_c, 0)

(the flickering's "thickness" and "roughness" terms), Adam lr 0.01, at most 100 iterations, early
stop on success. The original perturbs every frame; DeepSAVA's sparse variant restricts it to the
mask (frames 0 … K−1 by default). Budgets are constraints (:class:`core.attacks.base.MaskedAttack`).
"""

from __future__ import annotations

import torch

from core.attacks.base import logprob_hinge
from core.attacks.sparse import Sparse
from core.checks import check_range


class Flicker(Sparse):
    """``Flicker(model, frames=1, lam=1.0, beta=0.1)(video, label)``."""

    name = "flicker"

    def __init__(self, model, frames: int = 1, lam: float = 1.0, beta: float = 0.1, lr: float = 0.01,
                 max_iters: int = 100, **kw) -> None:
        super().__init__(model, frames=frames, lam=lam, lr=lr, max_iters=max_iters, **kw)
        self.beta = check_range("beta", beta, 0.0, 1e4)

    def params(self) -> dict:
        return {"frames": self.k, "lam": self.lam, "beta": self.beta, "lr": self.lr,
                "max_iters": self.max_iters, **self.budget_params()}

    def init_params(self, xs: torch.Tensor) -> list[torch.Tensor]:
        return [torch.zeros(xs.shape[0], 3, 1, 1, device=xs.device, requires_grad=True)]

    def penalty(self, params, adv_s, xs, frame_ssim):
        d = params[0]
        thick = d.flatten(1).norm(dim=1).mean()
        rough = (d[1:] - d[:-1]).pow(2).sum() if d.shape[0] > 1 else d.sum() * 0
        return self.lam * (thick + self.beta * rough)

    def adversarial(self, logits, label):
        return logprob_hinge(logits, label, 0.0)
