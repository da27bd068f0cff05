"""Iterative-saliency attacks (Inkawhich et al., thesis ch. 3, Eq. 3.3–3.4).

Saliency of frame n (Eq. 3.4): ``S_n = mean_{c,h,w} |∂C/∂i_n|``. Frames are perturbed one at a time
with the FGSM update of Eq. 3.3, in decreasing saliency, until the clip is misclassified:

* ``refresh=False`` (iterative-saliency): gradient and saliency from the clean clip, once;
* ``refresh=True`` (iterative-saliency-RG): after each unsuccessful frame the gradient and the
  saliency of the *current* adversarial clip are recomputed; a frame is never perturbed twice.

With ``success_model`` (black-box transfer, thesis §3.5) the gradients come from the white-box
model and success is checked on the black-box model (e.g. a Farneback motion stream).
"""

from __future__ import annotations

import torch

from core.attacks.base import Attack
from core.checks import check_range


def saliency(grad: torch.Tensor) -> torch.Tensor:
    """Eq. 3.4: mean absolute gradient per frame, ``(T, C, H, W) -> (T,)``."""
    return grad.abs().flatten(1).mean(dim=1)


class IterativeSaliency(Attack):
    """``IterativeSaliency(model, eps=0.01, refresh=False)(video, label)`` (thesis defaults: ε = 0.01
    per pixel step, frames in decreasing saliency until misclassified, at most every frame once).

    Args:
        eps: FGSM step ε of Eq. 3.3 (ℓ∞ of each perturbed frame).
        refresh: RG — recompute gradient and saliency after every unsuccessful frame.
        max_frames: stop after this many frames (default: all T).
        success_model: black-box model on which success is judged (thesis §3.5).
    """

    def __init__(self, model, eps: float = 0.01, refresh: bool = False, max_frames: int | None = None, **kw) -> None:
        super().__init__(model, **kw)
        self.eps = check_range("eps", eps, 0.0, 1.0)
        self.refresh = bool(refresh)
        self.max_frames = max_frames
        self.name = "saliency-rg" if refresh else "saliency"

    def params(self) -> dict:
        return {"eps": self.eps, "refresh": self.refresh, "max_frames": self.max_frames}

    def run(self, video: torch.Tensor, label: int):
        t = video.shape[0]
        limit = min(t, self.max_frames or t)
        adv = video.clone()
        g = self.input_grad(adv, label)
        sal = saliency(g)
        history = [sal.cpu().tolist()]
        order: list[int] = []
        for it in range(1, limit + 1):
            ranked = [int(i) for i in torch.argsort(sal, descending=True) if int(i) not in order]
            n = ranked[0]
            adv[n] = (adv[n] + self.eps * torch.sign(g[n])).clamp(0.0, 1.0)
            order.append(n)
            self.report(it / limit, f"frame {n} perturbed ({it}/{limit})")
            success = self.judge(adv, label)[0]
            if success or it == limit:
                return adv, order, it, {"saliency": history}
            if self.refresh:
                g = self.input_grad(adv, label)
                sal = saliency(g)
                history.append(sal.cpu().tolist())
        return adv, order, limit, {"saliency": history}
