"""Optical-flow pictures: colour wheel, magnitude heatmaps, arrows, histograms, comparisons.

Direction colours are the **Middlebury colour coding** (Baker et al., ICCV 2007) that the field
reads — the same as the ``flow_vis`` package and torchvision's ``flow_to_image``: a wheel of 55 hues
(red→yellow 15, yellow→green 6, green→cyan 4, cyan→blue 11, blue→magenta 13, magenta→red 6),
angle ``a = atan2(−v, −u)/π`` mapped to ``(a + 1)/2 · 54`` and interpolated between neighbouring
hues; the magnitude ``r`` (divided by **one** maximum for the whole view, so frames and methods
compare) whitens the colour ``1 − r(1 − c)``, and ``r > 1`` is darkened ×0.75. Rightward motion is
red, downward yellow, leftward cyan-blue, upward violet; still pixels are white.

All functions are pure: arrays in, numpy images or plotly figures out.
"""

from __future__ import annotations

import io

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)


def _check_pair_flow(flow: np.ndarray) -> np.ndarray:
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"expected one flow field (2, H, W) in pixels, got shape {flow.shape}")
    return flow


def magnitude(flow: ArrayLike) -> np.ndarray:
    """Per-pixel flow magnitude ``(…, H, W)`` of ``(…, 2, H, W)``."""
    f = _np(flow)
    return np.sqrt(f[..., 0, :, :] ** 2 + f[..., 1, :, :] ** 2)


def make_colorwheel() -> np.ndarray:
    """The Middlebury colour wheel ``(55, 3)`` in 0…255 (RY 15, YG 6, GC 4, CB 11, BM 13, MR 6)."""
    segs = [(15, 0, 1, True), (6, 1, 0, False), (4, 1, 2, True), (11, 2, 1, False), (13, 2, 0, True),
            (6, 0, 2, False)]  # (length, full channel, ramping channel, ramp up?)
    rows = []
    for n, full, ramp, up in segs:
        for i in range(n):
            c = [0.0, 0.0, 0.0]
            c[full] = 255.0
            c[ramp] = np.floor(255.0 * i / n) if up else 255.0 - np.floor(255.0 * i / n)
            rows.append(c)
    return np.array(rows)


_WHEEL = make_colorwheel()


def robust_max(flows: list[ArrayLike], percentile: float = 99.0) -> tuple[float, float]:
    """One magnitude scale for several flow views: the ``percentile`` of |flow| over all of them
    (a few border outliers must not wash every other pixel out), and the fraction of pixels above it
    (clipped to full colour — say so). Returns ``(scale > 0, clipped fraction)``."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    mags = np.concatenate([magnitude(_np(f)).ravel() for f in flows]) if flows else np.zeros(1)
    scale = float(np.percentile(mags, percentile)) if mags.size else 0.0
    if scale <= 1e-6:
        scale = float(mags.max()) if mags.size and mags.max() > 1e-6 else 1.0
    return scale, float((mags > scale).mean())


def flow_to_color(flow: ArrayLike, max_mag: float | None = None, clip: bool = False) -> np.ndarray:
    """Middlebury colour image ``(H, W, 3)`` uint8 of one flow field ``(2, H, W)`` (see module doc);
    the magnitude is divided by ``max_mag`` (default: this field's maximum). Beyond ``max_mag``
    Middlebury darkens the colour (×0.75); with ``clip=True`` such outliers show at full colour."""
    f = _check_pair_flow(_np(flow)).astype(np.float64)
    u, v = f[0], f[1]
    m = float(max_mag) if max_mag else float(np.sqrt(u ** 2 + v ** 2).max())
    u, v = u / (m + 1e-5), v / (m + 1e-5)
    rad = np.sqrt(u ** 2 + v ** 2)
    if clip:
        rad = np.minimum(rad, 1.0)
    a = np.arctan2(-v, -u) / np.pi
    ncols = _WHEEL.shape[0]
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(int)
    k1 = k0 + 1
    k1[k1 == ncols] = 0
    frac = fk - k0
    out = np.empty((*u.shape, 3), np.uint8)
    for ch in range(3):
        col = (1 - frac) * _WHEEL[k0, ch] / 255.0 + frac * _WHEEL[k1, ch] / 255.0
        inside = rad <= 1
        col = np.where(inside, 1 - rad * (1 - col), col * 0.75)
        out[..., ch] = np.floor(255 * col)
    return out


def color_wheel(size: int = 101) -> np.ndarray:
    """The legend: ``(size, size, 3)`` uint8 wheel, the flow of each pixel being its offset from the
    centre (so the right edge is red = rightward motion); outside the disk is white."""
    c = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    f = np.stack([xs - c, ys - c])
    img = flow_to_color(f, c)
    img[np.hypot(xs - c, ys - c) > c] = 255
    return img


def colormap(values: np.ndarray, vmin: float, vmax: float, scale: str = "Viridis") -> np.ndarray:
    """Map values to RGB uint8 with a plotly colour scale."""
    t = np.clip((values - vmin) / (vmax - vmin if vmax > vmin else 1.0), 0, 1)
    lut_rgb = sample_colorscale(scale, list(np.linspace(0, 1, 256)), colortype="tuple")
    lut = (np.array(lut_rgb) * 255 if max(max(c) for c in lut_rgb) <= 1.0 else np.array(lut_rgb))
    return lut.astype(np.uint8)[(t * 255).round().astype(int)]


def _img_axes(fig: go.Figure, row: int | None = None, col: int | None = None) -> None:
    """Image axes: no ticks, y down, square pixels (each subplot's y axis anchored to its own x)."""
    kw = {} if row is None else {"row": row, "col": col}
    anchor = "x"
    if row is not None:
        anchor = fig.get_subplot(row, col).xaxis.plotly_name.replace("axis", "")  # "xaxis2" -> "x2"
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, **kw)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed",
                     scaleanchor=anchor, **kw)


