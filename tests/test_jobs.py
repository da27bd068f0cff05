"""Dataset-scale jobs: a real local Ray (2 workers) gives the serial results; caching; cancel."""

import pytest

from core.errors import ParameterError
from core.experiments.transfer import transfer_matrix, transfer_task
from core.jobs import ray_available, run_tasks


def square(x: int) -> int:
    return x * x


def test_serial_runner_caches_and_cancels(tmp_path, monkeypatch):
    monkeypatch.setenv("VRD_CACHE_DIR", str(tmp_path))
    tasks = [{"x": i} for i in range(5)]
    first = run_tasks(square, tasks, engine="serial")
    assert first["results"] == [0, 1, 4, 9, 16] and first["computed"] == 5 and first["cached"] == 0
    again = run_tasks(square, tasks + [{"x": 7}], engine="serial")  # a re-run computes only what is missing
    assert again["results"][-1] == 49 and again["cached"] == 5 and again["computed"] == 1
    seen = []
    stopped = run_tasks(square, [{"x": i} for i in range(10, 14)], engine="serial",
                        progress=lambda f, m: seen.append(f), should_stop=lambda: len(seen) >= 3)
    assert stopped["cancelled"] == 2 and stopped["results"][2:] == [None, None] and seen[-1] == 0.5
    with pytest.raises(ParameterError, match="engine"):
        run_tasks(square, tasks, engine="spark")


def test_transfer_matrix_values_and_checks():
    out = transfer_matrix(["c3d"], ["c3d", "frame_cnn"], "one-shot", clips=3, attack_kw={"eps": 0.02},
                          engine="serial")
    assert out["sources"] == ["c3d"] and out["targets"] == ["c3d", "frame_cnn"]
    one = transfer_task("c3d", 1, "one-shot", {"eps": 0.02}, ["c3d", "frame_cnn"])
    assert one["label"] == 1 and set(one["targets"]) == {"c3d", "frame_cnn"}
    for j, t in enumerate(out["targets"]):
        n, k = out["n"][0][j], out["fooled"][0][j]
        assert 0 <= k <= n <= 3 and (out["fr"][0][j] == (k / n if n else None))
        assert len(out["examples"][0][j]) == k
    assert out["fr"][0][0] == 1.0  # white-box one-shot at ε = 0.02 fools c3d on these clips
    with pytest.raises(ParameterError, match="unknown model"):
        transfer_matrix(["nope"], ["c3d"], "one-shot", clips=1)
    with pytest.raises(ParameterError):
        transfer_matrix(["c3d"], ["c3d"], "one-shot", clips=0)


@pytest.mark.skipif(not ray_available(), reason="ray is not installed")
def test_a_real_local_ray_gives_the_serial_results(tmp_path, monkeypatch):
    import ray

    monkeypatch.setenv("VRD_CACHE_DIR", "off")
    kw = dict(sources=["c3d", "frame_cnn"], targets=["c3d", "frame_cnn"], method="one-shot", clips=3,
              attack_kw={"eps": 0.02})
    from core.attacks.sweep import sweep_jobs

    serial = transfer_matrix(**kw, engine="serial")
    skw = dict(n_clips=2, eps_values=[0.02])
    sweep_serial = sweep_jobs(["c3d", "frame_cnn"], ["one-shot", "saliency-rg"], engine="serial", **skw)
    try:
        par = transfer_matrix(**kw, engine="ray", workers=2)
        assert par["engine"] == "ray" and ray.is_initialized()
        assert ray.cluster_resources().get("CPU") == 2
        sweep_ray = sweep_jobs(["c3d", "frame_cnn"], ["one-shot", "saliency-rg"], engine="ray", **skw)
    finally:
        ray.shutdown()
    assert sweep_ray["engine"] == "ray"
    assert [(r["model"], r["method"], r["FR"], r["successes"]) for r in sweep_ray["rows"]] == \
        [(r["model"], r["method"], r["FR"], r["successes"]) for r in sweep_serial["rows"]]
    for k in ("fr", "n", "fooled", "examples"):
        assert par[k] == serial[k], k


def _comparable(rows):
    drop = ("mean_seconds",)
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_sweep_jobs_equal_the_in_process_sweep(monkeypatch):
    import math

    from core.attacks.sweep import sweep, sweep_jobs
    from core.models import load_classifier

    monkeypatch.setenv("VRD_CACHE_DIR", "off")
    kw = dict(n_clips=3, eps_values=[0.005, 0.02])
    ref = sweep({"c3d": load_classifier("c3d")}, ["one-shot"], **kw)
    jobs = sweep_jobs(["c3d"], ["one-shot"], engine="serial", **kw)
    a, b = _comparable(ref["rows"]), _comparable(jobs["rows"])
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        for k in x:
            if isinstance(x[k], float) and math.isnan(x[k]):
                assert math.isnan(y[k]), k
            else:
                assert x[k] == (pytest.approx(y[k]) if isinstance(x[k], float) else y[k]), k
    with pytest.raises(ParameterError, match="unknown model"):
        sweep_jobs(["nope"], ["one-shot"])


