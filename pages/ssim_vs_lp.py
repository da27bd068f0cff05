"""SSIM vs Lp: why perceptual and pixel distances disagree under spatial transforms (DeepSAVA Fig. 1)."""

import hashlib

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.errors import CoreError
from core.ssim_lp import (SWEEPS, budget_limits, claim_check, fig1_panels, metric_curves, per_frame_distances,
                          playground)
from core.transforms import compose
from core.video import decode_image, limit_size
from core.viz.flow import to_uint8
from core.viz.ssim import curves_figure, per_frame_figure, relative_bars_figure, ssim_map_figure
from pages.common import current, keep

MAX_SIDE = 256  # frames are downscaled so the longer side is at most this (keeps sliders live)
PNG = {"toImageButtonOptions": {"format": "png", "scale": 2}, "displaylogo": False}


@st.cache_data(show_spinner="Reading image…", max_entries=8)
def _read_image(data: bytes) -> np.ndarray:
    return decode_image(data, "the file").numpy()


@st.cache_data(show_spinner="Comparing perturbations…", max_entries=32)
def _fig1(key: str, sigma: float, angle: float, zoom_out: float, zoom_in: float, seed: int, _x: np.ndarray):
    rows = fig1_panels(torch.from_numpy(_x), sigma, angle, zoom_out, zoom_in, seed)
    return [{**r, "image": r["image"].numpy()} for r in rows]


@st.cache_data(show_spinner="Sweeping transform magnitudes…", max_entries=16)
def _curves(key: str, seed: int, _x: np.ndarray) -> dict:
    return metric_curves(torch.from_numpy(_x), seed=seed)


@st.cache_data(show_spinner="Searching the budgets…", max_entries=32)
def _budgets(key: str, ssim_budget: float, l2_budget: float, seed: int, _x: np.ndarray) -> list[dict]:
    return budget_limits(torch.from_numpy(_x), ssim_budget, l2_budget, seed=seed)


st.title("SSIM vs Lp")
st.markdown("DeepSAVA (Mu et al., Fig. 1) argues that **SSIM barely moves under small rotations, "
            "zooms and shifts, while ℓ1/ℓ2 jump** — so spatial-transform perturbations can be strong "
            "yet imperceptible. Check that claim on your own frames. SSIM here: Gaussian window "
            "σ = 1.5, K1 = 0.01, K2 = 0.03, data range 1 (identical to scikit-image's).")

sel = current()
keep("sl_src", "sl_sigma", "sl_angle", "sl_zout", "sl_zin", "sl_seed", "pg_noise", "pg_rotate", "pg_zoom", "pg_blur",
     "pg_sx", "pg_sy", "pg_bright", "pg_jpeg", "bd_ssim", "bd_l2", "sl_frame",
     valid={"sl_frame": lambda t: 0 <= t < sel.n_frames})
src = st.radio("Frame", ["From the current clip", "Upload an image"], horizontal=True, key="sl_src")
frame = None
if src == "Upload an image":
    up = st.file_uploader("Image", type=["png", "jpg", "jpeg", "bmp", "webp"], key="sl_image")
    if up is not None:
        try:
            frame = torch.from_numpy(_read_image(up.getvalue()))
            label = up.name
        except CoreError as e:
            st.error(str(e))
