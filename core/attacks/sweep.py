"""Attack metrics (DeepSAVA §4) and sweeps over seeded test clips, models, attacks and ε.

* FR — fooling rate: successful attacks / attacked clips (clips the model already gets wrong are
  skipped, as is usual).
* ANI — average number of iterations of the *successful* attacks.
* AAP(D) = mean_{successes} D · f + D_max · (1 − f), with D = normalised ℓ2,1 (D_max = 0.1) or
  D = 1 − SSIM (D_max = 1 − 0.92), f the fooling rate (DeepSAVA's formula, its budgets).
* ASP(SSIM) — the mean SSIM(x̂, x) of the successful adversarial clips.
* Average frames perturbed (successful attacks) and their histogram (thesis Fig. 3.5).
* Accuracy vs ε: clip level (accuracy of the model on the attacked clips) and video level (a
  longer video split into non-overlapping clips, each attacked, class probabilities averaged).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from core.attacks import make_attack
from core.attacks.base import AttackResult
from core.data import NUM_CLASSES, make_clip
from core.data.synthetic import SPLIT_OFFSETS

L21_MAX = 0.1
SSIM_DIST_MAX = 1.0 - 0.92


def summarise(results: list[AttackResult], skipped: int = 0) -> dict:
    """FR, ANI, AAP(ℓ2,1), AAP(SSIM), ASP(SSIM), average frames perturbed, mean seconds/queries."""
    n = len(results)
    ok = [r for r in results if r.success]
    f = len(ok) / n if n else 0.0

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else math.nan

    l21s = [r.distances["l21_norm"] for r in ok]
    sd = [1.0 - r.distances["ssim"] for r in ok]
    return {
        "attacked": n, "skipped_misclassified": skipped, "successes": len(ok), "FR": f,
        "ANI": mean([r.iterations for r in ok]),
        "AAP_l21": (mean(l21s) if ok else 0.0) * f + L21_MAX * (1 - f),
        "AAP_ssim": (mean(sd) if ok else 0.0) * f + SSIM_DIST_MAX * (1 - f),
        "ASP_ssim": mean([r.distances["ssim"] for r in ok]),
        "avg_frames": mean([len(r.perturbed_frames) for r in ok]),
        "frames_histogram": _hist([len(r.perturbed_frames) for r in ok]),
        "mean_seconds": mean([r.seconds for r in results]), "mean_queries": mean([r.queries for r in results]),
    }


def _hist(xs: list[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in sorted(xs):
        out[str(x)] = out.get(str(x), 0) + 1
    return out


def test_clips(n: int, frames: int, size: int) -> list[tuple[torch.Tensor, int]]:
    """The first ``n`` clips of the fixed test split (classes interleaved)."""
    return [(make_clip(j % NUM_CLASSES, SPLIT_OFFSETS["test"] + j, frames, size).video, j % NUM_CLASSES)
            for j in range(n)]


def sweep_task(model: str, method: str, eps: float | None, clip: int, frames: int, select: str, attack_kw: dict,
               black_box: str | None = None) -> dict:
    """One (model, attack, ε, test clip) of a sweep as a job task: a small, cacheable record with
    what :func:`summarise` reads (``skipped`` when the judging model gets the clean clip wrong)."""
    from core.experiments.transfer import _model

    clf = _model(model)
    judge = _model(black_box) if black_box else clf
    video, label = test_clips(clip + 1, clf.spec.frames, clf.spec.size)[clip]
    if judge.fork().predict(video)[0] != label:
        return {"skipped": True}
    kw = dict(attack_kw)
    if black_box:
        kw["success_model"] = judge
    r = make_attack(method, clf, eps=0.01 if eps is None else eps, frames=frames, select=select, **kw)(video, label)
    return {"skipped": False, "success": bool(r.success), "iterations": int(r.iterations),
            "distances": {"l21_norm": float(r.distances["l21_norm"]), "ssim": float(r.distances["ssim"])},
            "perturbed_frames": list(r.perturbed_frames), "seconds": float(r.seconds), "queries": int(r.queries)}


def sweep_jobs(models: list[str], methods: list[str], n_clips: int = 8, eps_values: list[float] | None = None,
               frames: int = 1, select: str = "first", black_box: str | None = None, engine: str = "auto",
               workers: int = 2, address: str | None = None, progress: Callable[[float, str], None] | None = None,
               should_stop: Callable[[], bool] | None = None, **attack_kw) -> dict:
    """:func:`sweep` over shipped models as :mod:`core.jobs` tasks — one per (model, attack, ε,
    clip), on a local Ray or a cluster, cached by content — with the same rows."""
    from types import SimpleNamespace

    from core.attacks import DENSE
    from core.checks import check_range
    from core.errors import ParameterError
    from core.jobs import run_tasks
    from core.models import MODEL_NAMES
    from core.types import AttackName, parse

    eps_values = [0.01] if eps_values is None else [check_range("eps", e, 0.0, 1.0) for e in eps_values]
    n_clips = int(check_range("clips", n_clips, 1, 100_000))
    for m in list(models) + ([black_box] if black_box else []):
        if m not in MODEL_NAMES:
            raise ParameterError(f"unknown model {m!r}; expected one of {', '.join(MODEL_NAMES)}")
    methods = [str(parse(AttackName, m, "attack")) for m in methods]
    plan = [(m, a, e) for m in models for a in methods for e in (eps_values if a in DENSE else [None])]
    tasks = [{"model": m, "method": a, "eps": e, "clip": c, "frames": frames, "select": select,
              "attack_kw": dict(attack_kw), "black_box": black_box} for m, a, e in plan for c in range(n_clips)]
    run = run_tasks(sweep_task, tasks, engine=engine, workers=workers, address=address, progress=progress,
                    should_stop=should_stop)
    rows = []
    for m, a, e in plan:
        recs = [r for t, r in zip(tasks, run["results"]) if r is not None and (t["model"], t["method"], t["eps"]) == (m, a, e)]
        skipped = sum(r["skipped"] for r in recs)
        results = [SimpleNamespace(**r) for r in recs if not r["skipped"]]
        rows.append({"model": m, "method": a, "eps": e, **summarise(results, skipped),
                     "clip_accuracy": sum(not r.success for r in results) / max(len(results) + skipped, 1)})
    return {"rows": rows, "stopped": run["cancelled"] > 0, "n_clips": n_clips, "frames": frames, "select": select,
            "black_box": black_box, **{k: run[k] for k in ("engine", "cached", "computed", "cancelled")}}


def sweep(models: dict[str, tuple], methods: list[str], n_clips: int = 8, eps_values: list[float] | None = None,
          frames: int = 1, select: str = "first", black_box: tuple | None = None,
          progress: Callable[[float, str], None] | None = None, should_stop: Callable[[], bool] | None = None,
          **attack_kw) -> dict:
    """Run every (model, method, ε) on ``n_clips`` seeded test clips.

    Args:
        models: ``{name: (model, spec)}``.
        methods: attack names (see :data:`core.attacks.METHODS`).
        eps_values: ε for the Inkawhich attacks (one row each); the sparse attacks ignore ε.
        black_box: optional ``(model, spec)`` on which success is judged (transfer).

    Returns:
        ``{"rows": [{model, method, eps, FR, ANI, AAP_l21, …}], "stopped": bool}``.
    """
    from core.attacks import DENSE
    from core.checks import check_range
    from core.classifier import as_classifier
    from core.errors import ParameterError
    from core.types import AttackName, parse

    eps_values = [0.01] if eps_values is None else list(eps_values)
    if not eps_values:
        raise ParameterError("eps values must name at least one ε")
    eps_values = [check_range("eps", e, 0.0, 1.0) for e in eps_values]
    n_clips = int(check_range("clips", n_clips, 1, 100_000))
    if not models or not methods:
        raise ParameterError("a sweep needs at least one model and one attack")
    methods = [parse(AttackName, m, "attack") for m in methods]
    rows, total, done = [], 0, 0
    plan = []
    for mname, entry in models.items():
        clf = as_classifier(*entry) if isinstance(entry, tuple) else as_classifier(entry)
        for method in methods:
            for eps in (eps_values if method in DENSE else [None]):
                plan.append((mname, clf, clf.spec, method, eps))
    if black_box is not None:
        black_box = as_classifier(*black_box) if isinstance(black_box, tuple) else as_classifier(black_box)
    total = len(plan) * n_clips
    stopped = False
    for mname, model, spec, method, eps in plan:
        clips = test_clips(n_clips, spec.frames, spec.size)
        results, skipped = [], 0
        kw = dict(attack_kw)
        if black_box is not None:
            kw["success_model"] = black_box
        atk = make_attack(method, model, eps=0.01 if eps is None else eps, frames=frames, select=select,
                          classes=spec.classes, **kw)
        judge = (black_box or model).fork()
        for video, label in clips:
            if should_stop and should_stop():
                stopped = True
                break
            if judge.predict(video)[0] != label:
                skipped += 1
            else:
                results.append(atk(video, label))
            done += 1
            if progress:
                progress(done / total, f"{mname} · {method}" + (f" · ε={eps:g}" if eps is not None else ""))
        rows.append({"model": mname, "method": str(method), "eps": eps, **summarise(results, skipped),
                     "clip_accuracy": (sum(not r.success for r in results)) / max(len(results) + skipped, 1)})
        if stopped:
            break
    return {"rows": rows, "stopped": stopped, "n_clips": n_clips, "frames": frames, "select": select,
            "black_box": black_box.name if black_box is not None else None}


def accuracy_vs_eps(model, spec, method: str, eps_values: list[float], n_videos: int = 4, clips_per_video: int = 3,
                    progress: Callable[[float, str], None] | None = None) -> dict:
    """Clip- and video-level accuracy under attack for each ε.

    Each video is ``clips_per_video × T`` frames of one test clip's motion; it is split into
    non-overlapping clips of T frames, each clip is attacked independently, and the video's
    prediction is the argmax of the clip probabilities averaged.
    """
    from core.classifier import as_classifier

    clf = as_classifier(model, spec).fork()
    t = spec.frames
    videos = [(make_clip(j % NUM_CLASSES, SPLIT_OFFSETS["test"] + 500_000 + j, t * clips_per_video, spec.size).video,
               j % NUM_CLASSES) for j in range(n_videos)]
    out = {"eps": [], "clip_accuracy": [], "video_accuracy": []}
    total, done = len(eps_values) * n_videos, 0
    for eps in eps_values:
        clip_ok = clip_n = vid_ok = 0
        for video, label in videos:
            probs = []
            for c in range(clips_per_video):
                clip = video[c * t:(c + 1) * t]
                adv = clip if eps == 0 else make_attack(method, clf, eps=eps)(clip, label).adv_video
                p = clf.predict(adv)[2]
                probs.append(p)
                clip_ok += int(int(p.argmax()) == label)
                clip_n += 1
            vid_ok += int(int(torch.stack(probs).mean(0).argmax()) == label)
            done += 1
            if progress:
                progress(done / total, f"ε = {eps:g}")
        out["eps"].append(eps)
        out["clip_accuracy"].append(clip_ok / clip_n)
        out["video_accuracy"].append(vid_ok / len(videos))
    return out
