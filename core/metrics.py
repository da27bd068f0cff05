"""Distances between frames or videos: ℓ1, ℓ2, ℓ∞, ℓ2,1 and SSIM (differentiable, torch).

**The one SSIM of this project** (attacks, SSIM-vs-Lp page, CLI): Wang et al. (2004), Eq. (A.2)
of DeepSAVA,

    SSIM(x, x̂) = (2 μ_x μ_x̂ + C1)(2 σ_xx̂ + C2) / ((μ_x² + μ_x̂² + C1)(σ_x² + σ_x̂² + C2)),

with local statistics under a Gaussian window σ = 1.5 truncated at 3.5σ (11 × 11 taps),
population (co)variances, C1 = (K1·L)², C2 = (K2·L)², K1 = 0.01, K2 = 0.03, data range L = 1.
The map is computed per channel with symmetric ("reflect") border padding and averaged over
channels; the *score* of a frame is the mean of the map after cropping a 5-pixel border (the
window radius), exactly as scikit-image's ``structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=…)``. A video's SSIM is the
mean of its per-frame scores (uniform pooling over frames, DeepSAVA App. A).

Lp distances are over all values of the difference (frame: C·H·W values; video: T·C·H·W).
ℓ2,1 of a video difference is Σ_t ‖x_t − x̂_t‖₂ (DeepSAVA, Sparse baseline); we report it raw
and *normalised*, where each frame's ℓ2 is divided by √(C·H·W) (the frame's RMS difference), so
``l21_norm`` is independent of the frame size: a full-video change of 0.01 per value in T frames
has ``l21_norm = 0.01·T``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5 → 11 × 11 window


def _gauss1d(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _sym_pad_index(n: int, r: int, device: torch.device) -> torch.Tensor:
    """Indices for symmetric padding (… b a | a b … y z | z y …), like scipy's 'reflect'."""
    idx = torch.arange(-r, n + r, device=device)
    period = 2 * n
    idx = idx % period
    return torch.where(idx >= n, period - 1 - idx, idx)


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``(N, 1, H, W)`` with symmetric padding."""
    h, w = x.shape[-2:]
    r = SSIM_RADIUS
    x = x.index_select(-1, _sym_pad_index(w, r, x.device)).index_select(-2, _sym_pad_index(h, r, x.device))
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Local SSIM map ``(..., H, W)`` of images ``(..., C, H, W)``, averaged over channels."""
    if x.shape != y.shape or x.dim() < 3:
        raise ValueError(f"expected two (..., C, H, W) tensors of one shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    xf = x.reshape(-1, 1, h, w)
    yf = y.reshape(-1, 1, h, w).to(xf.dtype)
    g = _gauss1d(xf.dtype, xf.device)
    mx, my = _filter(xf, g), _filter(yf, g)
    sxx = _filter(xf * xf, g) - mx * mx
    syy = _filter(yf * yf, g) - my * my
    sxy = _filter(xf * yf, g) - mx * my
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.view(*lead, c, h, w).mean(dim=-3)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM score of each image ``(..., C, H, W) -> (...)`` (border of 5 px cropped, see module)."""
    m = ssim_map(x, y, data_range)
    r = SSIM_RADIUS
    if m.shape[-1] > 2 * r and m.shape[-2] > 2 * r:
        m = m[..., r:-r, r:-r]
    return m.mean(dim=(-2, -1))


def video_ssim(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean SSIM, per-frame SSIM (T,))`` of two ``(T, C, H, W)`` videos."""
    per = ssim(x, y)
    return per.mean(), per


class SSIM(nn.Module):
    """``nn.Module`` twin of :func:`ssim` (returns the per-image score)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ssim(x, y)


def lp_distances(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """ℓ1, ℓ2, ℓ∞ of ``x − y`` over all values, plus their size-free forms (mean |d|, RMS)."""
    d = (x.detach().double() - y.detach().double()).flatten()
    n = max(d.numel(), 1)
    l1, l2 = float(d.abs().sum()), float(d.norm())
    return {"l1": l1, "l2": l2, "linf": float(d.abs().max()) if d.numel() else 0.0,
            "l1_mean": l1 / n, "l2_rms": l2 / n ** 0.5}


def l21(x: torch.Tensor, y: torch.Tensor, normalised: bool = True) -> torch.Tensor:
    """ℓ2,1 of a video difference ``(T, C, H, W)``: Σ_t ‖x_t − y_t‖₂ (÷ √(C·H·W) if normalised)."""
    d = (x - y).flatten(1)
    per = d.norm(dim=1)
    if normalised:
        per = per / d.shape[1] ** 0.5
    return per.sum()


def distances(x: torch.Tensor, y: torch.Tensor, changed: list[int] | None = None) -> dict[str, float]:
    """Every distance, as one flat JSON-serialisable record.

    ``{ssim, l1, l2, linf, l1_mean, l2_rms}``; for videos ``(T, C, H, W)`` also ``l21, l21_norm`` and
    ``ssim_per_frame``. For videos SSIM is computed only on the frames that differ (``changed``, or
    found by exact comparison): an identical frame has SSIM exactly 1.
    """
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    with torch.no_grad():
        if x.dim() == 4:
            if changed is None:
                changed = [t for t in range(x.shape[0]) if not torch.equal(x[t], y[t])]
            per = torch.ones(x.shape[0], dtype=torch.float64)
            if changed:
                per[changed] = ssim(x[changed], y[changed]).double().cpu()
            out: dict = {"ssim": float(per.mean()), **lp_distances(x, y)}
            out["l21"] = float(l21(x, y, normalised=False))
            out["l21_norm"] = float(l21(x, y))
            out["ssim_per_frame"] = [float(v) for v in per]
        else:
            out = {"ssim": float(ssim(x, y).mean()), **lp_distances(x, y)}
    return out
