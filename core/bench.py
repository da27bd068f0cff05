"""``python -m core bench TARGET``: speed measured side by side in one run, printed as ratios.

Benchmarks never assert a speed; they print what they measured on this machine.
"""

from __future__ import annotations

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
            t = _time(lambda: compute_flow(clip.video, m), repeats)
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


def run_bench(target: str, quick: bool = False, echo: bool = True) -> dict:
    if target == "flow":
        return bench_flow(quick, echo)
    from core.errors import ParameterError

    raise ParameterError(f"unknown benchmark {target!r}")
