"""Page logic with streamlit's AppTest (no browser)."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

APP = str(ROOT / "app.py")


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def _metric(at: AppTest, label: str):
    return next(m for m in at.metric if m.label == label)


def test_home_predicts_the_synthetic_clip():
    at = _app()
    assert at.title[0].value == "Video robustness dashboard"
    assert at.selectbox(key="model_choice").value == "cnn_lstm"
    at.selectbox(key="syn_class").set_value("rotate_ccw")
    at.number_input(key="syn_seed").set_value(2000005)
    at.run()
    assert not at.exception
    assert _metric(at, "True class").value == "rotate_ccw"
    pred = _metric(at, "Predicted class").value
    conf = float(_metric(at, "Confidence").value.rstrip("%")) / 100
    assert pred in json.loads((ROOT / "assets/models/cnn_lstm.json").read_text())["classes"]
    # the page shows exactly what core computes for this clip (not just "some probability")
    from core.data import make_clip
    from core.inference import predict
    from core.models import load_classifier

    ref = predict(load_classifier("cnn_lstm", "cpu"), None, make_clip("rotate_ccw", 2000005).video)
    assert pred == ref["label"] and abs(conf - ref["confidence"]) < 0.0006


def test_switching_model_changes_the_card():
    at = _app()
    at.selectbox(key="model_choice").set_value("c3d")
    at.run()
    assert not at.exception
    assert any("c3d" in str(j.value) for j in at.json)


def test_upload_mode_without_file_asks_for_one():
    at = _app()
    at.radio(key="video_kind").set_value("Upload a video")
    at.run()
    assert not at.exception
    assert any("upload a video" in i.value.lower() for i in at.info)


@pytest.mark.parametrize("page", ["pages/flow.py", "pages/msr.py", "pages/attacks.py", "pages/experiments.py",
                                  "pages/ssim_vs_lp.py"])
def test_other_pages_render(page):
    at = _app()
    at.switch_page(page)
    at.run()
    assert not at.exception
    assert at.title


def test_flow_page_shows_methods_and_epe():
    at = _app()
    at.switch_page("pages/flow.py")
    at.run()
    assert not at.exception
    assert at.multiselect(key="flow_methods").value == ["farneback", "horn_schunck"]
    caps = [c.value for c in at.caption]
    assert sum("EPE vs truth" in c for c in caps) == 2
    assert any(c.startswith("EPE between the two") for c in caps)
    shared = [c for c in caps if c.startswith("Both columns share one scale")]
    assert len(shared) == 1 and "arrows ×" in shared[0]
    titles = [json.loads(p.proto.spec)["layout"]["title"]["text"] for p in at.get("plotly_chart")
              if "arrows ×" in json.loads(p.proto.spec)["layout"].get("title", {}).get("text", "")]
    assert len(titles) == 2 and len({t.split("(arrows")[1] for t in titles}) == 1  # one arrow scale
    at.multiselect(key="flow_methods").set_value(["ground truth"])
    at.run()
    assert not at.exception
    assert not any("EPE vs truth" in c.value for c in at.caption)  # truth against itself is not shown
    at.slider(key="flow_pair").set_value(3)
    at.run()
    assert not at.exception
    assert len(at.get("download_button")) == 2  # .npy and PNG for the one method


def test_ssim_page_table_and_claim():
    at = _app()
    at.switch_page("pages/ssim_vs_lp.py")
    at.run()
    assert not at.exception
    df = at.dataframe[0].value
    assert list(df["panel"]) == list("abcde") and df["SSIM"].iloc[0] == 1.0
    verdicts = [m.value for m in at.success] + [m.value for m in at.warning]
    assert any("From (b) noise to (d) rotation + noise" in v for v in verdicts)
    assert any("No adversarial video" in i.value for i in at.info)
    # the playground table follows the rotation slider
    at.slider(key="pg_rotate").set_value(5.0)
    at.run()
    assert not at.exception
    pg = at.table[0].value
    assert pg.index[0] == "rotate=5" and float(pg["SSIM"].iloc[0]) < 1.0


def test_bundled_clip_is_available():
    at = _app()
    at.radio(key="video_kind").set_value("Bundled real clip")
    at.run()
    assert not at.exception
    assert "bigbuckbunny" in at.subheader[0].value
    assert any(m.label == "Predicted class" for m in at.metric)
    assert any("8 synthetic motions" in i.value for i in at.info)  # said plainly
    assert any("**out of distribution**" in m.value for m in at.markdown)  # and the calibrated score agrees


def _metric_value(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_msr_page_start_pause_resume_stop():
    import time

    at = _app()
    at.switch_page("pages/msr.py")
    at.run()
    assert not at.exception
    assert any("Press **Start**" in i.value for i in at.info)
    at.number_input(key="msr_time").set_value(20.0)
    at.button(key="msr_start").click()
    at.run()
    time.sleep(3)
    at.run()
    assert not at.exception
    assert _metric_value(at, "Status") in ("running", "done", "limit")
    at.button(key="msr_pause").click()
    at.run()
    it1 = int(_metric_value(at, "Iteration"))
    assert it1 >= 1
    lo, up = float(_metric_value(at, "Grid lower bound (FMSR)")), _metric_value(at, "Upper bound (sound)")
    cert = _metric_value(at, "Certified lower (sound)")
    assert up != "none yet", "the quick gradient step gives an upper bound in iteration 1"
    assert cert == "—" or float(cert) <= float(up) + 1e-9  # certified lower ≤ MSR ≤ upper
    assert lo >= 0
    if _metric_value(at, "Status") == "paused":
        at.button(key="msr_start").click()  # resume
        at.run()
        time.sleep(2)
        at.button(key="msr_stop").click()
        at.run()
        assert _metric_value(at, "Status") in ("stopped", "done")
        assert int(_metric_value(at, "Iteration")) > it1  # resumed from its state, not restarted
    labels = [b.label for b in at.get("download_button")]
    assert "Trace (CSV)" in labels and "Result (JSON)" in labels

    def yaxis() -> dict:
        chart = next(p for p in at.get("plotly_chart") if "iteration" in p.proto.spec)
        return json.loads(chart.proto.spec)["layout"]["yaxis"]

    assert yaxis().get("type") != "log"
    at.toggle(key="msr_log").set_value(True)
    at.run()
    lo_exp, hi_exp = yaxis()["range"]  # a certified bound of 0.01 and an upper bound of 100, both readable
    assert yaxis()["type"] == "log" and -4 < lo_exp < hi_exp < 4  # zeros/inf must not blow the range up
    at.button(key="msr_reset").click()
    at.run()
    assert "msr_run" not in at.session_state


def _start_and_finish(at: AppTest, seconds: float = 60.0):
    """Press Start on the Safe radius page and wait for the run to end (time or iteration limit)."""
    import time

    at.button(key="msr_start").click()
    at.run()
    run = at.session_state["msr_run"]
    t_end = time.monotonic() + seconds
    while run.running and time.monotonic() < t_end:
        time.sleep(0.5)
    at.run()
    assert not at.exception and run.status in ("done", "limit"), run.error
    return run


def _trace_names(at: AppTest) -> list[str]:
    chart = next(p for p in at.get("plotly_chart") if "iteration" in p.proto.spec)
    return [t.get("name", "") for t in json.loads(chart.proto.spec)["data"]]


def test_msr_page_certified_heuristic_with_node_radii_and_alpha_crown():
    """The certified-bound method and the per-node radii reach the solver from the page; a run with
    node radii makes node probes and keeps certified lower ≤ upper."""
    import time

    at = _app()
    at.switch_page("pages/msr.py")
    at.run()
    at.multiselect(key="msr_flows").set_value([14])
    at.selectbox(key="msr_heur").set_value("certified")
    at.run()
    assert at.selectbox(key="msr_cert_method").value == "crown+"  # the default: CROWN+ → CROWN++
    at.selectbox(key="msr_cert_method").set_value("alpha")
    at.number_input(key="msr_node_probes").set_value(1)
    at.number_input(key="msr_time").set_value(8.0)
    at.button(key="msr_start").click()
    at.run()
    run = at.session_state["msr_run"]
    assert run.solver.params.cert_method == "alpha" and run.solver.params.node_probes == 1
    assert run.solver.cert.method == "alpha"
    for _ in range(60):  # the first event (the quick upper bound) draws the chart
        time.sleep(0.5)
        if run.solver.trace:
            break
    at.run()
    assert any(n.startswith("certified lower bound (α-CROWN + B&B)") for n in _trace_names(at))
    at.button(key="msr_stop").click()
    at.run()
    for _ in range(120):  # an α-CROWN probe in flight finishes first
        if not run.running:
            break
        time.sleep(0.5)
    at.button(key="msr_reset").click()
    at.run()
    at.selectbox(key="msr_cert_method").set_value("crown")
    at.run()
    run = _start_and_finish(at)
    assert run.solver.cert.method.split(" → ")[0] == "crown"  # the chosen method ran first
    assert run.solver.astar.node_probes >= 1
    used = {"crown": "(CROWN + B&B)", "crown → crown+": "(CROWN, then CROWN+ + B&B)",
            "crown → crown+ → crown++": "(CROWN, then CROWN+, then CROWN++ + B&B)"}[run.solver.cert.method]
    assert any(n.startswith("certified lower bound " + used) for n in _trace_names(at))  # the certifier used
    cert, up = _metric_value(at, "Certified lower (sound)"), _metric_value(at, "Upper bound (sound)")
    assert cert != "—" and float(cert) > 0 and (up == "none yet" or float(cert) <= float(up) + 1e-9)


def _on_page(page: str, model: str = "c3d", cls: str = "rotate_cw", seed: int = 2000004) -> AppTest:
    at = _app()
    at.selectbox(key="model_choice").set_value(model)  # the sidebar, drawn once by app.py
    at.selectbox(key="syn_class").set_value(cls)
    at.number_input(key="syn_seed").set_value(seed)
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception
    sel = at.session_state["selection"]
    assert sel.model_key.startswith(model + ":") and sel.video_key.startswith(f"synthetic:{cls}:{seed}:")
    return at



def test_attack_page_runs_an_attack_and_feeds_the_ssim_page():
    at = _on_page("pages/attacks.py")
    at.selectbox(key="atk_method").set_value("saliency-rg")
    at.run()
    at.button(key="atk_run").click()
    at.run()
    assert not at.exception
    assert any(s.value.startswith("Success: rotate_cw") for s in at.success)
    assert float(_metric_value(at, "ℓ∞")) == pytest.approx(0.01, abs=1e-4)
    labels = [b.label for b in at.get("download_button")]
    assert "Adversarial video (H.264)" in labels and "Result (JSON)" in labels
    at.switch_page("pages/ssim_vs_lp.py")
    at.run()
    assert not at.exception
    assert not any("No adversarial video" in i.value for i in at.info)  # the video-level panel uses it


def test_attack_page_sweep_tab():
    at = _on_page("pages/attacks.py")
    at.multiselect(key="sw_methods").set_value(["one-shot"])
    at.number_input(key="sw_clips").set_value(2)
    at.text_input(key="sw_eps").set_value("0.01")
    at.selectbox(key="sw_engine").set_value("serial")
    at.run()
    at.button(key="sw_run").click()
    at.run()
    assert not at.exception
    df = next(d.value for d in at.dataframe if "FR" in d.value.columns)
    assert list(df["method"]) == ["one-shot"] and 0 <= df["FR"].iloc[0] <= 1
    assert any("engine: serial · 2 tasks computed, 0 from the cache" in c.value for c in at.caption)
    at.button(key="sw_run").click()  # a re-run computes only what is missing: nothing
    at.run()
    assert any("0 tasks computed, 2 from the cache" in c.value for c in at.caption)
    at.text_input(key="sw_eps").set_value("7")
    at.run()
    assert any("ε values" in e.value for e in at.error)


def test_msr_brightness_and_scalability_panels():
    at = _on_page("pages/msr.py", model="c3d")
    at.number_input(key="msr_iters").set_value(3)
    at.run()
    at.button(key="msr_start").click()
    at.run()
    import time

    for _ in range(60):
        time.sleep(0.5)
        at.run()
        if _metric_value(at, "Status") != "running":
            break
    assert _metric_value(at, "Status") in ("limit", "done")
    at.button(key="msr_bright").click()
    at.run()
    assert not at.exception
    traces = at.session_state["msr_bright_res"]
    assert set(traces) == {"τ = 0.01", "τ = 0.02"}
    for tr in traces.values():
        lows = [e["lower"] for e in tr]
        assert lows == sorted(lows) and len(tr) >= 1
    at.button(key="msr_scal").click()
    at.run()
    assert not at.exception
    assert [k.split(" ")[0] for k in at.session_state["msr_scal_res"]] == ["1", "2", "3"]


def test_msr_page_says_what_the_certified_model_costs():
    """With ``cnn_lstm_certified`` picked, the Safe radius page names its training threat and its clean
    accuracy beside the regular model's, read from its card; with the regular model it points to it."""
    at = _on_page("pages/msr.py", model="cnn_lstm_certified", cls="translate_left", seed=0)
    card = at.session_state["selection"].spec.card
    caption = next(c.value for c in at.caption if c.value.startswith("`cnn_lstm_certified` was trained"))
    assert "ℓ2 ball" in caption and f"at {card['test_accuracy']:.0%} test accuracy" in caption
    assert f"the regular model's {card['regular_test_accuracy']:.2%}" in caption and "92%" in caption
    at = _on_page("pages/msr.py", model="cnn_lstm", cls="translate_left", seed=0)
    assert any(c.value.startswith("Compare with the certifiably trained") for c in at.caption)


