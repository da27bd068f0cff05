import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_models_json():
    r = run("models", "--json")
    assert r.returncode == 0, r.stderr
    models = json.loads(r.stdout)["models"]
    names = {m["name"] for m in models}
    assert {"cnn_lstm", "c3d", "frame_cnn", "motion_stream"} <= names
    for m in models:
        assert m["frames"] == 16 and m["size"] == 64 and len(m["classes"]) == 8
        assert 0.9 <= m["test_accuracy"] <= 1.0 and len(m["sha256"]) == 64


def test_predict_synthetic_json():
    r = run("predict", "synthetic:rotate_ccw:2000005", "--model", "c3d", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "c3d" and out["true_label"] == "rotate_ccw"
    assert abs(sum(out["probs"].values()) - 1) < 1e-5
    assert out["label"] == max(out["probs"], key=out["probs"].get)
    assert out["confidence"] == max(out["probs"].values())


def test_predict_file(tmp_path):
    from core.data import make_clip
    from core.video import write_video

    p = write_video(tmp_path / "clip.mp4", make_clip("zoom_in", 4).video, scale=2)
    r = run("predict", str(p), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["video"]["width"] == 128 and out["video"]["codec"] == "h264"


def test_errors_exit_nonzero_with_one_line(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"definitely not a video" * 20)
    for args in (("predict", str(bad), "--json"), ("predict", "synthetic:fly:1", "--json"),
                 ("predict", str(tmp_path / "missing.mp4"))):
        r = run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stdout == "" and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_compare_video_and_image(tmp_path):
    r = run("compare", "synthetic:rotate_cw:1", "--transform", "rotate=5,zoom=0.95,noise=0.02", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"ssim", "l1", "l2", "linf", "l21"} and 0 < out["ssim"] < 1 and out["l2"] > 0
    import cv2
    import numpy as np

    from core.data import make_clip

    img = (make_clip("zoom_in", 2).video[0].permute(1, 2, 0).numpy()[..., ::-1] * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "f.png"), img)
    r = run("compare", str(tmp_path / "f.png"), "--transform", "rotate=0", "--json")
    out = json.loads(r.stdout)
    assert out["kind"] == "image" and "l21" not in out and out["ssim"] == 1.0 and out["l2"] == 0.0


def test_compare_errors():
    for t in ("rotate=500", "wobble=1", "rotate"):
        r = run("compare", "synthetic:rotate_cw:1", "--transform", t)
        assert r.returncode == 2 and r.stderr.startswith("error: ")


def test_flow_cli(tmp_path):
    r = run("flow", "synthetic:translate_right:3", "--method", "farneback", "--json", "--out", str(tmp_path / "f.npy"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["shape"] == [15, 2, 64, 64] and out["max_magnitude"] >= out["mean_magnitude"] > 0
    import numpy as np

    assert np.load(tmp_path / "f.npy").shape == (15, 2, 64, 64)
    r = run("flow", "--eval", "--methods", "farneback,horn_schunck", "--clips-per-class", "1", "--json")
    ev = json.loads(r.stdout)
    assert set(ev["methods"]) == {"farneback", "horn_schunck"}
    assert all(v["epe"] < ev["zero_flow_epe"] for v in ev["methods"].values())
    r = run("flow", "--json")
    assert r.returncode == 2


def test_bench_flow_prints_ratios():
    r = run("bench", "flow", "--quick")
    assert r.returncode == 0, r.stderr
    assert "×fb" in r.stdout and "horn_schunck" in r.stdout and "tvl1" in r.stdout


def test_msr_cli_json_and_witness(tmp_path):
    out_mp4 = tmp_path / "adv.mp4"
    r = run("msr", "synthetic:rotate_cw:2000004", "--model", "cnn_lstm", "--metric", "l2", "--tau", "0.25",
            "--budget", "200", "--block", "16", "--max-iters", "25", "--time-limit", "60", "--json",
            "--save-witness", str(out_mp4), "--no-cache")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"trace", "lower", "upper", "exact", "robust_within_budget", "witness", "safe_example", "params"}
    assert 0 <= out["lower"] <= out["upper"] <= 200
    lows = [e["lower"] for e in out["trace"]]
    ups = [e["upper"] for e in out["trace"]]
    assert lows == sorted(lows) and ups == sorted(ups, reverse=True)
    assert out["safe_example"]["flow_distance"] <= out["lower"] + 1e-9
    if out["witness"] is not None:
        w = out["witness"]
        assert w["adv_label"] != w["orig_label"] and w["flow_distance"] == out["upper"]
        assert w["measured_flow_distance"] > 0
        from core.models import load_model
        from core.video import read_video

        model, spec = load_model("cnn_lstm", "cpu")
        adv, _ = read_video(out_mp4, spec.frames, spec.size)  # H.264 round trip: lossy, so only a sanity check
        assert adv.shape == (16, 3, 64, 64)


def test_msr_cli_bad_parameters():
    r = run("msr", "synthetic:rotate_cw:1", "--tau", "0", "--json")
    assert r.returncode == 2 and "tau" in r.stderr
    r = run("msr", "synthetic:rotate_cw:1", "--block", "5", "--json")
    assert r.returncode == 2 and "block" in r.stderr
    r = run("msr", "synthetic:rotate_cw:1", "--flows", "3,x", "--json")
    assert r.returncode == 2


def test_bench_msr_prints_ratios():
    r = run("bench", "msr", "--quick")
    assert r.returncode == 0, r.stderr
    assert "sign agreement" in r.stdout and "fast path" in r.stdout


def test_bench_attacks_prints_selection_and_overheads():
    r = run("bench", "attacks", "--quick")
    assert r.returncode == 0, r.stderr
    assert "key-frame selection on cnn_lstm" in r.stdout and "brute/BO time" in r.stdout
    assert "wall/ideal" in r.stdout
    for m in ("one-shot", "saliency-rg", "deepsava", "sparse", "flicker"):
        assert m in r.stdout


def _strict(text: str):
    """``json.loads`` that refuses NaN/Infinity (Python accepts them; JSON does not)."""
    def refuse(c):
        raise ValueError(f"not JSON: {c}")
    return json.loads(text, parse_constant=refuse)


def test_msr_json_is_strict_and_the_budget_is_never_an_msr_bound():
    """Robust within a tiny budget: FMSR's bracket is [d, d + ε], but MSR's upper bound is the
    distance of a verified adversarial video (beyond d) or null — never the budget."""
    r = run("msr", "synthetic:translate_left:0", "--model", "cnn_lstm", "--budget", "0.5", "--tau", "0.5",
            "--flows", "14", "--max-iters", "3", "--no-certify", "--json", "--no-cache")
    assert r.returncode == 0, r.stderr
    out = _strict(r.stdout)
    assert out["robust_within_budget"] and out["lower"] == out["upper"] == 0.5
    named = {b["name"]: b for b in out["bounds"]}
    assert named["upper"]["guarantee"] == "grid" and "d + ε" in named["upper"]["meaning"]
    w = out["witness"]
    if w is None:
        assert out["upper_msr"] is None
    else:
        assert not w["within_budget"] and 0.5 < out["upper_msr"] <= w["flow_distance"]


def test_msr_without_a_witness_prints_null():
    from core.jsonutil import dumps
    from core.msr import MSRParams, MSRSolver
    from tests.test_msr import BLOCK, TAU, _problem

    video, model, *_ = _problem("l2")
    s = MSRSolver(model, video, MSRParams(metric="l2", tau=TAU, budget=0.1, flows=[0], block=BLOCK, max_iters=3,
                                          upper=False, certify=False))
    res = s.run_all()
    assert res["upper_msr"] == float("inf") and res["robust_within_budget"]
    assert _strict(dumps(res))["upper_msr"] is None


def test_jsonutil_clean():
    import math

    import numpy as np
    import torch

    from core.jsonutil import dumps
    from core.types import Metric

    doc = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], Metric.L2: Metric.LINF, "t": torch.tensor([1, 2]),
           "n": np.float32(0.25), "s": {3}, "tup": (1, "x")}
    assert _strict(dumps(doc)) == {"a": None, "b": [None, None, 1.5], "l2": "linf", "t": [1, 2], "n": 0.25,
                                   "s": [3], "tup": [1, "x"]}


