"""Differentiable coarse-to-fine Horn–Schunck optical flow in torch.

Horn & Schunck (1981) minimise  ∫ (I_x u + I_y v + I_t)^2 + α² (|∇u|² + |∇v|²)  with the
Jacobi iteration

    u ← ū − I_x (I_x ū + I_y v̄ + I_t) / (α² + I_x² + I_y²)        (same for v with I_y)

where ū, v̄ are neighbourhood averages. Motions of a few pixels break the linearisation, so we run
it coarse-to-fine: at each pyramid level the second frame is backward-warped by the current flow
and the iteration solves for the increment (the brightness term is linearised around the current
flow, the smoothness term acts on the total flow).

Every operation is a convolution, a bilinear ``grid_sample`` or arithmetic, so the result is
differentiable w.r.t. both frames; frame pairs are processed as one batch on the frames' device.
This is the flow used inside ``motion_stream`` and for every gradient in ``core``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.flow.warp import warp

_LUMA = (0.299, 0.587, 0.114)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _kernels(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor,
                                                                   torch.Tensor]:
    avg = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]],
                       dtype=dtype, device=device).view(1, 1, 3, 3)
    dx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                      dtype=dtype, device=device).view(1, 1, 3, 3) / 8.0
    dy = dx.transpose(-1, -2)
    return avg, dx, dy


def _conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)


def horn_schunck(frame1: torch.Tensor, frame2: torch.Tensor, alpha: float = 0.06,
                 iterations: int = 30, levels: int = 3, warps: int = 1) -> torch.Tensor:
    """Forward flow from ``frame1`` to ``frame2`` (batched pairs).

    Args:
        frame1, frame2: ``(N, C, H, W)`` float in [0, 1], C = 1 or 3 (converted to luma).
        alpha: smoothness weight α (intensity units, images in [0, 1]).
        iterations: Jacobi iterations per warp per level.
        levels: pyramid levels (each halves the size; capped so the coarsest side ≥ 8 px).
        warps: re-linearisations (warps of ``frame2``) per level.

    Returns:
        ``(N, 2, H, W)`` flow in pixels, channel 0 = x (right), 1 = y (down).
    """
    if frame1.shape != frame2.shape or frame1.dim() != 4:
        raise ValueError(f"expected two (N, C, H, W) frames of one shape, got "
                         f"{tuple(frame1.shape)} and {tuple(frame2.shape)}")
    g1, g2 = _gray(frame1), _gray(frame2)
    n, _, h, w = g1.shape
    avg, kdx, kdy = _kernels(g1.dtype, g1.device)
    a2 = float(alpha) ** 2
    levels = max(1, min(int(levels), 1 + int(torch.log2(torch.tensor(min(h, w) / 8.0)).clamp(min=0))))
    pyr1, pyr2 = [g1], [g2]
    for _ in range(levels - 1):
        pyr1.append(F.avg_pool2d(pyr1[-1], 2, ceil_mode=True))
        pyr2.append(F.avg_pool2d(pyr2[-1], 2, ceil_mode=True))
    flow = torch.zeros(n, 2, *pyr1[-1].shape[-2:], dtype=g1.dtype, device=g1.device)
    for lvl in reversed(range(levels)):
        i1, i2 = pyr1[lvl], pyr2[lvl]
        if flow.shape[-2:] != i1.shape[-2:]:
            sy = i1.shape[-2] / flow.shape[-2]
            sx = i1.shape[-1] / flow.shape[-1]
            flow = F.interpolate(flow, size=i1.shape[-2:], mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([sx, sy], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
        for _ in range(warps):
            i2w = warp(i2, flow)
            ix = 0.5 * (_conv(i1, kdx) + _conv(i2w, kdx))
            iy = 0.5 * (_conv(i1, kdy) + _conv(i2w, kdy))
            it = i2w - i1
            denom = a2 + ix * ix + iy * iy
            u0, v0 = flow[:, :1], flow[:, 1:]
            u, v = u0, v0
            for _ in range(iterations):
                ub = _conv(u, avg)
                vb = _conv(v, avg)
                r = (ix * (ub - u0) + iy * (vb - v0) + it) / denom
                u = ub - ix * r
                v = vb - iy * r
            flow = torch.cat([u, v], dim=1)
    return flow
