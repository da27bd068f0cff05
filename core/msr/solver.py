"""Anytime converging bounds of the maximum safe radius w.r.t. optical flow (Wu & Kwiatkowska 2020).

Definitions (the paper's, in our units — distances of the flow perturbation δ in pixels):

* MSR(d) = min ‖δ‖_p over δ in the ball ‖δ‖_p ≤ d whose imposed video changes the decision
  (Def. 3, via flows §3.2); ``d + ε`` if there is none.
* FMSR(d, τ) = the same minimum over the τ-grid of the manipulation space (Def. 6).
* Theorem 1: ``FMSR − ½ d̃(L^p, τ) ≤ MSR ≤ FMSR`` with ``d̃`` = ``|D|τ``, ``√|D| τ``, ``τ``
  (times the block weight, see :mod:`core.msr.space`) — valid when τ is small enough for the
  network's Lipschitz constant (Eq. 5).

:class:`MSRSolver` interleaves the gradient search (upper bounds, :mod:`core.msr.upper`) and the
admissible A* (lower bound, :mod:`core.msr.astar`) and yields one event per iteration; it can be
stopped at any time and resumed by calling :meth:`MSRSolver.run` again. All bounds refer to the
chosen manipulation space (flows, block size); a bigger space can only lower the true radius.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from core.checks import check_video
from core.classifier import VideoClassifier, as_classifier
from core.errors import ParameterError
from core.msr.astar import AdmissibleAStar
from core.msr.space import BrightnessSpace, Evaluator, FlowSpace, ManipulationSpace, check_metric
from core.msr.upper import GradientSearch


#: Default budget d per metric (flow space, 16-px blocks, all 15 pairs of a 16-frame 64-px clip).
DEFAULT_BUDGETS = {"l1": 20000.0, "l2": 300.0, "linf": 4.0}


@dataclass
class MSRParams:
    """Parameters of one MSR computation (flat, JSON-serialisable)."""

    metric: str = "l2"
    tau: float = 0.5
    budget: float = DEFAULT_BUDGETS["l2"]
    flows: list[int] | None = None  # frame pairs Player I may manipulate; default: all of them
    block: int = 16
    heuristic: str = "zero"
    lipschitz: float | None = None
    lipschitz_source: str = "user"  # "user" (a claimed true constant) or "estimate" (sampled)
    certify: bool = True  # run the sound certified lower bound beside A* (supported models, flow space)
    max_iters: int = 300
    time_limit: float = 60.0
    batch: int = 16
    space: str = "flow"  # "flow" or "brightness"
    frames: list[int] | None = None  # brightness: frames to brighten; default: all
    upper: bool = True  # run the gradient search too
    node_probes: int = 0  # certified heuristic: bound-propagation probes per A* batch (own radius per node)
    cert_method: str = "crown+"  # bound propagation of the certified lower bound: crown+, crown, crown++, alpha, ibp

    def validate(self, frames_in_video: int) -> MSRParams:
        from core.types import Heuristic, parse

        check_metric(self.metric)
        parse(Heuristic, self.heuristic, "heuristic")
        if self.lipschitz_source not in ("user", "estimate"):
            raise ParameterError(f"lipschitz_source must be 'user' or 'estimate', got {self.lipschitz_source!r}")
        for name, v, lo, hi in (("tau", self.tau, 1e-4, 100.0), ("budget", self.budget, 1e-6, 1e9),
                                ("max_iters", self.max_iters, 1, 10_000_000),
                                ("time_limit", self.time_limit, 0.01, 86_400.0), ("batch", self.batch, 1, 4096),
                                ("node_probes", self.node_probes, 0, 4096)):
            if not (isinstance(v, (int, float)) and lo <= v <= hi and not math.isnan(v)):
                raise ParameterError(f"{name} must be in [{lo:g}, {hi:g}], got {v!r}")
        from core.verify.certify import METHODS

        if self.cert_method not in METHODS:
            raise ParameterError(f"cert_method must be {', '.join(METHODS[:-1])} or {METHODS[-1]}, "
                                 f"got {self.cert_method!r}")
        if self.space not in ("flow", "brightness"):
            raise ParameterError(f"space must be 'flow' or 'brightness', got {self.space!r}")
        if self.flows is None:
            self.flows = list(range(frames_in_video - 1))
        if self.frames is None:
            self.frames = list(range(frames_in_video))
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def make_space(video: torch.Tensor, params: MSRParams) -> ManipulationSpace:
    if params.space == "brightness":
        return BrightnessSpace(video, params.frames)
    return FlowSpace(video, params.flows, params.block)


def estimate_lipschitz(ev: Evaluator, metric: str, radius: float, samples: int = 12, seed: int = 0) -> dict:
    """Sampled local estimate of the margin's Lipschitz constant w.r.t. the distance:
    ``max ‖∇_z m‖_q / w_p`` (q the dual exponent) over random points of the ball of ``radius``.

    This is an **estimate, not a guarantee**: the maximum over samples can miss larger slopes.
    """
    p = check_metric(metric)
    q = 1.0 if math.isinf(p) else (math.inf if p == 1.0 else p / (p - 1.0))
    w = ev.space.weight(metric)
    g = torch.Generator().manual_seed(seed)
    best = 0.0
    for i in range(samples):
        z = torch.randn(ev.space.dims, generator=g, dtype=torch.float64)
        r = radius * (i / max(samples - 1, 1))
        n = float(ev.space.norm(z, metric))
        z = z * (r / n) if n > 0 else z * 0
        _, grad = ev.margin_and_grad(z)
        best = max(best, float(torch.linalg.vector_norm(grad, ord=q)) / w)
    return {"L": best, "samples": samples, "radius": radius, "kind": "estimate, not a guarantee",
            "guarantee": "estimate"}


def lipschitz_report(model, video: torch.Tensor, params: MSRParams, samples: int = 12) -> dict:
    """The page's "Estimate L" button as one call: sampled L (an estimate), the margin, and τ from
    Eq. (5) for that L. ``{L, samples, radius, margin, tau_eq5, guarantee: "estimate"}``."""
    params = MSRParams(**{**params.to_dict(), "heuristic": "zero", "lipschitz": None}).validate(video.shape[0])
    space = make_space(video, params)
    ev = Evaluator(model, space)
    est = estimate_lipschitz(ev, params.metric, params.budget, samples)
    est["margin"] = float(Evaluator.margin_of(ev.base_logits, ev.label))
    est["tau_eq5"] = tau_from_lipschitz(est["margin"], est["L"], space, params.metric) if est["L"] > 0 else None
    return est


def tau_from_lipschitz(margin: float, lipschitz: float, space: ManipulationSpace, metric: str) -> float:
    """Largest τ with ``d̃(L^p, τ) ≤ margin / L`` (Eq. 5, with L the Lipschitz constant of the
    margin itself, which is at most ``Lip_y + Lip_c``)."""
    if not (lipschitz > 0 and margin > 0):
        raise ParameterError("tau from Eq. (5) needs a positive margin and a Lipschitz constant L > 0")
    return (margin / lipschitz) / space.grid_width(1.0, metric)


@dataclass
class Event:
    iteration: int
    seconds: float
    lower: float
    upper: float
    upper_msr: float
    nodes: int
    evaluations: int
    exact: bool
    robust: bool
    witness: bool
    certified_lower: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class MSRSolver:
    """Anytime bounds: ``for ev in solver.run(): …``; ``solver.stop()`` from another thread."""

    def __init__(self, model: VideoClassifier | nn.Module, video: torch.Tensor, params: MSRParams,
                 classes: list[str] | None = None, device: torch.device | str | None = None) -> None:
        check_video(video, min_frames=2)
        clf = as_classifier(model, device=device)
        self.clf = clf
        self.video = video.to(clf.device)
        self.model = clf.model
        self.params = params.validate(video.shape[0])
        self.space = make_space(self.video, self.params)
        self.ev = Evaluator(clf, self.space, batch=max(8, self.params.batch * 2))
        self.classes = classes if classes is not None else clf.classes
        self.band = 0.5 * self.space.grid_width(self.params.tau, self.params.metric)
        self.cert = None
        self.cert_note: str | None = None
        if self.params.certify or self.params.heuristic == "certified":
            self._init_certifier()
        if self.params.heuristic == "certified" and self.cert is None:
            raise ParameterError(f"the certified heuristic needs a certifiable model and the flow space: {self.cert_note}")
        self.astar = AdmissibleAStar(self.ev, self.params.metric, self.params.tau, self.params.budget,
                                     self.params.heuristic, self.params.lipschitz, self.params.batch,
                                     certified=(lambda: self.cert.lower) if self.cert is not None else None,
                                     node_certifier=self.cert.around if self.params.heuristic == "certified"
                                     and self.params.node_probes > 0 else None, probes=self.params.node_probes)
        self.upper_search = GradientSearch(self.ev, self.params.metric, self.params.tau) if self.params.upper else None
        self.trace: list[dict] = []
        self.activity = "ready"  # what the solver is doing right now (for live progress)
        self._cert_seconds = 0.0
        self._evals_window: list[tuple[float, int]] = []
        self.elapsed = 0.0
        self.iteration = 0
        self._stop = threading.Event()
        self._upper = self._upper_msr = math.inf

    def _init_certifier(self) -> None:
        from core.verify import CertifiedRadius, Unsupported, supported

        if not isinstance(self.space, FlowSpace):
            self.cert_note = "certification covers the flow manipulation space only"
            return
        why = supported(self.clf)
        if why:
            self.cert_note = f"not certifiable: {why}"
            return
        try:
            self.cert = CertifiedRadius(self.clf, self.space, self.params.metric, self.params.cert_method)
        except Unsupported as e:
            self.cert_note = f"not certifiable: {e}"

    @property
    def certified_lower(self) -> float | None:
        """Sound lower bound on the continuous MSR (no Lipschitz constant), or None."""
        return None if self.cert is None else min(self.cert.lower, self._upper_msr)

    def theorem1_valid(self) -> bool:
        """Theorem 1's band needs a user-given L (claimed true) and τ within Eq. 5: d̃(τ) ≤ margin / L."""
        p = self.params
        if p.lipschitz is None or p.lipschitz_source != "user" or not p.lipschitz > 0:
            return False
        margin = float(Evaluator.margin_of(self.ev.base_logits, self.ev.label))
        return self.space.grid_width(p.tau, p.metric) <= margin / p.lipschitz + 1e-12

    def lower_guarantee(self) -> str:
        """What the A* lower bound rests on: grid (zero/certified heuristic), conditional (user L),
        estimate (sampled L)."""
        p = self.params
        if p.heuristic == "lipschitz":
            return "conditional" if p.lipschitz_source == "user" else "estimate"
        return "grid"

    def bound_list(self) -> list[dict]:
        """Every bound with the guarantee it carries (``sound``/``grid``/``conditional``/``estimate``)."""
        lower, upper, upper_msr = self.bounds()
        out = [{"name": "grid_lower", "value": lower, "guarantee": self.lower_guarantee(),
                "meaning": "FMSR ≥ value (A* over the τ-grid)"},
               {"name": "upper", "value": upper, "guarantee": "sound" if self._witness_in_budget() else "grid",
                "meaning": "a verified adversarial grid point at this distance (MSR and FMSR ≤ value)"
                if self._witness_in_budget() else "no witness within the budget: the value stands for d + ε"},
               {"name": "upper_msr", "value": upper_msr, "guarantee": "sound",
                "meaning": "MSR ≤ value (a verified adversarial video)"}]
        if self.certified_lower is not None:
            out.append({"name": "certified_lower", "value": self.certified_lower, "guarantee": "sound",
                        "meaning": "MSR ≥ value (bound propagation: no flow perturbation this small changes the decision)"})
        if self.theorem1_valid():
            out.append({"name": "msr_lower", "value": max(0.0, lower - self.band), "guarantee": "conditional",
                        "meaning": "Theorem 1: MSR ≥ FMSR lower − ½d̃ (if L is a true Lipschitz constant)"})
        return out

    def evals_per_second(self, window: float = 5.0) -> float | None:
        """Model evaluations per second over the last ``window`` seconds (None until measurable)."""
        w = self._evals_window
        if len(w) < 2 or w[-1][0] - w[0][0] < 0.2:
            return None
        return (w[-1][1] - w[0][1]) / (w[-1][0] - w[0][0])

    def _tick(self) -> None:
        now = time.perf_counter()
        self._evals_window.append((now, self.ev.evaluations))
        while len(self._evals_window) > 2 and now - self._evals_window[0][0] > 5.0:
            self._evals_window.pop(0)

    def explain_certificate(self) -> dict | None:
        """Where the certified lower bound stops: the certifier's probe at the radius it failed at, with
        its diagnosis (:meth:`core.verify.CertifiedRadius.explain`); ``None`` without a failure. Call it
        while the solver is not running."""
        return self.cert.explain() if self.cert is not None else None

    def snapshot(self) -> dict:
        """Everything a live view needs, computed from the solver's state (no internals)."""
        trace = self.trace
        lower, upper, upper_msr = self.bounds() if trace else (0.0, self.params.budget, math.inf)
        fail = self.cert.failure if self.cert is not None else None
        return {"iteration": self.iteration, "seconds": self.elapsed, "lower": lower, "upper": upper,
                "upper_msr": upper_msr, "certified_lower": self.certified_lower,
                "has_witness": self._grid_witness() is not None or (self.upper_search is not None
                                                                    and self.upper_search.best is not None),
                "nodes": self.astar.generated, "evaluations": self.ev.evaluations,
                "evals_per_s": self.evals_per_second(), "exact": self.astar.exact, "robust": self.astar.robust,
                "activity": self.activity, "band": self.band if self.theorem1_valid() else None,
                "lower_guarantee": self.lower_guarantee(), "cert_note": self.cert_note,
                "cert_method": self.cert.method if self.cert is not None else None,
                # the radius the certifier failed at, and the method (``cert_stage``): what to explain
                "cert_failed_at": fail[0] if fail else None, "cert_stage": fail[1] if fail else None,
                "bounds": self.bound_list() if trace else [], "budget": self.params.budget,
                "space": self.space.describe(), "dims": self.space.dims}

    # -- bounds --------------------------------------------------------------------------------
    def _grid_witness(self):
        """Best verified adversarial grid point: from the gradient search or from A* itself."""
        cands = []
        if self.upper_search is not None and self.upper_search.best_grid is not None:
            w = self.upper_search.best_grid
            cands.append((w.distance, w.z, w.check))
        if self.astar.best_goal is not None:
            cands.append((self.astar.best_goal.norm, self.astar.z_of(self.astar.best_goal), self.astar.best_goal_check))
        return min(cands, key=lambda c: c[0]) if cands else None

    def _witness_in_budget(self) -> bool:
        gw = self._grid_witness()
        return gw is not None and gw[0] <= self.params.budget

    def bounds(self) -> tuple[float, float, float]:
        """``(lower, upper, upper_msr)``: FMSR ∈ [lower, upper]; MSR ≤ upper_msr. Without a witness
        inside the budget, upper = budget (standing for d + ε)."""
        d = self.params.budget
        gw = self._grid_witness()
        up = gw[0] if gw is not None and gw[0] <= d else d
        cont = self.upper_search.best.distance if self.upper_search and self.upper_search.best else math.inf
        # MSR ≤ the distance of a verified adversarial video, inside the budget or not — never the
        # budget itself, which only stands for "d + ε" in the FMSR bracket.
        up_msr = min(cont, gw[0] if gw is not None else math.inf)
        self._upper = min(self._upper, up)  # monotone non-increasing
        self._upper_msr = min(self._upper_msr, up_msr)
        lower = min(self.astar.lower, self._upper)
        return lower, self._upper, self._upper_msr

    @property
    def done(self) -> bool:
        return self.astar.done

    def stop(self) -> None:
        self._stop.set()
        if self.cert is not None:
            self.cert.abandon()  # a certifier probe in flight stops at its next check

    # -- running -------------------------------------------------------------------------------
    def run(self, max_iters: int | None = None, time_limit: float | None = None) -> Iterator[dict]:
        """Yield one event per iteration until done, stopped, ``max_iters`` more iterations or
        ``time_limit`` more seconds (defaults from the params). Calling it again resumes."""
        self._stop.clear()
        max_iters = self.params.max_iters if max_iters is None else max_iters
        time_limit = self.params.time_limit if time_limit is None else time_limit
        start_it, t_start = self.iteration, time.perf_counter()
        base = self.elapsed
        while not self.done and not self._stop.is_set():
            if self.iteration - start_it >= max_iters or time.perf_counter() - t_start >= time_limit:
                break
            self.iteration += 1
            first = self.iteration == 1 and self.upper_search is not None
            if self.upper_search is not None and not self.upper_search.converged:
                self.activity = "gradient search (upper bound)"
                self.upper_search.step(quick=first)
                self._tick()
                self.elapsed = base + time.perf_counter() - t_start
            if first:  # iteration 1 is the quick first upper bound alone: on screen within seconds
                yield self._event()
                continue
            # the certifier gets at most half of the time, so A* and the upper bound stay live
            if self.cert is not None and not self.cert.done and not self._stop.is_set() \
                    and self._cert_seconds <= 0.5 * self.elapsed:
                self.activity = f"bound propagation (certified lower bound; {self.cert.describe()})"
                self.cert.upper = self._upper_msr if math.isfinite(self._upper_msr) else None
                c0 = time.perf_counter()
                self.cert._deadline = t_start + time_limit  # a slow (crown+) probe is abandoned at the limit
                self.cert.step()
                self._cert_seconds += time.perf_counter() - c0
                if self.cert.note:
                    self.cert_note = self.cert.note
                self._tick()
                self.elapsed = base + time.perf_counter() - t_start
            self.activity = "A* (grid lower bound)"
            self.astar.step()
            self._tick()
            self.elapsed = base + time.perf_counter() - t_start
            yield self._event()

    def _event(self) -> dict:
        lower, upper, upper_msr = self.bounds()
        ev = Event(self.iteration, self.elapsed, lower, upper, upper_msr, self.astar.generated,
                   self.ev.evaluations, self.astar.exact, self.astar.robust,
                   self._grid_witness() is not None, self.certified_lower).to_dict()
        self.trace.append(ev)
        return ev

    def run_all(self, **kw) -> dict:
        for _ in self.run(**kw):
            pass
        return self.result()

    # -- results -------------------------------------------------------------------------------
    def _name(self, k: int):
        return self.classes[k] if self.classes else k

    def measured_flow_distance(self, z: torch.Tensor) -> float | None:
        """‖P(v'(δ)) − P(v)‖_p with the torch Horn–Schunck flow over every frame pair."""
        if not isinstance(self.space, FlowSpace):
            return None
        from core.flow import compute_flow

        with torch.no_grad():
            v2 = self.space.apply(z.view(1, -1).float().to(self.video.device))[0]
            diff = (compute_flow(v2) - compute_flow(self.video)).flatten().double()
        p = {"l1": 1, "l2": 2, "linf": math.inf}[self.params.metric]
        return float(torch.linalg.vector_norm(diff, ord=p))

    def witness_video(self) -> torch.Tensor | None:
        """The adversarial video of the best grid witness (else of the best continuous one)."""
        gw = self._grid_witness()
        cont = self.upper_search.best if self.upper_search is not None else None
        z = gw[1] if gw is not None else (cont.z if cont is not None else None)
        if z is None:
            return None
        with torch.no_grad():
            return self.space.apply(z.view(1, -1).float().to(self.video.device))[0].cpu()

    def safe_video(self) -> torch.Tensor:
        with torch.no_grad():
            z = self.astar.z_of(self.astar.best_safe)
            return self.space.apply(z.view(1, -1).float().to(self.video.device))[0].cpu()

    def result(self) -> dict:
        """The flat, JSON-serialisable record of the CLI (``msr --json``)."""
        lower, upper, upper_msr = self.bounds()
        gw = self._grid_witness()
        orig = torch.softmax(self.ev.base_logits, 0)
        witness = None
        cont = self.upper_search.best if self.upper_search is not None else None
        if gw is not None or cont is not None:
            dist, z, chk = gw if gw is not None else (cont.distance, cont.z, cont.check)
            witness = {"flow_distance": dist, "measured_flow_distance": self.measured_flow_distance(z),
                       "orig_label": self._name(self.ev.label), "orig_confidence": float(orig[self.ev.label]),
                       "adv_label": self._name(chk["label"]), "adv_confidence": chk["confidence"],
                       "on_grid": gw is not None, "within_budget": dist <= self.params.budget}
        safe = self.astar.best_safe
        t1 = self.theorem1_valid()
        return {
            "trace": [{k: e[k] for k in ("iteration", "seconds", "lower", "upper", "upper_msr", "certified_lower")}
                      for e in self.trace],
            "lower": lower, "upper": upper, "upper_msr": upper_msr,
            "certified_lower": self.certified_lower, "certified_note": self.cert_note,
            "certified_method": self.cert.method if self.cert is not None else None,
            "node_probes": self.astar.node_probes,
            "bounds": self.bound_list(), "lower_guarantee": self.lower_guarantee(),
            "msr_lower": max(0.0, lower - self.band) if t1 else None, "band": self.band if t1 else None,
            "theorem1": ("valid: L given by the user and τ satisfies Eq. 5" if t1 else
                         "not applicable: needs a user-given Lipschitz constant L and τ within Eq. 5"),
            "exact": self.astar.exact, "robust_within_budget": self.astar.robust,
            "witness": witness,
            "safe_example": {"flow_distance": safe.norm,
                             "measured_flow_distance": self.measured_flow_distance(self.astar.z_of(safe))},
            "iterations": self.iteration, "seconds": self.elapsed, "nodes": self.astar.generated,
            "expanded": self.astar.expanded, "evaluations": self.ev.evaluations,
            "manipulation_space": self.space.describe(), "dims": self.space.dims,
            "original_label": self._name(self.ev.label),
            "params": self.params.to_dict(),
        }
