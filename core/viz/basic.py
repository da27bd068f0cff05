"""Frame strips and prediction charts."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from core.checks import check_video
from core.video import sample_indices


def frame_strip(video: torch.Tensor, n: int = 8, gap: int = 2, scale: int = 1) -> tuple[np.ndarray, list[int]]:
    """``n`` uniformly spaced frames side by side as an ``(H, n·W + gaps, 3)`` uint8 image.

    Returns:
        ``(image, frame_indices)``.
    """
    check_video(video)
    idx = sample_indices(video.shape[0], min(n, video.shape[0]))
    frames = (video[idx].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = frames.shape[1:3]
    out = np.full((h, len(idx) * (w + gap) - gap, 3), 255, np.uint8)
    for i, f in enumerate(frames):
        out[:, i * (w + gap): i * (w + gap) + w] = f
    return out, idx


def prediction_bar(probs: dict[str, float], true_label: str | None = None, title: str = "") -> go.Figure:
    """Horizontal bar chart of class probabilities; the top class is dark blue, the true class
    (if known) is outlined in green."""
    names = list(probs)
    vals = [probs[c] for c in names]
    top = int(np.argmax(vals))
    colors = ["#1f4e9c" if i == top else "#9bb7e0" for i in range(len(names))]
    line_w = [3 if c == true_label else 0 for c in names]
    fig = go.Figure(go.Bar(x=vals, y=names, orientation="h", marker_color=colors,
                           marker_line_color="#2ca02c", marker_line_width=line_w,
                           text=[f"{v:.1%}" for v in vals], textposition="auto",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(title=title or None, xaxis=dict(range=[0, 1], title="probability", tickformat=".0%"),
                      yaxis=dict(autorange="reversed"), height=60 + 28 * len(names),
                      margin=dict(l=10, r=10, t=40 if title else 10, b=40))
    return fig
