"""Sparse Flickering baseline (after Pony et al., CVPR 2021): a uniform RGB offset per frame,

    x̂_t = clip(x_t + δ_t·1),   δ_t ∈ ℝ³, only on the masked frames,

    min_δ  λ·(mean_t ‖δ_t‖₂ + β·Σ_t ‖δ_t − δ_{t−1}‖₂²) + max(log p_y − max_{c≠y} log p_c, 0)

(the flickering's "thickness" and "roughness" terms), Adam lr 0.01, at most 100 iterations, early
stop on success. The original perturbs every frame; DeepSAVA's sparse variant restricts it to the
mask (frames 0 … K−1 by default).
"""

from __future__ import annotations

import torch

from core.attacks.base import Attack, logprob_hinge
from core.checks import check_range


class Flicker(Attack):
    name = "flicker"

    def __init__(self, model, frames: int = 1, lam: float = 1.0, beta: float = 0.1, lr: float = 0.01,
                 max_iters: int = 100, mask: list[int] | None = None, **kw) -> None:
        super().__init__(model, **kw)
        self.k = int(check_range("frames", frames, 1, 256))
        self.lam = check_range("lam", lam, 0.0, 1e4)
        self.beta = check_range("beta", beta, 0.0, 1e4)
        self.lr = check_range("lr", lr, 1e-6, 10.0)
        self.max_iters = int(check_range("max_iters", max_iters, 1, 100_000))
        self.mask = mask

    def params(self) -> dict:
        return {"frames": self.k, "lam": self.lam, "beta": self.beta, "lr": self.lr, "max_iters": self.max_iters}

    def run(self, video: torch.Tensor, label: int):
        sel = sorted(self.mask) if self.mask is not None else list(range(min(self.k, video.shape[0])))
        d = torch.zeros(len(sel), 3, 1, 1, device=video.device, requires_grad=True)
        opt = torch.optim.Adam([d], lr=self.lr)
        out, iters = video.clone(), 0
        for it in range(1, self.max_iters + 1):
            adv = video.clone()
            adv[sel] = (video[sel] + d).clamp(0.0, 1.0)
            hinge, fooled = logprob_hinge(self.logits(adv), label)
            out, iters = adv.detach(), it
            self.report(it / self.max_iters, f"iteration {it}/{self.max_iters}")
            if fooled:
                break
            thick = d.flatten(1).norm(dim=1).mean()
            rough = (d[1:] - d[:-1]).pow(2).sum() if len(sel) > 1 else d.sum() * 0
            self.descend(opt, self.lam * (thick + self.beta * rough) + hinge)
        return out, sel, iters, {"mask": sel, "offsets": d.detach().flatten(1).cpu().tolist()}