def to_uint8(frame: ArrayLike) -> np.ndarray:
    """``(3, H, W)`` in [0, 1] → ``(H, W, 3)`` uint8."""
    f = _np(frame)
    return (np.clip(f.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)


def arrow_segments(flow: np.ndarray, step: int, scale: float) -> tuple[list, list]:
    """Polyline coordinates (with ``None`` breaks) of subsampled arrows with heads. Drawn arrows are
    at most 2 steps long (outliers clipped), so one shared ``scale`` stays readable."""
    f = _check_pair_flow(flow)
    h, w = f.shape[1:]
    xs, ys = [], []
    off = step // 2
    cap = 2.0 * step
    for y in range(off, h, step):
        for x in range(off, w, step):
            dx, dy = f[0, y, x] * scale, f[1, y, x] * scale
            n2 = dx * dx + dy * dy
            if n2 < 0.04:
                continue
            if n2 > cap * cap:
                dx, dy = dx * cap / np.sqrt(n2), dy * cap / np.sqrt(n2)
            x1, y1 = x + dx, y + dy
            ang = np.arctan2(dy, dx)
            hl = 0.35 * np.hypot(dx, dy)
            hx1, hy1 = x1 - hl * np.cos(ang - 0.45), y1 - hl * np.sin(ang - 0.45)
            hx2, hy2 = x1 - hl * np.cos(ang + 0.45), y1 - hl * np.sin(ang + 0.45)
            xs += [x, x1, None, hx1, x1, hx2, None]
            ys += [y, y1, None, hy1, y1, hy2, None]
    return xs, ys


def default_step(h: int, w: int) -> int:
    """Arrow spacing: about 16 arrows across the longer side."""
    return max(2, round(max(h, w) / 16))


def arrows_figure(frame: ArrayLike, flow: ArrayLike, step: int | None = None, scale: float | None = None,
                  title: str = "") -> go.Figure:
    """The frame with subsampled flow arrows on top (as in Wu & Kwiatkowska's figures).

    Arrows are drawn ``scale`` times their length (default: the longest arrow spans ~1.5 steps).
    """
    f = _np(flow)
    img = to_uint8(frame)
    h, w = img.shape[:2]
    step = step or default_step(h, w)
    mmax = float(magnitude(f).max())
    scale = scale or (1.5 * step / mmax if mmax > 0 else 1.0)
    xs, ys = arrow_segments(f, step, scale)
    fig = go.Figure([go.Image(z=img, hoverinfo="skip"),
                     go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#ffeb3b", width=1.6),
                                hoverinfo="skip", showlegend=False)])
    fig.update_layout(title=(title + f" (arrows ×{scale:.1f})").strip(), margin=dict(l=0, r=0, t=30, b=0),
                      height=320)
    _img_axes(fig)
    return fig


