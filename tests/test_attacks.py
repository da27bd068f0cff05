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
from core.models import load_classifier, load_model


@pytest.fixture(scope="module")
def c3d():
    clf = load_classifier("c3d", "cpu")
    return clf, clf.spec


@pytest.fixture(scope="module")
def clip():
    return make_clip("rotate_cw", 2000004).video, 4


FAST = {"deepsava": dict(select="first", max_iters=40, ssim_budget=None), "sparse": dict(max_iters=60), "flicker": dict(max_iters=60)}


@pytest.mark.parametrize("method", METHODS)
def test_attack_record_and_invariants(method, c3d, clip):
    model, spec = c3d
    video, label = clip
    res = make_attack(method, model, classes=spec.classes, **FAST.get(method, {}))(video, label)
    adv = res.adv_video
    assert adv.shape == video.shape and float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        pred = int(model.model(adv.unsqueeze(0)).argmax())
    assert res.success == (pred != label)  # success means a real flip, re-checked here
    assert res.adv_label == pred
    outside = [t for t in range(video.shape[0]) if t not in res.perturbed_frames]
    for t in outside:
        assert torch.equal(adv[t], video[t])  # bit-exact
    for t in res.perturbed_frames:
        assert not torch.equal(adv[t], video[t])
    d = res.to_dict(flow=True)
    json.dumps(d, allow_nan=False)  # flat and serialisable, strict JSON
    assert d["flow_distance"] > 0
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
    r = DeepSAVA(model, frames=1, select="bo", bo_trials=6, probe_iters=3, max_iters=30)(video, label)
    trials = r.extra["trials"]
    best = min(trials, key=lambda t: t["score"])
    assert r.extra["mask"] == best["frames"] and set(r.perturbed_frames) <= set(r.extra["mask"])
    # every probe is a new mask: duplicates are re-sampled, never dropped
    assert len(trials) == 6 and len({tuple(t["frames"]) for t in trials}) == 6
    # graded scores: the probe's lowest margin, not a flat bonus
    assert len({round(t["score"], 6) for t in trials}) > 1
    from core.viz.attacks import trials_figure  # the page's chart of this very record

    fig = trials_figure(trials, r.extra["mask"])
    assert list(fig.data[0].y) == [t["score"] for t in trials]
    assert list(fig.data[0].marker.color).count("#d62728") == 1  # the chosen mask, once
    brute = DeepSAVA(model, frames=1, select="brute", probe_iters=2, max_iters=5)(video, label)
    assert sorted(t["frames"][0] for t in brute.extra["trials"]) == list(range(video.shape[0]))  # all probed
    assert brute.extra["mask"] == min(brute.extra["trials"], key=lambda t: t["score"])["frames"]
    pairs = DeepSAVA(model, frames=2, select="brute", probe_iters=1, max_iters=1)(video[:6], label)
    assert len(pairs.extra["trials"]) == 15  # exhaustive C(6, 2)


@pytest.mark.parametrize("mode", ["additive", "spatial", "both"])
def test_deepsava_modes_flip_the_label_with_one_frame(mode, c3d, clip):
    model, _ = c3d
    video, label = clip
    r = DeepSAVA(model, frames=1, select="first", mode=mode, max_iters=60, ssim_budget=None)(video, label)
    assert r.success and r.perturbed_frames == [0]


def test_budgets_constrain_instead_of_stopping(c3d, clip):
    """A binding budget: the unconstrained attack needs more; the budgeted one keeps optimising
    inside the budget (backtracks > 0, many iterations) and still succeeds."""
    model, _ = c3d
    video, label = clip
    free = DeepSAVA(model, mask=[2], ssim_budget=None)(video, label)
    assert free.success and free.distances["ssim_per_frame"][2] < 0.99  # so a 0.99 budget binds
    r = DeepSAVA(model, mask=[2], ssim_budget=0.99, ssim_scope="frame")(video, label)
    assert r.success and r.iterations > free.iterations and r.extra["backtracks"] > 0
    assert r.distances["ssim_per_frame"][2] >= 0.99
    b = 0.8 * free.distances["l21_norm"]
    r = DeepSAVA(model, mask=[2], ssim_budget=None, l21_budget=b)(video, label)
    assert r.success and r.iterations > 1 and r.distances["l21_norm"] <= b + 1e-9
    sfree = Sparse(model, mask=[2])(video, label)
    b = 0.8 * sfree.distances["l21_norm"]
    r = Sparse(model, mask=[2], l21_budget=b)(video, label)
    assert r.success and r.iterations > sfree.iterations and r.distances["l21_norm"] <= b + 1e-9
    # a budget nothing can meet but zero: the clean clip, never a violation
    r = DeepSAVA(model, frames=1, select="first", ssim_budget=1.0, max_iters=5)(video, label)
    assert not r.success and r.distances["ssim"] == 1.0


def test_video_scope_ssim_budget(c3d, clip):
    model, _ = c3d
    video, label = clip
    r = DeepSAVA(model, frames=1, select="first", ssim_budget=0.995, ssim_scope="video", max_iters=60)(video, label)
    assert r.distances["ssim"] >= 0.995 and r.iterations > 1


