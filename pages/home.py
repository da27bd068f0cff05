"""Home: what the tool is for, the pages, and the current clip with the model's prediction."""

import streamlit as st

from core.data import CLASSES
from core.video import sample_indices
from core.jsonutil import dumps as strict_json
from core.viz import frame_strip, prediction_bar
from pages.common import cached_predict, current, mp4_bytes

st.title("Video robustness dashboard")
st.markdown(
    """
Video classifiers can be fooled by changes a person barely notices — a few frames nudged, the
motion between frames bent slightly. This tool lets you **see** how video classifiers break and
**prove** how far they don't, on small built-in models or your own.

| Page | What it does | Status |
|---|---|---|
| **Home** | pick a clip and a model (sidebar), watch the clip, see the prediction | ready |
| **Optical flow** | the motion between frames: magnitude, direction, arrows, method comparison | ready |
| **Safe radius (bounds)** | provable lower and upper bounds on the smallest flow change that flips the decision (Wu & Kwiatkowska, CVPR 2020), live | ready |
| **Attack explorer** | sparse attacks that hit one or a few frames (Inkawhich et al.; DeepSAVA), single clips and sweeps | ready |
| **SSIM vs Lp** | why perceptual and pixel distances disagree under spatial transforms (DeepSAVA Fig. 1) | ready |
| **Experiments** | transferability between models, robust accuracy of adversarially trained models, compression, saliency maps (DeepSAVA), as jobs on a local Ray | ready |

The built-in data is a procedural *motion-action* dataset: textured objects that translate,
rotate or zoom over textured backgrounds. The class is the **motion**, never the appearance, and
every clip comes with its exact optical flow. Everything runs offline.
"""
)

sel = current()
if sel.error:
    st.error(sel.error)
if sel.frames is None:
    st.info("Choose a synthetic clip or upload a video in the sidebar.")
    st.stop()

st.subheader(f"Clip: {sel.video_label}")
info = sel.info
t, _, h, w = sel.frames.shape
st.caption(f"{t} frames decoded · {w}×{h} px working size · original "
           f"{info.get('width', w)}×{info.get('height', h)} at {info.get('fps', 0):.1f} fps"
           + (f", {info['duration']:.1f} s" if info.get("duration") else "")
           + (" · truncated to the first frames (file too long)" if info.get("truncated") else ""))
if info.get("incomplete"):
    st.warning(info["warning"])
if sel.video_key.startswith(("upload:", "bundled:")) and sel.spec is not None and sel.spec.card.get("source") != "torchscript":
    st.info("The shipped models know only **8 synthetic motions** (translate left/right/up/down, rotate cw/ccw, "
            "zoom in/out of a textured object). On a real video their answer is the nearest synthetic motion, "
            "not a real action — read the out-of-distribution score below the prediction.")
video = sel.frames  # uint8 for files: converted to float only where needed
c1, c2 = st.columns([1, 2])
with c1:
    scale = max(1, 256 // max(h, w))
    st.video(mp4_bytes(sel.video_key, video, float(info.get("fps") or 8.0), scale))
with c2:
    idx = sample_indices(t, min(8, t))
    strip, _ = frame_strip(sel.pick(idx), len(idx), scale=max(1, 96 // max(h, w)))
    st.image(strip, caption=f"frames {', '.join(map(str, idx))}", width="stretch")

if sel.model is None:
    st.warning("No model loaded, so no prediction.")
    st.stop()

pred = cached_predict(sel.model_key, sel.video_key, sel.model, sel.spec, sel.pick(sample_indices(t, sel.spec.frames)))
true = CLASSES[sel.true_label] if sel.true_label is not None else None
st.subheader("Prediction")
m1, m2, m3 = st.columns(3)
m1.metric("Predicted class", pred["label"])
m2.metric("Confidence", f"{pred['confidence']:.1%}")
if true is not None:
    m3.metric("True class", true, "correct" if true == pred["label"] else "wrong",
              delta_color="normal" if true == pred["label"] else "inverse")
st.plotly_chart(prediction_bar(pred["probs"], true, f"{sel.spec.name} on {sel.video_label}"),
                width="stretch", key="prediction_chart")
ood = pred["ood"]
if ood["calibrated"]:
    verdict = ("**out of distribution**: fewer than 5 % of the model's synthetic test clips score this badly"
               if ood["out_of_distribution"] else "typical of the synthetic test clips")
    st.markdown(f"Out-of-distribution check ({ood['n']} test clips): max-softmax {ood['msp']:.2f} "
                f"(p = {ood['msp_p']:.2f}), energy {ood['energy']:.2f} (p = {ood['energy_p']:.2f}) — {verdict}.")
    st.caption("p = share of held-out synthetic test clips that look at least as unusual (lower max-softmax, "
               "higher energy). A low p flags a clip the model was not trained for; a high p does not prove "
               "the answer is meaningful.")
else:
    st.caption(f"Out-of-distribution scores: max-softmax {ood['msp']:.2f}, energy {ood['energy']:.2f} — not "
               "calibrated (calibration needs the model's training distribution; user models have none here).")
st.caption(f"The clip is fitted to the model's input ({sel.spec.frames} frames, "
           f"{sel.spec.size}×{sel.spec.size}: uniform frame sampling, resize, centre crop).")
record = {**pred, "video": sel.video_label, "true_label": true}
d1, d2 = st.columns(2)
d1.download_button("Download prediction (JSON)", strict_json(record, indent=2), "prediction.json",
                   "application/json")
d2.download_button("Download clip (H.264 mp4)", mp4_bytes(sel.video_key, video, 8.0, 1),
                   "clip.mp4", "video/mp4")

with st.expander("Model card"):
    st.json(sel.spec.card)