def test_msr_page_explains_where_the_certificate_stops():
    """After a run, the page offers the certifier's probe at the radius it failed at: that probe
    (same method, same domain) does not certify, its relaxations' bounds and the per-step diagnosis
    are shown and exported."""
    at = _on_page("pages/msr.py", model="cnn_lstm", cls="translate_left", seed=0)
    at.multiselect(key="msr_flows").set_value([14])
    at.selectbox(key="msr_metric").set_value("linf")  # no branch and bound in ℓ∞, and IBP is one stage:
    at.selectbox(key="msr_cert_method").set_value("ibp")  # the bisection's failure stands (the chart's bars:
    at.number_input(key="msr_time").set_value(6.0)  # test_verify's diagnosis test)
    at.run()
    run = _start_and_finish(at)
    snap = run.solver.snapshot()
    fail = snap["cert_failed_at"]
    assert snap["certified_lower"] < fail < snap["upper_msr"] and snap["cert_stage"] == "ibp"
    assert any(e.label.startswith("Why the certified lower bound stops at") for e in at.expander)
    at.button(key="msr_explain").click()
    at.run()
    assert not at.exception
    text = next(m.value for m in at.markdown if m.value.startswith("Margin lower bound at radius"))
    assert "not certified" in text and f"radius {fail:.4g}" in text and "IBP" in text
    chart = next(p for p in at.get("plotly_chart") if "unstable ReLUs" in p.proto.spec)
    data = json.loads(chart.proto.spec)["data"]
    assert [t["name"] for t in data] == ["mean width of the feature box"] and data[0]["x"] == ["15"]
    assert any("IBP keeps no intermediate bounds" in c.value for c in at.caption)  # hence no bars
    assert "Download the diagnosis (JSON)" in [b.label for b in at.get("download_button")]


