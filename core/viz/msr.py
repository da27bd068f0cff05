"""Figures of the MSR bounds (Wu & Kwiatkowska Fig. 7, 8, 10)."""

from __future__ import annotations

import plotly.graph_objects as go


def bounds_figure(trace: list[dict], band: float, budget: float, title: str = "") -> go.Figure:
    """Decreasing upper bound (red: FMSR, solid; MSR from the continuous witness, dashed),
    increasing lower bound (blue) and the Theorem-1 band.

    The shaded band is where MSR itself lies: ``[lower − ½ d̃, upper_msr]`` (FMSR ∈ [lower, upper]).
    """
    it = [e["iteration"] for e in trace]
    lo = [e["lower"] for e in trace]
    up = [e["upper"] for e in trace]
    top = [e.get("upper_msr", e["upper"]) for e in trace]
    fig = go.Figure()
    if trace:
        fig.add_trace(go.Scatter(x=it + it[::-1], y=top + [max(0.0, v - band) for v in lo][::-1], fill="toself",
                                 fillcolor="rgba(120,120,120,0.15)", line=dict(width=0), hoverinfo="skip",
                                 name="MSR range (Theorem 1)"))
    fig.add_trace(go.Scatter(x=it, y=up, mode="lines+markers", name="upper bound (witness)",
                             line=dict(color="#d62728", width=2), marker=dict(size=4)))
    if trace and "upper_msr" in trace[0]:
        fig.add_trace(go.Scatter(x=it, y=[e["upper_msr"] for e in trace], mode="lines",
                                 name="MSR upper bound (continuous witness)",
                                 line=dict(color="#d62728", width=1.5, dash="dash")))
    fig.add_trace(go.Scatter(x=it, y=lo, mode="lines+markers", name="lower bound (A*)",
                             line=dict(color="#1f77b4", width=2), marker=dict(size=4)))
    fig.add_hline(y=budget, line_dash="dot", line_color="grey", annotation_text="budget d",
                  annotation_position="top left")
    fig.update_layout(title=title or None, xaxis_title="iteration", yaxis_title="flow distance",
                      height=420, margin=dict(l=10, r=10, t=40 if title else 10, b=40),
                      legend=dict(orientation="h", y=-0.18, yanchor="top", x=0))
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
