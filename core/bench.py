"""``python -m core bench TARGET``: speed measured side by side in one run, printed as ratios.

Benchmarks never assert a speed; they print what they measured on this machine.
"""

from __future__ import annotations

import math
import time

import torch


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def bench_flow(quick: bool = False, echo: bool = True) -> dict:
    """Time per frame pair of every flow method at 64² and 224², and EPE at 64²."""
    from core.data import make_clip
    from core.flow import METHODS, compute_flow
    from core.flow.evaluate import evaluate_methods

    pairs = 2 if quick else 4
    repeats = 1 if quick else 3
    rows = {}
    for size in (64, 224):
        clip = make_clip("rotate_cw", 7, frames=pairs + 1, size=size)
        for m in METHODS:
            t = _time(lambda clip=clip, m=m: compute_flow(clip.video, m), repeats)
            rows.setdefault(m, {})[f"ms_per_pair_{size}"] = 1000 * t / pairs
    ev = evaluate_methods(METHODS, clips_per_class=1 if quick else 2, frames=5 if quick else 8)
    base = rows["farneback"]
    for m in METHODS:
        rows[m]["epe_64"] = ev["methods"][m]["epe"]
        for size in (64, 224):
            rows[m][f"vs_farneback_{size}"] = rows[m][f"ms_per_pair_{size}"] / base[f"ms_per_pair_{size}"]
    out = {"target": "flow", "device": "cpu", "threads": torch.get_num_threads(), "methods": rows,
           "zero_flow_epe_64": ev["zero_flow_epe"]}
    if echo:
        print(f"flow benchmark ({torch.get_num_threads()} threads, median of {repeats}; "
              f"ratios vs farneback measured in this run)")
        print(f"{'method':<14}{'ms/pair 64²':>12}{'×fb':>7}{'ms/pair 224²':>14}{'×fb':>7}{'EPE 64² (px)':>14}")
        for m, r in rows.items():
            print(f"{m:<14}{r['ms_per_pair_64']:>12.1f}{r['vs_farneback_64']:>7.1f}"
                  f"{r['ms_per_pair_224']:>14.1f}{r['vs_farneback_224']:>7.1f}{r['epe_64']:>14.3f}")
        print(f"{'zero flow':<14}{'':>12}{'':>7}{'':>14}{'':>7}{ev['zero_flow_epe']:>14.3f}")
    return out


def bench_msr(quick: bool = False, echo: bool = True) -> dict:
    """Autograd vs finite-difference gradient of the margin w.r.t. the flow manipulation, and A*
    node evaluations per second vs the model's raw batched forward throughput."""
    from core.data import make_clip
    from core.models import load_model
    from core.msr import AdmissibleAStar, Evaluator, FlowSpace, finite_difference_grad

    model, spec = load_model("cnn_lstm", "cpu")
    video = make_clip("rotate_cw", 2000004, spec.frames, spec.size).video
    space = FlowSpace(video, [7], block=8)
    ev = Evaluator(model, space)
    g = torch.Generator().manual_seed(0)
    z = 0.1 + 0.1 * torch.rand(space.dims, generator=g, dtype=torch.float64)
    repeats = 1 if quick else 3
    t_auto = _time(lambda: ev.margin_and_grad(z), repeats)
    t_fd = _time(lambda: finite_difference_grad(ev, z, 0.05), 1)
    _, ga = ev.margin_and_grad(z)
    gf = finite_difference_grad(ev, z, 0.05)
    big = ga.abs() > 0.05 * ga.abs().max()
    agree = float((torch.sign(ga[big]) == torch.sign(gf[big])).double().mean())
    # A*: nodes evaluated per second (batched pops, N_C/N_R fast path) vs raw full forward passes
    steps = 3 if quick else 10
    results = {}
    for fast in (True, False):
        e = Evaluator(model, space, batch=64, fast=fast)
        a = AdmissibleAStar(e, "l2", 0.25, 1e9, batch=64)
        n0, t0 = e.evaluations, time.perf_counter()
        for _ in range(steps):
            a.step()
        results[fast] = (e.evaluations - n0) / (time.perf_counter() - t0)
    batch = torch.rand(64, *video.shape)
    with torch.no_grad():
        t_raw = _time(lambda: model(batch), repeats)
    raw = 64 / t_raw
    out = {"target": "msr", "dims": space.dims, "autograd_s": t_auto, "finite_difference_s": t_fd,
           "fd_over_autograd": t_fd / t_auto, "sign_agreement": agree,
           "astar_evals_per_s": results[True], "astar_evals_per_s_no_fast_path": results[False],
           "raw_forward_per_s": raw, "astar_over_raw": results[True] / raw,
           "astar_no_fast_over_raw": results[False] / raw}
    if echo:
        print(f"MSR benchmark: cnn_lstm, 16×64², one flow in 8×8 blocks ({space.dims} dimensions), "
              f"{torch.get_num_threads()} threads, measured in this run")
        print(f"gradient of the margin   autograd {1000 * t_auto:8.1f} ms   finite differences "
              f"{1000 * t_fd:8.1f} ms   ratio {t_fd / t_auto:6.1f}×   sign agreement {agree:.1%}")
        print(f"A* node evaluations/s    {results[True]:8.1f} (N_C/N_R fast path)   "
              f"{results[False]:8.1f} (full model)   raw batched forward {raw:8.1f}/s")
        print(f"ratios vs raw forward    fast path {results[True] / raw:5.2f}×   full model "
              f"{results[False] / raw:5.2f}×")
    return out