else:
    if sel is None or sel.frames is None:
        st.info("Choose a clip in the sidebar, or upload an image.")
    else:
        t = st.slider("Frame index", 0, sel.n_frames - 1, sel.n_frames // 2, key="sl_frame")
        frame = sel.clip(t, t + 1)[0]
        label = f"{sel.video_label} frame {t}"
if frame is None:
    st.stop()
frame = limit_size(frame.unsqueeze(0), MAX_SIDE)[0].contiguous()
x_np = frame.numpy()
key = hashlib.sha256(x_np.tobytes()).hexdigest()[:16]
st.caption(f"{label} · {frame.shape[2]}×{frame.shape[1]} px (longer side ≤ {MAX_SIDE})")

# ---------------------------------------------------------------- Fig. 1
st.header("The paper's comparison on this frame")
c = st.columns(5)
sigma = c[0].number_input("Noise σ", 0.0, 0.3, 0.02, 0.005, format="%.3f", key="sl_sigma")
angle = c[1].number_input("Rotation ° (counter-clockwise)", -30.0, 30.0, 5.0, 0.5, key="sl_angle")
zoom_out = c[2].number_input("Zoom-out factor (c)", 0.5, 1.0, 0.95, 0.01, key="sl_zout")
zoom_in = c[3].number_input("Zoom-in factor (e)", 1.0, 2.0, 1.05, 0.01, key="sl_zin")
seed = int(c[4].number_input("Noise seed", 0, 10_000, 0, key="sl_seed"))
rows = _fig1(key, sigma, angle, zoom_out, zoom_in, seed, x_np)
cols = st.columns(5)
for col, r in zip(cols, rows):
    col.image(to_uint8(r["image"]), caption=f"({r['panel']}) {r['name']} — SSIM {r['ssim']:.3f}, "
              f"ℓ2 {r['l2']:.2f}", width="stretch")
table = pd.DataFrame([{"panel": r["panel"], "perturbation": r["name"], "transform": r["spec"],
                       "SSIM": r["ssim"], "ℓ1": r["l1"], "ℓ2": r["l2"], "ℓ∞": r["linf"],
                       "mean |d|": r["l1_mean"], "RMS": r["l2_rms"]} for r in rows])
st.dataframe(table.style.format({k: "{:.4f}" for k in ("SSIM", "ℓ∞", "mean |d|", "RMS")} |
                                {"ℓ1": "{:.1f}", "ℓ2": "{:.3f}"}), hide_index=True, width="stretch")
st.download_button("Table (CSV)", table.to_csv(index=False), "ssim_vs_lp.csv", "text/csv", key="sl_csv")

st.plotly_chart(relative_bars_figure(rows), width="stretch", config=PNG, key="sl_bars")

cc = claim_check(rows)
msg = (f"From (b) noise to (d) rotation + noise, the SSIM distance 1 − SSIM changes by "
       f"**{cc['rel_ssim']:+.0%}** (SSIM {cc['ssim_b']:.3f} → {cc['ssim_d']:.3f}) while ℓ2 changes by "
       f"**{cc['rel_l2']:+.0%}** ({cc['l2_b']:.2f} → {cc['l2_d']:.2f}).")
if cc["strong"]:
    st.success("The paper's claim holds strongly on this frame: SSIM is essentially unchanged. " + msg)
elif cc["holds"]:
    st.success("The paper's claim holds on this frame: ℓ2 grows at least twice as much as the SSIM "
               "distance. " + msg)
else:
    st.warning("The paper's claim does **not** hold on this frame: the SSIM distance grows about as "
               "much as ℓ2 (or more). Sharp edges and fine texture make SSIM sensitive to rotation "
               "too; try a smoother natural frame. " + msg)

# ---------------------------------------------------------------- playground
st.header("Playground")
c = st.columns(4)
p_noise = c[0].slider("Noise σ", 0.0, 0.1, 0.0, 0.005, key="pg_noise")
p_rot = c[1].slider("Rotation °", -10.0, 10.0, 0.0, 0.5, key="pg_rotate")
p_zoom = c[2].slider("Zoom", 0.9, 1.1, 1.0, 0.01, key="pg_zoom")
p_blur = c[3].slider("Blur σ (px)", 0.0, 3.0, 0.0, 0.25, key="pg_blur")
c = st.columns(4)
p_sx = c[0].slider("Shift x (px)", -5.0, 5.0, 0.0, 0.25, key="pg_sx")
p_sy = c[1].slider("Shift y (px)", -5.0, 5.0, 0.0, 0.25, key="pg_sy")
p_bright = c[2].slider("Brightness offset", -0.2, 0.2, 0.0, 0.01, key="pg_bright")
p_jpeg = c[3].slider("JPEG quality (100 = off)", 5, 100, 100, 5, key="pg_jpeg")
pg = playground(frame, {"rotate": p_rot, "zoom": p_zoom, "shift_x": p_sx, "shift_y": p_sy, "brightness": p_bright,
                        "blur": p_blur, "jpeg": p_jpeg, "noise": p_noise}, seed)
ops, d, dmax = pg["ops"], pg["distances"], pg["dmax"]
amp = 1.0 / dmax if dmax > 0 else 1.0
st.table(pd.DataFrame([{"transform": ",".join(f"{n}={v:g}" for n, v in ops) or "none",
                        "SSIM": f"{d['ssim']:.4f}", "ℓ1": f"{d['l1']:.2f}", "ℓ2": f"{d['l2']:.3f}",
                        "ℓ∞": f"{d['linf']:.4f}", "RMS": f"{d['l2_rms']:.4f}"}]).set_index("transform"))
cols = st.columns(3)
cols[0].image(to_uint8(pg["perturbed"]), caption="perturbed", width="stretch")
cols[1].image((pg["diff"] * amp).clamp(0, 1).numpy(), clamp=True,
              caption=(f"|difference| × {amp:.1f} (white = {dmax:.3f})" if dmax > 0 else
                       "no difference: move a slider"), width="stretch")
cols[2].plotly_chart(ssim_map_figure(pg["ssim_map"].numpy()), width="stretch", config=PNG, key="pg_map")

# ---------------------------------------------------------------- curves
st.header("Metrics vs transform magnitude")
curves = _curves(key, seed, x_np)
st.plotly_chart(curves_figure(curves, SWEEPS), width="stretch", config=PNG, key="sl_curves")
st.caption("Each metric is divided by its largest value over all five transforms, so the curves "
           "share one axis: where the red 1 − SSIM curve lies below the ℓ2 curve, SSIM is the more "
           "forgiving distance for that transform.")

# ---------------------------------------------------------------- budgets
st.header("What a budget allows")
c = st.columns(2)
sb = c[0].slider("SSIM budget (SSIM ≥)", 0.80, 0.999, 0.95, 0.001, format="%.3f", key="bd_ssim")
lb = c[1].slider("ℓ2 budget (RMS per value ≤)", 0.005, 0.1, 0.03, 0.005, format="%.3f", key="bd_l2")
lim = _budgets(key, sb, lb, seed, x_np)
bt = pd.DataFrame([{"transform": r["transform"], "unit": r["unit"],
                    "largest under SSIM budget": ("≥ " if r["ssim_never_violated"] else "") + f"{r['limit_ssim']:g}",
                    "largest under ℓ2 budget": ("≥ " if r["l2_never_violated"] else "") + f"{r['limit_l2']:g}",
                    "scanned up to": r["max_scanned"]} for r in lim])
st.dataframe(bt, hide_index=True, width="stretch", key="bd_table")
st.download_button("Budget table (CSV)", bt.to_csv(index=False), "budgets.csv", "text/csv", key="bd_csv")

# ---------------------------------------------------------------- video level
st.header("Video level")
adv = st.session_state.get("adversarial")
if adv is not None:
    orig, advv = torch.from_numpy(adv.original), torch.from_numpy(adv.adversarial)
    title = f"adversarial video from the attack page ({adv.method})"
elif sel is not None and sel.frames is not None and ops:
    orig = limit_size(sel.clip(0, 64), MAX_SIDE)
    advv = compose(orig, ops, seed)
    title = "the current clip under the playground transform (no attack run in this session yet)"
else:
    orig = advv = None
    st.info("No adversarial video in this session yet: run an attack on the Attack explorer page, or set a "
            "playground transform above to see per-frame curves for the current clip.")
if orig is not None:
    per = per_frame_distances(orig, advv)
    st.plotly_chart(per_frame_figure(per, title), width="stretch", config=PNG, key="vid_curves")
    st.download_button("Per-frame table (CSV)", pd.DataFrame(per).to_csv(index=False), "per_frame.csv", "text/csv",
                       key="vid_csv")
