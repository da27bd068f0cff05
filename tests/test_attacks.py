"""Attacks on a shipped model: real label flips, sparsity, ranges, budgets, BO mask, RG, metrics."""

import json

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from core.attacks import METHODS, DeepSAVA, IterativeSaliency, OneShot, Sparse, make_attack
from core.attacks.sweep import summarise, sweep
from core.data import make_clip
from core.errors import ParameterError
from core.models import load_model


@pytest.fixture(scope="module")
def c3d():
    return load_model("c3d", "cpu")


@pytest.fixture(scope="module")
def clip():
    return make_clip("rotate_cw", 2000004).video, 4


FAST = {"deepsava": dict(select="first", max_iters=40), "sparse": dict(max_iters=60), "flicker": dict(max_iters=60)}


@pytest.mark.parametrize("method", METHODS)
def test_attack_record_and_invariants(method, c3d, clip):
    model, spec = c3d
    video, label = clip
    res = make_attack(method, model, classes=spec.classes, **FAST.get(method, {}))(video, label)
    adv = res.adv_video
    assert adv.shape == video.shape and float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        pred = int(model(adv.unsqueeze(0)).argmax())
    assert res.success == (pred != label)  # success means a real flip, re-checked here
    assert res.adv_label == pred
    outside = [t for t in range(video.shape[0]) if t not in res.perturbed_frames]
    for t in outside:
        assert torch.equal(adv[t], video[t])  # bit-exact
    for t in res.perturbed_frames:
        assert not torch.equal(adv[t], video[t])
    d = res.to_dict()
    json.dumps(d)  # flat and serialisable
    assert set(d["distances"]) >= {"ssim", "l1", "l2", "linf", "l21", "l21_norm", "ssim_per_frame"}
    assert len(d["l2_per_frame"]) == video.shape[0] and d["queries"] >= 1 and d["seconds"] > 0
    assert d["orig_class"] == "rotate_cw"


def test_the_inkawhich_attacks_succeed_on_c3d(c3d, clip):
    model, _ = c3d
    video, label = clip
    for atk in (OneShot(model, eps=0.01), IterativeSaliency(model, eps=0.01), IterativeSaliency(model, eps=0.01, refresh=True)):
        assert atk(video, label).success


def test_one_shot_linf_is_eps(c3d, clip):
    model, _ = c3d
    video, label = clip
    for eps in (0.004, 0.02):
        r = OneShot(model, eps=eps)(video, label)
        assert r.distances["linf"] == pytest.approx(eps, abs=1e-6)
        assert r.perturbed_frames == list(range(video.shape[0]))


def test_saliency_order_and_rg_never_repeats(c3d, clip):
    model, _ = c3d
    video, label = clip
    r = IterativeSaliency(model, eps=0.003, refresh=False)(video, label)
    sal = r.extra["saliency"][0]
    assert len(r.extra["saliency"]) == 1
    assert r.perturbed_frames == sorted(r.perturbed_frames, key=lambda f: -sal[f])  # decreasing saliency
    rg = IterativeSaliency(model, eps=0.003, refresh=True)(video, label)
    assert len(set(rg.perturbed_frames)) == len(rg.perturbed_frames)
    # the saliency was recomputed after every unsuccessful frame: one vector per perturbed frame
    assert len(rg.extra["saliency"]) == rg.iterations == len(rg.perturbed_frames)
    if rg.iterations > 1:
        assert rg.extra["saliency"][1] != rg.extra["saliency"][0]


def test_black_box_success_is_judged_on_the_other_model(c3d, clip):
    model, _ = c3d
    other, _ = load_model("frame_cnn", "cpu")
    video, label = clip
    r = IterativeSaliency(model, eps=0.01, refresh=True, success_model=other)(video, label)
    with torch.no_grad():
        assert r.success == (int(other(r.adv_video.unsqueeze(0)).argmax()) != label)


