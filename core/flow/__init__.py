"""Optical-flow engine: one entry point, four methods, warping and flow imposition.

``compute_flow(video, method)`` returns ``(T-1, 2, H, W)`` float32 in pixels (channel 0 = x right,
1 = y down; ``flow[t]`` maps frame t to t+1). ``horn_schunck`` is torch (batched, on the video's
device, differentiable); the others are classic CPU methods.
"""

from __future__ import annotations

from typing import Literal

import torch

from core.checks import check_video
from core.errors import ParameterError
from core.flow.classic import farneback, ilk, tvl1
from core.flow.horn_schunck import horn_schunck
from core.flow.warp import impose_flow, impose_flow_batch, warp

FlowMethod = Literal["farneback", "tvl1", "ilk", "horn_schunck"]
METHODS: tuple[str, ...] = ("farneback", "tvl1", "ilk", "horn_schunck")
DIFFERENTIABLE: tuple[str, ...] = ("horn_schunck",)
_FUNCS = {"farneback": farneback, "tvl1": tvl1, "ilk": ilk, "horn_schunck": horn_schunck}


def pair_flow(frame1: torch.Tensor, frame2: torch.Tensor, method: FlowMethod = "horn_schunck",
              **params) -> torch.Tensor:
    """Flow of batched pairs ``(N, 3, H, W) -> (N, 2, H, W)`` with ``method``."""
    if method not in _FUNCS:
        raise ParameterError(f"unknown flow method {method!r}; expected one of {', '.join(METHODS)}")
    out = _FUNCS[method](frame1, frame2, **params)
    return out if method in DIFFERENTIABLE else out.to(frame1.device)


def compute_flow(video: torch.Tensor, method: FlowMethod = "horn_schunck", **params) -> torch.Tensor:
    """Optical flow of every consecutive frame pair.

    Args:
        video: ``(T, 3, H, W)`` float in [0, 1], T >= 2.
        method: ``farneback`` | ``tvl1`` | ``ilk`` | ``horn_schunck``.
        **params: method parameters (see :mod:`core.flow.classic` and :func:`horn_schunck`).

    Returns:
        ``(T-1, 2, H, W)`` float32 flow in pixels on the video's device.
    """
    check_video(video, min_frames=2)
    return pair_flow(video[:-1], video[1:], method, **params)


__all__ = ["DIFFERENTIABLE", "METHODS", "FlowMethod", "compute_flow", "farneback", "horn_schunck",
           "ilk", "impose_flow", "impose_flow_batch", "pair_flow", "tvl1", "warp"]
