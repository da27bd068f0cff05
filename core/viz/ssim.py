"""Figures of the SSIM-vs-Lp page (DeepSAVA Fig. 1): relative distances, the local SSIM map,
metric-vs-magnitude curves and per-frame SSIM/ℓ2 of a clip. SSIM axes end at 1 with readable ticks."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

METRIC_NAMES = {"ssim_dist": "1 − SSIM", "l1": "ℓ1", "l2": "ℓ2", "linf": "ℓ∞"}
METRIC_COLORS = {"ssim_dist": "#d62728", "l1": "#1f77b4", "l2": "#2ca02c", "linf": "#9467bd"}


def ssim_axis_range(values) -> tuple[list[float], str]:
    """A tidy SSIM axis: ``([lo, 1], tickformat)`` with ``lo`` the smallest value rounded down to a
    round step (never above 1, never an axis running past 1), ticks with as many decimals as the
    span needs."""
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    low = min(v) if v else 0.0
    span = max(1.0 - low, 1e-4)
    step = 10 ** np.floor(np.log10(span))  # 0.01 for spans 0.01–0.1, …
    lo = max(0.0, float(np.floor(low / step) * step))
    if 1.0 - lo < span * 1.05:  # leave a little room below the lowest point
        lo = max(0.0, lo - step)
    decimals = int(min(5, max(1, -np.floor(np.log10(1.0 - lo)) + 1)))
    return [float(lo), 1.0], f".{decimals}f"


def relative_bars_figure(rows: list[dict]) -> go.Figure:
    """Each distance of the Fig. 1 panels divided by the distance of panel (b), noise alone."""
    base = next(r for r in rows if r["panel"] == "b")
    fig = go.Figure()
    for k, name in METRIC_NAMES.items():
        val = (lambda r: 1 - r["ssim"]) if k == "ssim_dist" else (lambda r, k=k: r[k])
        fig.add_trace(go.Bar(name=name, x=[f"({r['panel']}) {r['name']}" for r in rows[1:]],
                             y=[val(r) / max(val(base), 1e-12) for r in rows[1:]], marker_color=METRIC_COLORS[k]))
    fig.add_hline(y=1, line_dash="dot", line_color="grey")
    fig.update_layout(barmode="group", height=330, yaxis_title="distance ÷ distance of (b) noise",
                      margin=dict(l=0, r=0, t=30, b=0), title="Each distance relative to noise alone")
    return fig


def ssim_map_figure(smap) -> go.Figure:
    """The local SSIM map (H, W), white = 1, square pixels."""
    smap = np.asarray(smap)
    fig = go.Figure(go.Heatmap(z=smap, zmin=min(0.0, float(smap.min())), zmax=1, colorscale="Greys_r",
                               colorbar=dict(title="SSIM", thickness=10)))
    fig.update_layout(height=260, margin=dict(l=0, r=0, t=25, b=0), title="local SSIM map")
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    fig.update_xaxes(showticklabels=False)
    return fig


def curves_figure(curves: dict, sweeps: dict[str, tuple[float, str]]) -> go.Figure:
    """Metric vs transform magnitude, one panel per transform; every metric divided by its largest
    value over all panels (``curves['normaliser']``) so the curves share one axis."""
    norm = curves["normaliser"]
    fig = make_subplots(1, len(sweeps), shared_yaxes=True, subplot_titles=list(sweeps))
    for i, (name, (_mmax, unit)) in enumerate(sweeps.items(), start=1):
        for k, mname in METRIC_NAMES.items():
            fig.add_trace(go.Scatter(x=curves[name]["magnitude"], y=np.array(curves[name][k]) / norm[k],
                                     name=mname, legendgroup=k, showlegend=i == 1, mode="lines+markers",
                                     line=dict(color=METRIC_COLORS[k]), marker=dict(size=4)), 1, i)
        fig.update_xaxes(title_text=unit, row=1, col=i)
    fig.update_yaxes(title_text="distance ÷ its maximum over all panels", range=[0, 1.05], row=1, col=1)
    fig.update_layout(height=340, margin=dict(l=0, r=0, t=30, b=0))
    return fig


def per_frame_figure(per: dict, title: str) -> go.Figure:
    """Per-frame SSIM (left axis, ends at 1) and ℓ2 (right axis) of a clip pair
    (:func:`core.ssim_lp.per_frame_distances`)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=per["frame"], y=per["ssim"], name="SSIM", mode="lines+markers",
                             line=dict(color="#d62728")), secondary_y=False)
    fig.add_trace(go.Bar(x=per["frame"], y=per["l2"], name="ℓ2", marker_color="#2ca02c", opacity=0.5),
                  secondary_y=True)
    rng, fmt = ssim_axis_range(per["ssim"])
    fig.update_layout(height=300, margin=dict(l=0, r=0, t=30, b=0), title=title, xaxis_title="frame")
    fig.update_xaxes(tickformat="d")
    fig.update_yaxes(title_text="SSIM", range=rng, tickformat=fmt, secondary_y=False)
    fig.update_yaxes(title_text="ℓ2", rangemode="tozero", secondary_y=True)
    return fig
