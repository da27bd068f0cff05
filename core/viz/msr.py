"""Figures of the MSR bounds (Wu & Kwiatkowska Fig. 7, 8, 10)."""

from __future__ import annotations

import math

import plotly.graph_objects as go


GUARANTEE_TEXT = {"sound": "sound", "grid": "grid (FMSR only)", "conditional": "conditional (needs true L, Eq. 5)",
                  "estimate": "estimate (sampled L, no guarantee)"}


CERT_METHOD_TEXT = {"crown": "CROWN", "crown+": "CROWN+", "crown++": "CROWN++", "alpha": "α-CROWN", "ibp": "IBP"}


def cert_method_text(method: str) -> str:
    """A certifier's name for the legend; stages (``"crown → crown+"``) read ``"CROWN, then CROWN+"``."""
    return ", then ".join(CERT_METHOD_TEXT.get(m, m) for m in method.split(" → "))


def bounds_figure(trace: list[dict], band: float | None, budget: float, title: str = "",
                  lower_guarantee: str = "grid", log_y: bool = False, cert_method: str | None = None) -> go.Figure:
    """Decreasing upper bounds (red: FMSR witness, solid; continuous witness, dashed), the A*
    lower bound (blue, labelled with its guarantee), the sound certified lower bound (green), and —
    only when Theorem 1 applies (``band`` given) — the band ``[lower − ½ d̃, upper_msr]``.
    Every legend entry names its guarantee. ``log_y``: a logarithmic distance axis, so a certified
    bound of 0.01 and an upper bound of 100 are both readable (zeros are not drawn)."""
    it = [e["iteration"] for e in trace]
    lo = [e["lower"] for e in trace]
    up = [e["upper"] for e in trace]
    # MSR ≤ upper_msr only once a verified adversarial video exists (None = no such video yet)
    msr_up = [v if v is not None and math.isfinite(v) else None for v in (e.get("upper_msr") for e in trace)]
    top = [m if m is not None else u for m, u in zip(msr_up, up)]  # band top: d + ε until a witness
    fig = go.Figure()
    if trace and band is not None:
        fig.add_trace(go.Scatter(x=it + it[::-1], y=top + [max(0.0, v - band) for v in lo][::-1], fill="toself",
                                 fillcolor="rgba(120,120,120,0.15)", line=dict(width=0), hoverinfo="skip",
                                 name="MSR range by Theorem 1 — conditional (true L, Eq. 5)"))
    fig.add_trace(go.Scatter(x=it, y=up, mode="lines+markers",
                             name="upper bound: verified grid witness — sound (at d: none within the budget yet)",
                             line=dict(color="#d62728", width=2), marker=dict(size=4)))
    if any(m is not None for m in msr_up):
        fig.add_trace(go.Scatter(x=it, y=msr_up, mode="lines", name="MSR upper bound: continuous witness — sound",
                                 line=dict(color="#d62728", width=1.5, dash="dash")))
    fig.add_trace(go.Scatter(x=it, y=lo, mode="lines+markers",
                             name=f"lower bound (A*) — {GUARANTEE_TEXT.get(lower_guarantee, lower_guarantee)}",
                             line=dict(color="#1f77b4", width=2, dash="solid" if lower_guarantee == "grid" else "dot"),
                             marker=dict(size=4)))
    cert = [e.get("certified_lower") for e in trace]
    if any(c is not None for c in cert):
        how = cert_method_text(cert_method or "crown")
        fig.add_trace(go.Scatter(x=it, y=cert, mode="lines+markers", name=f"certified lower bound ({how} + B&B) — sound",
                                 line=dict(color="#2ca02c", width=2), marker=dict(size=4)))
    fig.add_hline(y=budget, line_dash="dot", line_color="grey", annotation_text="budget d",
                  annotation_position="top left")
    fig.update_xaxes(tickformat="d")
    fig.update_layout(title=title or None, xaxis_title="iteration", yaxis_title="flow distance ‖δ‖ (px)",
                      height=440, margin=dict(l=10, r=10, t=40 if title else 10, b=40),
                      legend=dict(orientation="h", y=-0.18, yanchor="top", x=0))
    if log_y:  # explicit range: zeros and non-finite values would break plotly's autorange
        vals = [float(v) for tr in fig.data for v in (tr.y or ()) if v is not None and 0 < float(v) < math.inf]
        vals.append(float(budget))
        fig.update_yaxes(type="log", title="flow distance ‖δ‖ (px, log scale)",
                         range=[math.log10(min(vals)) - 0.2, math.log10(max(vals)) + 0.2])
    return fig


def lower_traces_figure(traces: dict[str, list[dict]], title: str, yaxis: str = "lower bound") -> go.Figure:
    """Several lower-bound traces against iterations (brightness panel, scalability panel)."""
    fig = go.Figure()
    for name, tr in traces.items():
        fig.add_trace(go.Scatter(x=[e["iteration"] for e in tr], y=[e["lower"] for e in tr], mode="lines",
                                 name=name))
    fig.update_layout(title=title, xaxis_title="iteration", yaxis_title=yaxis, height=320,
                      margin=dict(l=10, r=10, t=40, b=40))
    return fig


