"""DeepSAVA's dataset-scale experiments (Mu et al.): transferability (Tab. 12), compression
survival (§4.2.3) and saliency maps of different models (App. D). Jobs run as core.jobs tasks: an
embedded local Ray by default, results cached by content so a re-run only computes what is missing."""

import json

import pandas as pd
import streamlit as st

from core.attacks import METHODS
from core.errors import CoreError
from core.jsonutil import dumps
from core.models import available_models
from core.viz.attacks import saliency_maps_figure, transfer_figure
from core.viz.msr import msr_set_figure
from pages.common import current, keep, load_shipped_model, require_model_and_clip, run_job

st.title("Experiments")
st.markdown("DeepSAVA's experiments over many clips and models: **transferability** of adversarial clips "
            "between models, **robust accuracy** of adversarially trained models, **compression** as a defence, "
            "**saliency maps** of different models, and the **maximum safe radius over a set of clips**. Each has "
            "a CLI twin (`python -m core transfer | robust | compress | saliency | msrset`).")
sel = current()
shipped = [c["name"] for c in available_models()]
keep("tr_sources", "tr_targets", "tr_method", "tr_eps", "tr_clips", "tr_engine", "tr_workers", "cp_method",
     "cp_codec", "cp_levels", "sal_models", "sal_smooth", "sal_frames", "rb_models", "rb_methods", "rb_clips",
     "ms_models", "ms_clips", "ms_metric", "ms_flows", "ms_block", "ms_tau", "ms_budget", "ms_iters", "ms_certify",
     "ms_engine", "ms_workers", valid={"tr_sources": lambda ms: all(m in shipped for m in ms), "tr_targets": lambda ms: all(m in shipped for m in ms),
            "sal_models": lambda ms: all(m in shipped for m in ms), "ms_models": lambda ms: all(m in shipped for m in ms)})
INKAWHICH = ("one-shot", "saliency", "saliency-rg")


@st.cache_data(show_spinner="Computing gradients…", max_entries=32)
def _maps(model: str, video_key: str, label: int | None, smooth: int, _video):
    from core.experiments.saliency import saliency_maps

    return saliency_maps(load_shipped_model(model)[0], _video, label, smooth)["maps"].numpy()
tab1, tab4, tab2, tab3, tab5 = st.tabs(["Transferability", "Robust accuracy", "Compression", "Saliency maps",
                                       "Safe radius over clips"])

with tab1:
    c = st.columns(3)
    sources = c[0].multiselect("Source models (craft)", shipped, default=["c3d", "cnn_lstm"], key="tr_sources")
    targets = c[1].multiselect("Target models (judge)", shipped,
                               default=["c3d", "cnn_lstm", "frame_cnn", "motion_stream_farneback"], key="tr_targets")
    method = c[2].selectbox("Attack", METHODS, key="tr_method")
    c = st.columns(4)
    kw: dict = {}
    if method in INKAWHICH:
        kw["eps"] = c[0].number_input("ε", 0.001, 0.5, 0.02, 0.001, format="%.3f", key="tr_eps")
    else:
        kw.update(frames=1, max_iters=40)
        if method == "deepsava":
            kw["select"] = "first"
        c[0].caption("Sparse attacks: 1 key frame, 40 iterations (first frame for DeepSAVA) to keep jobs short.")
    clips = int(c[1].number_input("Test clips", 1, 400, 8, key="tr_clips"))
    engine = c[2].selectbox("Engine", ["auto", "ray", "serial"], key="tr_engine",
                            help="auto: an embedded local Ray when installed (else serial); set RAY_ADDRESS to join a cluster")
    workers = int(c[3].number_input("Ray workers", 1, 64, 2, key="tr_workers"))
    key = json.dumps([sources, targets, method, kw, clips])
    store = st.session_state.setdefault("transfer", {})
    b1, b2 = st.columns([1, 5])
    if b1.button("Run", type="primary", key="tr_run", disabled=not sources or not targets):
        from core.experiments.transfer import transfer_matrix

        run_job("transfer", key, lambda progress: transfer_matrix(sources, targets, method, clips, kw, engine=engine,
                                                                 workers=workers, progress=progress))
    b2.button("■ Stop", key="tr_stop", help="Any click stops a running job; finished tasks stay cached.")
    out = store.get(key)
    if out is None:
        st.info("Choose sources, targets and an attack, then **Run**. One task per (source, clip).")
    else:
        st.caption(f"engine: {out['engine']} · {out['computed']} computed, {out['cached']} from the cache"
                   + (f", {out['cancelled']} cancelled" if out["cancelled"] else "") +
                   ". n = clips that source and target both classify correctly when clean; the diagonal is "
                   "white-box.")
        st.plotly_chart(transfer_figure(out), width="stretch", key="tr_fig")
        rows = [{"source": s, "target": t, "FR": out["fr"][i][j], "fooled": out["fooled"][i][j], "n": out["n"][i][j],
                 "fooled clips": ", ".join(map(str, out["examples"][i][j]))}
                for i, s in enumerate(out["sources"]) for j, t in enumerate(out["targets"])]
        df = pd.DataFrame(rows)
        st.dataframe(df, hide_index=True, width="stretch", key="tr_table")
        d1, d2 = st.columns(2)
        d1.download_button("Matrix (CSV)", df.to_csv(index=False), "transfer.csv", "text/csv", key="tr_csv")
        d2.download_button("Result (JSON)", dumps(out, indent=2), "transfer.json", "application/json", key="tr_json")
        st.caption("Drill down: open any fooled clip as `synthetic:<class>:<2000000 + clip>` in the sidebar "
                   "(class = clip mod 8) and attack it on the Attack explorer.")

