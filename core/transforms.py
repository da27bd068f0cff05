"""Parametrised perturbations of frames (kornia), and compositions of them.

Every transform takes images ``(..., 3, H, W)`` in [0, 1] and returns the same shape in [0, 1].
Geometric transforms resample bilinearly about the frame centre with *reflection* padding, so
no black corners appear (a black corner would dominate every distance and hide the effect the
SSIM-vs-Lp page is about).

| name | parameter | identity | meaning |
|---|---|---|---|
| ``noise`` | σ | 0 | additive Gaussian noise N(0, σ²), seeded, then clipped |
| ``rotate`` | degrees | 0 | rotation, positive = counter-clockwise on screen |
| ``zoom`` | factor | 1 | scaling about the centre, < 1 zooms out, > 1 zooms in |
| ``shift_x`` / ``shift_y`` | pixels | 0 | translation right / down |
| ``brightness`` | offset | 0 | add a constant to every value |
| ``blur`` | σ (px) | 0 | Gaussian blur, kernel 2⌈3σ⌉+1 |
| ``jpeg`` | quality 1–100 | 100* | JPEG compression (OpenCV), per image |
| ``h264`` | CRF 0–51 | 0* | H.264 compression (PyAV/libx264) of the frames as one clip |

(*) lossy codecs are never exact identities. A composition is written ``rotate=5,zoom=0.95,
noise=0.02`` and applied left to right.
"""

from __future__ import annotations

import math

import torch
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import rotate as k_rotate
from kornia.geometry.transform import scale as k_scale
from kornia.geometry.transform import translate as k_translate

from core.errors import ParameterError

#: (min, max) accepted for each parameter; the pages' sliders use narrower ranges.
RANGES: dict[str, tuple[float, float]] = {
    "noise": (0.0, 1.0), "rotate": (-180.0, 180.0), "zoom": (0.25, 4.0), "shift_x": (-512.0, 512.0),
    "shift_y": (-512.0, 512.0), "brightness": (-1.0, 1.0), "blur": (0.0, 20.0), "jpeg": (1.0, 100.0),
    "h264": (0.0, 51.0),
}
IDENTITY: dict[str, float] = {"noise": 0.0, "rotate": 0.0, "zoom": 1.0, "shift_x": 0.0, "shift_y": 0.0,
                              "brightness": 0.0, "blur": 0.0, "jpeg": 100.0, "h264": 0.0}


def _flat(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ParameterError(f"expected images (..., 3, H, W) in [0, 1], got shape {tuple(x.shape)}")
    return x.reshape(-1, *x.shape[-3:]), x.shape


def noise(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    if sigma == 0:
        return x.clone()
    g = torch.Generator(device="cpu").manual_seed(seed)
    n = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    return (x + sigma * n).clamp(0, 1)


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    f, shape = _flat(x)
    a = torch.full((f.shape[0],), float(degrees), dtype=f.dtype, device=f.device)
    return k_rotate(f, a, padding_mode="reflection").clamp(0, 1).view(shape)


def zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    f, shape = _flat(x)
    s = torch.full((f.shape[0], 2), float(factor), dtype=f.dtype, device=f.device)
    return k_scale(f, s, padding_mode="reflection").clamp(0, 1).view(shape)


def shift(x: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    f, shape = _flat(x)
    t = torch.tensor([[float(dx), float(dy)]], dtype=f.dtype, device=f.device).expand(f.shape[0], 2)
    return k_translate(f, t, padding_mode="reflection").clamp(0, 1).view(shape)


def brightness(x: torch.Tensor, offset: float) -> torch.Tensor:
    return (x + offset).clamp(0, 1)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x.clone()
    f, shape = _flat(x)
    k = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur2d(f, (k, k), (sigma, sigma), border_type="reflect").clamp(0, 1).view(shape)


def jpeg(x: torch.Tensor, quality: float) -> torch.Tensor:
    import cv2
    import numpy as np

    f, shape = _flat(x)
    out = []
    for img in f:
        a = (img.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        ok, enc = cv2.imencode(".jpg", a[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        dec = cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1]
        out.append(torch.from_numpy(dec.copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(x.device, x.dtype).view(shape)


def h264(x: torch.Tensor, crf: float) -> torch.Tensor:
    import io

    import av
    import numpy as np

    f, shape = _flat(x)
    h, w = f.shape[-2:]
    arr = (f.detach().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = arr.shape[2], arr.shape[1], "yuv444p"
        s.options = {"crf": str(int(crf)), "preset": "veryfast"}
        for a in arr:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        dec = [fr.to_ndarray(format="rgb24")[:h, :w] for fr in c.decode(video=0)]
    t = torch.from_numpy(np.stack(dec)).permute(0, 3, 1, 2).float() / 255
    return t.to(x.device, x.dtype).view(shape)


def apply(x: torch.Tensor, name: str, value: float, seed: int = 0) -> torch.Tensor:
    """Apply one named transform (see the module table)."""
    if name not in RANGES:
        raise ParameterError(f"unknown transform {name!r}; expected one of {', '.join(RANGES)}")
    lo, hi = RANGES[name]
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} needs a number, got {value!r}") from None
    if not (lo <= v <= hi) or math.isnan(v):
        raise ParameterError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")
    if v == IDENTITY[name] and name not in ("jpeg", "h264"):
        return x.clone()  # exact identity, no resampling
    if name == "noise":
        return noise(x, v, seed)
    if name == "rotate":
        return rotate(x, v)
    if name == "zoom":
        return zoom(x, v)
    if name == "shift_x":
        return shift(x, v, 0.0)
    if name == "shift_y":
        return shift(x, 0.0, v)
    if name == "brightness":
        return brightness(x, v)
    if name == "blur":
        return blur(x, v)
    if name == "jpeg":
        return jpeg(x, v)
    return h264(x, v)


def parse(spec: str) -> list[tuple[str, float]]:
    """Parse ``"rotate=5,zoom=0.95,noise=0.02"`` into ``[("rotate", 5.0), …]`` (checked)."""
    ops = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" not in part:
            raise ParameterError(f"expected NAME=VALUE in the transform {spec!r}, got {part!r}")
        name, val = (s.strip() for s in part.split("=", 1))
        if name not in RANGES:
            raise ParameterError(f"unknown transform {name!r}; expected one of {', '.join(RANGES)}")
        try:
            v = float(val)
        except ValueError:
            raise ParameterError(f"{name} needs a number, got {val!r}") from None
        lo, hi = RANGES[name]
        if not (lo <= v <= hi):
            raise ParameterError(f"{name} must be in [{lo:g}, {hi:g}], got {val}")
        ops.append((name, v))
    if not ops:
        raise ParameterError("the transform is empty; e.g. rotate=5,zoom=0.95,noise=0.02")
    return ops


def compose(x: torch.Tensor, ops: list[tuple[str, float]] | str, seed: int = 0) -> torch.Tensor:
    """Apply transforms left to right (a string is parsed with :func:`parse`)."""
    if isinstance(ops, str):
        ops = parse(ops)
    for name, v in ops:
        x = apply(x, name, v, seed)
    return x
