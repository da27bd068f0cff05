"""Backward warping of frames by a flow, and imposing a flow perturbation on a video.

Convention (see :mod:`core`): ``flow[t]`` maps frame ``t`` to frame ``t+1``, in pixels, channel 0
= x (right), 1 = y (down). The backward warp samples ``frames`` at ``x + flow(x)``:

    warp(I, p)(x) = I(x + p(x))          (bilinear; outside the frame: nearest border pixel)

so ``warp(video[t+1], flow[t]) ≈ video[t]`` wherever the content is visible in both frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.checks import check_flow, check_video


def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys], dim=0)  # (2, H, W) as (x, y)


def warp(frames: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward bilinear warp ``out(x) = frames(x + flow(x))``.

    Args:
        frames: ``(N, C, H, W)`` float.
        flow: ``(N, 2, H, W)`` float in pixels (channel 0 = x, 1 = y).

    Returns:
        ``(N, C, H, W)``; samples falling outside the frame take the nearest border value
        (``padding_mode='border'``). Differentiable w.r.t. both inputs; zero flow is the identity
        (exactly, up to float rounding).
    """
    if frames.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2 \
            or frames.shape[0] != flow.shape[0] or frames.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"expected frames (N, C, H, W) and flow (N, 2, H, W) of the same N, H, W, "
                         f"got {tuple(frames.shape)} and {tuple(flow.shape)}")
    n, _, h, w = frames.shape
    pos = _base_grid(h, w, frames.device, flow.dtype).unsqueeze(0) + flow
    gx = 2.0 * pos[:, 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * pos[:, 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1).to(frames.dtype)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=True)


def impose_flow(video: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Impose a flow perturbation ``delta`` on a video (used by the MSR game, Wu & Kwiatkowska §3.2).

    Frame ``t+1`` of the result is frame ``t+1`` of ``video`` backward-warped by ``-delta[t]``:

        v'_0 = v_0,    v'_{t+1}(x) = v_{t+1}(x - delta_t(x))

    For a locally constant ``delta`` this moves the content of frame ``t+1`` by ``+delta_t``
    pixels, so the flow from ``v'_t`` ... ``v'_{t+1}`` becomes approximately
    ``p_t + delta_t - delta_{t-1}`` (with ``delta_{-1} = 0``); in particular, when only one
    frame pair ``t`` is perturbed, the flow of pair ``t`` shifts by ``delta_t`` and pair ``t+1``
    by ``-delta_t``. Imposing is not exact (occlusions, interpolation), which is why the MSR
    engine also reports the *measured* flow distance.

    Args:
        video: ``(T, 3, H, W)`` in [0, 1].
        delta: ``(T-1, 2, H, W)`` in pixels.

    Returns:
        ``(T, 3, H, W)`` in [0, 1]; frame 0 unchanged.
    """
    check_video(video, min_frames=2)
    check_flow(delta, frames=video.shape[0], size=tuple(video.shape[-2:]), name="delta")
    return impose_flow_batch(video, delta.unsqueeze(0))[0]


def impose_flow_batch(video: torch.Tensor, delta: torch.Tensor, pairs: list[int] | None = None) -> torch.Tensor:
    """:func:`impose_flow` for a batch of perturbations ``delta (K, T-1, 2, H, W)`` of one video.

    Only the frames ``t+1`` of ``pairs`` (default: every pair) are warped; the others are copied.

    Returns:
        ``(K, T, 3, H, W)`` in [0, 1].
    """
    k = delta.shape[0]
    out = video.unsqueeze(0).expand(k, *video.shape).clone()
    for t in range(delta.shape[1]) if pairs is None else pairs:
        out[:, t + 1] = warp(video[t + 1].unsqueeze(0).expand(k, *video.shape[1:]), -delta[:, t]).clamp(0.0, 1.0)
    return out
