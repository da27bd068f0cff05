"""Video I/O: read (PyAV, OpenCV fallback), sample/resize to a model's input, write H.264.

:func:`decode_video` returns the decoded frames as ``(T, 3, H, W)`` **uint8** (4× smaller than
float; what the app keeps); :func:`read_video` returns a ``(T, 3, H, W)`` float32 video in [0, 1],
converting only the frames it keeps. Every failure a user can cause raises
:class:`core.errors.VideoError` with a human message.

Limits (checked before and while decoding):

* file size ≤ ``MAX_BYTES`` (500 MB); empty files are rejected;
* frame size ≤ ``MAX_SIDE`` (8192 px) on each side — larger frames are refused;
* at most ``MAX_DECODE_FRAMES`` (3000) frames are decoded; longer videos are read up to that
  frame and the info says ``truncated``;
* decoded frames are downscaled on the fly so the longer side is ≤ ``WORK_SIDE`` (512 px);
* at most ``MAX_DECODED_BYTES`` (512 MiB) of uint8 frames are kept — a longer video is read up to
  there and the info says ``truncated`` — and frames are copied into one buffer as they are
  stacked, so the peak stays near that size for any input; at least 2 frames are required.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from core.checks import check_video
from core.errors import VideoError

MAX_BYTES = 500 * 1024 * 1024
MAX_SIDE = 8192
MAX_DECODE_FRAMES = 3000
MAX_DECODED_BYTES = 512 * 1024 * 1024
WORK_SIDE = 512
VIDEO_EXTENSIONS = ("mp4", "avi", "mov", "webm", "gif", "mkv", "m4v")

Source = str | os.PathLike | bytes | BinaryIO


@dataclass
class VideoInfo:
    """What was read: original fps, size, duration; frames decoded; where from."""

    source: str
    fps: float
    width: int
    height: int
    frames: int
    duration: float
    codec: str = ""
    truncated: bool = False  # stopped at MAX_DECODE_FRAMES on purpose
    reader: str = "pyav"
    incomplete: bool = False  # the container ended early or frames were damaged: fewer than declared
    frames_declared: int | None = None
    warning: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _downscale(arr: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    h, w = arr.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return arr
    import cv2

    return cv2.resize(arr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _full(frames: list[np.ndarray]) -> bool:
    """The decoding limits: ``MAX_DECODE_FRAMES`` frames or ``MAX_DECODED_BYTES`` of uint8."""
    return len(frames) >= MAX_DECODE_FRAMES or (bool(frames) and (len(frames) + 1) * frames[0].nbytes > MAX_DECODED_BYTES)


def _stack_chw(frames: list[np.ndarray]) -> np.ndarray:
    """``(T, 3, H, W)`` uint8 from a list of ``(H, W, 3)`` frames, emptying the list as it copies
    (peak ≈ one buffer, not list + stack); frames of another size are resized to the first's."""
    h, w = frames[0].shape[:2]
    out = np.empty((len(frames), 3, h, w), np.uint8)
    for i in range(len(frames)):
        a = frames[i]
        frames[i] = None  # type: ignore[call-overload]  # free as we go
        out[i] = (a if a.shape[:2] == (h, w) else _resize_np(a, (h, w, 3))).transpose(2, 0, 1)
    frames.clear()
    return out


def _as_bytes(src: Source) -> tuple[bytes, str]:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src), "upload"
    if hasattr(src, "read"):
        return src.read(), getattr(src, "name", "upload")
    p = Path(src)
    if not p.exists():
        raise VideoError(f"video file not found: {p}")
    if p.is_dir():
        raise VideoError(f"expected a video file, got a directory: {p}")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise VideoError(f"video file is {size / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB")
    return p.read_bytes(), p.name


