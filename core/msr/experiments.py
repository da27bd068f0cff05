"""Wu & Kwiatkowska's panels beyond flows, as core experiments (page and CLI run the same code).

* :func:`brightness_panel` — Fig. 8: the A* lower bound when every atomic move brightens one whole
  frame by ±τ (ℓ2 over pixel values), for several τ.
* :func:`scalability_panel` — Fig. 10: the lower bound after the same number of iterations when
  Player I may manipulate 1, 2, 3 … consecutive flows.

Both return ``{name: trace}`` with the solver's events; ``progress(fraction, message)`` may raise to
stop (the page stops on any click).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from core.msr.solver import MSRParams, MSRSolver


def _traces(model, video: torch.Tensor, named: list[tuple[str, MSRParams]], iters: int,
            progress: Callable[[float, str], None] | None) -> dict[str, list[dict]]:
    out = {}
    for i, (name, p) in enumerate(named):
        solver = MSRSolver(model, video, p)
        for ev in solver.run(max_iters=iters, time_limit=p.time_limit):
            if progress:
                progress((i + ev["iteration"] / iters) / len(named), f"{name}, iteration {ev['iteration']}")
        out[name] = solver.trace
    return out


def brightness_panel(model, video: torch.Tensor, taus: tuple[float, ...] = (0.01, 0.02), iters: int = 40,
                     progress: Callable[[float, str], None] | None = None) -> dict[str, list[dict]]:
    """Fig. 8: lower bounds of uniform brightness changes (grid guarantee) for each τ."""
    named = [(f"τ = {t:g}", MSRParams(metric="l2", tau=t, budget=1e3, space="brightness", upper=False,
                                      max_iters=iters, time_limit=120, certify=False)) for t in taus]
    return _traces(model, video, named, iters, progress)


def scalability_panel(model, video: torch.Tensor, metric: str = "l2", tau: float = 0.5, budget: float = 300.0,
                      block: int = 16, counts: tuple[int, ...] = (1, 2, 3), iters: int = 40,
                      progress: Callable[[float, str], None] | None = None) -> dict[str, list[dict]]:
    """Fig. 10: the lower bound vs iterations for 1, 2, 3 … manipulated flows (from the middle pair)."""
    t = video.shape[0]
    t0 = max(0, min(t // 2 - 1, t - 1 - max(counts)))
    named = [(f"{n} flow(s) {list(range(t0, t0 + n))}",
              MSRParams(metric=metric, tau=tau, budget=budget, flows=list(range(t0, t0 + n)), block=block,
                        upper=False, max_iters=iters, time_limit=120, certify=False)) for n in counts]
    return _traces(model, video, named, iters, progress)


__all__ = ["brightness_panel", "scalability_panel"]
