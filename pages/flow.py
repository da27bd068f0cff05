"""Optical flow of the current clip: arrows, magnitude, direction, method comparison, export."""

import io

import numpy as np
import streamlit as st
import torch

from core.flow import METHODS
from core.flow.evaluate import epe
from core.video import limit_size
from core.viz.flow import (animation_figure, arrows_figure, comparison_figure, default_step, direction_figure,
                           histogram_figure, magnitude, magnitude_figure, panel_png, robust_max)
from pages.common import cached_flow, current, keep, synthetic_truth

FLOW_MAX_SIDE = 256  # frames are downscaled so the longer side is at most this
FLOW_MAX_FRAMES = 32  # at most this many consecutive frames are analysed at once
TRUTH = "ground truth"
LABELS = {"farneback": "Farneback (OpenCV)", "tvl1": "TV-L1 (scikit-image)",
          "ilk": "iterative Lucas–Kanade (scikit-image)", "horn_schunck": "Horn–Schunck (torch, differentiable)",
          TRUTH: "exact ground truth"}

st.title("Optical flow")
st.caption("Flow maps each pixel of frame t to where it moves in frame t+1, in pixels (x right, y "
           "down). Direction colours follow the Middlebury coding (as flow_vis and torchvision): red = "
           "rightward, yellow = downward, cyan = leftward, violet = upward; paler = slower, white = still.")
sel = current()
if sel is None or sel.frames is None:
    st.info("Choose a clip in the sidebar.")
    st.stop()

T = sel.n_frames
syn = sel.info.get("synthetic")
options = ([TRUTH] if syn else []) + list(METHODS)
keep("flow_methods", "flow_start", "flow_pair", valid={"flow_methods": lambda ms: all(m in options for m in ms),
                                                       "flow_start": lambda s: 0 <= s <= max(0, T - FLOW_MAX_FRAMES),
                                                       "flow_pair": lambda t: 0 <= t < min(T, FLOW_MAX_FRAMES) - 1})
c1, c2 = st.columns([3, 2])
methods = c1.multiselect("Methods (one or two)", options, default=["farneback", "horn_schunck"],
                         max_selections=2, format_func=lambda m: LABELS[m], key="flow_methods")
start = 0
if T > FLOW_MAX_FRAMES:
    start = c2.slider("First frame of the analysed window", 0, T - FLOW_MAX_FRAMES, 0, key="flow_start",
                      help=f"At most {FLOW_MAX_FRAMES} consecutive frames are analysed at once.")
window = (start, min(T, start + FLOW_MAX_FRAMES))
if not methods:
    st.info("Pick at least one method.")
    st.stop()

window_clip = sel.clip(*window)  # only the analysed frames become float
shown = limit_size(window_clip, FLOW_MAX_SIDE)
h, w = shown.shape[-2:]
if max(sel.frames.shape[-2:]) > FLOW_MAX_SIDE:
    st.caption(f"Frames downscaled to {w}×{h} (longer side ≤ {FLOW_MAX_SIDE} px) for flow.")

flows: dict[str, np.ndarray] = {}
secs: dict[str, float] = {}
for m in methods:
    if m == TRUTH:
        flows[m] = synthetic_truth(syn["label"], syn["seed"], syn["frames"], syn["size"])[window[0]:window[1] - 1]
        secs[m] = 0.0
    else:
        flows[m], secs[m] = cached_flow(sel.video_key, m, window, FLOW_MAX_SIDE, window_clip.numpy())
truth = synthetic_truth(syn["label"], syn["seed"], syn["frames"], syn["size"])[window[0]:window[1] - 1] if syn else None

n_pairs = window[1] - window[0] - 1
t = st.slider("Frame pair (t → t+1)", 0, n_pairs - 1, min(n_pairs // 2, n_pairs - 1), key="flow_pair") \
    if n_pairs > 1 else 0
# one colour scale and one arrow scale for every view of this pair (robust: 99th percentile)
zmax, clipped = robust_max([f[t] for f in flows.values()], 99.0)
arrow_scale = 1.5 * default_step(h, w) / zmax
note = (f"Both columns share one scale: full colour = {zmax:.2f} px (99th percentile of |flow| over the shown "
        f"methods), arrows ×{arrow_scale:.1f}.")
if clipped > 0.0:
    note += f" {clipped:.1%} of pixels move faster and are clipped to full colour."
st.caption(note)

cols = st.columns(len(methods))
for col, m in zip(cols, methods):
    f = flows[m]
    with col:
        st.markdown(f"**{LABELS[m]}**")
        stats = [f"mean |flow| {magnitude(f[t]).mean():.2f} px"]
        if m != TRUTH:
            stats.append(f"{1000 * secs[m]:.1f} ms / pair")
        if truth is not None and m != TRUTH:
            stats.append(f"EPE vs truth {epe(torch.from_numpy(f), torch.from_numpy(truth)):.3f} px")
        st.caption(" · ".join(stats))
        st.plotly_chart(arrows_figure(shown[t], f[t], scale=arrow_scale, title=f"frame {window[0] + t} with flow"),
                        width="stretch", key=f"arrows_{m}")
        st.plotly_chart(magnitude_figure(f[t], zmax), width="stretch", key=f"mag_{m}")
        st.plotly_chart(direction_figure(f[t], zmax), width="stretch", key=f"dir_{m}")
        buf = io.BytesIO()
        np.save(buf, f.astype(np.float32))
        d1, d2 = st.columns(2)
        d1.download_button("Flow (.npy)", buf.getvalue(), f"flow_{m.replace(' ', '_')}.npy",
                           key=f"npy_{m}", help=f"shape {tuple(f.shape)} = (T-1, 2, H, W), pixels, x then y")
        d2.download_button("Panel (PNG)", panel_png(shown[t], f[t], zmax), f"flow_{m.replace(' ', '_')}_{t}.png",
                           "image/png", key=f"png_{m}")

if len(methods) == 2:
    a, b = methods
    st.subheader(f"{LABELS[a]} vs {LABELS[b]}")
    st.caption(f"EPE between the two over the window: "
               f"{epe(torch.from_numpy(flows[a]), torch.from_numpy(flows[b])):.3f} px; "
               f"this pair: {epe(torch.from_numpy(flows[a][t]), torch.from_numpy(flows[b][t])):.3f} px")
    names = (LABELS[a], "difference", LABELS[b])
    st.plotly_chart(comparison_figure(flows[a][t], flows[b][t], "magnitude", names, max_mag=zmax),
                    width="stretch", key="cmp_mag")
    st.plotly_chart(comparison_figure(flows[a][t], flows[b][t], "direction", names, max_mag=zmax),
                    width="stretch", key="cmp_dir")

st.subheader("All frame pairs")
c3, c4 = st.columns([3, 2])
with c3:
    seq_max, _ = robust_max([flows[methods[0]]], 99.0)
    st.plotly_chart(animation_figure(flows[methods[0]], seq_max), width="stretch", key="anim")
    st.caption(f"Direction of {LABELS[methods[0]]} for every pair — press Play.")
with c4:
    all_max, _ = robust_max([flows[m] for m in methods], 99.5)
    st.plotly_chart(histogram_figure({LABELS[m]: flows[m] for m in methods}, max_mag=all_max), width="stretch",
                    key="hist")
