"""Maximum safe radius on optical flow: live converging bounds (Wu & Kwiatkowska, CVPR 2020)."""

import hashlib
import json
import math

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.errors import CoreError
from core.flow import compute_flow
from core.jsonutil import dumps as strict_json
from core.msr import DEFAULT_BUDGETS, MSRParams, MSRSolver, lipschitz_report
from core.msr.background import BackgroundRun
from core.msr.experiments import brightness_panel, scalability_panel
from core.video import encode_mp4
from core.viz import frame_strip, prediction_bar
from core.viz.flow import comparison_figure
from core.viz.msr import (
    bounds_figure,
    cert_method_text,
    diagnosis_figure,
    lower_traces_figure,
)
from pages.common import current, forget, keep, require_model_and_clip

st.title("Maximum safe radius on optical flow")
st.markdown(
    "How far can the **motion** of a clip be bent before the classifier changes its mind? We perturb "
    "the optical flow between frames (δ, in pixels), impose it back on the frames, and bound the "
    "smallest perturbation that flips the decision: an **upper bound** (red) from gradient search — "
    "every value is the distance of a real adversarial video, re-checked (*sound*) — a **grid lower "
    "bound** (blue) from admissible A* over the τ-grid (*grid*: no grid perturbation below it flips the "
    "decision), and a **certified lower bound** (green) by our own bound propagation (CROWN) through "
    "the warp and the model with branch and bound (*sound*: no perturbation at all below it flips the "
    "decision, no assumption). Every bound names its guarantee; Theorem 1's band is drawn only when "
    "you give a Lipschitz constant L and τ satisfies Eq. 5 (*conditional*).")

sel = current()
video = require_model_and_clip(sel)
if sel.spec.name == "cnn_lstm_certified":
    card = sel.spec.card
    cost = (f", at {card['test_accuracy']:.0%} test accuracy instead of the regular model's "
            f"{card['regular_test_accuracy']:.2%}" if {"test_accuracy", "regular_test_accuracy"} <= set(card) else "")
    st.caption("`cnn_lstm_certified` was trained with bounds over an ℓ2 ball of flow manipulations of every frame: "
               f"its certified lower bound is far larger than the regular model's{cost} (README, *Certified "
               "training*).")
else:
    st.caption("Compare with the certifiably trained `cnn_lstm_certified`: pick it in the sidebar, or see both "
               "side by side over many clips in **Experiments → Safe radius over clips**.")
T = video.shape[0]
H = video.shape[-1]
keep("msr_metric", "msr_block", "msr_flows", "msr_heur", "msr_tau", "msr_budget_*", "msr_iters", "msr_time", "msr_L", "msr_log",
     "msr_cert_method", "msr_node_probes",
     valid={"msr_block": lambda b: H % b == 0, "msr_flows": lambda fs: all(0 <= f < T - 1 for f in fs)})