def _read_pyav(data: bytes, name: str) -> tuple[list[np.ndarray], VideoInfo]:
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as e:  # noqa: BLE001 - PyAV raises many error types
        raise VideoError(f"{name} is not a readable video ({type(e).__name__}: {e})") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{name} has no video stream")
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        if w > MAX_SIDE or h > MAX_SIDE:
            raise VideoError(f"{name} is {w}×{h}; frames larger than {MAX_SIDE} px are refused")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        frames: list[np.ndarray] = []
        truncated = False
        declared = int(stream.frames or 0) or None
        try:
            for frame in container.decode(stream):
                if _full(frames):
                    truncated = True
                    break
                frames.append(_downscale(frame.to_ndarray(format="rgb24")))
        except Exception as e:  # noqa: BLE001
            raise VideoError(f"{name} is corrupt or truncated: decoding failed after {len(frames)} "
                             f"frames ({type(e).__name__}: {e})") from None
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base \
            else (len(frames) / fps if fps else 0.0)
        if not w or not h:
            h, w = (frames[0].shape[:2] if frames else (0, 0))
        codec = stream.codec_context.name or ""
    info = VideoInfo(name, fps, int(w), int(h), len(frames), duration, codec, truncated, frames_declared=declared)
    if not truncated and declared and len(frames) < declared:
        info.incomplete = True
        info.warning = (f"{name} ends early or is damaged: {len(frames)} of {declared} declared frames could be "
                        f"decoded; only those are used")
    return frames, info


