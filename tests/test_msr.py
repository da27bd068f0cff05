"""MSR bounds (Wu & Kwiatkowska): exactness against brute force, invariants, witnesses."""

import itertools
import math
import time

import pytest
import torch
from torch import nn

from core.data import make_clip
from core.errors import ParameterError
from core.msr import (BrightnessSpace, Evaluator, FlowSpace, MSRParams, MSRSolver, estimate_lipschitz,
                      finite_difference_grad, tau_from_lipschitz)


class PixelLinear(nn.Module):
    """Two-class linear classifier on the video pixels, margin at the clean clip = ``m0``."""

    def __init__(self, video: torch.Tensor, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(2, video.numel(), generator=g) * 0.05, requires_grad=False)
        self.b = nn.Parameter(torch.zeros(2), requires_grad=False)

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


TAU, BLOCK = 0.5, 8


def _problem(metric: str, seed: int = 0):
    video = make_clip("rotate_cw", 5, frames=3, size=16).video
    model = PixelLinear(video, seed).eval()
    space = FlowSpace(video, [0], BLOCK)  # D = 2 channels × 2 × 2 blocks = 8
    # all τ-grid points with |k_i| <= 2 (5^8 = 390625 is too many: use the L1 ball of radius 3)
    pts = [k for k in itertools.product(range(-3, 4), repeat=space.dims) if sum(map(abs, k)) <= 3]
    z = torch.tensor(pts, dtype=torch.float64) * TAU
    with torch.no_grad():  # change of (logit1 - logit0), bias-free; class 1 will be the decision
        diff = torch.cat([model(space.apply(zb)) for zb in z.split(4096)]).double()
        base = model(video.unsqueeze(0))[0].double()
    delta = (diff[:, 1] - diff[:, 0]) - (base[1] - base[0])
    norms = space.norm(z, metric)
    # choose the bias so that no single move is adversarial but some 2- or 3-move point is
    level1 = torch.tensor([sum(map(abs, k)) == 1 for k in pts])
    m0 = float((-delta[level1]).max()) + 1e-3
    assert float((-delta).max()) > m0, "precondition: an adversarial grid point exists"
    with torch.no_grad():
        base = model(video.unsqueeze(0))[0]
        model.b[1] = m0 - float(base[1] - base[0]) + model.b[1]
    margins = m0 + delta
    assert Evaluator(model, space).label == 1
    return video, model, space, z, norms, margins


def _brute_fmsr(norms, margins, budget):
    adv = (margins < 0) & (norms <= budget + 1e-9)
    return float(norms[adv].min()) if adv.any() else math.inf


@pytest.mark.parametrize("metric", ["l1", "l2", "linf"])
def test_zero_heuristic_astar_equals_brute_force(metric):
    video, model, space, z, norms, margins = _problem(metric)
    # a budget the enumerated L1-ball of radius 3 covers completely for this metric
    w = space.weight(metric)
    budget = {"l1": 3 * TAU * w, "l2": math.sqrt(3) * TAU * w, "linf": TAU}[metric]
    budget = budget if metric != "linf" else TAU  # L∞: every point with |k_i| <= 1 … too many; use τ
    fmsr = _brute_fmsr(norms, margins, budget)
    params = MSRParams(metric=metric, tau=TAU, budget=budget, flows=[0], block=BLOCK, max_iters=100_000,
                       time_limit=120, batch=8, upper=False)
    solver = MSRSolver(model, video, params)
    events = list(solver.run())
    res = solver.result()
    if math.isinf(fmsr):
        assert res["robust_within_budget"] and res["lower"] == pytest.approx(budget)
    else:
        assert res["exact"] and res["lower"] == pytest.approx(fmsr) and res["upper"] == pytest.approx(fmsr)
    for e in events:
        assert e["lower"] <= min(fmsr, budget) + 1e-9 <= e["upper"] + 1e-9
        assert e["lower"] <= e["upper"] + 1e-12
    lows = [e["lower"] for e in events]
    ups = [e["upper"] for e in events]
    assert lows == sorted(lows) and ups == sorted(ups, reverse=True)


