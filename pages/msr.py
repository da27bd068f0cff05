"""Maximum safe radius on optical flow: live converging bounds (Wu & Kwiatkowska, CVPR 2020)."""

import hashlib
import json

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.errors import CoreError
from core.flow import compute_flow
from core.msr import Evaluator, MSRParams, MSRSolver, estimate_lipschitz, make_space, tau_from_lipschitz
from core.msr.background import BackgroundRun
from core.video import encode_mp4
from core.viz import frame_strip, prediction_bar
from core.viz.flow import comparison_figure
from core.viz.msr import bounds_figure, lower_traces_figure
from pages.common import require_model_and_clip, sidebar

st.title("Maximum safe radius on optical flow")
st.markdown(
    "How far can the **motion** of a clip be bent before the classifier changes its mind? We perturb "
    "the optical flow between frames (δ, in pixels), impose it back on the frames, and bound the "
    "smallest perturbation that flips the decision: an **upper bound** (red) from gradient search — "
    "every value is the distance of a real adversarial video, re-checked — and a **lower bound** "
    "(blue) from admissible A* over the τ-grid: no grid perturbation below it flips the decision. "
    "The grey band is where the continuous MSR lies by Theorem 1, `[lower − ½d̃, upper]`.")

sel = sidebar()
video = require_model_and_clip(sel)
T = video.shape[0]
H = video.shape[-1]

# ------------------------------------------------------------------ parameters
with st.expander("Parameters", expanded=True):
    c = st.columns(4)
    metric = c[0].selectbox("Distance", ["l2", "l1", "linf"], key="msr_metric",
                            format_func={"l1": "ℓ1", "l2": "ℓ2", "linf": "ℓ∞"}.get)
    blocks = [b for b in (4, 8, 16, 32) if H % b == 0] or [1]
    block = c[1].selectbox("Block size (px)", blocks, index=blocks.index(16) if 16 in blocks else 0, key="msr_block",
                           help="Pixels moved together by one manipulable dimension; 1 = per pixel.")
    flows = c[2].multiselect("Manipulated frame pairs (Player I)", list(range(T - 1)), default=list(range(T - 1)),
                             key="msr_flows")
    heuristic = c[3].selectbox("A* heuristic", ["zero", "lipschitz"], key="msr_heur",
                               help="zero: no assumption, a guaranteed lower bound for FMSR. lipschitz: "
                                    "h = margin / L, valid only when L is a true Lipschitz constant.")
    c = st.columns(4)
    default_budget = {"l1": 20000.0, "l2": 300.0, "linf": 4.0}[metric]
    tau = c[0].number_input("τ (grid step, px)", 0.01, 10.0, st.session_state.get("msr_tau_value", 0.5), 0.05,
                            key="msr_tau", format="%.3f")
    budget = c[1].number_input("Budget d", 0.01, 1e6, default_budget, key=f"msr_budget_{metric}")
    max_iters = int(c[2].number_input("Max iterations", 1, 100_000, 300, key="msr_iters"))
    time_limit = float(c[3].number_input("Time limit (s)", 1.0, 3600.0, 60.0, key="msr_time"))
    lip = None
    if heuristic == "lipschitz":
        c = st.columns([1, 1, 2])
        lip = c[0].number_input("Lipschitz constant L of the margin", 1e-6, 1e6,
                                st.session_state.get("msr_L_value", 1.0), key="msr_L", format="%.4f")
        est = st.session_state.get("msr_L_est")
        if c[1].button("Estimate L (sampled)", key="msr_estimate"):
            with st.spinner("Sampling gradients…"):
                try:
                    space = make_space(video, MSRParams(flows=flows or None, block=block).validate(T))
                    ev = Evaluator(sel.model, space)
                    est = estimate_lipschitz(ev, metric, budget)
                    est["margin"] = float(Evaluator.margin_of(ev.base_logits, ev.label))
                    est["tau_eq5"] = tau_from_lipschitz(est["margin"], est["L"], space, metric) if est["L"] > 0 else None
                    st.session_state["msr_L_est"] = est
                except CoreError as e:
                    st.error(str(e))
        if est:
            c[2].warning(f"Sampled L ≈ {est['L']:.4g} — an **estimate, not a guarantee** "
                         f"({est['samples']} gradients in the ball of radius {est['radius']:g}). "
                         + (f"τ from Eq. (5) for this L and margin {est['margin']:.3f}: {est['tau_eq5']:.4g} px."
                            if est.get("tau_eq5") else ""))
            cc = c[2].columns(2)
            if cc[0].button("Use this L", key="msr_use_L"):
                st.session_state["msr_L_value"] = est["L"]
                st.session_state.pop("msr_L", None)
                st.rerun()
            if est.get("tau_eq5") and cc[1].button("Use τ from Eq. (5)", key="msr_use_tau"):
                st.session_state["msr_tau_value"] = max(0.01, float(est["tau_eq5"]))
                st.session_state.pop("msr_tau", None)
                st.rerun()