def test_legacy_pages_mode_is_left_once(monkeypatch):
    """Streamlit still turns its legacy ``pages/`` mode on by itself when a ``pages/`` folder sits
    beside the main script (this test fails when that changes, so the workaround can go), and
    ``_leave_legacy_multipage_mode`` turns it off and reruns exactly once per session."""
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager

    import pages.common as common
    from tests.conftest import ROOT

    saved = PagesManager.uses_pages_directory
    try:
        PagesManager.uses_pages_directory = None
        PagesManager(str(ROOT / "app.py"))
        assert PagesManager.uses_pages_directory is True  # Streamlit's own detection

        class Rerun(Exception):
            pass

        def rerun():
            raise Rerun

        state: dict = {}
        monkeypatch.setattr(st, "session_state", state)
        monkeypatch.setattr(st, "rerun", rerun)
        with pytest.raises(Rerun):
            common._leave_legacy_multipage_mode()
        assert PagesManager.uses_pages_directory is False and state["_left_legacy_mode"]
        PagesManager.uses_pages_directory = True  # AppTest re-arms it before every run
        common._leave_legacy_multipage_mode()  # no second rerun in the same session
        PagesManager.uses_pages_directory = False
        common._leave_legacy_multipage_mode()
    finally:
        PagesManager.uses_pages_directory = saved