# ------------------------------------------------------------------ parameters
D = MSRParams()  # one source of defaults: the core's (the README quotes them; a test reads both)
with st.expander("Parameters", expanded=True):
    c = st.columns(4)
    metrics = ["l2", "l1", "linf"]
    metric = c[0].selectbox("Distance", metrics, index=metrics.index(D.metric), key="msr_metric",
                            format_func={"l1": "ℓ1", "l2": "ℓ2", "linf": "ℓ∞"}.get)
    blocks = [b for b in (4, 8, 16, 32) if H % b == 0] or [1]
    block = c[1].selectbox("Block size (px)", blocks, index=blocks.index(D.block) if D.block in blocks else 0, key="msr_block",
                           help="Pixels moved together by one manipulable dimension; 1 = per pixel.")
    flows = c[2].multiselect("Manipulated frame pairs (Player I)", list(range(T - 1)), default=list(range(T - 1)),
                             key="msr_flows")
    heuristic = c[3].selectbox("A* heuristic", ["zero", "certified", "lipschitz"], key="msr_heur",
                               help="zero: no assumption, a guaranteed lower bound for FMSR. certified: "
                                    "f = max(g ⊕ node radius, certified radius) — sound, no assumption. lipschitz: "
                                    "h = margin / L, valid only when L is a true Lipschitz constant.")
    c = st.columns(4)
    default_budget = DEFAULT_BUDGETS[metric]
    tau = c[0].number_input("τ (grid step, px)", 0.01, 10.0, st.session_state.get("msr_tau_value", D.tau), 0.05,
                            key="msr_tau", format="%.3f")
    budget = c[1].number_input("Budget d", 0.01, 1e6, default_budget, key=f"msr_budget_{metric}")
    max_iters = int(c[2].number_input("Max iterations", 1, 100_000, D.max_iters, key="msr_iters"))
    time_limit = float(c[3].number_input("Time limit (s)", 1.0, 3600.0, D.time_limit, key="msr_time"))
    c = st.columns(4)
    cert_method = c[0].selectbox(
        "Certified bound by", ["crown+", "crown", "alpha", "ibp"], key="msr_cert_method",
        format_func={"crown": "CROWN → CROWN+ → CROWN++", "alpha": "α-CROWN (slowest)",
                     "crown+": "CROWN+ → CROWN++", "ibp": "IBP (intervals)"}.get,
        help="Bound propagation behind the green certified lower bound, all sound. CROWN+ → CROWN++ (default): "
             "CROWN+ (linear intermediate bounds for every ReLU, carried forward in each step's flow "
             "variables) locates and bisects the radius, then CROWN++ (back-substitution for the deeper "
             "ReLUs too, and the lifted warp forms bounded over the ball jointly; slower per probe) tries "
             "1.25× what CROWN+ proved; then branch and bound, one box at a time, each box bounded over "
             "its intersection with the ball. CROWN → …: CROWN with interval "
             "intermediate bounds first, until its first failed radius (looser, and on 15 flows no faster). "
             "α-CROWN: optimised ReLU slopes (≈ 20× per probe). Slower methods are tighter per probe but "
             "make fewer probes in the time limit.")
    node_probes = 0
    if heuristic == "certified":
        node_probes = int(c[1].number_input(
            "Node radii probes per A* batch", 0, 64, 0, key="msr_node_probes",
            help="0: f = max(g, certified radius of the clip). N > 0: the N best nodes of every A* batch also "
                 "get their own certified radius (one bound-propagation probe each) — sound, but a probe costs "
                 "as much as thousands of A* nodes (README, Certified safe radius)."))
    lip = None
    lip_source = "user"
    if heuristic == "lipschitz":
        c = st.columns([1, 1, 2])
        lip = c[0].number_input("Lipschitz constant L of the margin", 1e-6, 1e6,
                                st.session_state.get("msr_L_value", 1.0), key="msr_L", format="%.4f")
        est = st.session_state.get("msr_L_est")
        if c[1].button("Estimate L (sampled)", key="msr_estimate"):
            with st.spinner("Sampling gradients…"):
                try:
                    est = lipschitz_report(sel.model, video, MSRParams(metric=metric, budget=float(budget),
                                                                        flows=flows or None, block=block))
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
                st.session_state["msr_L_from_estimate"] = est["L"]
                forget("msr_L")
                st.rerun()
            if est.get("tau_eq5") and cc[1].button("Use τ from Eq. (5)", key="msr_use_tau"):
                st.session_state["msr_tau_value"] = max(0.01, float(est["tau_eq5"]))
                forget("msr_tau")
                st.rerun()

    if lip is not None and st.session_state.get("msr_L_from_estimate") == lip:
        lip_source = "estimate"  # the sampled L: every bound that rests on it says "estimate"
        c[0].caption("This L is the sampled **estimate**: bounds that use it are estimates.")

params = MSRParams(metric=metric, tau=float(tau), budget=float(budget), flows=sorted(flows) or None, block=int(block),
                   heuristic=heuristic, lipschitz=lip, lipschitz_source=lip_source, max_iters=max_iters,
                   time_limit=time_limit, cert_method=cert_method, node_probes=node_probes)
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


LOWER_LABEL = {"grid": "Grid lower bound (FMSR)", "conditional": "Lower bound (conditional on L)",
               "estimate": "Lower estimate (sampled L)"}


