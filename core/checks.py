"""Up-front input checks with precise messages (kornia style)."""

from __future__ import annotations

import torch

from core.errors import ParameterError, VideoError


def _desc(x: torch.Tensor) -> str:
    if x.numel() == 0:
        return f"shape {tuple(x.shape)} (empty), dtype {x.dtype}"
    if x.is_floating_point():
        return (
            f"shape {tuple(x.shape)}, dtype {x.dtype}, range "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )
    return f"shape {tuple(x.shape)}, dtype {x.dtype}"


def check_video(video: torch.Tensor, *, channels: int | None = 3, min_frames: int = 1,
                name: str = "video") -> torch.Tensor:
    """Check a ``(T, C, H, W)`` float video in [0, 1]; return it unchanged.

    Raises:
        VideoError: with ``expected (T, 3, H, W) float in [0, 1], got …``.
    """
    c = "C" if channels is None else str(channels)
    expect = f"expected {name} (T, {c}, H, W) float in [0, 1] with T >= {min_frames}"
    if not isinstance(video, torch.Tensor):
        raise VideoError(f"{expect}, got {type(video).__name__}")
    ok = (
        video.dim() == 4
        and video.is_floating_point()
        and (channels is None or video.shape[1] == channels)
        and video.shape[0] >= min_frames
        and video.numel() > 0
    )
    if ok:
        lo, hi = float(video.min()), float(video.max())
        ok = lo >= -1e-6 and hi <= 1 + 1e-6 and bool(torch.isfinite(video).all())
    if not ok:
        raise VideoError(f"{expect}, got {_desc(video)}")
    return video


def check_batch(videos: torch.Tensor, *, name: str = "videos") -> torch.Tensor:
    """Check a ``(B, T, 3, H, W)`` float batch in [0, 1]."""
    if not isinstance(videos, torch.Tensor) or videos.dim() != 5 or videos.shape[2] != 3:
        got = _desc(videos) if isinstance(videos, torch.Tensor) else type(videos).__name__
        raise VideoError(f"expected {name} (B, T, 3, H, W) float in [0, 1], got {got}")
    return videos


def check_flow(flow: torch.Tensor, *, frames: int | None = None, size: tuple[int, int] | None = None,
               name: str = "flow") -> torch.Tensor:
    """Check a ``(T-1, 2, H, W)`` float flow in pixels (channel 0 = x right, 1 = y down)."""
    ok = isinstance(flow, torch.Tensor) and flow.dim() == 4 and flow.shape[1] == 2 \
        and flow.is_floating_point()
    if ok and frames is not None:
        ok = flow.shape[0] == frames - 1
    if ok and size is not None:
        ok = tuple(flow.shape[-2:]) == tuple(size)
    if ok:
        ok = bool(torch.isfinite(flow).all())
    if not ok:
        want = f"({'T-1' if frames is None else frames - 1}, 2, " \
               f"{'H, W' if size is None else f'{size[0]}, {size[1]}'})"
        got = _desc(flow) if isinstance(flow, torch.Tensor) else type(flow).__name__
        raise ParameterError(f"expected {name} {want} finite float in pixels, got {got}")
    return flow


def check_range(name: str, value: float, lo: float, hi: float) -> float:
    """Raise ``ParameterError`` unless ``lo <= value <= hi``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number in [{lo}, {hi}], got {value!r}") from None
    if not (lo <= v <= hi):
        raise ParameterError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return v
