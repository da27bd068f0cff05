"""Classic (non-differentiable) optical flow: OpenCV Farneback, scikit-image TV-L1 and ILK.

All return our convention: ``(N, 2, H, W)`` float32 pixels, channel 0 = x, 1 = y, forward flow
from the first to the second frame of each pair. (scikit-image returns (row, col) = (y, x); we
swap.) Inputs are converted to luma.
"""

from __future__ import annotations

import numpy as np
import torch

from core.flow.horn_schunck import _gray

#: Farneback parameters, the dense method used by Wu & Kwiatkowska (OpenCV
#: ``calcOpticalFlowFarneback``): pyramid scale 0.5, 3 levels, 9-px averaging window (for 64-px frames; 15 is OpenCV's usual choice at 224 px), 3
#: iterations per level, polynomial neighbourhood 5 with Gaussian σ 1.1.
FARNEBACK_DEFAULTS = dict(pyr_scale=0.5, levels=3, winsize=9, iterations=3, poly_n=5,
                          poly_sigma=1.1)
#: scikit-image ``optical_flow_tvl1`` defaults (attachment 15, tightness 0.3, 5 warps).
TVL1_DEFAULTS = dict(attachment=15.0, tightness=0.3, num_warp=5, num_iter=10)
#: scikit-image ``optical_flow_ilk`` (iterative Lucas–Kanade) window radius 7.
ILK_DEFAULTS = dict(radius=7, num_warp=10)


def _pairs_gray(frame1: torch.Tensor, frame2: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    g1 = _gray(frame1.detach().float().cpu())[:, 0].numpy()
    g2 = _gray(frame2.detach().float().cpu())[:, 0].numpy()
    return g1, g2


def farneback(frame1: torch.Tensor, frame2: torch.Tensor, **params) -> torch.Tensor:
    """OpenCV Farneback dense flow for each pair (8-bit luma, as OpenCV expects)."""
    import cv2

    p = {**FARNEBACK_DEFAULTS, **params}
    g1, g2 = _pairs_gray(frame1, frame2)
    out = np.empty((g1.shape[0], 2, *g1.shape[1:]), dtype=np.float32)
    for i in range(g1.shape[0]):
        a = np.clip(g1[i] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        b = np.clip(g2[i] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        f = cv2.calcOpticalFlowFarneback(a, b, None, p["pyr_scale"], int(p["levels"]),
                                         int(p["winsize"]), int(p["iterations"]), int(p["poly_n"]),
                                         p["poly_sigma"], 0)
        out[i] = f.transpose(2, 0, 1)
    return torch.from_numpy(out)


def _skimage(fn, frame1: torch.Tensor, frame2: torch.Tensor, params: dict) -> torch.Tensor:
    """Run a scikit-image flow function (returns (row, col) = (y, x)) on each pair."""
    g1, g2 = _pairs_gray(frame1, frame2)
    out = np.empty((g1.shape[0], 2, *g1.shape[1:]), dtype=np.float32)
    for i in range(g1.shape[0]):
        vy, vx = fn(g1[i], g2[i], **params)
        out[i, 0], out[i, 1] = vx, vy
    return torch.from_numpy(out)


def tvl1(frame1: torch.Tensor, frame2: torch.Tensor, **params) -> torch.Tensor:
    """scikit-image TV-L1 (Zach et al. 2007) for each pair."""
    from skimage.registration import optical_flow_tvl1

    return _skimage(optical_flow_tvl1, frame1, frame2, {**TVL1_DEFAULTS, **params})


def ilk(frame1: torch.Tensor, frame2: torch.Tensor, **params) -> torch.Tensor:
    """scikit-image iterative Lucas–Kanade for each pair."""
    from skimage.registration import optical_flow_ilk

    return _skimage(optical_flow_ilk, frame1, frame2, {**ILK_DEFAULTS, **params})