def bench_attacks(quick: bool = False, echo: bool = True) -> dict:
    """BO vs brute-force key-frame selection on the same clips, and each attack's wall time divided
    by (its forward passes × one forward + its backward passes × one forward+backward)."""
    import torch.nn.functional as F

    from core.attacks import METHODS, make_attack
    from core.attacks.sweep import test_clips
    from core.models import load_model

    model, spec = load_model("c3d", "cpu")
    n = 2 if quick else 4
    clips = test_clips(n, spec.frames, spec.size)
    x = clips[0][0].unsqueeze(0)
    with torch.no_grad():
        t_fwd = _time(lambda: model(x), 1 if quick else 5)

    def fb():
        xx = x.clone().requires_grad_(True)
        F.cross_entropy(model(xx), torch.tensor([clips[0][1]])).backward()

    t_fb = _time(fb, 1 if quick else 5)
    selection = bench_keyframes(quick, echo=False)
    overhead = {}
    for m in METHODS:
        kw = dict(select="first", max_iters=30, ssim_budget=None) if m == "deepsava" else ({"max_iters": 30} if m in ("sparse", "flicker") else {})
        atk = make_attack(m, model, **kw)
        video, label = clips[0]
        r = atk(video, label)
        fwd_only = r.queries - r.gradients
        ideal = fwd_only * t_fwd + r.gradients * t_fb
        overhead[m] = {"seconds": r.seconds, "forwards": fwd_only, "backwards": r.gradients,
                       "ideal_seconds": ideal, "overhead": r.seconds / ideal if ideal else float("nan")}
    out = {"target": "attacks", "model": "c3d", "clips": n, "forward_s": t_fwd, "forward_backward_s": t_fb,
           "selection": selection, "attacks": overhead}
    if echo:
        print(f"Attack benchmark: c3d, {n} test clips, {torch.get_num_threads()} threads, measured in this run")
        print(f"one forward {1000 * t_fwd:.1f} ms, forward+backward {1000 * t_fb:.1f} ms")
        _print_keyframes(selection)
        print(f"{'attack':<12}{'wall s':>9}{'fwd':>6}{'bwd':>6}{'ideal s':>10}{'wall/ideal':>12}")
        for m, o in overhead.items():
            print(f"{m:<12}{o['seconds']:>9.2f}{o['forwards']:>6}{o['backwards']:>6}{o['ideal_seconds']:>10.2f}"
                  f"{o['overhead']:>12.2f}")
    return out


#: (T, K) cells of the key-frame bench; the issue's goal is judged on (64, 2)
KEYFRAME_CELLS = ((32, 1), (32, 2), (32, 3), (64, 1), (64, 2), (64, 3))
GOAL_CELL = (64, 2)
EXHAUSTIVE_LIMIT = 2500  # brute force scores every mask up to this many; beyond, a uniform sample
REFERENCE_SAMPLE = 1000


def _clips_for(clf, t: int, size: int, n: int) -> list[tuple[int, torch.Tensor, int]]:
    """The first ``n`` test clips of length ``t`` the model classifies correctly (an attack on a
    clip it already gets wrong has nothing to do)."""
    from core.data import make_clip
    from core.data.synthetic import SPLIT_OFFSETS

    out = []
    for j in range(8 * n + 64):
        seed = SPLIT_OFFSETS["test"] + j
        video = make_clip(j % 8, seed, t, size).video
        if clf.predict(video)[0] == j % 8:
            out.append((seed, video, j % 8))
            if len(out) == n:
                break
    return out


