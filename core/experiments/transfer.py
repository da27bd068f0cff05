"""Transferability matrix (DeepSAVA Tab. 12): adversarial clips crafted on each source model,
judged on every target model — including the black-box flow models.

One task per (source, clip): the attack runs white-box on the source; the adversarial clip is then
classified by every target. For target j and source i, ``n[i][j]`` counts the clips that *both*
the source and the target classify correctly when clean (only those can be fooled), and
``fr[i][j]`` is the share of them whose adversarial clip the target misclassifies. The diagonal is
the white-box fooling rate; off the diagonal, transfer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from core.checks import check_range
from core.errors import ParameterError


@functools.lru_cache(maxsize=16)
def _model(name: str):
    """One loaded classifier per model and process (Ray workers keep theirs between tasks)."""
    from core.models import load_classifier

    return load_classifier(name)


def transfer_task(source: str, clip: int, method: str, attack_kw: dict, targets: list[str]) -> dict:
    """Attack test clip ``clip`` on ``source``; judge the adversarial clip on every target."""
    from core.attacks import make_attack
    from core.data import NUM_CLASSES, SPLIT_OFFSETS, make_clip

    src = _model(source)
    label = clip % NUM_CLASSES
    video = make_clip(label, SPLIT_OFFSETS["test"] + clip, src.spec.frames, src.spec.size).video
    clean_ok = src.fork().predict(video)[0] == label
    out = {"source": source, "clip": clip, "label": label, "source_clean_ok": bool(clean_ok), "targets": {}}
    adv = None
    if clean_ok:
        res = make_attack(method, src, **attack_kw)(video, label)
        adv = res.adv_video
        out["source_success"] = bool(res.success)
        out["ssim"] = float(res.distances["ssim"])
    for t in targets:
        tgt = _model(t)
        ok = tgt.fork().predict(video)[0] == label
        fooled = None if adv is None or not ok else tgt.fork().predict(adv)[0] != label
        out["targets"][t] = {"clean_ok": bool(ok), "fooled": fooled}
    return out


def transfer_matrix(sources: list[str], targets: list[str], method: str, clips: int = 16,
                    attack_kw: dict | None = None, engine: str = "auto", workers: int = 2,
                    address: str | None = None, progress: Callable[[float, str], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> dict:
    """The FR matrix ``fr[i][j]`` (source i → target j) with counts ``n[i][j]`` over ``clips`` test
    clips; per-cell examples (clip indices fooled) for drill-down.

    Returns:
        ``{sources, targets, fr, n, fooled, examples, params, engine, cached, computed, cancelled}``.
    """
    from core.attacks import make_attack  # validates the method and its parameters up front
    from core.jobs import run_tasks
    from core.models import MODEL_NAMES

    if not sources or not targets:
        raise ParameterError("a transfer matrix needs at least one source and one target model")
    for m in list(sources) + list(targets):
        if m not in MODEL_NAMES:
            raise ParameterError(f"unknown model {m!r}; expected one of {', '.join(MODEL_NAMES)}")
    clips = int(check_range("clips", clips, 1, 100_000))
    attack_kw = dict(attack_kw or {})
    make_attack(method, _model(sources[0]), **attack_kw)
    tasks = [{"source": s, "clip": c, "method": method, "attack_kw": attack_kw, "targets": list(targets)}
             for s in sources for c in range(clips)]
    run = run_tasks(transfer_task, tasks, engine=engine, workers=workers, address=address, progress=progress,
                    should_stop=should_stop)
    return {**aggregate(sources, targets, run["results"]), "params": {"method": method, "clips": clips, **attack_kw},
            **{k: run[k] for k in ("engine", "cached", "computed", "cancelled")}}


def aggregate(sources: list[str], targets: list[str], results: list[dict | None]) -> dict:
    """The matrix from :func:`transfer_task` records (``None`` = cancelled task, left out)."""
    fr, n, fooled, examples = [], [], [], []
    for s in sources:
        rows = [r for r in results if r is not None and r["source"] == s]
        fr_row, n_row, f_row, ex_row = [], [], [], []
        for t in targets:
            cell = [r for r in rows if r["source_clean_ok"] and r["targets"][t]["clean_ok"]]
            k = sum(bool(r["targets"][t]["fooled"]) for r in cell)
            n_row.append(len(cell))
            f_row.append(k)
            fr_row.append(k / len(cell) if cell else None)
            ex_row.append([r["clip"] for r in cell if r["targets"][t]["fooled"]][:8])
        fr.append(fr_row)
        n.append(n_row)
        fooled.append(f_row)
        examples.append(ex_row)
    return {"sources": list(sources), "targets": list(targets), "fr": fr, "n": n, "fooled": fooled,
            "examples": examples}