@st.fragment(run_every=0.5 if run is not None and run.status == "running" else None)
def live() -> None:
    r: BackgroundRun | None = st.session_state.get("msr_run")
    if r is None:
        st.info("Press **Start**: the bounds appear here as they converge.")
        return
    s = r.solver
    snap = s.snapshot()
    m = st.columns(4) + st.columns(4)
    m[0].metric("Status", r.status, help=snap["activity"] if r.status == "running" else None)
    m[1].metric("Iteration", snap["iteration"])
    m[7].metric("Nodes", snap["nodes"])
    m[2].metric(LOWER_LABEL[snap["lower_guarantee"]], f"{snap['lower']:.4g}",
                help=f"guarantee: {snap['lower_guarantee']}")
    cl = snap["certified_lower"]
    m[3].metric("Certified lower (sound)", "—" if cl is None else f"{cl:.4g}",
                help=snap["cert_note"] or "bound propagation + branch and bound: sound for the continuous MSR")
    um = snap["upper_msr"]
    m[4].metric("Upper bound (sound)", f"{um:.4g}" if math.isfinite(um) else "none yet",
                help="MSR ≤ the distance of a verified adversarial video (inside the budget or beyond it)")
    eps = snap["evals_per_s"]
    m[5].metric("Evaluations / s", "…" if eps is None else f"{eps:.0f}",
                help="model evaluations per second over the last 5 s (A* nodes, gradient steps, checks)")
    m[6].metric("Elapsed", f"{snap['seconds']:.1f} s")
    if r.status == "running":
        st.caption(f"Now: {snap['activity']} · {snap['nodes']} nodes · {snap['evaluations']} evaluations")
    log_y = st.toggle("Logarithmic distance axis", key="msr_log",
                      help="Shows a certified bound of 0.01 beside an upper bound of 100; zeros are not drawn.")
    st.plotly_chart(bounds_figure(r.trace(), snap["band"], snap["budget"],
                                  f"{sel.spec.name} · {snap['space']} · τ = {s.params.tau:g}",
                                  snap["lower_guarantee"], log_y=log_y, cert_method=snap["cert_method"]),
                    width="stretch", key="msr_chart")
    if r.status == "error":
        st.error(f"The computation failed: {r.error}")
    if snap["cert_note"]:
        st.info(f"Certified lower bound unavailable — {snap['cert_note']}.")
    if snap["exact"]:
        st.success(f"FMSR is exact: {snap['lower']:.4g} (A* reached a verified adversarial grid point).")
    elif snap["robust"]:
        st.success(f"Robust within the budget: no τ-grid perturbation with distance ≤ {s.params.budget:g} "
                   f"changes the decision (FMSR = d + ε).")
    lines = [f"**{b['name']}** = {b['value']:.4g} — *{b['guarantee']}*: {b['meaning']}" if math.isfinite(b["value"])
             else f"**{b['name']}**: none yet (no verified adversarial video)" for b in snap["bounds"]]
    if snap["band"] is None:
        lines.append("Theorem 1's band is not drawn: it needs a Lipschitz constant L that you claim is true "
                     "and τ within Eq. 5.")
    st.markdown("\n".join(f"- {x}" for x in lines) + f"\n\nAll bounds hold for this manipulation space: "
                f"{snap['space']}.")
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
    with st.spinner("Rendering the witnesses (flows of the perturbed clips)…"):
        st.session_state["msr_result"], st.session_state["msr_result_key"] = s.result(), _rk
res = st.session_state["msr_result"]


@st.cache_data(show_spinner=False, max_entries=16)
def _explain(run_key: str, radius: float, method: str, _solver: MSRSolver) -> dict | None:
    """The certifier's probe at the radius it failed at, with its diagnosis (keyed by run and radius)."""
    return _solver.explain_certificate()


end = s.snapshot()
if end["cert_failed_at"] is not None and end["certified_lower"] is not None and end["cert_failed_at"] < end["upper_msr"]:
    # (a failure at the upper bound itself is no looseness: a verified adversarial video lies there)
    fail, stage = end["cert_failed_at"], end["cert_stage"]
    with st.expander(f"Why the certified lower bound stops at {end['certified_lower']:.4g}"):
        st.caption(f"The certifier ({cert_method_text(stage)}) could not prove radius {fail:.4g}. "
                   "One probe there shows where the bound is lost: the margin bound of each relaxation, and per "
                   "perturbed step the CNN's unstable ReLUs (their relaxation is where the looseness sits) and "
                   "the width of the feature box the LSTM's lines then compound."
                   + (f" Radii between {end['certified_lower']:.4g} and {fail:.4g} were not searched to the end: "
                      "more time may prove some of them." if fail > 1.05 * end["certified_lower"] else ""))
        want = (st.session_state.get("msr_run_key"), fail)
        if st.button(f"Explain: one {cert_method_text(stage)} probe at radius {fail:.4g}", key="msr_explain"):
            st.session_state["msr_explain_for"] = want
        if st.session_state.get("msr_explain_for") == want:
            with st.spinner("Bound propagation at the failed radius…"):
                try:
                    ex = _explain(str(want[0]), float(fail), stage, s)
                except CoreError as e:
                    ex = None
                    st.error(str(e))
            if ex is not None:
                names = {"ibp": "IBP", "crown": "CROWN", "joint": "joint (through the CNN into the flow)"}
                st.markdown(f"Margin lower bound at radius {fail:.4g} (*sound*): **{ex['margin_lower']:.4g}** "
                            f"({'certified' if ex['certified'] else 'not certified'}; the best per class of "
                            + ", ".join(f"{names.get(k, k)} {v:.4g}" for k, v in ex["bounds"].items())
                            + f"; {ex['seconds']:.1f} s).")
                st.plotly_chart(diagnosis_figure(ex["diagnosis"], f"{sel.spec.name} · radius {fail:.4g}"),
                                width="stretch", key="msr_diag_chart")
                if all(r["unstable"] is None for r in ex["diagnosis"]["steps"]):
                    st.caption("IBP keeps no intermediate bounds: there are no unstable ReLUs to count, only "
                               "the feature boxes.")
                st.download_button("Download the diagnosis (JSON)", strict_json(ex),
                                   file_name=f"certificate_diagnosis_{want[0]}.json", mime="application/json",
                                   key="msr_diag_dl")
