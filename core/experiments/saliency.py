"""Input-gradient saliency maps per frame (DeepSAVA App. D: robust vs regular models).

``saliency_maps`` returns |∂ logit_y / ∂ x| summed over colour channels, per frame and pixel
(Simonyan et al. 2014), or its SmoothGrad average over ``samples`` noisy copies
(x + N(0, σ²), Smilkov et al. 2017). Gradients come from ``torch.autograd.grad`` on a frozen
classifier: nothing is written into the model.
"""

from __future__ import annotations

import torch

from core.checks import check_range, check_video
from core.classifier import as_classifier


def saliency_maps(model, video: torch.Tensor, label: int | None = None, smoothgrad: int = 0,
                  sigma: float = 0.1, seed: int = 0) -> dict:
    """Per-frame saliency ``(T, H, W)`` of one clip fitted to the model.

    Args:
        video: ``(T, 3, H, W)`` in [0, 1].
        label: the class whose logit is explained (default: the predicted one).
        smoothgrad: number of noisy samples (0 = plain gradient).
        sigma: SmoothGrad noise σ (of the [0, 1] range).

    Returns:
        ``{maps (T, H, W) float, per_frame (T,) mean saliency, label, smoothgrad, sigma}``.
    """
    check_video(video)
    smoothgrad = int(check_range("smoothgrad", smoothgrad, 0, 256))
    sigma = check_range("sigma", sigma, 0.0, 1.0)
    clf = as_classifier(model).fork()
    if label is None:
        label = clf.predict(video)[0]
    g = torch.Generator().manual_seed(seed)
    inputs = [video] if smoothgrad == 0 else [
        (video + sigma * torch.randn(video.shape, generator=g)).clamp(0, 1) for _ in range(smoothgrad)]
    total = torch.zeros(video.shape[0], *video.shape[-2:])
    for x in inputs:
        x = x.detach().to(clf.device).requires_grad_(True)
        logit = clf.logits(x)[0, label]
        (grad,) = torch.autograd.grad(logit, x)
        total += grad.abs().sum(1).detach().cpu()
    maps = total / len(inputs)
    return {"maps": maps, "per_frame": maps.flatten(1).mean(1), "label": int(label),
            "smoothgrad": smoothgrad, "sigma": sigma}