@pytest.mark.parametrize("method", METHODS)
def test_attacks_leave_the_model_untouched(method, c3d, clip):
    model, _ = c3d
    video, label = clip
    before = [p.detach().clone() for p in model.model.parameters()]
    for _ in range(2):
        make_attack(method, model, **FAST.get(method, {}))(video, label)
    after = list(model.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.grad is None and not p.requires_grad for p in after)


def test_a_bare_module_is_frozen_and_untouched(clip):

    module, _ = load_model("c3d", "cpu")
    video, label = clip
    Sparse(module, max_iters=5)(video, label)
    assert all(p.grad is None for p in module.parameters())


@pytest.mark.parametrize("mask", [[3, 3], [-1], [20], [], ["a"]])
def test_masks_are_validated(mask, c3d, clip):
    model, _ = c3d
    video, label = clip
    with pytest.raises(ParameterError, match="mask"):
        DeepSAVA(model, frames=max(1, len(mask)), mask=mask, max_iters=2)(video, label)
    with pytest.raises(ParameterError, match="mask"):
        Sparse(model, frames=max(1, len(mask)), mask=mask, max_iters=2)(video, label)


@pytest.mark.parametrize("method", ["deepsava", "sparse", "flicker"])
def test_more_key_frames_than_the_clip_is_an_error(method, c3d, clip):
    model, _ = c3d
    video, label = clip
    with pytest.raises(ParameterError, match="frames"):
        make_attack(method, model, frames=17, max_iters=2)(video, label)


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
        DeepSAVA(model, select="nope")
    with pytest.raises(ParameterError, match="attack must be one of"):
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


@pytest.mark.parametrize("method", ["one-shot", "saliency-rg"])
def test_eps_zero_changes_nothing(method, c3d, clip):
    """ε = 0 is a legal point of every ε sweep: the clip comes back unchanged and fools nobody."""
    video, label = clip
    res = make_attack(method, c3d[0], eps=0.0)(video, label)
    assert torch.equal(res.adv_video, video) and not res.success
    assert res.distances["linf"] == 0.0 and res.distances["l21"] == 0.0
    out = sweep({"c3d": c3d}, [method], n_clips=2, eps_values=[0.0])
    assert out["rows"][0]["eps"] == 0.0 and out["rows"][0]["FR"] == 0.0


def test_rg_saliency_is_one_heatmap_and_sweep_figures(c3d, clip):
    from core.viz.attacks import accuracy_eps_figure, frames_histogram_figure, levels_figure, saliency_figure

    video, label = clip
    res = make_attack("saliency-rg", c3d[0])(video, label)
    hist = res.extra["saliency"]
    assert len(hist) >= 2  # refreshed after each perturbed frame
    fig = saliency_figure(hist, res.perturbed_frames)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 1 and len(fig.data) == 2  # one heatmap + the markers, not one line per step
    z = np.asarray(heat[0].z)
    assert z.shape == (len(hist), video.shape[0]) and np.allclose(z.max(axis=1), 1.0)
    assert list(fig.data[1].x) == res.perturbed_frames[: len(hist)]
    one = saliency_figure(hist[:1], res.perturbed_frames)
    assert [t.type for t in one.data] == ["bar"]
    rows = [{"model": "m", "method": a, "eps": e, "clip_accuracy": 1 - e, "frames_histogram": {"1": 2}}
            for a in ("one-shot", "saliency") for e in (0.01, 0.02)]  # identical lines
    acc = accuracy_eps_figure(rows)
    assert len(acc.data) == 2 and acc.data[0].line.dash != acc.data[1].line.dash
    assert acc.data[0].marker.symbol != acc.data[1].marker.symbol  # overlapping lines stay visible
    assert len(frames_histogram_figure(rows).data) == 4
    lv = levels_figure({"eps": [0, 0.01], "clip_accuracy": [1, 0.5], "video_accuracy": [1, 0.5]})
    assert lv.data[0].line.dash != lv.data[1].line.dash


def test_saliency_maps_and_figures(c3d, clip):
    from core.experiments.saliency import saliency_maps
    from core.viz.attacks import saliency_maps_figure, transfer_figure

    video, label = clip
    clf = c3d[0]
    r = saliency_maps(clf, video, label)
    assert r["maps"].shape == (16, 64, 64) and (r["maps"] >= 0).all() and float(r["maps"].sum()) > 0
    x = video.clone().requires_grad_(True)  # the same gradient by hand
    (g,) = torch.autograd.grad(clf.logits(x)[0, label], x)
    assert torch.allclose(r["maps"], g.abs().sum(1), atol=1e-6)
    sg = saliency_maps(clf, video, label, smoothgrad=3, sigma=0.05)
    assert sg["smoothgrad"] == 3 and not torch.allclose(sg["maps"], r["maps"])
    assert all(p.grad is None for p in clf.model.parameters())
    fig = saliency_maps_figure({"a": r["maps"].numpy(), "b": sg["maps"].numpy()}, [0, 8])
    zmax = {t.zmax for t in fig.data}
    assert len(fig.data) == 4 and len(zmax) == 1  # one shared colour scale
    out = {"sources": ["a"], "targets": ["a", "b"], "fr": [[1.0, None]], "fooled": [[2, 0]], "n": [[2, 0]],
           "params": {"method": "one-shot"}}
    tf = transfer_figure(out)
    assert tf.data[0].text[0] == ["1.00<br>2/2", "—"]
