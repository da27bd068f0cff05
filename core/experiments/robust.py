"""Clean vs robust accuracy of regular and adversarially trained models under every attack
(DeepSAVA Tab. 11). One task per (model, attack, clip); robust accuracy = share of all clips still
classified correctly after the attack (a clip the model already gets wrong counts as wrong)."""

from __future__ import annotations

from collections.abc import Callable

from core.checks import check_range
from core.errors import ParameterError
from core.experiments.transfer import _model


def robust_task(model: str, clip: int, method: str, attack_kw: dict) -> dict:
    from core.attacks import make_attack
    from core.data import NUM_CLASSES, SPLIT_OFFSETS, make_clip

    clf = _model(model)
    label = clip % NUM_CLASSES
    video = make_clip(label, SPLIT_OFFSETS["test"] + clip, clf.spec.frames, clf.spec.size).video
    clean_ok = clf.fork().predict(video)[0] == label
    adv_ok = False
    if clean_ok:
        res = make_attack(method, clf, **attack_kw)(video, label)
        adv_ok = clf.fork().predict(res.adv_video)[0] == label
    return {"model": model, "clip": clip, "clean_ok": bool(clean_ok), "adv_ok": bool(adv_ok)}


def robust_table(models: list[str], attacks: dict[str, dict], clips: int = 16, engine: str = "auto",
                 workers: int = 2, progress: Callable[[float, str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> dict:
    """Rows ``{model, attack, clean_accuracy, robust_accuracy, n}`` for every model × attack.

    Args:
        attacks: ``{name: make_attack keyword arguments}`` (the name is the attack method).
    """
    from core.jobs import run_tasks
    from core.models import MODEL_NAMES

    for m in models:
        if m not in MODEL_NAMES:
            raise ParameterError(f"unknown model {m!r}; expected one of {', '.join(MODEL_NAMES)}")
    if not models or not attacks:
        raise ParameterError("a robustness table needs at least one model and one attack")
    clips = int(check_range("clips", clips, 1, 100_000))
    tasks = [{"model": m, "clip": c, "method": a, "attack_kw": dict(kw)}
             for m in models for a, kw in attacks.items() for c in range(clips)]
    run = run_tasks(robust_task, tasks, engine=engine, workers=workers, progress=progress, should_stop=should_stop)
    rows = []
    for m in models:
        for a in attacks:
            rs = [r for t, r in zip(tasks, run["results"]) if r is not None and t["model"] == m and t["method"] == a]
            n = len(rs)
            rows.append({"model": m, "attack": a, "params": attacks[a], "n": n,
                         "clean_accuracy": sum(r["clean_ok"] for r in rs) / n if n else None,
                         "robust_accuracy": sum(r["adv_ok"] for r in rs) / n if n else None})
    return {"rows": rows, "clips": clips, **{k: run[k] for k in ("engine", "cached", "computed", "cancelled")}}