def test_transfer_and_compress_cli():
    r = run("transfer", "--sources", "c3d", "--targets", "c3d,motion_stream_farneback", "--method", "one-shot",
            "--eps", "0.02", "--clips", "2", "--engine", "serial", "--json")
    assert r.returncode == 0, r.stderr
    out = _strict(r.stdout)
    assert set(out) >= {"sources", "targets", "fr", "n", "params"}
    assert out["targets"] == ["c3d", "motion_stream_farneback"] and len(out["fr"][0]) == 2
    assert out["params"] == {"method": "one-shot", "clips": 2, "eps": 0.02}
    r = run("compress", "synthetic:rotate_cw:2000004", "--model", "c3d", "--method", "saliency-rg", "--codec", "jpeg",
            "--quality", "95,50", "--json")
    assert r.returncode == 0, r.stderr
    out = _strict(r.stdout)
    assert out["codec"] == "jpeg" and [lv["level"] for lv in out["levels"]] == [95.0, 50.0]
    assert out["attack"]["success"]
    for lv in out["levels"]:
        assert lv["survives"] == (lv["clean_ok"] and lv["adv_fooled"])
    r = run("compress", "synthetic:rotate_cw:1", "--method", "one-shot", "--crf", "99", "--json")
    assert r.returncode == 2 and "crf" in r.stderr