st.header("Witnesses")
def _changed_pair(vid: torch.Tensor) -> int:
    """The frame pair whose frames changed most (the panels show where the perturbation is)."""
    if s.params.space != "flow":
        return T // 2 - 1
    d = (vid - s.video.cpu()).abs().flatten(1).sum(1)  # per frame
    f = int(d.argmax())
    return max(0, min(T - 2, f - 1))


@st.cache_data(show_spinner=False, max_entries=32)
def _flows(k: str, _v: np.ndarray) -> np.ndarray:
    return compute_flow(torch.from_numpy(_v)).numpy()


def show_case(title: str, vid: torch.Tensor, note: str, tag: str) -> None:
    st.subheader(title)
    st.caption(note)
    t_pair = _changed_pair(vid)
    probs = sel.model.fork().predict(vid)[2]
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
                                       res["original_label"], "prediction"), width="stretch", key=f"{tag}_pred")


w = res["witness"]
if w is not None:
    wv = s.witness_video()
    show_case(f"Unsafe: {w['orig_label']} ({w['orig_confidence']:.1%}) → {w['adv_label']} ({w['adv_confidence']:.1%})",
              wv, f"Flow distance ‖δ‖ = {w['flow_distance']:.4g} (the upper bound, verified: sound); measured change of the "
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
d2.download_button("Result (JSON)", strict_json(res, indent=2), "msr_result.json", "application/json",
                   key="msr_dl_json")

# ------------------------------------------------------------------ Fig. 8 and Fig. 10
st.header("Beyond flows")


def _progress_bar(kind: str):
    bar = st.progress(0.0, text=f"{kind}: starting…")
    return bar, (lambda f, m: bar.progress(min(f, 1.0), text=f"{kind}: {m}"))


c1, c2 = st.columns(2)
with c1:
    st.markdown("**Brightness** (Fig. 8): each atomic move brightens one whole frame by ±τ; the lower "
                "bound (*grid*) says how much uniform brightness change is certainly safe on the grid "
                "(ℓ2 over pixel values). CLI: `python -m core panels VIDEO --panel brightness`.")
    if st.button("Compute brightness lower bounds", key="msr_bright"):
        bar, prog = _progress_bar("brightness")
        st.session_state["msr_bright_res"] = brightness_panel(sel.model, video, progress=prog)
        bar.empty()
    if "msr_bright_res" in st.session_state:
        st.plotly_chart(lower_traces_figure(st.session_state["msr_bright_res"], "brightness: grid lower bounds"),
                        width="stretch", key="msr_bright_fig")
with c2:
    st.markdown("**Scalability** (Fig. 10): the grid lower bound after the same number of iterations when "
                "Player I may manipulate 1, 2 or 3 flows. CLI: `python -m core panels VIDEO --panel scalability`.")
    if st.button("Compute scalability panel", key="msr_scal"):
        bar, prog = _progress_bar("scalability")
        st.session_state["msr_scal_res"] = scalability_panel(sel.model, video, metric, float(tau), float(budget),
                                                             int(block), progress=prog)
        bar.empty()
    if "msr_scal_res" in st.session_state:
        st.plotly_chart(lower_traces_figure(st.session_state["msr_scal_res"], "grid lower bound vs manipulated flows"),
                        width="stretch", key="msr_scal_fig")
