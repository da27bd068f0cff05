"""Maximum safe radius over a set of clips as :mod:`core.jobs` tasks (one per clip): the bounds
of every clip in one table, on a local Ray or a cluster, cached by content."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from core.checks import check_range
from core.errors import ParameterError


def msr_task(model: str, clip: int, params: dict) -> dict:
    """Run the MSR solver on test clip ``clip`` to its iteration limit; a flat record."""
    from core.data import NUM_CLASSES, SPLIT_OFFSETS, make_clip
    from core.experiments.transfer import _model
    from core.msr import MSRParams, MSRSolver

    clf = _model(model)
    label = clip % NUM_CLASSES
    video = make_clip(label, SPLIT_OFFSETS["test"] + clip, clf.spec.frames, clf.spec.size).video
    s = MSRSolver(clf, video, MSRParams(**params), classes=clf.spec.classes)
    res = s.run_all()
    return {"model": model, "clip": clip, "label": clf.spec.classes[label],
            "predicted": res["original_label"], **{k: res[k] for k in (
                "lower", "upper", "upper_msr", "certified_lower", "exact", "robust_within_budget", "iterations",
                "lower_guarantee", "bounds")}}


def msr_over_clips(model: str | list[str], clips: int, params: dict, engine: str = "auto", workers: int = 2,
                   address: str | None = None, progress: Callable[[float, str], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict:
    """Bounds of the first ``clips`` test clips under the same :class:`MSRParams` (as a dict), for
    one model or several side by side (e.g. ``["cnn_lstm", "cnn_lstm_certified"]``: one task per
    model × clip, rows in model order).

    Results that depend on wall-clock limits are only reproducible when ``time_limit`` does not
    bind; use ``max_iters`` to bound the work of every task."""
    from core.jobs import run_tasks
    from core.models import MODEL_NAMES
    from core.msr import MSRParams

    models = [model] if isinstance(model, str) else list(dict.fromkeys(model))
    if not models:
        raise ParameterError("choose at least one model")
    for m in models:
        if m not in MODEL_NAMES:
            raise ParameterError(f"unknown model {m!r}; expected one of {', '.join(MODEL_NAMES)}")
    clips = int(check_range("clips", clips, 1, 100_000))
    MSRParams(**params).validate(16)  # one clear error before any task starts
    tasks = [{"model": m, "clip": c, "params": dict(params)} for m in models for c in range(clips)]
    run = run_tasks(msr_task, tasks, engine=engine, workers=workers, address=address, progress=progress,
                    should_stop=should_stop)
    rows = [r for r in run["results"] if r is not None]
    return {"rows": rows, "params": params, "models": models, "summary": msr_set_summary(rows, models),
            **{k: run[k] for k in ("engine", "cached", "computed", "cancelled")}}


def certified_ratio(row: dict) -> float | None:
    """certified lower ÷ sound upper bound of one clip (None without both)."""
    low, up = row.get("certified_lower"), row.get("upper_msr")
    if low is None or up is None or not math.isfinite(up) or up <= 0:
        return None
    return low / up


def msr_set_summary(rows: list[dict], models: list[str] | None = None, goal: float = 0.25) -> list[dict]:
    """One flat record per model, over the clips that **every** model classifies correctly (a bound
    around a wrong decision is not comparable): how many clips, the medians of the certified lower
    bound and of the sound upper bound, and the certified-lower ÷ upper ratio's median, min, max and
    the number of clips at or above ``goal``."""
    models = models or list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["model"], r["clip"]): r for r in rows}
    clips = sorted({r["clip"] for r in rows})
    both = [c for c in clips if all((m, c) in by and by[m, c]["predicted"] == by[m, c]["label"] for m in models)]
    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    out = []
    for m in models:
        mine = [by[m, c] for c in clips if (m, c) in by]
        comp = [by[m, c] for c in both]
        lows = [r["certified_lower"] for r in comp if r.get("certified_lower") is not None]
        ups = [r["upper_msr"] for r in comp if r.get("upper_msr") is not None and math.isfinite(r["upper_msr"])]
        ratios = [x for x in map(certified_ratio, comp) if x is not None]
        out.append({"model": m, "clips": len(mine), "correct": sum(r["predicted"] == r["label"] for r in mine),
                    "compared": len(comp), "certified_lower_median": med(lows), "upper_msr_median": med(ups),
                    "ratio_median": med(ratios), "ratio_min": min(ratios) if ratios else None,
                    "ratio_max": max(ratios) if ratios else None,
                    "ratio_at_goal": sum(x >= goal for x in ratios) if ratios else None, "goal": goal})
    return out