params = MSRParams(metric=metric, tau=float(tau), budget=float(budget), flows=sorted(flows) or None, block=int(block),
                   heuristic=heuristic, lipschitz=lip, max_iters=max_iters, time_limit=time_limit)
key = hashlib.sha256(json.dumps([sel.model_key, sel.video_key, params.to_dict()], default=str).encode()).hexdigest()[:16]
run: BackgroundRun | None = st.session_state.get("msr_run")
if run is not None and st.session_state.get("msr_run_key") != key:
    st.caption("Parameters changed: the chart shows the previous computation; Start begins a new one"
               + (" (after Pause or Stop)." if run.status == "running" else "."))

b = st.columns(5)
resumable = run is not None and run.status in ("paused", "limit") and st.session_state.get("msr_run_key") == key
if b[0].button("▶ Resume" if resumable else "▶ Start", type="primary", key="msr_start",
               disabled=run is not None and run.status == "running"):
    if not resumable:  # a new computation with the current parameters
        try:
            solver = MSRSolver(sel.model, video, params, classes=sel.spec.classes)
            run = BackgroundRun(solver)
            st.session_state["msr_run"], st.session_state["msr_run_key"] = run, key
        except CoreError as e:
            st.error(str(e))
            run = None
    if run is not None:
        run.start()
if b[1].button("❚❚ Pause", key="msr_pause", disabled=run is None or run.status != "running"):
    run.pause()
if b[2].button("■ Stop", key="msr_stop", disabled=run is None or run.status not in ("running", "paused", "limit")):
    run.stop()
if b[3].button("↺ Reset", key="msr_reset", disabled=run is None):
    if run is not None:
        run.stop()
    st.session_state.pop("msr_run", None)
    run = None
    st.rerun()


@st.fragment(run_every=0.5 if run is not None and run.status == "running" else None)
def live() -> None:
    r: BackgroundRun | None = st.session_state.get("msr_run")
    if r is None:
        st.info("Press **Start**: the bounds appear here as they converge.")
        return
    s = r.solver
    trace = r.trace()
    lower, upper, _ = s.bounds() if trace else (0.0, s.params.budget, s.params.budget)
    m = st.columns(6)
    m[0].metric("Status", r.status)
    m[1].metric("Iteration", s.iteration)
    m[2].metric("Lower bound", f"{lower:.4g}")
    m[3].metric("Upper bound", f"{upper:.4g}" if s._grid_witness() is not None else "d + ε")
    m[4].metric("Evaluations / s", f"{s.ev.evaluations / max(s.elapsed, 1e-9):.0f}",
                help="model evaluations (A* nodes, gradient steps, witness checks) per second")
    m[5].metric("Elapsed", f"{s.elapsed:.1f} s")
    st.plotly_chart(bounds_figure(trace, s.band, s.params.budget,
                                  f"{sel.spec.name} · {s.space.describe()} · τ = {s.params.tau:g}"),
                    width="stretch", key="msr_chart")
    if r.status == "error":
        st.error(f"The computation failed: {r.error}")
    if s.astar.exact:
        st.success(f"FMSR is exact: {lower:.4g} (A* reached a verified adversarial grid point).")
    elif s.astar.robust:
        st.success(f"Robust within the budget: no τ-grid perturbation with distance ≤ {s.params.budget:g} "
                   f"changes the decision (FMSR = d + ε).")
    st.caption(f"FMSR ∈ [{lower:.4g}, {upper:.4g}]; ½d̃ = {s.band:.4g}, so MSR ∈ "
               f"[{max(0.0, lower - s.band):.4g}, {upper:.4g}] (Theorem 1, if τ satisfies Eq. 5). "
               f"The bounds hold for this manipulation space: {s.space.describe()}.")
    if r.status != "running" and st.session_state.get("msr_drawn") != (id(r), r.status, s.iteration):
        st.session_state["msr_drawn"] = (id(r), r.status, s.iteration)
        st.rerun()  # refresh the panels below once the run pauses or ends


live()

run = st.session_state.get("msr_run")
if run is None or run.status == "running" or not run.solver.trace:
    st.stop()

# ------------------------------------------------------------------ results
s = run.solver
_rk = (id(run), run.status, s.iteration)
if st.session_state.get("msr_result_key") != _rk:  # result() computes flows: once per state, not per rerun
    st.session_state["msr_result"], st.session_state["msr_result_key"] = s.result(), _rk
res = st.session_state["msr_result"]
st.header("Witnesses")
t_pair = s.params.flows[0] if s.params.space == "flow" else T // 2 - 1


@st.cache_data(show_spinner=False, max_entries=32)
def _flows(k: str, _v: np.ndarray) -> np.ndarray:
    return compute_flow(torch.from_numpy(_v)).numpy()