def bench_keyframes(quick: bool = False, echo: bool = True, model: str = "cnn_lstm") -> dict:
    """Key-frame selection (DeepSAVA Alg. 1): BO vs random search at equal probes, against brute
    force that scores every mask (all C(T, K) up to :data:`EXHAUSTIVE_LIMIT`, else a uniform sample of
    :data:`REFERENCE_SAMPLE` masks, and then the rank is an estimate). A probe is ``probe_iters`` steps
    of Alg. 2 on one mask, scored by the lowest margin it reached; probes are deterministic, so a mask
    scores the same whoever probes it. Regret = rank of a method's pick among all masks (the fraction
    that score strictly better) and its score gap to the best mask."""
    from core.attacks.deepsava import DeepSAVA
    from core.classifier import as_classifier
    from core.models import load_model

    net, spec = load_model(model, "cpu")
    clf = as_classifier(net, spec)
    cells = ((16, 1),) if quick else KEYFRAME_CELLS
    probe_iters = 2
    out: dict = {"model": model, "probe_iters": probe_iters, "cells": []}
    for t, k in cells:
        n_masks = math.comb(t, k)
        probes = 4 if quick else max(4, min(64, n_masks // 4))
        n_clips = 1 if quick else (10 if (t, k) == GOAL_CELL else 3)
        exhaustive = n_masks <= EXHAUSTIVE_LIMIT
        rows = []
        for seed, video, label in _clips_for(clf, t, spec.size, n_clips):
            row: dict = {"seed": seed, "label": label}
            ref = DeepSAVA(clf, frames=k, select="brute" if exhaustive else "random", probe_iters=probe_iters,
                           bo_trials=REFERENCE_SAMPLE, seed=10_000 + seed, brute_limit=EXHAUSTIVE_LIMIT)
            t0 = time.perf_counter()
            _, trials = ref.select_mask(video, label)
            ref_s = time.perf_counter() - t0
            scores = sorted(tr["score"] for tr in trials)
            row["reference"] = {"seconds": ref_s, "probes": len(trials), "best": scores[0]}
            for sel in ("bo", "random"):
                atk = DeepSAVA(clf, frames=k, select=sel, bo_trials=probes, probe_iters=probe_iters, seed=seed)
                t0 = time.perf_counter()
                mask, tr = atk.select_mask(video, label)
                pick = min(x["score"] for x in tr)
                row[sel] = {"seconds": time.perf_counter() - t0, "mask": mask, "probes": len(tr), "score": pick,
                            "rank_fraction": sum(sc < pick for sc in scores) / len(scores),
                            "score_gap": pick - scores[0]}
            rows.append(row)
            if echo:
                print(f"T {t:3d} K {k}  clip {seed}: reference {len(trials)} probes {ref_s:6.1f} s | "
                      f"BO rank {row['bo']['rank_fraction']:6.1%} {row['bo']['seconds']:5.1f} s | "
                      f"random rank {row['random']['rank_fraction']:6.1%}", flush=True)

        def share(sel: str, rows: list = rows) -> float:
            return sum(r[sel]["rank_fraction"] <= 0.1 for r in rows) / len(rows) if rows else float("nan")

        def median(sel: str, key: str, rows: list = rows) -> float:
            v = sorted(r[sel][key] for r in rows)
            return v[len(v) // 2] if v else float("nan")

        ref_time = sum(r["reference"]["seconds"] for r in rows)
        bo_time = sum(r["bo"]["seconds"] for r in rows)
        out["cells"].append({
            "frames": t, "key_frames": k, "masks": n_masks, "clips": len(rows), "probes": probes,
            "probe_fraction": probes / n_masks,
            "reference": "exhaustive" if exhaustive else f"sample of {REFERENCE_SAMPLE}",
            "bo_in_best_10pct": share("bo"), "random_in_best_10pct": share("random"),
            "bo_median_rank": median("bo", "rank_fraction"), "random_median_rank": median("random", "rank_fraction"),
            "bo_median_gap": median("bo", "score_gap"), "random_median_gap": median("random", "score_gap"),
            "brute_over_bo_time": ref_time / bo_time if exhaustive and bo_time > 0 else None, "rows": rows})
    goal = next((c for c in out["cells"] if (c["frames"], c["key_frames"]) == GOAL_CELL), None)
    out["goal"] = None if goal is None else {
        "cell": list(GOAL_CELL), "bo_in_best_10pct": goal["bo_in_best_10pct"],
        "probe_fraction": goal["probe_fraction"],
        "met": goal["bo_in_best_10pct"] >= 0.9 and goal["probe_fraction"] <= 0.25}
    if echo:
        _print_keyframes(out)
    return out


def _print_keyframes(res: dict) -> None:
    print(f"key-frame selection on {res['model']} (probe = {res['probe_iters']} steps of Alg. 2; "
          "BO and random at equal probes; rank = share of all masks that beat the pick)")
    print(f"{'T':>4}{'K':>3}{'masks':>7}{'clips':>6}{'probes':>7}  {'reference':<16}{'BO top10%':>10}"
          f"{'rand top10%':>12}{'BO rank':>9}{'rand rank':>10}{'BO gap':>8}{'rand gap':>9}{'brute/BO time':>14}")
    for c in res["cells"]:
        ratio = f"{c['brute_over_bo_time']:.2f}×" if c["brute_over_bo_time"] else "—"
        print(f"{c['frames']:>4}{c['key_frames']:>3}{c['masks']:>7}{c['clips']:>6}{c['probes']:>7}  "
              f"{c['reference']:<16}{c['bo_in_best_10pct']:>10.0%}{c['random_in_best_10pct']:>12.0%}"
              f"{c['bo_median_rank']:>9.1%}{c['random_median_rank']:>10.1%}{c['bo_median_gap']:>8.3f}"
              f"{c['random_median_gap']:>9.3f}{ratio:>14}")
    g = res.get("goal")
    if g:
        print(f"goal (T = 64, K = 2: BO in the best 10 % on >= 90 % of clips at <= 1/4 of brute force's probes): "
              f"{g['bo_in_best_10pct']:.0%} at {g['probe_fraction']:.1%} of the probes -> "
              f"{'met' if g['met'] else 'not met'}")


def bench_certify(quick: bool = False, echo: bool = True) -> dict:
    """The MSR bounds of cnn_lstm side by side, on synthetic:translate_left:0 and the bundled real
    clip (Big Buck Bunny), 16-px blocks, ℓ2: the sound certified lower bound (CROWN + branch and
    bound) after 10 s and after the time limit, the upper bound (descent, then FMN restarts) and a
    min-norm baseline (FMN alone from 0 with restarts) in the same time; the ratio lower ÷ upper;
    the certificate on the page defaults (15 flows); the A* grid lower bound with the ``certified``
    heuristic vs ``zero`` after the same time."""
    from core.classifier import as_classifier
    from core.inference import prepare
    from core.models import load_model
    from core.models.registry import ASSETS
    from core.msr import MSRParams, MSRSolver
    from core.msr.space import Evaluator, FlowSpace
    from core.msr.upper import GradientSearch, MinNormSearch
    from core.verify import CertifiedRadius, ModelBounds
    from core.video import open_video

    limit = 4.0 if quick else 60.0
    net, spec = load_model("cnn_lstm", "cpu")
    clf = as_classifier(net, spec)
    clips = {"synthetic:translate_left:0": "synthetic:translate_left:0"}
    real = ASSETS.parent / "samples" / "bigbuckbunny_320x180.mp4"
    if real.exists() and not quick:
        clips["bigbuckbunny (real)"] = str(real)
    rows = []
    for name, src in clips.items():
        video = prepare(open_video(src, spec.frames, spec.size)[0], spec)
        space = FlowSpace(video, flows=[14], block=16)
        cr = CertifiedRadius(clf, space, "l2")
        cert = cr.run(time_limit=limit)
        at10 = max([e["certified_lower"] for e in cert["trace"] if e["seconds"] <= 10.0] + [0.0])
        ev = Evaluator(clf, space)
        gs = GradientSearch(ev, "l2", 0.5)
        t0 = time.perf_counter()
        while not gs.converged and time.perf_counter() - t0 < limit:
            gs.step(quick=gs.iterations == 0)
        upper = gs.best.distance if gs.best else math.inf
        descent_only = GradientSearch(Evaluator(clf, space), "l2", 0.5, restarts=0)
        t0 = time.perf_counter()
        while not descent_only.converged and time.perf_counter() - t0 < limit:
            descent_only.step(quick=descent_only.iterations == 0)
        base_ev = Evaluator(clf, space)
        fmn = MinNormSearch(base_ev, "l2")
        best_fmn = math.inf
        t0 = time.perf_counter()
        best_z = None
        while time.perf_counter() - t0 < limit:
            found: list = []
            fmn.run(best_z, found.append)
            for z in found:
                d = float(space.norm(z, "l2"))
                if d < best_fmn and base_ev.verify(z.float())["adversarial"]:
                    best_fmn, best_z = d, z
            if best_z is None:
                break  # no witness from 0: restarts need one
        page = CertifiedRadius(clf, FlowSpace(video, flows=list(range(15)), block=16), "l2")
        page_res = page.run(time_limit=limit)
        astar = {}
        for key, h, probes in (("zero", "zero", 0), ("certified", "certified", 0), ("nodes", "certified", 2)):
            s = MSRSolver(clf, video, MSRParams(metric="l2", tau=0.5, flows=[14], block=16, heuristic=h, upper=False,
                                                certify=h == "certified", time_limit=limit, max_iters=10_000_000,
                                                node_probes=probes))
            res = s.run_all()
            astar[key] = res["lower"]
        row = {"clip": name, "dims": space.dims, "certified_lower_10s": at10, "certified_lower": cert["certified_lower"],
               "upper": upper, "upper_descent_only": descent_only.best.distance if descent_only.best else None,
               "fmn_baseline": best_fmn if math.isfinite(best_fmn) else None,
               "lower_over_upper": cert["certified_lower"] / upper if math.isfinite(upper) else None,
               "page_defaults_certified_lower": page_res["certified_lower"], "page_note": page_res["note"],
               "astar_lower_zero": astar["zero"], "astar_lower_certified": astar["certified"],
               "astar_lower_certified_nodes": astar["nodes"]}
        rows.append(row)
        if echo:
            up = f"{upper:.1f}" if math.isfinite(upper) else "none"
            print(f"{name}: 1 flow, 16-px blocks, ℓ2 ({space.dims} dims), {limit:.0f} s each, 1 torch thread "
                  f"(crown+ steps on {ModelBounds.workers} threads)", flush=True)
            print(f"  certified lower (sound)  {at10:.3f} after 10 s, {cert['certified_lower']:.3f} after {limit:.0f} s "
                  f"({cert['boxes']} boxes)")
            print(f"  upper (verified witness) {up}   descent alone {row['upper_descent_only']}   FMN baseline "
                  f"{row['fmn_baseline']}")
            ratio = row["lower_over_upper"]
            print(f"  certified lower / upper  {ratio:.2%}" if ratio is not None else "  certified lower / upper  —")
            print(f"  page defaults (15 flows, {page.space.dims} dims): certified lower {page_res['certified_lower']:.4g}"
                  + (f" — {page_res['note']}" if page_res["note"] else ""))
            print(f"  A* grid lower after {limit:.0f} s: zero heuristic {astar['zero']:.2f}, certified heuristic "
                  f"{astar['certified']:.2f}, certified with node radii (2 probes per batch) {astar['nodes']:.2f}")
    pairs = _certified_vs_regular(limit, echo) if (ASSETS / "cnn_lstm_certified.json").exists() else []
    return {"target": "certify", "model": "cnn_lstm", "time_limit_s": limit, "rows": rows, "certified_model": pairs}


def _certified_vs_regular(limit: float, echo: bool) -> list[dict]:
    """cnn_lstm vs cnn_lstm_certified on synthetic:translate_left:0, ℓ2, 16-px blocks, 1 flow and the
    page defaults (15 flows): sound certified lower bound and verified upper bound, ``limit`` s each."""
    from core.classifier import as_classifier
    from core.inference import prepare
    from core.models import load_model
    from core.msr.space import Evaluator, FlowSpace
    from core.msr.upper import GradientSearch
    from core.verify import CertifiedRadius
    from core.video import open_video

    out = []
    for name in ("cnn_lstm", "cnn_lstm_certified"):
        net, spec = load_model(name, "cpu")
        clf = as_classifier(net, spec)
        video = prepare(open_video("synthetic:translate_left:0", spec.frames, spec.size)[0], spec)
        for flows in ([14], list(range(15))):
            space = FlowSpace(video, flows=flows, block=16)
            cert = CertifiedRadius(clf, space, "l2").run(time_limit=limit)["certified_lower"]
            gs = GradientSearch(Evaluator(clf, space), "l2", 0.5)
            t0 = time.perf_counter()
            while not gs.converged and time.perf_counter() - t0 < limit:
                gs.step(quick=gs.iterations == 0)
            up = gs.best.distance if gs.best else math.inf
            row = {"model": name, "flows": len(flows), "dims": space.dims, "certified_lower": cert,
                   "upper": up if math.isfinite(up) else None, "lower_over_upper": cert / up if math.isfinite(up) else None}
            out.append(row)
            if echo:
                ratio = f"{row['lower_over_upper']:.2%}" if row["lower_over_upper"] is not None else "—"
                print(f"{name:20s} {len(flows):2d} flow(s): certified lower {cert:.4g}, upper "
                      f"{up:.4g}, lower / upper {ratio}", flush=True)
    return out


def bench_ray(quick: bool = False, echo: bool = True) -> dict:
    """Two jobs over N clips, each serially, on a local Ray with 1 worker and with 2 workers, side by
    side, no cache: a transfer job of cheap tasks (one-shot on c3d, judged on c3d and frame_cnn) and a
    sweep of heavier tasks (saliency-RG on cnn_lstm, one task per clip); and Ray's overhead on a
    4-clip job."""
    import os
    import time

    import ray

    from core.attacks.sweep import sweep_jobs
    from core.experiments.transfer import transfer_matrix

    old = os.environ.get("VRD_CACHE_DIR")
    os.environ["VRD_CACHE_DIR"] = "off"
    n = 8 if quick else 64
    jobs = {
        "transfer (one-shot)": lambda clips, engine, workers: transfer_matrix(
            ["c3d"], ["c3d", "frame_cnn"], "one-shot", clips, {"eps": 0.02}, engine=engine, workers=workers)["fr"],
        "sweep (saliency-RG)": lambda clips, engine, workers: [
            (r["FR"], r["attacked"]) for r in sweep_jobs(["cnn_lstm"], ["saliency-rg"], n_clips=clips,
                                                        eps_values=[0.01], engine=engine, workers=workers)["rows"]],
    }
    out: dict = {"clips": n, "jobs": {}}
    try:
        for job, fn in jobs.items():
            res: dict = {}
            runs = (("serial", "serial", 1, n), ("ray 1 worker", "ray", 1, n), ("ray 2 workers", "ray", 2, n))
            if job.startswith("transfer"):
                runs += (("serial 4 clips", "serial", 1, 4), ("ray 2 workers 4 clips", "ray", 2, 4))
            for label, engine, workers, clips in runs:
                if engine == "ray":
                    ray.shutdown()
                t0 = time.perf_counter()
                value = fn(clips, engine, workers)
                res[label] = {"seconds": time.perf_counter() - t0, "result": value}
                if echo:
                    print(f"{job:22s} {label:24s} {res[label]['seconds']:7.2f} s  {value}", flush=True)
            s, r1, r2 = (res[k]["seconds"] for k in ("serial", "ray 1 worker", "ray 2 workers"))
            res["ratios"] = {"ray 1 worker / ray 2 workers": r1 / r2, "serial / ray 2 workers": s / r2,
                             "same results": res["serial"]["result"] == res["ray 1 worker"]["result"]
                             == res["ray 2 workers"]["result"]}
            if "serial 4 clips" in res:
                res["ratios"]["ray overhead 4 clips (s)"] = (res["ray 2 workers 4 clips"]["seconds"]
                                                             - res["serial 4 clips"]["seconds"])
            out["jobs"][job] = res
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("VRD_CACHE_DIR", None)
        else:
            os.environ["VRD_CACHE_DIR"] = old
    if echo:
        for job, res in out["jobs"].items():
            for k, v in res["ratios"].items():
                print(f"{job:22s} {k:32s} {v:.2f}" if isinstance(v, float) else f"{job:22s} {k:32s} {v}")
    return out


BENCHES = {"flow": bench_flow, "msr": bench_msr, "attacks": bench_attacks, "keyframes": bench_keyframes,
           "certify": bench_certify, "ray": bench_ray}


def run_bench(target: str, quick: bool = False, echo: bool = True) -> dict:
    if target not in BENCHES:
        from core.errors import ParameterError

        raise ParameterError(f"unknown benchmark {target!r}; expected one of {', '.join(BENCHES)}")
    return BENCHES[target](quick, echo)