def test_l1_search_with_enumerated_budget_is_exact():
    """L1 with budget 3 moves: the brute-force set is the whole ball — A* must match it exactly."""
    video, model, space, z, norms, margins = _problem("l1", seed=1)
    budget = 3 * TAU * space.weight("l1")
    fmsr = _brute_fmsr(norms, margins, budget)
    assert math.isfinite(fmsr)
    solver = MSRSolver(model, video, MSRParams(metric="l1", tau=TAU, budget=budget, flows=[0], block=BLOCK,
                                               max_iters=100_000, batch=4, upper=True))
    res = solver.run_all()
    assert res["exact"] and res["lower"] == pytest.approx(fmsr)
    assert res["witness"] is not None and res["witness"]["flow_distance"] == pytest.approx(fmsr)
    w = solver.witness_video()
    with torch.no_grad():
        assert int(model(w.unsqueeze(0)).argmax()) != solver.ev.label  # the witness really flips


def test_lipschitz_heuristic_with_valid_constant_is_exact():
    video, model, space, z, norms, margins = _problem("l2", seed=2)
    budget = math.sqrt(3) * TAU * space.weight("l2")
    fmsr = _brute_fmsr(norms, margins, budget)
    ev = Evaluator(model, space)
    L = 4 * estimate_lipschitz(ev, "l2", budget, samples=16)["L"]  # generous: a safe constant here
    params = MSRParams(metric="l2", tau=TAU, budget=budget, flows=[0], block=BLOCK, heuristic="lipschitz",
                       lipschitz=L, max_iters=100_000, batch=4, upper=False)
    s = MSRSolver(model, video, params)
    first = next(s.run())
    assert first["lower"] > 0  # the heuristic lifts the bound from the first iteration
    res = s.run_all()
    if math.isfinite(fmsr):
        assert res["exact"] and res["lower"] == pytest.approx(fmsr)
    else:
        assert res["robust_within_budget"]


def test_no_pgd_adversarial_below_the_lower_bound():
    """Projected gradient descent in δ-space with random restarts never beats the lower bound
    (after snapping to the τ-grid, where the bound is for FMSR)."""
    video, model, space, *_ = _problem("l2", seed=3)
    budget = 2.0 * TAU * space.weight("l2")
    s = MSRSolver(model, video, MSRParams(metric="l2", tau=TAU, budget=budget, flows=[0], block=BLOCK,
                                          max_iters=60, batch=8, upper=False))
    lower = s.run_all()["lower"]
    ev = Evaluator(model, space)
    g = torch.Generator().manual_seed(0)
    found = 0
    for _restart in range(8):
        z = torch.randn(space.dims, generator=g, dtype=torch.float64) * TAU
        for _ in range(30):
            m, grad = ev.margin_and_grad(z)
            if m < 0:
                break
            z = z - 0.3 * TAU * grad / (grad.norm() + 1e-12)
        zg = torch.round(z / TAU) * TAU
        if ev.verify(zg.float())["adversarial"]:
            found += 1
            assert float(space.norm(zg, "l2")) >= lower - 1e-9
    assert found > 0, "PGD found no adversarial at all: the check would be vacuous"


def test_robust_within_small_budget():
    video, model, space, *_ = _problem("linf")
    s = MSRSolver(model, video, MSRParams(metric="linf", tau=TAU, budget=TAU * 0.99, flows=[0], block=BLOCK,
                                          max_iters=50, upper=False))
    res = s.run_all()
    assert res["robust_within_budget"] and res["lower"] == pytest.approx(TAU * 0.99) == res["upper"]