def test_msr_over_clips_as_jobs(tmp_path, monkeypatch):
    from core.experiments.msr_set import msr_over_clips, msr_task

    monkeypatch.setenv("VRD_CACHE_DIR", str(tmp_path))
    params = {"metric": "l2", "tau": 0.5, "budget": 300.0, "flows": [14], "block": 32, "max_iters": 4,
              "certify": False}
    out = msr_over_clips("cnn_lstm", 2, params, engine="serial")
    assert [r["clip"] for r in out["rows"]] == [0, 1] and out["computed"] == 2
    for r in out["rows"]:
        assert 0 <= r["lower"] <= r["upper"] <= 300 and r["iterations"] == 4 and r["lower_guarantee"] == "grid"
        assert {b["name"]: b["guarantee"] for b in r["bounds"]}["upper_msr"] == "sound"  # every bound says what it rests on
    assert msr_task("cnn_lstm", 1, params)["lower"] == out["rows"][1]["lower"]  # deterministic without a time bind
    again = msr_over_clips("cnn_lstm", 3, params, engine="serial")  # 2 cached, 1 new
    assert again["cached"] == 2 and again["computed"] == 1 and again["rows"][:2] == out["rows"]
    both = msr_over_clips(["cnn_lstm", "c3d"], 2, params, engine="serial")  # side by side: cnn_lstm cached
    assert [(r["model"], r["clip"]) for r in both["rows"]] == [("cnn_lstm", 0), ("cnn_lstm", 1), ("c3d", 0), ("c3d", 1)]
    assert both["cached"] == 2 and both["models"] == ["cnn_lstm", "c3d"]
    assert [s["model"] for s in both["summary"]] == ["cnn_lstm", "c3d"] and both["summary"][0]["clips"] == 2
    from core.viz.msr import msr_set_figure

    fig = msr_set_figure(both["rows"], 300.0)
    assert list(fig.data[0].x[0]) == ["cnn_lstm", "cnn_lstm", "c3d", "c3d"]  # grouped by model
    with pytest.raises(ParameterError, match="unknown model"):
        msr_over_clips(["cnn_lstm", "resnet"], 1, params)
    with pytest.raises(ParameterError, match="tau"):
        msr_over_clips("cnn_lstm", 1, {**params, "tau": 0})


def test_msr_set_summary_compares_models_on_the_clips_every_model_gets_right():
    """The side-by-side summary of ``msrset``: ratios certified lower ÷ sound upper over the clips
    that every model classifies correctly only; a clip without a finite upper bound has no ratio."""
    from core.experiments.msr_set import msr_set_summary

    def row(m, clip, low, up, ok=True):
        return {"model": m, "clip": clip, "label": "a", "predicted": "a" if ok else "b", "certified_lower": low,
                "upper_msr": up}

    rows = [row("reg", 0, 0.5, 50.0), row("reg", 1, 0.2, 10.0), row("reg", 2, 1.0, 20.0), row("reg", 3, 0.1, 5.0),
            row("cert", 0, 4.0, 10.0), row("cert", 1, 1.0, 2.0, ok=False), row("cert", 2, 3.0, 20.0),
            row("cert", 3, 1.0, float("inf"))]
    reg, cert = msr_set_summary(rows, ["reg", "cert"])
    assert (reg["clips"], reg["correct"], reg["compared"]) == (4, 4, 3)  # clip 1: cert gets it wrong
    assert (cert["clips"], cert["correct"], cert["compared"]) == (4, 3, 3)
    assert reg["ratio_median"] == pytest.approx(0.02) and reg["ratio_min"] == pytest.approx(0.01)
    assert reg["ratio_max"] == pytest.approx(0.05) and reg["ratio_at_goal"] == 0
    assert cert["ratio_median"] == pytest.approx(0.275)  # clips 0 and 2 (0.4, 0.15); clip 3 has no upper bound
    assert (cert["ratio_min"], cert["ratio_max"], cert["ratio_at_goal"]) == (pytest.approx(0.15), 0.4, 1)
    assert cert["certified_lower_median"] == 3.0 and cert["upper_msr_median"] == 15.0
    none = msr_set_summary([{**r, "certified_lower": None} for r in rows])  # --no-certify: no ratios
    assert [s["model"] for s in none] == ["reg", "cert"] and none[0]["ratio_median"] is None


def test_transfer_cells_count_only_clips_both_models_get_right():
    from core.experiments.transfer import aggregate

    def rec(clip, src_ok, t):  # t: {target: (clean_ok, fooled)}
        return {"source": "A", "clip": clip, "source_clean_ok": src_ok,
                "targets": {k: {"clean_ok": ok, "fooled": f} for k, (ok, f) in t.items()}}

    results = [rec(0, True, {"A": (True, True), "B": (True, False)}),
               rec(1, True, {"A": (True, True), "B": (False, None)}),  # B wrong when clean: not in B's n
               rec(2, False, {"A": (False, None), "B": (True, None)}),  # source wrong: in nobody's n
               None]  # a cancelled task
    out = aggregate(["A"], ["A", "B"], results)
    assert out["n"] == [[2, 1]] and out["fooled"] == [[2, 0]] and out["fr"] == [[1.0, 0.0]]
    assert out["examples"] == [[[0, 1], []]]
    assert aggregate(["A"], ["B"], [rec(0, False, {"B": (True, None)})])["fr"] == [[None]]  # nothing qualified


def test_sweep_jobs_skip_what_the_judge_gets_wrong(monkeypatch):
    """A judge that always answers class 0: clips of other classes are skipped in both sweeps."""
    import torch

    import core.experiments.transfer as tr
    from core.attacks.sweep import sweep, sweep_jobs
    from core.classifier import VideoClassifier
    from core.models import load_classifier

    class Zero(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 8) + 0.0 * x.mean()
            out[:, 0] = 1.0
            return out

    zero = VideoClassifier(Zero(), load_classifier("c3d").spec)
    monkeypatch.setenv("VRD_CACHE_DIR", "off")
    monkeypatch.setattr(tr, "_model", lambda name: zero)
    jobs = sweep_jobs(["c3d"], ["one-shot"], n_clips=3, engine="serial")
    ref = sweep({"c3d": zero}, ["one-shot"], n_clips=3)
    for out in (jobs, ref):
        assert out["rows"][0]["skipped_misclassified"] == 2 and out["rows"][0]["attacked"] == 1