def test_page_settings_and_results_survive_page_changes():
    """Streamlit drops widget values of pages not shown: settings must come back, and with them the
    stored attack result; another session starts from the defaults."""
    at = _on_page("pages/attacks.py")
    at.selectbox(key="atk_method").set_value("one-shot")
    at.run()
    at.number_input(key="atk_eps").set_value(0.02)
    at.run()
    at.button(key="atk_run").click()
    at.run()
    assert any(s.value.startswith("Success") for s in at.success)
    at.switch_page("pages/flow.py")
    at.run()
    assert not at.exception
    at.multiselect(key="flow_methods").set_value(["farneback"])
    at.run()
    at.switch_page("pages/home.py")
    at.run()
    assert "atk_eps" not in at.session_state  # Streamlit itself forgot it …
    at.switch_page("pages/attacks.py")
    at.run()
    assert not at.exception
    assert at.selectbox(key="atk_method").value == "one-shot" and at.number_input(key="atk_eps").value == 0.02
    assert any(s.value.startswith("Success") for s in at.success)  # … the finished attack is shown again
    at.switch_page("pages/flow.py")
    at.run()
    assert at.multiselect(key="flow_methods").value == ["farneback"]
    other = _on_page("pages/attacks.py")  # a second session: its own defaults
    assert other.selectbox(key="atk_method").value == "deepsava"  # the default, not the first session's choice