def test_certified_training_cli_refuses_what_it_cannot_train():
    r = run("train", "--model", "c3d", "--certified", "--json")
    assert r.returncode == 2 and "certified training supports cnn_lstm" in r.stderr
    r = run("train", "--model", "cnn_lstm", "--certified", "--flow-px", "2", "--json")
    assert r.returncode == 2 and "flow_px" in r.stderr
    r = run("msrset", "--model", "cnn_lstm,resnet", "--json")
    assert r.returncode == 2 and "shipped models" in r.stderr


def test_msr_cli_certified_heuristic_with_node_radii():
    r = run("msr", "synthetic:translate_left:0", "--model", "cnn_lstm_certified", "--flows", "14",
            "--heuristic", "certified", "--node-probes", "1", "--cert-method", "crown", "--max-iters", "4",
            "--json", "--no-cache")
    assert r.returncode == 0, r.stderr
    out = _strict(r.stdout)
    assert out["params"]["node_probes"] == 1 and out["params"]["cert_method"] == "crown"
    assert out["node_probes"] >= 1 and out["certified_method"] in ("crown", "crown → crown+", "crown → crown+ → crown++")
    assert out["certified_lower"] > 0 and out["lower"] >= out["certified_lower"] - 1e-9  # f ≥ r0
    r = run("msr", "synthetic:translate_left:0", "--node-probes", "-1", "--json")
    assert r.returncode == 2 and "node_probes" in r.stderr


def test_certify_json_contract_and_bad_input():
    """``python -m core certify``: the anytime run (sound lower bound, its trace, the space, the
    methods that ran), one radius, and clear non-zero exits for absurd parameters and models that
    cannot be certified."""
    r = run("certify", "synthetic:translate_left:0", "--model", "cnn_lstm_certified", "--metric", "l2",
            "--flows", "14", "--block", "16", "--time-limit", "20", "--json")  # crown+ by ≈ 2 s here
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["guarantee"] == "sound" and out["certified_lower"] > 1.0 and out["model"] == "cnn_lstm_certified"
    assert out["space"] == {"flows": [14], "block": 16, "dims": 32}
    assert out["method"] in ("crown+", "crown+ → crown++") and out["seconds"] < 60  # the stages that ran (default)
    lows = [e["certified_lower"] for e in out["trace"]]
    assert lows == sorted(lows) and lows[-1] == out["certified_lower"]
    r = run("certify", "synthetic:translate_left:0", "--flows", "14", "--radius", "0.05", "--json")
    assert r.returncode == 0, r.stderr
    one = json.loads(r.stdout)
    assert one["certified"] is True and one["margin_lower"] > 0 and one["radius"] == 0.05
    assert one["method"] == "crown+"  # the default, and what ran
    assert "diagnosis" not in one and "bounds" not in one
    r = run("certify", "synthetic:translate_left:0", "--model", "c3d", "--flows", "14", "--radius", "0.05",
            "--diagnose", "--json")
    assert r.returncode == 0, r.stderr
    c3 = json.loads(r.stdout)
    assert c3["method"] == "crown"  # c3d: crown+ has no per-step CNN to tighten, CROWN runs
    assert set(c3["bounds"]) == {"ibp", "crown"} and c3["margin_lower"] >= c3["bounds"]["crown"]
    assert c3["diagnosis"]["steps"][0]["step"] == "all"  # --diagnose: where the probe loses
    bad = run("certify", "synthetic:translate_left:0", "--flows", "14", "--diagnose", "--json")
    assert bad.returncode != 0 and "--radius" in bad.stderr
    bad = run("certify", "synthetic:translate_left:0", "--flows", "14", "--radius", "-1", "--json")
    assert bad.returncode != 0 and "radius" in bad.stderr
    bad = run("certify", "synthetic:translate_left:0", "--model", "motion_stream", "--flows", "14", "--json")
    assert bad.returncode != 0 and "cannot be certified" in bad.stderr


