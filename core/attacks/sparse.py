"""Sparse baseline (Wei et al., AAAI 2019): additive perturbation E on a fixed set of frames,

    min_E  λ·‖E‖_{2,1} + max(log p_y − max_{c≠y} log p_c, −κ)

(ℓ2,1 normalised per frame by √(C·H·W), see :mod:`core.metrics`), Adam lr 0.01, at most 100
iterations, early stop on success. The mask is fixed: frames 0 … K−1, or the frames given.
"""

from __future__ import annotations

import torch

from core.attacks.base import Attack, logprob_hinge
from core.checks import check_range
from core.metrics import l21


class Sparse(Attack):
    name = "sparse"

    def __init__(self, model, frames: int = 1, lam: float = 1.0, lr: float = 0.01, max_iters: int = 100,
                 kappa: float = 0.0, l21_budget: float | None = None, mask: list[int] | None = None, **kw) -> None:
        super().__init__(model, **kw)
        self.k = int(check_range("frames", frames, 1, 256))
        self.lam = check_range("lam", lam, 0.0, 1e4)
        self.lr = check_range("lr", lr, 1e-6, 10.0)
        self.max_iters = int(check_range("max_iters", max_iters, 1, 100_000))
        self.kappa = kappa
        self.l21_budget = None if l21_budget is None else check_range("l21_budget", l21_budget, 0.0, 1e6)
        self.mask = mask

    def params(self) -> dict:
        return {"frames": self.k, "lam": self.lam, "lr": self.lr, "max_iters": self.max_iters,
                "kappa": self.kappa, "l21_budget": self.l21_budget}

    def run(self, video: torch.Tensor, label: int):
        sel = sorted(self.mask) if self.mask is not None else list(range(min(self.k, video.shape[0])))
        e = torch.zeros_like(video[sel], requires_grad=True)
        opt = torch.optim.Adam([e], lr=self.lr)
        out, iters = video.clone(), 0
        for it in range(1, self.max_iters + 1):
            adv = video.clone()
            adv[sel] = (video[sel] + e).clamp(0.0, 1.0)
            if self.l21_budget is not None and float(l21(adv.detach(), video)) > self.l21_budget:
                break
            hinge, fooled = logprob_hinge(self.logits(adv), label, self.kappa)
            out, iters = adv.detach(), it
            self.report(it / self.max_iters, f"iteration {it}/{self.max_iters}")
            if fooled:
                break
            self.descend(opt, self.lam * l21(adv, video) + hinge)
        return out, sel, iters, {"mask": sel}