def test_attack_explorer_defaults_succeed_on_the_default_clip():
    """Press Run with every default (model, clip, attack): the decision flips, imperceptibly."""
    at = _app()
    at.switch_page("pages/attacks.py")
    at.run()
    assert at.selectbox(key="atk_method").value == "deepsava" and at.selectbox(key="atk_select").value == "bo"
    at.button(key="atk_run").click()
    at.run()
    assert not at.exception
    assert any(s.value.startswith("Success: translate_left") for s in at.success), [w.value for w in at.warning]
    assert float(_metric_value(at, "SSIM (mean)")) >= 0.99


def test_experiments_page_transfer_compression_saliency():
    at = _on_page("pages/experiments.py")
    assert len([p for p in at.get("plotly_chart")]) == 1  # the saliency maps of the default models
    assert at.multiselect(key="sal_models").value == ["cnn_lstm", "cnn_lstm_pgd_at", "cnn_lstm_sava_at",
                                                      "cnn_lstm_certified"]  # regular, adversarial, certified
    at.multiselect(key="tr_sources").set_value(["c3d"])
    at.multiselect(key="tr_targets").set_value(["c3d", "frame_cnn"])
    at.selectbox(key="tr_method").set_value("one-shot")
    at.number_input(key="tr_clips").set_value(2)
    at.selectbox(key="tr_engine").set_value("serial")
    at.run()
    at.button(key="tr_run").click()
    at.run()
    assert not at.exception
    df = next(d.value for d in at.dataframe if "FR" in d.value.columns)
    assert list(df["target"]) == ["c3d", "frame_cnn"] and (df["n"] <= 2).all()
    at.text_input(key="cp_levels_h264").set_value("23")
    at.run()
    at.button(key="cp_run").click()
    at.run()
    assert not at.exception
    cp = next(d.value for d in at.dataframe if "survives" in d.value.columns)
    assert list(cp["level"]) == [23.0]


def test_experiments_page_msr_over_clips():
    at = _on_page("pages/experiments.py")
    assert at.multiselect(key="ms_models").value == ["cnn_lstm", "cnn_lstm_certified"]  # side by side by default
    at.multiselect(key="ms_models").set_value(["cnn_lstm"])
    at.number_input(key="ms_clips").set_value(2)
    at.number_input(key="ms_iters").set_value(3)
    at.checkbox(key="ms_certify").set_value(False)
    at.selectbox(key="ms_engine").set_value("serial")
    at.run()
    at.button(key="ms_run").click()
    at.run()
    assert not at.exception
    df = next(d.value for d in at.dataframe if "clip" in d.value.columns and "grid_lower (grid)" in d.value.columns)
    assert list(df["clip"]) == [0, 1] and "upper_msr (sound)" in df.columns
    assert (df["grid_lower (grid)"] > 0).all()  # A* climbed at least one atomic move in 3 iterations
    assert df["correct"].all() and df["certified ÷ upper"].isna().all()  # no certificate asked for
    assert all("ratio (median)" not in d.value.columns for d in at.dataframe)  # so no side-by-side ratios
    labels = [b.label for b in at.get("download_button")]
    assert "Bounds (CSV)" in labels
    # both models, certified: the side-by-side summary over the clips both get right
    at.multiselect(key="ms_models").set_value(["cnn_lstm", "cnn_lstm_certified"])
    at.number_input(key="ms_clips").set_value(2)
    at.number_input(key="ms_iters").set_value(2)
    at.text_input(key="ms_flows").set_value("14")
    at.checkbox(key="ms_certify").set_value(True)
    at.run()
    at.button(key="ms_run").click()
    at.run()
    assert not at.exception
    summary = next(d.value for d in at.dataframe if "ratio (median)" in d.value.columns)
    rows = next(d.value for d in at.dataframe if "certified ÷ upper" in d.value.columns)
    assert list(summary["model"]) == ["cnn_lstm", "cnn_lstm_certified"]
    assert list(summary["correct"]) == ["2 of 2", "1 of 2"]  # the certified model gets test clip 0 wrong
    assert list(rows["correct"]) == [True, True, False, True]  # per clip, in model order
    mine = rows[(rows["model"] == "cnn_lstm_certified") & (rows["clip"] == 1)].iloc[0]
    assert mine["certified ÷ upper"] > 0 and summary["ratio (median)"].iloc[1] == pytest.approx(mine["certified ÷ upper"])
    at.text_input(key="ms_flows").set_value("7,x")
    at.run()
    assert any("Flows must be" in e.value for e in at.error)