def msr_set_figure(rows: list[dict], budget: float) -> go.Figure:
    """Bounds of every clip of a clip set side by side (one column per clip, grouped by model when
    the rows come from several models, e.g. a regular and a certified one): the grid lower bound
    (blue), the sound certified lower bound (green), the sound upper bound of a verified adversarial
    video (red; none = robust within the budget), each named with its guarantee, and the budget."""
    models = list(dict.fromkeys(r.get("model", "") for r in rows))
    clip_names = [f"{r['clip']} · {r['label']}" for r in rows]
    grouped = len(models) > 1

    def xs(idx: list[int]) -> list:
        if not grouped:
            return [clip_names[i] for i in idx]
        return [[rows[i].get("model", "") for i in idx], [clip_names[i] for i in idx]]  # multi-category axis

    def value(r: dict, name: str) -> float | None:
        v = next((b["value"] for b in r.get("bounds", []) if b["name"] == name), None)
        return v if v is not None and math.isfinite(v) else None

    fig = go.Figure()
    every = list(range(len(rows)))
    for name, label, color, symbol in (
            ("grid_lower", "lower bound (A*) — grid (FMSR only)", "#1f77b4", "triangle-up"),
            ("certified_lower", "certified lower bound — sound", "#2ca02c", "diamond"),
            ("upper_msr", "upper bound: verified adversarial video — sound", "#d62728", "triangle-down")):
        ys = [value(r, name) for r in rows]
        if any(y is not None for y in ys):
            fig.add_trace(go.Scatter(x=xs(every), y=ys, mode="markers", name=label,
                                     marker=dict(color=color, size=11, symbol=symbol)))
    shown: set[bool] = set()
    for i, r in enumerate(rows):  # the gap between the best sound lower bound and the upper bound
        lo = max(v for v in (value(r, "certified_lower"), 0.0) if v is not None)
        up = value(r, "upper_msr")
        name = ("MSR unknown in this range (sound bounds)" if up is not None
                else "MSR unknown up to the budget (no adversarial video found)")
        fig.add_trace(go.Scatter(x=xs([i, i]), y=[lo, up if up is not None else budget], mode="lines", name=name,
                                 line=dict(color="rgba(120,120,120,0.5)", width=6,
                                           dash="solid" if up is not None else "dot"),
                                 hoverinfo="skip", showlegend=(up is not None) not in shown))
        shown.add(up is not None)
    fig.add_hline(y=budget, line_dash="dot", line_color="grey", annotation_text="budget d",
                  annotation_position="top left")
    fig.update_layout(xaxis_title="model · test clip" if grouped else "test clip",
                      yaxis_title="flow distance ‖δ‖ (px)", height=440,
                      margin=dict(l=10, r=10, t=10, b=40), legend=dict(orientation="h", y=-0.3, yanchor="top", x=0))
    return fig


def diagnosis_figure(diag: dict, title: str = "") -> go.Figure:
    """Where one bound-propagation probe loses (:meth:`core.verify.ModelBounds.diagnosis`): per
    perturbed step, the unstable ReLUs of every CNN layer as a share of its neurons (bars: the
    relaxation's looseness sits in these), and the mean width of the feature box entering the
    recurrent head (line, right axis: what the LSTM's lines then compound)."""
    from plotly.subplots import make_subplots

    steps = diag["steps"]
    xs = [str(r["step"]) for r in steps]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    layers = max((len(r["unstable"] or []) for r in steps), default=0)
    for k in range(layers):
        ys = [100.0 * r["unstable"][k] / r["neurons"][k] if r["unstable"] else None for r in steps]
        n = next(r["neurons"][k] for r in steps if r["neurons"])
        fig.add_trace(go.Bar(x=xs, y=ys, name=f"ReLU layer {k + 1} ({n} neurons)",
                             customdata=[r["unstable"][k] if r["unstable"] else None for r in steps],
                             hovertemplate="step %{x}: %{customdata} unstable (%{y:.2f} %)<extra></extra>"),
                      secondary_y=False)
    fig.add_trace(go.Scatter(x=xs, y=[r["feature_width_mean"] for r in steps], mode="lines+markers",
                             name="mean width of the feature box", line={"color": "black"}), secondary_y=True)
    fig.update_layout(title=title, barmode="group", height=340, margin={"l": 10, "r": 10, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.2, "yanchor": "top", "x": 0})
    fig.update_xaxes(title="perturbed step (frame pair)")
    fig.update_yaxes(title="unstable ReLUs (% of the layer)", secondary_y=False)
    fig.update_yaxes(title="feature box width", secondary_y=True)
    return fig