def magnitude_figure(flow: ArrayLike, zmax: float | None = None, title: str = "magnitude (px)") -> go.Figure:
    """Magnitude heatmap with a colour bar (pixels)."""
    mag = magnitude(_np(flow))
    fig = go.Figure(go.Heatmap(z=mag, colorscale="Viridis", zmin=0, zmax=zmax or float(mag.max()) or 1.0,
                               colorbar=dict(title="px", thickness=12),
                               hovertemplate="x %{x}, y %{y}: %{z:.2f} px<extra></extra>"))
    fig.update_layout(title=title, margin=dict(l=0, r=0, t=30, b=0), height=320)
    _img_axes(fig)
    return fig


def direction_figure(flow: ArrayLike, max_mag: float | None = None, title: str = "direction") -> go.Figure:
    """Middlebury colour image of the flow with the wheel legend *beside* it (not over the image);
    magnitudes above ``max_mag`` are clipped to full colour."""
    f = _np(flow)
    img = flow_to_color(f, max_mag, clip=max_mag is not None)
    h, w = img.shape[:2]
    wheel = color_wheel(max(31, min(h, w) // 2))
    m = max_mag or float(magnitude(f).max())
    fig = make_subplots(1, 2, column_widths=[0.8, 0.2], horizontal_spacing=0.02)
    fig.add_trace(go.Image(z=img, hovertemplate="x %{x}, y %{y}<extra></extra>"), 1, 1)
    fig.add_trace(go.Image(z=wheel, hoverinfo="skip"), 1, 2)
    fig.update_layout(title=f"{title} (full colour = {m:.2f} px)", margin=dict(l=0, r=0, t=30, b=0), height=320)
    _img_axes(fig, 1, 1)
    _img_axes(fig, 1, 2)
    return fig


def histogram_figure(flows: dict[str, ArrayLike], bins: int = 40, max_mag: float | None = None) -> go.Figure:
    """Overlaid histograms of the magnitudes of one or more flow fields (or sequences), all on the
    same bins. With ``max_mag`` the bins stop there and larger values are counted in the last bin
    (the title says how many)."""
    mags = {name: magnitude(_np(f)).ravel() for name, f in flows.items()}
    top = max_mag or max((float(m.max()) for m in mags.values()), default=1.0) or 1.0
    size = top / bins
    fig = go.Figure()
    over = 0
    for name, m in mags.items():
        over += int((m > top).sum())
        fig.add_trace(go.Histogram(x=np.minimum(m, top), xbins=dict(start=0, end=top + 1e-9, size=size), name=name,
                                   opacity=0.6))
    title = "magnitude histogram" + (f" ({over} pixels above {top:.2f} px in the last bin)" if over else "")
    fig.update_layout(barmode="overlay", xaxis_title="magnitude (px)", yaxis_title="pixels",
                      margin=dict(l=0, r=0, t=30, b=0), height=280, title=title,
                      legend=dict(orientation="h", y=-0.25))
    return fig


def comparison_figure(flow_a: ArrayLike, flow_b: ArrayLike, kind: str = "magnitude",
                      titles: tuple[str, str, str] = ("original", "difference", "perturbed"),
                      max_mag: float | None = None) -> go.Figure:
    """The reusable "original | difference | perturbed" view (Wu & Kwiatkowska Fig. 5).

    ``kind='magnitude'``: |a| and |b| share one Viridis scale; the difference |b| − |a| uses a
    symmetric diverging scale. ``kind='direction'``: colour wheels of a, of the difference vector
    b − a, and of b, all with the same full-colour magnitude. ``max_mag`` fixes that scale (e.g.
    :func:`robust_max` of the views being compared); values above it are clipped.
    """
    a, b = _check_pair_flow(_np(flow_a)), _check_pair_flow(_np(flow_b))
    if a.shape != b.shape:
        raise ValueError(f"flows differ in shape: {a.shape} vs {b.shape}")
    fig = make_subplots(1, 3, subplot_titles=titles, horizontal_spacing=0.04)
    if kind == "magnitude":
        ma, mb = magnitude(a), magnitude(b)
        z = max_mag or float(max(ma.max(), mb.max())) or 1.0
        d = mb - ma
        dz = float(np.abs(d).max()) or 1.0
        fig.add_trace(go.Heatmap(z=ma, zmin=0, zmax=z, colorscale="Viridis", coloraxis=None,
                                 colorbar=dict(title="px", x=0.295, thickness=10, len=0.9)), 1, 1)
        fig.add_trace(go.Heatmap(z=d, zmin=-dz, zmax=dz, colorscale="RdBu_r",
                                 colorbar=dict(title="Δpx", x=0.645, thickness=10, len=0.9)), 1, 2)
        fig.add_trace(go.Heatmap(z=mb, zmin=0, zmax=z, colorscale="Viridis",
                                 colorbar=dict(title="px", x=1.0, thickness=10, len=0.9)), 1, 3)
    elif kind == "direction":
        m = max_mag or float(max(magnitude(a).max(), magnitude(b).max())) or 1.0
        for col, f in ((1, a), (2, b - a), (3, b)):
            fig.add_trace(go.Image(z=flow_to_color(f, m, clip=max_mag is not None)), 1, col)
    else:
        raise ValueError(f"kind must be 'magnitude' or 'direction', got {kind!r}")
    for col in (1, 2, 3):
        _img_axes(fig, 1, col)
    fig.update_layout(height=300, margin=dict(l=0, r=0, t=30, b=0))
    return fig


def animation_figure(flows: ArrayLike, max_mag: float | None = None) -> go.Figure:
    """Colour-wheel images of every frame pair as a plotly animation with Play and a slider."""
    f = _np(flows)
    m = max_mag or float(magnitude(f).max()) or 1.0
    imgs = [flow_to_color(fi, m, clip=max_mag is not None) for fi in f]
    frames = [go.Frame(data=[go.Image(z=im)], name=str(i)) for i, im in enumerate(imgs)]
    fig = go.Figure(data=[go.Image(z=imgs[0])], frames=frames)
    steps = [dict(method="animate", label=str(i), args=[[str(i)], dict(mode="immediate",
             frame=dict(duration=0, redraw=True), transition=dict(duration=0))]) for i in range(len(imgs))]
    fig.update_layout(
        height=360, margin=dict(l=0, r=0, t=10, b=0),
        updatemenus=[dict(type="buttons", showactive=False, x=0, y=-0.02, xanchor="left", yanchor="top",
                          buttons=[dict(label="▶ Play", method="animate",
                                        args=[None, dict(frame=dict(duration=250, redraw=True), fromcurrent=True)]),
                                   dict(label="❚❚", method="animate",
                                        args=[[None], dict(mode="immediate", frame=dict(duration=0))])])],
        sliders=[dict(steps=steps, x=0.15, len=0.85, y=-0.02, currentvalue=dict(prefix="pair "))])
    _img_axes(fig)
    return fig


def panel_png(frame: ArrayLike, flow: ArrayLike, max_mag: float | None = None, upscale: int = 4) -> bytes:
    """A PNG of [frame with arrows | magnitude (Viridis) | direction (wheel)] for export."""
    import cv2
    from PIL import Image

    f = _check_pair_flow(_np(flow))
    img = to_uint8(frame)
    h, w = img.shape[:2]
    k = max(1, upscale)
    big = np.ascontiguousarray(img.repeat(k, 0).repeat(k, 1))
    step = default_step(h, w)
    mag = magnitude(f)
    m = max_mag or float(mag.max()) or 1.0
    scale = 1.5 * step / m
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            dx, dy = f[0, y, x] * scale, f[1, y, x] * scale
            if dx * dx + dy * dy < 0.04:
                continue
            p0 = (int(x * k + k / 2), int(y * k + k / 2))
            p1 = (int((x + dx) * k + k / 2), int((y + dy) * k + k / 2))
            cv2.arrowedLine(big, p0, p1, (255, 235, 59), 1, cv2.LINE_AA, tipLength=0.3)
    magimg = colormap(mag, 0, m).repeat(k, 0).repeat(k, 1)
    dirimg = flow_to_color(f, m, clip=max_mag is not None).repeat(k, 0).repeat(k, 1)
    gap = np.full((h * k, 4, 3), 255, np.uint8)
    panel = np.concatenate([big, gap, magimg, gap, dirimg], axis=1)
    buf = io.BytesIO()
    Image.fromarray(panel).save(buf, format="PNG")
    return buf.getvalue()
