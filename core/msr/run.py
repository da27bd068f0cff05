"""One cached MSR computation (used by the CLI and batch jobs)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.cache import DiskCache, tensor_hash
from core.models.registry import ModelSpec
from core.msr.solver import MSRParams, MSRSolver


def run_msr(model: nn.Module, spec: ModelSpec, video: torch.Tensor, params: MSRParams,
            on_event: Callable[[dict], None] | None = None, use_cache: bool = True) -> tuple[dict, torch.Tensor | None]:
    """Run to completion (or the params' iteration/time limits); return ``(record, witness video)``.

    Results are cached on disk by (video content, model name + weights hash, params).
    """
    params.validate(video.shape[0])
    cache = DiskCache()
    key = cache.key("msr", video=tensor_hash(video), model=spec.name, weights=spec.card.get("sha256", ""),
                    params=params.to_dict())
    if use_cache:
        hit = cache.get(key)
        if isinstance(hit, dict) and "record" in hit:
            return hit["record"], hit.get("witness")
    solver = MSRSolver(model, video, params, classes=spec.classes)
    for ev in solver.run():
        if on_event:
            on_event(ev)
    record = solver.result()
    witness = solver.witness_video()
    cache.put(key, {"record": record, "witness": witness})
    return record, witness