def show_case(title: str, vid: torch.Tensor, note: str, tag: str) -> None:
    st.subheader(title)
    st.caption(note)
    probs = torch.softmax(sel.model(vid.unsqueeze(0).to(s.video.device))[0].float(), 0).detach().cpu()
    c1, c2 = st.columns([3, 2])
    with c1:
        lo, hi = max(0, t_pair - 1), min(T, t_pair + 4)
        strip, idx = frame_strip(vid[lo:hi], hi - lo, scale=2)
        st.image(strip, caption=f"perturbed frames {lo}…{hi - 1}", width="stretch")
        fo = _flows(f"{sel.video_key}-orig", s.video.cpu().numpy())
        fp = _flows(f"{key}-{tag}-{res['iterations']}", vid.numpy())
        st.plotly_chart(comparison_figure(fo[t_pair], fp[t_pair], "magnitude"), width="stretch", key=f"{tag}_mag")
        st.plotly_chart(comparison_figure(fo[t_pair], fp[t_pair], "direction"), width="stretch", key=f"{tag}_dir")
    with c2:
        st.plotly_chart(prediction_bar({c: float(p) for c, p in zip(sel.spec.classes, probs)},
                                       sel.spec.classes[s.ev.label], "prediction"), width="stretch", key=f"{tag}_pred")


w = res["witness"]
if w is not None:
    wv = s.witness_video()
    show_case(f"Unsafe: {w['orig_label']} ({w['orig_confidence']:.1%}) → {w['adv_label']} ({w['adv_confidence']:.1%})",
              wv, f"Flow distance ‖δ‖ = {w['flow_distance']:.4g} (upper bound); measured change of the "
                  f"Horn–Schunck flow ‖P(v′) − P(v)‖ = {w['measured_flow_distance']:.4g} "
                  f"(imposing a flow is not exact).", "unsafe")
    st.download_button("Witness video (H.264)", encode_mp4(wv, 8, 4), "msr_witness.mp4", "video/mp4", key="msr_dl_video")
else:
    st.info("No adversarial witness yet: the upper bound stands at d + ε.")
safe = s.safe_video()
show_case("Safe: a perturbation at the lower bound", safe,
          f"A verified-safe grid perturbation with flow distance {res['safe_example']['flow_distance']:.4g} "
          f"≤ lower bound {res['lower']:.4g}.", "safe")

d1, d2 = st.columns(2)
d1.download_button("Trace (CSV)", pd.DataFrame(res["trace"]).to_csv(index=False), "msr_trace.csv", "text/csv",
                   key="msr_dl_csv")
d2.download_button("Result (JSON)", json.dumps(res, indent=2, default=str), "msr_result.json", "application/json",
                   key="msr_dl_json")

# ------------------------------------------------------------------ Fig. 8 and Fig. 10
st.header("Beyond flows")


def _lower_traces(kind: str, spaces: list[MSRParams], iters: int) -> dict:
    """Lower-bound traces for several spaces, with a progress bar (any click stops it)."""
    out = {}
    bar = st.progress(0.0, text=f"{kind}: starting…")
    for i, p in enumerate(spaces):
        solver = MSRSolver(sel.model, video, p, classes=sel.spec.classes)
        name = (f"{len(p.flows)} flow(s) {p.flows}" if kind == "scalability" else f"τ = {p.tau:g}")
        for ev in solver.run(max_iters=iters, time_limit=120):
            bar.progress((i + ev["iteration"] / iters) / len(spaces), text=f"{kind}: {name}, iteration {ev['iteration']}")
        out[name] = solver.trace
    bar.empty()
    return out


c1, c2 = st.columns(2)
with c1:
    st.markdown("**Brightness** (Fig. 8): each atomic move brightens one whole frame by ±τ; the lower "
                "bound says how much uniform brightness change is certainly safe (ℓ2 over pixel values).")
    if st.button("Compute brightness lower bounds", key="msr_bright"):
        ps = [MSRParams(metric="l2", tau=t, budget=1e3, space="brightness", upper=False, max_iters=40)
              for t in (0.01, 0.02)]
        st.session_state["msr_bright_res"] = _lower_traces("brightness", ps, 40)
    if "msr_bright_res" in st.session_state:
        st.plotly_chart(lower_traces_figure(st.session_state["msr_bright_res"], "brightness: lower bounds"),
                        width="stretch", key="msr_bright_fig")
with c2:
    st.markdown("**Scalability** (Fig. 10): the lower bound after the same number of iterations when "
                "Player I may manipulate 1, 2 or 3 flows.")
    if st.button("Compute scalability panel", key="msr_scal"):
        t0 = min(T // 2 - 1, T - 4)
        ps = [MSRParams(metric=metric, tau=float(tau), budget=float(budget), flows=list(range(t0, t0 + n)),
                        block=int(block), upper=False, max_iters=40) for n in (1, 2, 3)]
        st.session_state["msr_scal_res"] = _lower_traces("scalability", ps, 40)
    if "msr_scal_res" in st.session_state:
        st.plotly_chart(lower_traces_figure(st.session_state["msr_scal_res"], "lower bound vs manipulated flows"),
                        width="stretch", key="msr_scal_fig")