with tab4:
    st.markdown("Clean vs robust accuracy of regular and adversarially trained models under every attack "
                "(DeepSAVA Tab. 11): `cnn_lstm_pgd_at` (PGD-AT, Alg. 3) and `cnn_lstm_sava_at` (training on the "
                "combined flow + noise perturbation, Alg. 4). Train more with `python -m core advtrain --model M "
                "--method pgd|deepsava`.")
    c = st.columns(3)
    at_default = [m for m in ("cnn_lstm", "cnn_lstm_pgd_at", "cnn_lstm_sava_at") if m in shipped]
    rb_models = c[0].multiselect("Models", shipped, default=at_default, key="rb_models")
    rb_methods = c[1].multiselect("Attacks", METHODS, default=["one-shot", "saliency-rg"], key="rb_methods")
    rb_clips = int(c[2].number_input("Test clips", 1, 400, 8, key="rb_clips"))
    rkey = json.dumps([rb_models, rb_methods, rb_clips])
    rstore = st.session_state.setdefault("robust", {})
    b1, b2 = st.columns([1, 5])
    if b1.button("Run", type="primary", key="rb_run", disabled=not rb_models or not rb_methods):
        from core.experiments.robust import robust_table

        attacks = {m: ({"eps": 0.01} if m in INKAWHICH else
                       {"frames": 1, "max_iters": 40, **({"select": "first"} if m == "deepsava" else {})})
                   for m in rb_methods}
        run_job("robust", rkey, lambda progress: robust_table(rb_models, attacks, rb_clips, progress=progress))
    b2.button("■ Stop", key="rb_stop", help="Any click stops a running job; finished tasks stay cached.")
    rout = rstore.get(rkey)
    if rout is not None:
        rdf = pd.DataFrame([{k: r[k] for k in ("model", "attack", "clean_accuracy", "robust_accuracy", "n")}
                            for r in rout["rows"]])
        st.dataframe(rdf, hide_index=True, width="stretch", key="rb_table")
        st.download_button("Table (CSV)", rdf.to_csv(index=False), "robust_accuracy.csv", "text/csv", key="rb_csv")
    cards = [c for c in available_models() if "adversarial_training" in c]
    if cards:
        st.caption("Model cards of the adversarially trained models (robust accuracy under the model's own "
                   "training attack, measured at training): " +
                   "; ".join(f"{c['name']}: clean {c['test_accuracy']:.3f}, robust {c['robust_accuracy']:.3f} "
                             f"(regular {c['regular_robust_accuracy']:.3f}; {c['adversarial_training']['robust_eval']})"
                             for c in cards))

