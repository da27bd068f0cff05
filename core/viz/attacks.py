"""Figures of the attack explorer: frame timeline, saliency, per-frame distances, BO trials,
and a synchronised three-player HTML view."""

from __future__ import annotations

import base64

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from core.viz.ssim import ssim_axis_range


def timeline_figure(t: int, order: list[int], ssim_pf: list[float], l2_pf: list[float]) -> go.Figure:
    """Frames on the x axis: perturbed frames coloured with their perturbation order (1, 2, …),
    per-frame SSIM (line) and ℓ2 (bars) below."""
    fig = make_subplots(2, 1, shared_xaxes=True, row_heights=[0.35, 0.65], vertical_spacing=0.06,
                        specs=[[{}], [{"secondary_y": True}]])
    rank = {f: i + 1 for i, f in enumerate(order)}
    colors = ["#d62728" if f in rank else "#e0e0e0" for f in range(t)]
    fig.add_trace(go.Bar(x=list(range(t)), y=[1] * t, marker_color=colors, showlegend=False,
                         text=[str(rank[f]) if f in rank else "" for f in range(t)], textposition="inside",
                         hovertemplate="frame %{x}<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=list(range(t)), y=l2_pf, name="ℓ2 per frame", marker_color="#2ca02c", opacity=0.7),
                  2, 1, secondary_y=False)
    fig.add_trace(go.Scatter(x=list(range(t)), y=ssim_pf, name="SSIM per frame", mode="lines+markers",
                             line=dict(color="#d62728")), 2, 1, secondary_y=True)
    fig.update_yaxes(visible=False, row=1, col=1)
    fig.update_yaxes(title_text="ℓ2", row=2, col=1, secondary_y=False)
    rng, fmt = ssim_axis_range(ssim_pf)
    fig.update_yaxes(title_text="SSIM", range=rng, tickformat=fmt, row=2, col=1, secondary_y=True)
    fig.update_xaxes(title_text="frame", row=2, col=1, dtick=1)
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=30, b=30), bargap=0.15,
                      title="frames perturbed (red, numbered in order) and per-frame distances",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def saliency_figure(history: list[list[float]], order: list[int]) -> go.Figure:
    """Per-frame saliency (Eq. 3.4). One pass: bars. With RG (a refresh after each perturbed frame):
    a heatmap, frame × step — row 0 the initial saliency, row k after perturbing the k-th frame —
    each row normalised to its maximum, the frame perturbed at each step marked."""
    if len(history) <= 1:
        s = history[0] if history else []
        fig = go.Figure(go.Bar(x=list(range(len(s))), y=s, marker_color=["#d62728" if f in order else "#1f77b4"
                                                                        for f in range(len(s))]))
        fig.update_layout(height=300, xaxis_title="frame", yaxis_title="mean |∂C/∂frame|", xaxis=dict(dtick=1),
                          margin=dict(l=10, r=10, t=30, b=30), title="frame saliency (red: perturbed)")
        return fig
    z = np.asarray(history, dtype=float)
    z = z / np.maximum(z.max(axis=1, keepdims=True), 1e-12)
    rows = ["initial"] + [f"after frame {f}" for f in order[: len(history) - 1]]
    fig = go.Figure(go.Heatmap(z=z, x=list(range(z.shape[1])), y=rows, colorscale="Viridis", zmin=0, zmax=1,
                               colorbar=dict(title="÷ row max", thickness=10),
                               hovertemplate="frame %{x}, %{y}: %{z:.2f}<extra></extra>"))
    picked = [(f, rows[i]) for i, f in enumerate(order[: len(history)])]
    fig.add_trace(go.Scatter(x=[p[0] for p in picked], y=[p[1] for p in picked], mode="markers",
                             marker=dict(symbol="x", size=10, color="#d62728"), name="frame perturbed next",
                             hovertemplate="perturbed next: frame %{x}<extra></extra>"))
    fig.update_layout(height=max(260, 40 + 22 * len(rows)), xaxis_title="frame", xaxis=dict(dtick=1),
                      yaxis=dict(autorange="reversed"), margin=dict(l=10, r=10, t=30, b=30),
                      title="frame saliency per step (saliency-RG refreshes it after each frame)",
                      legend=dict(orientation="h", y=-0.2))
    return fig


