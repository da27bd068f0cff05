"""Sparse baseline (Wei et al., AAAI 2019): additive perturbation E on a fixed set of frames,

    min_E  λ·‖E‖_{2,1} + max(log p_y − max_{c≠y} log p_c, −κ)

(ℓ2,1 normalised per frame by √(C·H·W), see :mod:`core.metrics`), Adam lr 0.01, at most 100
iterations, early stop on success. The mask is fixed: frames 0 … K−1, or the frames given.
Budgets (SSIM of every perturbed frame, normalised ℓ2,1) are constraints, as for every masked
attack (:class:`core.attacks.base.MaskedAttack`).
"""

from __future__ import annotations

import torch

from core.attacks.base import MaskedAttack, check_frames, check_mask, logprob_hinge
from core.checks import check_range
from core.metrics import l21


class Sparse(MaskedAttack):
    """``Sparse(model, frames=1, lam=1.0)(video, label)`` (Wei et al. defaults: Adam lr 0.01, 100 iterations)."""

    name = "sparse"

    def __init__(self, model, frames: int = 1, lam: float = 1.0, lr: float = 0.01, max_iters: int = 100,
                 kappa: float = 0.0, **kw) -> None:
        super().__init__(model, frames=frames, lr=lr, max_iters=max_iters, **kw)
        self.lam = check_range("lam", lam, 0.0, 1e4)
        self.kappa = check_range("kappa", kappa, 0.0, 1e4)

    def params(self) -> dict:
        return {"frames": self.k, "lam": self.lam, "lr": self.lr, "max_iters": self.max_iters,
                "kappa": self.kappa, **self.budget_params()}

    def init_params(self, xs: torch.Tensor) -> list[torch.Tensor]:
        return [torch.zeros_like(xs, requires_grad=True)]

    def render(self, params, xs):
        return xs + params[0]

    def penalty(self, params, adv_s, xs, frame_ssim):
        return self.lam * l21(adv_s, xs)

    def adversarial(self, logits, label):
        return logprob_hinge(logits, label, self.kappa)

    def fixed_mask(self, t: int) -> list[int]:
        check_frames(self.k, t)
        return check_mask(self.mask, t, self.k) if self.mask is not None else list(range(self.k))

    def run(self, video: torch.Tensor, label: int):
        sel = self.fixed_mask(video.shape[0])
        r = self.optimise(video, label, sel, self.max_iters)
        return r["adv"], sel, r["iters"], {"mask": sel, "best_margin": r["best_margin"], "backtracks": r["backtracks"]}