class _UserModel(torch.nn.Module):
    """A user's model: (B, 8, 3, 32, 32) → 4 logits from the mean colour."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.lin(x.mean(dim=(1, 3, 4)))


def test_cli_runs_a_user_torchscript_model(tmp_path):
    """``--model FILE.pt --spec FILE``: what the pages' "Upload TorchScript…" runs, from the CLI —
    fitted to the spec's input, named after the file, refused clearly where it cannot run."""
    torch.manual_seed(0)
    model = _UserModel()
    path, spec = tmp_path / "mine.pt", tmp_path / "mine.yaml"
    torch.jit.script(model).save(str(path))
    spec.write_text("frames: 8\nsize: 32\nclasses: [a, b, c, d]\n")
    r = run("predict", "synthetic:rotate_cw:0", "--model", str(path), "--spec", str(spec), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    from core.data import make_clip
    from core.inference import prepare
    from core.models import ModelSpec

    clip = prepare(make_clip("rotate_cw", 0).video, ModelSpec("mine", 8, 32, list("abcd"), {}))
    with torch.no_grad():
        want = model(clip.unsqueeze(0))[0]
    assert out["model"] == "mine" and out["logits"] == pytest.approx(want.tolist(), abs=1e-5)
    assert out["label"] == "abcd"[int(want.argmax())]
    r = run("msr", "synthetic:rotate_cw:0", "--model", str(path), "--spec", str(spec), "--flows", "3",
            "--max-iters", "5", "--time-limit", "10", "--no-cache", "--json")
    assert r.returncode == 0, r.stderr
    msr = json.loads(r.stdout)
    assert msr["lower"] > 0 and msr["certified_lower"] is None and "opaque" in msr["certified_note"]
    r = run("attack", "synthetic:rotate_cw:0", "--model", str(path), "--spec", str(spec), "--method", "one-shot",
            "--eps", "0.05", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["distances"]["linf"] == pytest.approx(0.05, abs=1e-4)  # gradients went through
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    for args, says in (((str(path),), "--spec"), ((str(path), "--spec", str(tmp_path / "none.yaml")), "cannot read"),
                       ((str(bad), "--spec", str(spec)), "not a TorchScript"), (("nope",), "neither a shipped"),
                       ((str(tmp_path / "gone.pt"), "--spec", str(spec)), "no TorchScript model file"),
                       (("cnn_lstm", "--spec", str(spec)), "shipped model")):
        r = run("predict", "synthetic:rotate_cw:0", "--model", *args, "--json")
        assert r.returncode == 2 and says in r.stderr and r.stdout == "", (args, r.stderr)
    r = run("certify", "synthetic:rotate_cw:0", "--model", str(path), "--spec", str(spec), "--json")
    assert r.returncode == 2 and "cannot be certified" in r.stderr and "opaque" in r.stderr


def test_cli_loads_a_model_trained_into_a_folder(tmp_path, monkeypatch):
    """``train --out DIR`` writes ``DIR/NAME.{pt,json}``; ``--model DIR/NAME.pt`` loads it with its card
    (sha256 checked), and ``train --certified`` passes the threat options through."""
    import shutil

    from core.cli import main
    from core.models.registry import ASSETS

    for ext in ("pt", "json"):
        shutil.copy(ASSETS / f"c3d.{ext}", tmp_path / f"c3d.{ext}")
    shipped = run("predict", "synthetic:rotate_ccw:2000005", "--model", "c3d", "--json")
    mine = run("predict", "synthetic:rotate_ccw:2000005", "--model", str(tmp_path / "c3d.pt"), "--json")
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout)["probs"] == json.loads(shipped.stdout)["probs"]
    with open(tmp_path / "c3d.pt", "ab") as f:
        f.write(b"tampered")
    bad = run("predict", "synthetic:rotate_ccw:2000005", "--model", str(tmp_path / "c3d.pt"), "--json")
    assert bad.returncode == 2 and "sha256 mismatch" in bad.stderr
    import core.models.certtrain as ct

    seen = {}
    monkeypatch.setattr(ct, "certified_train", lambda *a, **k: seen.update(k, base=a[0]) or {"ok": True})
    assert main(["train", "--model", "cnn_lstm", "--certified", "--threat", "ball", "--radius", "6",
                 "--init", "cnn_lstm_certified", "--out", str(tmp_path / "run"), "--json"]) == 0
    assert seen["base"] == "cnn_lstm" and seen["threat"] == "ball" and seen["radius"] == 6.0
    assert seen["init"] == "cnn_lstm_certified" and str(seen["out_dir"]) == str(tmp_path / "run")
    assert seen["orthant"] is False
    (tmp_path / "run").mkdir(exist_ok=True)  # --init from a folder that `train --out DIR` wrote
    for ext in ("pt", "json"):
        shutil.copy(ASSETS / f"cnn_lstm_certified.{ext}", tmp_path / "run" / f"cnn_lstm_certified.{ext}")
    init = str(tmp_path / "run" / "cnn_lstm_certified.pt")
    assert main(["train", "--model", "cnn_lstm", "--certified", "--threat", "ball", "--orthant", "--init", init,
                 "--json"]) == 0
    assert seen["init"] == init and seen["orthant"] is True
    bad = run("train", "--model", "cnn_lstm", "--certified", "--init", str(tmp_path / "c3d.json"), "--json")
    assert bad.returncode == 2 and "--init must be a shipped model" in bad.stderr


def test_train_certified_recipe_shipped_runs_the_chain_and_refuses_mixed_options(tmp_path, monkeypatch, capsys):
    """``train --certified --recipe shipped`` hands the whole chain to ``certified_chain``; options
    that the recipe fixes, or the recipe without ``--certified``, exit 2 with a message; without a
    recipe the single run keeps its defaults (box, κ 0.05)."""
    import core.models.certtrain as ct
    from core.cli import main

    seen: dict = {}
    monkeypatch.setattr(ct, "certified_chain", lambda *a, **k: seen.update(k, base=a[0], chain=True) or {"ok": 1})
    monkeypatch.setattr(ct, "certified_train", lambda *a, **k: seen.update(k, base=a[0], chain=False) or {"ok": 1})
    assert main(["train", "--model", "cnn_lstm", "--certified", "--recipe", "shipped", "--out", str(tmp_path),
                 "--json"]) == 0
    assert seen["chain"] and seen["base"] == "cnn_lstm" and str(seen["out_dir"]) == str(tmp_path)
    assert "threat" not in seen and "init" not in seen
    seen.clear()
    assert main(["train", "--model", "cnn_lstm", "--certified", "--json"]) == 0
    assert not seen["chain"] and seen["threat"] == "box" and seen["flow_px"] == 0.05 and seen["radius"] == 8.0
    for extra in (["--threat", "ball"], ["--radius", "12"], ["--steps", "10"], ["--init", "cnn_lstm"], ["--orthant"],
                  ["--flow-px", "0.1"]):
        seen.clear()
        assert main(["train", "--model", "cnn_lstm", "--certified", "--recipe", "shipped", *extra, "--json"]) == 2
        assert not seen and f"drop {extra[0]}" in capsys.readouterr().err
    assert main(["train", "--model", "cnn_lstm", "--recipe", "shipped", "--json"]) == 2
    assert "--recipe is an option of --certified" in capsys.readouterr().err and not seen


def test_msrset_prints_the_side_by_side_summary(tmp_path, monkeypatch):
    """``msrset`` with two models and the certified bound: one summary line per model after the
    rows (text), and ``summary`` records in the JSON."""
    args = ("msrset", "--model", "cnn_lstm,cnn_lstm_certified", "--clips", "2", "--flows", "14", "--max-iters", "2",
            "--engine", "serial")
    monkeypatch.setenv("VRD_CACHE_DIR", str(tmp_path))  # the second run reads the first's results
    r = run(*args)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if "over the 1 clips every model gets right" in ln]
    assert [ln.split()[0] for ln in lines] == ["cnn_lstm", "cnn_lstm_certified"] and "1/2 correct" in lines[1]
    out = _strict(run(*args, "--json").stdout)
    assert out["cached"] == 4
    assert [s["compared"] for s in out["summary"]] == [1, 1] and out["summary"][1]["ratio_median"] > 0