with tab2:
    video = require_model_and_clip(sel)
    c = st.columns(3)
    cm = c[0].selectbox("Attack", METHODS, index=METHODS.index("saliency-rg"), key="cp_method")
    codec = c[1].selectbox("Codec", ["h264", "jpeg"], key="cp_codec",
                           format_func={"h264": "H.264 (CRF)", "jpeg": "JPEG (quality)"}.get)
    levels_text = c[2].text_input("Levels", "18,23,28" if codec == "h264" else "95,75,50", key=f"cp_levels_{codec}")
    if st.button("Run", type="primary", key="cp_run"):
        from core.experiments.compression import compression_survival

        try:
            levels = [float(v) for v in levels_text.split(",")]
            akw = {"eps": 0.01} if cm in INKAWHICH else {"max_iters": 60}
            label = sel.true_label if sel.true_label is not None else sel.model.predict(video)[0]
            with st.spinner("Attacking, then compressing at every level…"):
                st.session_state["compress"] = compression_survival(sel.model, video, label, cm, codec, levels, akw)
        except ValueError:
            st.error("Levels must be comma-separated numbers.")
        except CoreError as e:
            st.error(str(e))
    res = st.session_state.get("compress")
    if res is not None:
        a = res["attack"]
        st.markdown(f"**{res['method']}**: attack {'succeeded' if a['success'] else 'failed'} (SSIM {a['ssim']:.4f}).")
        df = pd.DataFrame(res["levels"])
        st.dataframe(df, hide_index=True, width="stretch", key="cp_table")
        st.download_button("Result (JSON)", dumps(res, indent=2), "compression.json", "application/json", key="cp_json")
        st.caption("survives = the compressed adversarial clip is still misclassified while the compressed clean "
                   "clip is still classified correctly.")