def _read_opencv(data: bytes, name: str) -> tuple[list[np.ndarray], VideoInfo]:
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # keep libav's own messages off stderr
    import cv2

    suffix = Path(name).suffix or ".bin"
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        cap = cv2.VideoCapture(tmp.name)
        if not cap.isOpened():
            raise VideoError(f"{name} is not a readable video")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w > MAX_SIDE or h > MAX_SIDE:
            raise VideoError(f"{name} is {w}×{h}; frames larger than {MAX_SIDE} px are refused")
        frames, truncated = [], False
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if _full(frames):
                truncated = True
                break
            frames.append(_downscale(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        cap.release()
    return frames, VideoInfo(name, fps, w, h, len(frames), len(frames) / fps if fps else 0.0,
                             "", truncated, "opencv")


def decode_video(src: Source) -> tuple[torch.Tensor, VideoInfo]:
    """Decode a video file (mp4/avi/mov/webm/gif/…) from a path, bytes or a binary file object to
    ``(T, 3, H, W)`` uint8 frames (within the module's limits) and its :class:`VideoInfo`.

    Raises:
        VideoError: empty, too large, not a video, corrupt/truncated, or fewer than 2 frames.
    """
    data, name = _as_bytes(src)
    if len(data) == 0:
        raise VideoError(f"{name} is empty (0 bytes)")
    if len(data) > MAX_BYTES:
        raise VideoError(f"{name} is {len(data) / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB")
    try:
        arrs, info = _read_pyav(data, name)
    except VideoError as first:
        try:
            arrs, info = _read_opencv(data, name)
        except VideoError:
            raise first from None
        if len(arrs) < 2:
            raise first from None
    del data
    if len(arrs) < 2:
        raise VideoError(f"{name} has {len(arrs)} decodable frame(s); at least 2 are needed")
    return torch.from_numpy(_stack_chw(arrs)), info


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames ``(..., 3, H, W)`` → float32 in [0, 1] (float input is returned as is)."""
    return frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames


def read_video(src: Source, frames: int | None = None, size: int | None = None) -> tuple[torch.Tensor, VideoInfo]:
    """Read a video file (mp4/avi/mov/webm/gif/…) from a path, bytes or a binary file object.

    Args:
        src: path, bytes or file object.
        frames: if given, uniformly sample this many frames (see :func:`fit_clip`).
        size: if given, resize the shorter side to ``size`` and centre-crop ``size × size``.

    Returns:
        ``(video (T, 3, H, W) float32 in [0, 1], info)``; only the kept frames become float.

    Raises:
        VideoError: empty, too large, not a video, corrupt/truncated, or fewer than 2 frames.
    """
    u8, info = decode_video(src)
    if frames is not None and frames != u8.shape[0]:
        u8 = u8[sample_indices(u8.shape[0], frames)]
    video = to_float(u8)
    if size is not None:
        video = fit_clip(video, None, size)
    return video, info


def _resize_np(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    import cv2

    return cv2.resize(a, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def sample_indices(n: int, frames: int) -> list[int]:
    """``frames`` indices spread uniformly over ``0 … n-1`` (first and last included)."""
    if frames < 1:
        raise VideoError(f"frames must be >= 1, got {frames}")
    return [round(i * (n - 1) / max(frames - 1, 1)) for i in range(frames)]


def fit_clip(video: torch.Tensor, frames: int | None = None, size: int | None = None) -> torch.Tensor:
    """Uniformly sample ``frames`` frames, resize the shorter side to ``size``, centre-crop square.

    Videos shorter than ``frames`` repeat frames (nearest index), so any clip of ≥ 2 frames fits.
    """
    check_video(video, min_frames=1)
    if frames is not None and frames != video.shape[0]:
        video = video[sample_indices(video.shape[0], frames)]
    if size is not None:
        h, w = video.shape[-2:]
        if (h, w) != (size, size):
            s = size / min(h, w)
            nh, nw = max(size, round(h * s)), max(size, round(w * s))
            video = F.interpolate(video, size=(nh, nw), mode="bilinear", align_corners=False,
                                  antialias=True).clamp(0, 1)
            top, left = (nh - size) // 2, (nw - size) // 2
            video = video[..., top:top + size, left:left + size]
    return video.contiguous()


def limit_size(video: torch.Tensor, max_side: int) -> torch.Tensor:
    """Downscale (antialiased, aspect kept) so that the longer side is at most ``max_side``."""
    h, w = video.shape[-2:]
    if max(h, w) <= max_side:
        return video
    s = max_side / max(h, w)
    size = (max(2, round(h * s)), max(2, round(w * s)))
    return F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def encode_mp4(video: torch.Tensor, fps: float = 8.0, scale: int = 1) -> bytes:
    """Encode a video as H.264 (yuv420p) mp4 bytes that browsers play.

    Args:
        video: ``(T, 3, H, W)`` float in [0, 1], or uint8 frames (as :func:`decode_video` gives).
        fps: frames per second.
        scale: integer nearest-neighbour upscaling for display (tiny clips look blurry otherwise).
    """
    import av

    if video.dtype == torch.uint8:
        if video.dim() != 4 or video.shape[1] != 3:
            raise VideoError(f"expected uint8 frames (T, 3, H, W), got shape {tuple(video.shape)}")
        arr = video.cpu().permute(0, 2, 3, 1).numpy()
    else:
        check_video(video)
        arr = (video.detach().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = arr.shape[1:3]
    ph, pw = h % 2, w % 2  # yuv420p needs even sides: replicate the last row/column
    if ph or pw:
        arr = np.pad(arr, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = arr.shape[2], arr.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "movflags": "+faststart"}
        for a in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def write_video(path: str | os.PathLike, video: torch.Tensor, fps: float = 8.0, scale: int = 1) -> Path:
    """Write an H.264 mp4 (see :func:`encode_mp4`); returns the path."""
    p = Path(path)
    p.write_bytes(encode_mp4(video, fps, scale))
    return p


def open_video(name: Source, frames: int | None = None, size: int | None = None) -> tuple[torch.Tensor, VideoInfo, int | None]:
    """Open a CLI/UI video name: a path (or bytes) or ``synthetic:<class>:<seed>``.

    Returns:
        ``(video, info, true_label)`` where ``true_label`` is known for synthetic clips only.
        Synthetic clips are generated directly at ``frames`` × ``size`` (defaults 16 × 64).
    """
    if isinstance(name, str) and name.startswith("synthetic:"):
        from core.data import make_clip, parse_synthetic

        label, seed = parse_synthetic(name)
        clip = make_clip(label, seed, frames or 16, size or 64)
        t, _, h, w = clip.video.shape
        info = VideoInfo(name, 8.0, w, h, t, t / 8.0, "synthetic", False, "generator")
        return clip.video, info, label
    video, info = read_video(name, frames, size)
    if info.incomplete:  # never silently: the CLI user sees it on stderr (the UI shows info.warning)
        import sys

        print(f"warning: {info.warning}", file=sys.stderr)
    return video, info, None


def decode_image(data: bytes, name: str = "image") -> torch.Tensor:
    """Decode PNG/JPEG/BMP/WebP/TIFF bytes to ``(3, H, W)`` float in [0, 1] (RGB).

    Raises:
        VideoError: the bytes are not a readable image.
    """
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if arr is None:
        raise VideoError(f"{name} is not a readable image (PNG, JPEG, BMP, WebP or TIFF)")
    return torch.from_numpy(arr[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1).contiguous()