def test_finite_difference_agrees_with_autograd():
    video, model, space, *_ = _problem("l2")
    ev = Evaluator(model, space)
    # away from integer displacements, where bilinear warping has kinks (one-sided gradients)
    z = 0.3 + 0.2 * torch.rand(space.dims, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, g_auto = ev.margin_and_grad(z)
    g_fd = finite_difference_grad(ev, z, h=0.01)
    big = g_auto.abs() > 0.05 * g_auto.abs().max()
    assert (torch.sign(g_auto[big]) == torch.sign(g_fd[big])).float().mean() >= 0.9
    assert torch.allclose(g_auto, g_fd, rtol=0.2, atol=0.05 * float(g_auto.abs().max()))


def test_fast_path_equals_full_model():
    from core.models import build

    model = build("cnn_lstm").eval()
    video = make_clip("zoom_in", 1).video
    space = FlowSpace(video, [3, 9], 16)
    z = torch.randn(5, space.dims, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fast = Evaluator(model, space, fast=True)
    full = Evaluator(model, space, fast=False)
    assert fast.fast and not full.fast
    assert torch.allclose(fast.margins(z), full.margins(z), atol=1e-4)


def test_brightness_space_and_tau():
    video, model, *_ = _problem("l2")
    space = BrightnessSpace(video, [0, 1, 2])
    assert space.dims == 3 and space.per_dim == 3 * 16 * 16
    z = torch.tensor([[0.1, 0.0, -0.1]])
    out = space.apply(z)
    assert torch.allclose(out[0, 1], video[1]) and not torch.allclose(out[0, 0], video[0])
    assert float(space.norm(z, "l2")[0]) == pytest.approx(math.sqrt(0.02 * 768))
    s = MSRSolver(model, video, MSRParams(metric="l2", tau=0.02, budget=5.0, space="brightness",
                                          max_iters=30, upper=False))
    lows = [e["lower"] for e in s.run()]
    assert lows == sorted(lows) and lows[-1] > 0
    tau = tau_from_lipschitz(1.0, 2.0, space, "l2")
    assert space.grid_width(tau, "l2") == pytest.approx(0.5)


def test_parameters_are_checked():
    video, model, *_ = _problem("l2")
    with pytest.raises(ParameterError, match="metric"):
        MSRSolver(model, video, MSRParams(metric="l3"))
    with pytest.raises(ParameterError, match="tau"):
        MSRSolver(model, video, MSRParams(tau=0))
    with pytest.raises(ParameterError, match="block"):
        MSRSolver(model, video, MSRParams(block=5))
    with pytest.raises(ParameterError, match="flows"):
        MSRSolver(model, video, MSRParams(flows=[7]))
    with pytest.raises(ParameterError, match="Lipschitz"):
        MSRSolver(model, video, MSRParams(heuristic="lipschitz"))


def test_background_run_start_pause_resume_stop():
    from core.msr.background import BackgroundRun

    video, model, space, *_ = _problem("l2", seed=1)
    params = MSRParams(metric="l2", tau=TAU, budget=50.0, flows=[0], block=BLOCK, max_iters=100_000,
                       time_limit=60, batch=1, upper=False, certify=False)
    run = BackgroundRun(MSRSolver(model, video, params))
    assert run.status == "idle"
    run.start()
    assert run.status == "running" and run.running
    deadline = time.monotonic() + 30
    while not run.trace() and time.monotonic() < deadline:
        time.sleep(0.01)
    run.pause()
    assert run.status in ("paused", "done") and not run.running
    n = len(run.trace())
    assert n >= 1
    if run.status == "paused":
        run.start()  # resume: the same solver continues, the trace grows on
        assert run.status in ("running", "done")
        while len(run.trace()) <= n and run.running:
            time.sleep(0.01)
        run.stop()
        assert run.status in ("stopped", "done")
        assert len(run.trace()) > n
        its = [e["iteration"] for e in run.trace()]
        assert its == sorted(set(its))  # one trace, continued, not restarted
    final = run.status
    run.start()  # a stopped or finished run stays so
    assert run.status == final and not run.running


def test_background_run_reports_errors():
    from core.msr.background import BackgroundRun

    video, model, *_ = _problem("l2")
    solver = MSRSolver(model, video, MSRParams(metric="l2", tau=TAU, flows=[0], block=BLOCK, upper=False,
                                               certify=False))

    def broken():
        raise RuntimeError("boom")
        yield  # pragma: no cover

    solver.run = broken
    run = BackgroundRun(solver)
    run.start()
    run._thread.join(10)
    assert run.status == "error" and "RuntimeError: boom" in run.error


def test_run_msr_is_cached_by_content(monkeypatch, tmp_path):
    from core.models.registry import ModelSpec
    from core.msr import run as run_mod

    monkeypatch.setenv("VRD_CACHE_DIR", str(tmp_path))
    video, model, *_ = _problem("l2")
    spec = ModelSpec(name="pixel_linear", classes=["a", "b"], frames=3, size=16, card={"sha256": "x"})
    params = MSRParams(metric="l2", tau=TAU, budget=3.0, flows=[0], block=BLOCK, max_iters=40, upper=False,
                       certify=False)
    events = []
    rec, _ = run_mod.run_msr(model, spec, video, params, on_event=events.append)
    assert events and rec["lower"] == events[-1]["lower"] and list(tmp_path.glob("*.pt"))

    class Boom(MSRSolver):
        def __init__(self, *a, **k):
            raise AssertionError("a cached result was recomputed")

    monkeypatch.setattr(run_mod, "MSRSolver", Boom)
    again, _ = run_mod.run_msr(model, spec, video, MSRParams(**params.to_dict()))
    assert again["lower"] == rec["lower"] and again["trace"] == rec["trace"]
    with pytest.raises(AssertionError, match="recomputed"):  # another clip is another key
        run_mod.run_msr(model, spec, video.flip(0), MSRParams(**params.to_dict()))


def test_theorem1_band_only_with_a_user_constant_and_tau_within_eq5():
    video, model, space, *_ = _problem("l2")
    ev = Evaluator(model, space)
    margin = float(Evaluator.margin_of(ev.base_logits, ev.label))
    width = space.grid_width(TAU, "l2")
    ok_L = 0.9 * margin / width  # Eq. 5 holds: d̃(τ) ≤ margin / L
    bad_L = 1.1 * margin / width

    def result(**kw):
        p = MSRParams(metric="l2", tau=TAU, budget=3.0, flows=[0], block=BLOCK, max_iters=5, upper=False,
                      certify=False, **kw)
        s = MSRSolver(model, video, p)
        return s, s.run_all()

    s, res = result(heuristic="lipschitz", lipschitz=ok_L)
    assert s.theorem1_valid() and res["band"] == pytest.approx(width / 2)
    assert res["msr_lower"] == pytest.approx(max(0.0, res["lower"] - width / 2))
    named = {b["name"]: b for b in res["bounds"]}
    assert named["msr_lower"]["guarantee"] == "conditional" and named["grid_lower"]["guarantee"] == "conditional"
    for kw in (dict(heuristic="lipschitz", lipschitz=bad_L),  # τ too coarse for this L
               dict(heuristic="lipschitz", lipschitz=ok_L, lipschitz_source="estimate"),  # sampled L
               dict()):  # no L at all
        s, res = result(**kw)
        assert not s.theorem1_valid() and res["msr_lower"] is None and res["band"] is None
        assert "msr_lower" not in {b["name"] for b in res["bounds"]}
        assert res["theorem1"].startswith("not applicable")
    s, res = result(heuristic="lipschitz", lipschitz=ok_L, lipschitz_source="estimate")
    assert res["lower_guarantee"] == "estimate"


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_fast_path_astar_equals_brute_force_on_a_shipped_network(metric):
    """cnn_lstm through the feature-split fast path: A* over the τ-grid finds exactly the
    brute-force FMSR (every grid point of the enumerated ball, 833 of them, is evaluated)."""
    from core.models import load_classifier

    clf = load_classifier("cnn_lstm", "cpu")
    video = make_clip("rotate_cw", 1).video
    tau = 2.0
    space = FlowSpace(video, [14], 32)  # D = 2 channels × 2 × 2 blocks = 8
    pts = [k for k in itertools.product(range(-3, 4), repeat=space.dims) if sum(map(abs, k)) <= 3]
    z = torch.tensor(pts, dtype=torch.float64) * tau
    ev = Evaluator(clf, space)
    assert ev.fast
    margins = torch.cat([ev.margins(zb) for zb in z.split(512)])
    norms = space.norm(z, metric)
    budget = {"l1": 3, "l2": math.sqrt(3)}[metric] * tau * space.weight(metric)  # covered by the ball
    fmsr = _brute_fmsr(norms, margins, budget)
    assert math.isfinite(fmsr), "precondition: an adversarial grid point within the budget"
    s = MSRSolver(clf, video, MSRParams(metric=metric, tau=tau, budget=budget, flows=[14], block=32,
                                        max_iters=100_000, time_limit=120, batch=16, upper=False, certify=False))
    res = s.run_all()
    assert res["exact"] and res["lower"] == pytest.approx(fmsr) and res["upper"] == pytest.approx(fmsr)
    assert clf.predict(s.witness_video().unsqueeze(0))[0] != ev.label


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_projection_onto_norm_balls_is_the_closest_point(p):
    from core.msr.upper import project

    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        z = torch.randn(12, generator=g, dtype=torch.float64) * 3
        r = 2.0
        pz = project(z, r, p)
        assert float(torch.linalg.vector_norm(pz, ord=p)) <= r + 1e-9
        ys = torch.randn(2000, 12, generator=g, dtype=torch.float64)
        ys = ys / torch.linalg.vector_norm(ys, ord=p, dim=1, keepdim=True) * r * torch.rand(2000, 1, generator=g,
                                                                                             dtype=torch.float64)
        assert float((ys - z).norm(dim=1).min()) >= float((pz - z).norm()) - 1e-9
    inside = torch.tensor([0.1, -0.2], dtype=torch.float64)
    assert torch.equal(project(inside, 1.0, p), inside)


def test_min_norm_search_tightens_the_upper_bound_with_a_verified_witness():
    """FMN after the descent (issue: an independent min-norm attack beat our upper bound 3.3× on
    translate_left:0, flow 14): the refined witness is much closer and really flips the label."""
    from core.classifier import as_classifier
    from core.models import load_model
    from core.msr.upper import GradientSearch

    net, spec = load_model("cnn_lstm", "cpu")
    clf = as_classifier(net, spec)
    video = make_clip("translate_left", 0, 16, 64).video
    space = FlowSpace(video, flows=[14], block=32)
    ev = Evaluator(clf, space)
    gs = GradientSearch(ev, "l2", 0.5, restarts=2)
    while not gs.descent_done:
        gs.step(quick=gs.iterations == 0)
    descent = gs.best.distance
    while not gs.converged:
        gs.step()
    assert gs.fmn.runs == 2 and gs.best.distance < 0.8 * descent
    with torch.no_grad():
        logits = net(space.apply(gs.best.z.float().unsqueeze(0)))
    assert int(logits.argmax()) != ev.label  # a fresh forward pass: the witness flips the decision
    assert float(space.norm(gs.best.z, "l2")) == pytest.approx(gs.best.distance)


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_certified_heuristic_with_node_radii_is_admissible_and_exact(metric):
    """The ``certified`` heuristic with a radius per node: given a sound node certifier (here the
    brute-force distance to the nearest adversarial grid point), A* stays exact, its lower bound
    never passes FMSR, and the per-node radii prune the search (fewer expansions than ``zero``)."""
    from core.msr.astar import AdmissibleAStar

    video, model, space, z, norms, margins = _problem(metric, seed=2)
    w = space.weight(metric)
    budget = {"l1": 3 * TAU * w, "l2": math.sqrt(3) * TAU * w}[metric]
    fmsr = _brute_fmsr(norms, margins, budget)
    assert math.isfinite(fmsr), "precondition: an adversarial grid point within the budget"
    adv = z[margins < 0]

    def oracle(c, rho):  # "no adversarial grid point within rho of c": sound for grid goals
        return bool(space.norm(adv - c, metric).min() > rho)

    runs = {}
    for name, kw in (("zero", {}), ("certified", {"certified": lambda: 0.0, "node_certifier": oracle, "probes": 4})):
        a = AdmissibleAStar(Evaluator(model, space), metric, TAU, budget, "zero" if name == "zero" else "certified",
                            batch=4, **kw)
        lows = []
        while not a.done:
            a.step()
            lows.append(a.lower)
            assert a.lower <= fmsr + 1e-9
        assert a.exact and a.lower == pytest.approx(fmsr)
        assert lows == sorted(lows)
        runs[name] = (lows, a)
    assert runs["certified"][1].node_probes > 0
    # the per-norm combination (module docstring): ℓ1 adds, ℓ2 needs the orthant argument (hypot)
    assert runs["certified"][1]._combine(3.0, 4.0) == pytest.approx({"l1": 7.0, "l2": 5.0}[metric])
    assert runs["certified"][1].expanded < runs["zero"][1].expanded  # the node radii prune the search


def test_solver_says_what_the_certifier_is_doing():
    """The live progress line names the certifier's stage and what it probes (``CertifiedRadius.describe``)."""
    from core.models import load_classifier

    clf = load_classifier("cnn_lstm_certified", "cpu")
    solver = MSRSolver(clf, make_clip("translate_left", 0).video,
                       MSRParams(metric="l2", flows=[14], block=16, upper=False, max_iters=3, time_limit=60))
    seen = []
    step = solver.cert.step
    solver.cert.step = lambda: seen.append(solver.activity) or step()
    for _ in range(3):
        solver._cert_seconds = 0.0  # (its time share spent or not: a certifier step every iteration here)
        for _ in solver.run(max_iters=1):
            pass
    assert seen and seen[0] == "bound propagation (certified lower bound; crown+: first probe)"
    assert all(s.startswith("bound propagation (certified lower bound; crown+") for s in seen)
    assert len(seen) >= 2 and "probing radius" in seen[1], seen