with tab3:
    video = require_model_and_clip(sel)
    c = st.columns(3)
    models = c[0].multiselect("Models", shipped, default=[m for m in ("cnn_lstm", "cnn_lstm_pgd_at", "cnn_lstm_sava_at",
                                                                      "cnn_lstm_certified") if m in shipped],
                              key="sal_models")
    smooth = int(c[1].number_input("SmoothGrad samples (0 = plain)", 0, 64, 0, key="sal_smooth"))
    T = video.shape[0]
    frames = c[2].multiselect("Frames", list(range(T)), default=[0, T // 2, T - 1], key="sal_frames")
    if models and frames:
        maps = {m: _maps(m, sel.video_key, sel.true_label, smooth, video) for m in models}
        st.plotly_chart(saliency_maps_figure(maps, sorted(frames)), width="stretch", key="sal_fig")
        st.caption("One colour scale for every panel (99.5th percentile of all maps shown). Regular vs "
                   "adversarially trained (`cnn_lstm_pgd_at`, `cnn_lstm_sava_at`; DeepSAVA App. D) vs certifiably "
                   "trained (`cnn_lstm_certified`, against an ℓ2 ball of flow manipulations of every frame).")

with tab5:
    from core.msr import MSRParams

    st.markdown("The MSR bounds (Wu & Kwiatkowska) of the first N test clips under one setting — one job task per "
                "clip, cached, on Ray or serially. Every bound carries its guarantee: **sound** (the continuous "
                "MSR, no assumption), **grid** (the FMSR on the τ-grid only).")
    d = MSRParams()
    c = st.columns(4)
    certifiable = [m for m in shipped if not m.startswith("motion_stream")]
    ms_models = c[0].multiselect("Models (side by side)", certifiable, key="ms_models",
                                 default=[m for m in ("cnn_lstm", "cnn_lstm_certified") if m in certifiable],
                                 help="e.g. the regular cnn_lstm beside the certifiably trained cnn_lstm_certified")
    ms_clips = int(c[1].number_input("Test clips", 1, 400, 4, key="ms_clips"))
    ms_metric = c[2].selectbox("Metric", ["l2", "l1", "linf"], key="ms_metric")
    ms_flows = c[3].text_input("Flows (frame pairs)", "7", key="ms_flows", help="e.g. 7 or 3,7; empty = all")
    c = st.columns(4)
    ms_block = int(c[0].selectbox("Block (px)", [8, 16, 32], index=1, key="ms_block"))
    ms_tau = float(c[1].number_input("τ (grid step, px)", 0.05, 4.0, float(d.tau), 0.05, key="ms_tau"))
    ms_budget = float(c[2].number_input("Budget d", 1.0, 5000.0, 300.0, 10.0, key="ms_budget"))
    ms_iters = int(c[3].number_input("Iterations per clip", 1, 10_000, 50, key="ms_iters",
                                     help="bounds the work of every task (a wall-clock limit would make "
                                          "cached results irreproducible)"))
    c = st.columns(3)
    ms_certify = c[0].checkbox("Certified lower bound (CROWN)", True, key="ms_certify")
    ms_engine = c[1].selectbox("Engine", ["auto", "ray", "serial"], key="ms_engine")
    ms_workers = int(c[2].number_input("Ray workers", 1, 64, 2, key="ms_workers"))
    try:
        flows = [int(f) for f in ms_flows.split(",") if f.strip()] or None
    except ValueError:
        st.error(f"Flows must be comma-separated frame-pair indices, got {ms_flows!r}.")
        st.stop()
    params = {"metric": ms_metric, "tau": ms_tau, "budget": ms_budget, "flows": flows, "block": ms_block,
              "max_iters": ms_iters, "time_limit": 600.0, "certify": ms_certify}
    if not ms_models:
        st.info("Choose at least one model.")
        st.stop()
    mkey = json.dumps([ms_models, ms_clips, params])
    mstore = st.session_state.setdefault("msrset", {})
    b1, b2 = st.columns([1, 5])
    if b1.button("Run", type="primary", key="ms_run"):
        from core.experiments.msr_set import msr_over_clips

        run_job("msrset", mkey, lambda progress: msr_over_clips(ms_models, ms_clips, params, engine=ms_engine,
                                                                workers=ms_workers, progress=progress))
    b2.button("■ Stop", key="ms_stop", help="Any click stops a running job; finished clips stay cached.")
    mout = mstore.get(mkey)
    if mout is None:
        st.info("Choose the models and the manipulation space, then **Run**. CLI: `python -m core msrset --model "
                f"{','.join(ms_models)} --clips {ms_clips} --metric {ms_metric} --flows {ms_flows or 'all'} --block {ms_block} "
                f"--max-iters {ms_iters} --json`.")
    elif mout["rows"]:
        st.caption(f"engine: {mout['engine']} · {mout['computed']} clip(s) computed, {mout['cached']} from the cache"
                   + (f", {mout['cancelled']} cancelled" if mout["cancelled"] else ""))
        st.plotly_chart(msr_set_figure(mout["rows"], ms_budget), width="stretch", key="ms_fig")
        from core.experiments.msr_set import certified_ratio, msr_set_summary

        summary = mout.get("summary") or msr_set_summary(mout["rows"], mout["models"])
        if any(s["ratio_median"] is not None for s in summary):
            n = summary[0]["compared"]
            st.markdown(f"**Side by side** over the {n} clip(s) that every model classifies correctly "
                        "(certified lower ÷ sound upper bound: how far the proof reaches towards the nearest adversarial "
                        "video found; our target is 25 %):")
            st.dataframe(pd.DataFrame([{
                "model": s["model"], "correct": f"{s['correct']} of {s['clips']}",
                "certified lower, sound (median)": s["certified_lower_median"],
                "upper, sound (median)": s["upper_msr_median"],
                "ratio (median)": s["ratio_median"], "ratio (min)": s["ratio_min"], "ratio (max)": s["ratio_max"],
                "clips ≥ 25 %": s["ratio_at_goal"]} for s in summary]), hide_index=True, width="stretch",
                key="ms_summary", column_config={k: st.column_config.NumberColumn(format="percent") for k in (
                    "ratio (median)", "ratio (min)", "ratio (max)")})
        table = []
        for r in mout["rows"]:
            row = {"model": r["model"], "clip": r["clip"], "label": r["label"], "predicted": r["predicted"],
                   "correct": r["predicted"] == r["label"]}
            for b in r["bounds"]:
                row[f"{b['name']} ({b['guarantee']})"] = b["value"]
            row["certified ÷ upper"] = certified_ratio(r)
            row["robust within budget"] = r["robust_within_budget"]
            table.append(row)
        mdf = pd.DataFrame(table)
        st.dataframe(mdf, hide_index=True, width="stretch", key="ms_table")
        d1, d2 = st.columns(2)
        d1.download_button("Bounds (CSV)", mdf.to_csv(index=False), "msr_clips.csv", "text/csv", key="ms_csv")
        d2.download_button("Result (JSON)", dumps(mout, indent=2), "msr_clips.json", "application/json",
                           key="ms_json")
