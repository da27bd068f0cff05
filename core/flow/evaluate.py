"""Flow accuracy against the synthetic dataset's exact flow, and timing.

End-point error (EPE) = mean over pixels of ‖f − g‖₂ (pixels). Evaluated on the first clips of the
fixed ``test`` split (clip j has class j % 8), per class and overall.
"""

from __future__ import annotations

import time

import torch

from core.data import CLASSES, NUM_CLASSES, make_clip
from core.data.synthetic import SPLIT_OFFSETS
from core.flow import METHODS, compute_flow


def epe(flow: torch.Tensor, truth: torch.Tensor) -> float:
    """Average end-point error in pixels between two flows of the same shape."""
    if flow.shape != truth.shape:
        raise ValueError(f"flows differ in shape: {tuple(flow.shape)} vs {tuple(truth.shape)}")
    return float((flow.float() - truth.float()).norm(dim=-3).mean())


def evaluate_methods(methods: tuple[str, ...] | list[str] = METHODS, clips_per_class: int = 2,
                     frames: int = 8, size: int = 64) -> dict:
    """EPE of each method, per class and overall, on ``clips_per_class × 8`` test clips.

    Returns:
        ``{"clips": n, "frames": T, "size": S, "methods": {m: {"epe": e, "per_class": {c: e},
        "ms_per_pair": t}}, "zero_flow_epe": e}`` (zero_flow_epe is the EPE of predicting no motion,
        a baseline every method must beat).
    """
    clips = [make_clip(j % NUM_CLASSES, SPLIT_OFFSETS["test"] + j, frames, size)
             for j in range(clips_per_class * NUM_CLASSES)]
    out: dict = {"clips": len(clips), "frames": frames, "size": size, "methods": {}}
    out["zero_flow_epe"] = sum(epe(torch.zeros_like(c.flow), c.flow) for c in clips) / len(clips)
    for m in methods:
        per: dict[str, list[float]] = {c: [] for c in CLASSES}
        t0 = time.perf_counter()
        for c in clips:
            per[c.class_name].append(epe(compute_flow(c.video, m).cpu(), c.flow))
        dt = time.perf_counter() - t0
        pc = {c: sum(v) / len(v) for c, v in per.items() if v}
        out["methods"][m] = {"epe": sum(pc.values()) / len(pc), "per_class": pc,
                             "ms_per_pair": 1000 * dt / (len(clips) * (frames - 1))}
    return out