def test_deepsava_bo_mask_is_the_one_attacked(c3d, clip):
    model, _ = c3d
    video, label = clip
    r = DeepSAVA(model, frames=1, select="bo", bo_trials=4, probe_iters=3, max_iters=30)(video, label)
    best = min(r.extra["trials"], key=lambda t: t["loss"])
    assert r.extra["mask"] == best["frames"] and len(r.extra["trials"]) >= 2
    assert set(r.perturbed_frames) <= set(r.extra["mask"])
    brute = DeepSAVA(model, frames=1, select="brute", probe_iters=2, max_iters=5)(video, label)
    assert len(brute.extra["trials"]) == video.shape[0]  # every frame probed
    assert brute.extra["mask"] == [min(brute.extra["trials"], key=lambda t: t["loss"])["frames"][0]]


@pytest.mark.parametrize("mode", ["additive", "spatial", "both"])
def test_deepsava_modes_flip_the_label_with_one_frame(mode, c3d, clip):
    model, _ = c3d
    video, label = clip
    r = DeepSAVA(model, frames=1, select="first", mode=mode, max_iters=60)(video, label)
    assert r.success and r.perturbed_frames == [0]


def test_budgets_are_never_exceeded(c3d, clip):
    model, _ = c3d
    video, label = clip
    r = DeepSAVA(model, frames=2, select="first", ssim_budget=0.999, max_iters=60)(video, label)
    assert r.distances["ssim"] >= 0.999
    r = DeepSAVA(model, frames=2, select="first", l21_budget=0.01, max_iters=60)(video, label)
    assert r.distances["l21_norm"] <= 0.01 + 1e-9
    r = Sparse(model, frames=2, l21_budget=0.005, max_iters=60)(video, label)
    assert r.distances["l21_norm"] <= 0.005 + 1e-9


def test_result_ssim_matches_scikit_image(c3d, clip):
    model, _ = c3d
    video, label = clip
    r = OneShot(model, eps=0.02)(video, label)
    sk = np.mean([structural_similarity(video[t].permute(1, 2, 0).numpy(), r.adv_video[t].permute(1, 2, 0).numpy(),
                                        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0, channel_axis=2) for t in range(video.shape[0])])
    assert abs(r.distances["ssim"] - sk) < 1e-3


def test_bad_parameters(c3d):
    model, _ = c3d
    with pytest.raises(ParameterError):
        OneShot(model, eps=2.0)
    with pytest.raises(ParameterError, match="select"):
        DeepSAVA(model, select="random")
    with pytest.raises(ParameterError, match="unknown attack"):
        make_attack("pgd", model)
    with pytest.raises(ParameterError, match="label"):
        OneShot(model)(make_clip(0, 1).video, 42)


def test_metrics_formulas():
    class R:  # minimal stand-in records
        def __init__(self, ok, it, l21, ssim, frames):
            self.success, self.iterations, self.perturbed_frames = ok, it, frames
            self.distances = {"l21_norm": l21, "ssim": ssim}
            self.seconds, self.queries = 1.0, 10

    rs = [R(True, 4, 0.02, 0.99, [1]), R(True, 8, 0.04, 0.97, [1, 2]), R(False, 100, 0.5, 0.5, [0])]
    s = summarise(rs)
    f = 2 / 3
    assert s["FR"] == pytest.approx(f) and s["ANI"] == 6
    assert s["AAP_l21"] == pytest.approx(0.03 * f + 0.1 * (1 - f))
    assert s["AAP_ssim"] == pytest.approx(0.02 * f + 0.08 * (1 - f))
    assert s["ASP_ssim"] == pytest.approx(0.98) and s["avg_frames"] == 1.5
    assert s["frames_histogram"] == {"1": 1, "2": 1}


def test_sweep_table(c3d):
    out = sweep({"c3d": c3d}, ["one-shot", "saliency-rg"], n_clips=3, eps_values=[0.005, 0.02])
    rows = out["rows"]
    assert [(r["method"], r["eps"]) for r in rows] == [("one-shot", 0.005), ("one-shot", 0.02),
                                                        ("saliency-rg", 0.005), ("saliency-rg", 0.02)]
    for r in rows:
        assert 0 <= r["FR"] <= 1 and r["attacked"] + r["skipped_misclassified"] == 3
    assert rows[1]["FR"] >= rows[0]["FR"]  # a larger ε fools at least as often (one-shot, same clips)