def trials_figure(trials: list[dict], chosen: list[int]) -> go.Figure:
    """Key-frame selection: the score of each probed mask in trial order — the lowest true-class
    margin its short probe reached (below 0 = the probe already fooled the model; lower is better)."""
    x = list(range(1, len(trials) + 1))
    fig = go.Figure(go.Scatter(x=x, y=[t["score"] for t in trials], mode="markers+lines",
                               text=[str(t["frames"]) for t in trials],
                               marker=dict(size=9, symbol=["star" if t.get("success") else "circle" for t in trials],
                                           color=["#d62728" if t["frames"] == chosen else "#1f77b4" for t in trials]),
                               hovertemplate="trial %{x}: frames %{text}, best margin %{y:.3f}<extra></extra>"))
    fig.add_hline(y=0, line_dash="dot", line_color="grey", annotation_text="fooled below 0",
                  annotation_position="bottom right")
    fig.update_layout(height=280, xaxis_title="trial", yaxis_title="probe score (best margin)",
                      margin=dict(l=10, r=10, t=30, b=30), title=f"key-frame search (chosen: {chosen}, red)")
    fig.update_xaxes(tickformat="d", dtick=1 if len(x) <= 20 else None)
    return fig


def amplified(video: torch.Tensor, adv: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Perturbation shown as 0.5 + k·(adv − video), with k making its largest value visible."""
    d = adv - video
    m = float(d.abs().max())
    k = 0.5 / m if m > 0 else 1.0
    return (0.5 + k * d).clamp(0, 1), k


def synced_players_html(mp4s: list[bytes], titles: list[str], width: int = 220) -> str:
    """Three (or more) H.264 players that play, pause and seek together."""
    vids = "".join(
        f'<figure style="margin:0 6px;text-align:center"><video id="v{i}" width="{width}" muted loop playsinline '
        f'src="data:video/mp4;base64,{base64.b64encode(b).decode()}"></video>'
        f'<figcaption style="font:13px sans-serif">{t}</figcaption></figure>'
        for i, (b, t) in enumerate(zip(mp4s, titles)))
    n = len(mp4s)
    return f"""
<div style="display:flex;justify-content:center">{vids}</div>
<div style="text-align:center;margin-top:4px;font:13px sans-serif">
<button id="pp">▶ play / ❚❚ pause</button> <input id="sk" type="range" min="0" max="1000" value="0" style="width:50%">
</div>
<script>
const v=[...Array({n}).keys()].map(i=>document.getElementById('v'+i));
const pp=document.getElementById('pp'), sk=document.getElementById('sk');
pp.onclick=()=>{{ if(v[0].paused){{v.forEach(x=>x.play());}} else {{v.forEach(x=>x.pause());}} }};
sk.oninput=()=>{{ const t=sk.value/1000*(v[0].duration||0); v.forEach(x=>{{x.currentTime=t;}}); }};
v[0].ontimeupdate=()=>{{ sk.value=1000*v[0].currentTime/(v[0].duration||1);
  v.slice(1).forEach(x=>{{ if(Math.abs(x.currentTime-v[0].currentTime)>0.08) x.currentTime=v[0].currentTime; }}); }};
</script>"""


def frame_grid(video: torch.Tensor, adv: torch.Tensor, frames: list[int], scale: int = 3) -> np.ndarray:
    """Rows: original | amplified perturbation | adversarial, for each frame in ``frames``."""
    amp, _ = amplified(video, adv)
    rows = []
    for f in frames:
        row = torch.cat([video[f], torch.ones(3, video.shape[2], 2), amp[f], torch.ones(3, video.shape[2], 2), adv[f]], 2)
        rows.append(row)
        rows.append(torch.ones(3, 2, row.shape[2]))
    img = torch.cat(rows[:-1], 1) if rows else torch.ones(3, 2, 2)
    arr = (img.permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return arr.repeat(scale, 0).repeat(scale, 1)


_DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star"]


def accuracy_eps_figure(rows: list[dict]) -> go.Figure:
    """Clip accuracy under attack vs ε, one line per (model, method) of a sweep. Lines that lie on
    top of each other stay visible: each has its own dash and marker, drawn thinner the later."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("eps") is not None:
            groups.setdefault((r["model"], r["method"]), []).append(r)
    fig = go.Figure()
    for i, ((mn, me), g) in enumerate(groups.items()):
        g = sorted(g, key=lambda r: r["eps"])
        fig.add_trace(go.Scatter(x=[r["eps"] for r in g], y=[r["clip_accuracy"] for r in g], mode="lines+markers",
                                 name=f"{mn} · {me}", line=dict(dash=_DASHES[i % 6], width=max(1.0, 3.5 - 0.5 * i)),
                                 marker=dict(symbol=_SYMBOLS[i % 6], size=max(5, 11 - 2 * i))))
    fig.update_layout(height=300, xaxis_title="ε", yaxis_title="accuracy under attack (clip level)",
                      yaxis=dict(range=[-0.03, 1.03]), margin=dict(l=10, r=10, t=30, b=30), title="accuracy vs ε")
    return fig


def frames_histogram_figure(rows: list[dict]) -> go.Figure:
    """How many frames the successful attacks perturbed (thesis Fig. 3.5), one bar group per row."""
    fig = go.Figure()
    for r in rows:
        h = r.get("frames_histogram")
        if h:
            eps = r.get("eps")
            fig.add_trace(go.Bar(x=[int(k) for k in h], y=list(h.values()),
                                 name=f"{r['model']} · {r['method']}" + (f" ε={eps:g}" if eps is not None else "")))
    fig.update_layout(height=300, barmode="group", xaxis_title="frames perturbed (successful attacks)",
                      yaxis_title="clips", xaxis=dict(tickformat="d"), margin=dict(l=10, r=10, t=30, b=30),
                      title="frames perturbed (thesis Fig. 3.5)")
    return fig


def levels_figure(lvl: dict) -> go.Figure:
    """Clip-level vs video-level accuracy under attack against ε (distinct dashes and markers)."""
    fig = go.Figure([
        go.Scatter(x=lvl["eps"], y=lvl["clip_accuracy"], name="clip level", mode="lines+markers",
                   line=dict(width=3.5), marker=dict(size=10, symbol="circle")),
        go.Scatter(x=lvl["eps"], y=lvl["video_accuracy"], name="video level", mode="lines+markers",
                   line=dict(width=1.5, dash="dash"), marker=dict(size=6, symbol="diamond"))])
    fig.update_layout(height=300, xaxis_title="ε", yaxis_title="accuracy", yaxis=dict(range=[-0.03, 1.03]),
                      margin=dict(l=10, r=10, t=30, b=30))
    return fig


def saliency_maps_figure(maps: dict[str, np.ndarray], frames: list[int], shared: bool = True) -> go.Figure:
    """Saliency maps of several models on the same clip: one row per model, one column per chosen
    frame, **one colour scale** for all panels (the 99.5th percentile of every map), so the rows
    compare (DeepSAVA App. D)."""
    names = list(maps)
    top = float(np.percentile(np.concatenate([np.asarray(m)[frames].ravel() for m in maps.values()]), 99.5)) or 1.0
    fig = make_subplots(len(names), len(frames), horizontal_spacing=0.01, vertical_spacing=0.04,
                        column_titles=[f"frame {f}" for f in frames], row_titles=names)
    for i, n in enumerate(names, start=1):
        m = np.asarray(maps[n])
        zmax = top if shared else (float(np.percentile(m[frames], 99.5)) or 1.0)
        for j, f in enumerate(frames, start=1):
            fig.add_trace(go.Heatmap(z=m[f], zmin=0, zmax=zmax, colorscale="Reds", showscale=(i == 1 and j == 1),
                                     colorbar=dict(title="|∂logit/∂x|", thickness=10)), i, j)
            fig.update_xaxes(visible=False, row=i, col=j)
            fig.update_yaxes(visible=False, autorange="reversed", scaleanchor=f"x{(i - 1) * len(frames) + j}"
                             if (i, j) != (1, 1) else "x", row=i, col=j)
    fig.update_layout(height=150 * len(names) + 90, margin=dict(l=10, r=40, t=80, b=10),
                      title=dict(text="input-gradient saliency (one colour scale)" if shared else
                                 "input-gradient saliency", y=0.98, yanchor="top"))
    return fig


def transfer_figure(out: dict) -> go.Figure:
    """The transferability matrix as a heatmap: FR per (source row, target column) with the
    counts "fooled/n" written in each cell (— where no clip qualified)."""
    fr = [[np.nan if v is None else v for v in row] for row in out["fr"]]
    text = [[("—" if f is None else f"{f:.2f}<br>{k}/{n}") for f, k, n in zip(fr_row, k_row, n_row)]
            for fr_row, k_row, n_row in zip(out["fr"], out["fooled"], out["n"])]
    fig = go.Figure(go.Heatmap(z=fr, x=out["targets"], y=out["sources"], zmin=0, zmax=1, colorscale="Reds",
                               text=text, texttemplate="%{text}", colorbar=dict(title="FR", thickness=10),
                               hovertemplate="source %{y} → target %{x}: %{text}<extra></extra>"))
    fig.update_layout(height=120 + 50 * len(out["sources"]), xaxis_title="target (judges the adversarial clip)",
                      yaxis_title="source (crafts it)", yaxis=dict(autorange="reversed"),
                      margin=dict(l=10, r=10, t=30, b=40), title=f"fooling rate — {out['params'].get('method')}")
    return fig
