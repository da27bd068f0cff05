"""Procedural motion-action videos with exact ground-truth optical flow.

Each clip shows a textured object (disk, ellipse or rounded square with a high-contrast
"clock hand" that makes its orientation visible in every frame)
over a textured background that may drift slowly. The *class is the motion of the object*, never
its appearance: textures, shapes, colours, positions and sizes are drawn at random for every clip,
independently of the class. This mirrors action recognition in the papers, where optical flow
carries the class.

Classes (8): translate left/right/up/down, rotate clockwise/counter-clockwise (as seen on screen,
y pointing down), zoom in/out.

Rendering is a backward map: pixel ``x`` of frame ``t`` shows the object at object coordinates
``u = A_t^{-1} (x - c_t)`` (``A_t = s_t R(theta_t)``) when ``u`` is inside the shape, else the
background at ``x - b t`` (background velocity ``b``). The exact forward flow of frame ``t`` is
``A_{t+1} A_t^{-1} (x - c_t) + c_{t+1} - x`` on the object and ``b`` elsewhere, in pixels
(channel 0 = x right, 1 = y down), as everywhere in ``core``.

Everything random comes from ``numpy.random.default_rng([label, seed, frames, size])`` (PCG64,
identical on every machine); rendering uses float64 coordinates and float32 bilinear sampling on
the CPU, so a split is bit-identical across runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import ParameterError, VideoError

CLASSES: tuple[str, ...] = (
    "translate_left",
    "translate_right",
    "translate_up",
    "translate_down",
    "rotate_cw",
    "rotate_ccw",
    "zoom_in",
    "zoom_out",
)
NUM_CLASSES = len(CLASSES)

Split = Literal["train", "val", "test"]
#: Clip ``j`` of a split has label ``j % 8`` and seed ``SPLIT_OFFSETS[split] + j``.
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}

MIN_SIZE, MAX_SIZE = 16, 512
#: Bump whenever rendering changes: cached datasets and trained models depend on it.
GENERATOR_VERSION = 4
MIN_FRAMES, MAX_FRAMES = 2, 256


@dataclass
class SyntheticClip:
    """One generated clip.

    Attributes:
        video: ``(T, 3, H, W)`` float32 in [0, 1].
        flow: exact forward flow ``(T-1, 2, H, W)`` float32 in pixels.
        label: class index into :data:`CLASSES`.
        seed: the seed it was generated from.
        params: the drawn motion parameters (JSON-serialisable).
    """

    video: torch.Tensor
    flow: torch.Tensor
    label: int
    seed: int
    params: dict = field(default_factory=dict)

    @property
    def class_name(self) -> str:
        return CLASSES[self.label]


def class_index(label: int | str) -> int:
    """Class index of a class name or index; raises ``ParameterError`` for unknown classes."""
    if isinstance(label, str):
        if label.isdigit():
            label = int(label)
        elif label in CLASSES:
            return CLASSES.index(label)
        else:
            raise ParameterError(f"unknown class {label!r}; expected one of {', '.join(CLASSES)}")
    if not 0 <= int(label) < NUM_CLASSES:
        raise ParameterError(f"class index must be in [0, {NUM_CLASSES - 1}], got {label}")
    return int(label)


def _texture(rng: np.random.Generator, res: int, contrast: float) -> torch.Tensor:
    """Smooth random RGB texture ``(1, 3, res, res)`` in [0, 1]: two octaves of value noise."""
    base = rng.uniform(0.15, 0.85, size=3)
    coarse = rng.normal(0.0, 1.0, size=(1, 3, 6, 6))
    fine = rng.normal(0.0, 1.0, size=(1, 3, 14, 14))
    t = torch.from_numpy(coarse).float()
    t = F.interpolate(t, size=(res, res), mode="bicubic", align_corners=True)
    f = F.interpolate(torch.from_numpy(fine).float(), size=(res, res), mode="bicubic",
                      align_corners=True)
    tex = torch.from_numpy(base).float().view(1, 3, 1, 1) + contrast * (0.7 * t + 0.45 * f)
    return tex.clamp(0.0, 1.0)


def _params(label: int, rng: np.random.Generator, frames: int, size: int) -> dict:
    k = size / 64.0  # motions are specified for 64 px frames and scale with the frame size
    p: dict = {
        "shape": str(rng.choice(["disk", "ellipse", "square"])),
        "radius": float(rng.uniform(0.17, 0.24) * size),
        "theta0": float(rng.uniform(-math.pi, math.pi)),
        "aspect": float(rng.uniform(0.65, 0.85)),
        "marker": [float(rng.uniform(0.5, 0.62)), float(rng.uniform(-0.2, 0.2))],
        "marker_bright": bool(rng.random() < 0.5),
        "centre": [float(size / 2 + rng.uniform(-0.08, 0.08) * size),
                   float(size / 2 + rng.uniform(-0.08, 0.08) * size)],
        "velocity": [0.0, 0.0],
        "omega": 0.0,  # radians per frame, > 0 is clockwise on screen (y down)
        "zoom": 1.0,  # scale factor per frame
        "background_velocity": [0.0, 0.0],
    }
    if rng.random() < 0.5:
        ang = rng.uniform(-math.pi, math.pi)
        spd = rng.uniform(0.1, 0.5) * k
        p["background_velocity"] = [float(spd * math.cos(ang)), float(spd * math.sin(ang))]
    name = CLASSES[label]
    if name.startswith("translate"):
        speed = rng.uniform(1.0, 2.0) * k * min(1.0, 15.0 / max(frames - 1, 1))
        jitter = rng.uniform(-0.15, 0.15) * k
        d = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[name.split("_")[1]]
        p["velocity"] = [float(d[0] * speed + (jitter if d[0] == 0 else 0.0)),
                         float(d[1] * speed + (jitter if d[1] == 0 else 0.0))]
    elif name.startswith("rotate"):
        w = math.radians(rng.uniform(5.0, 10.0))
        p["omega"] = float(w if name == "rotate_cw" else -w)
    else:
        span = max(frames - 1, 1)
        r = math.exp(rng.uniform(math.log(1.04), math.log(1.07)) * min(1.0, 15.0 / span))
        p["zoom"] = float(r if name == "zoom_in" else 1.0 / r)
    return p


def _affine(p: dict, t: float, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Object pose at frame ``t``: matrix ``A_t = s_t R(theta_t)`` and centre ``c_t``."""
    tc = t - (frames - 1) / 2.0  # motions are centred on the middle frame
    th = p["theta0"] + p["omega"] * tc
    s = p["zoom"] ** tc
    a = s * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    c = np.array(p["centre"]) + np.array(p["velocity"]) * tc
    return a, c


def _inside(u: torch.Tensor, p: dict, px: torch.Tensor) -> torch.Tensor:
    """Soft coverage in [0, 1] of object coordinates ``u`` (N, 2); ``px`` = pixels per unit."""
    if p["shape"] == "disk":
        d = 1.0 - u.norm(dim=-1)
    elif p["shape"] == "ellipse":
        d = 1.0 - torch.sqrt(u[..., 0] ** 2 + (u[..., 1] / p["aspect"]) ** 2)
    else:  # rounded square
        d = 0.85 - torch.linalg.vector_norm(u, ord=6, dim=-1)
    return (d * px + 0.5).clamp(0.0, 1.0)


def make_clip(label: int | str, seed: int, frames: int = 16, size: int = 64) -> SyntheticClip:
    """Generate one clip of class ``label`` from ``seed``.

    Args:
        label: class index or name (see :data:`CLASSES`).
        seed: any non-negative integer.
        frames: number of frames T (2..256).
        size: frame height = width (16..512).

    Returns:
        A :class:`SyntheticClip` with ``video (T, 3, size, size)`` and exact ``flow``.
    """
    label = class_index(label)
    if not (MIN_FRAMES <= int(frames) <= MAX_FRAMES):
        raise ParameterError(f"frames must be in [{MIN_FRAMES}, {MAX_FRAMES}], got {frames}")
    if not (MIN_SIZE <= int(size) <= MAX_SIZE):
        raise ParameterError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    if int(seed) < 0:
        raise ParameterError(f"seed must be >= 0, got {seed}")
    frames, size, seed = int(frames), int(size), int(seed)
    rng = np.random.default_rng([label, seed, frames, size])
    p = _params(label, rng, frames, size)
    tex_bg = _texture(rng, 96, 0.35)
    tex_obj = _texture(rng, 64, 0.35)
    marker_col = torch.tensor([0.97, 0.95, 0.9] if p["marker_bright"] else [0.05, 0.05, 0.1])

    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64),
                            torch.arange(size, dtype=torch.float64), indexing="ij")
    pix = torch.stack([xs, ys], dim=-1).reshape(-1, 2)  # (N, 2) as (x, y)
    bv = torch.tensor(p["background_velocity"], dtype=torch.float64)
    bg_extent = 1.6 * size  # background texture spans 1.6 frame widths, centred
    video = torch.empty(frames, 3, size, size)
    flow = torch.empty(frames - 1, 2, size, size)
    radius = p["radius"]
    for t in range(frames):
        a, c = _affine(p, t, frames)
        a_t = torch.from_numpy(a)
        c_t = torch.from_numpy(c)
        u = (pix - c_t) @ torch.linalg.inv(a_t).T / radius  # object coordinates, radius 1
        scale = float(np.sqrt(abs(np.linalg.det(a))))
        alpha = _inside(u, p, torch.tensor(radius * scale))
        # background sampled at x - b t, in normalised texture coordinates
        bgc = (pix - bv * t - size / 2.0) / (bg_extent / 2.0)
        bg = F.grid_sample(tex_bg, bgc.float().view(1, size, size, 2), mode="bilinear",
                           padding_mode="reflection", align_corners=True)[0]
        ob = F.grid_sample(tex_obj, (u * 0.9).float().view(1, size, size, 2), mode="bilinear",
                           padding_mode="reflection", align_corners=True)[0]
        # orientation marker: a high-contrast "clock hand" from the centre towards p["marker"]
        e = torch.tensor(p["marker"], dtype=torch.float64)
        e = e / e.norm()
        along = u @ e
        across = (u @ torch.stack([-e[1], e[0]])).abs()
        hand = torch.minimum(torch.minimum(along + 0.05, 0.8 - along), 0.13 - across)
        m_alpha = (hand * radius * scale + 0.5).clamp(0.0, 1.0).float().view(1, size, size)
        ob = ob * (1 - m_alpha) + marker_col.view(3, 1, 1) * m_alpha
        al = alpha.float().view(1, size, size)
        video[t] = (bg * (1 - al) + ob * al).clamp(0.0, 1.0)
        if t < frames - 1:
            a1, c1 = _affine(p, t + 1, frames)
            x1 = (pix - c_t) @ (torch.from_numpy(a1) @ torch.linalg.inv(a_t)).T \
                + torch.from_numpy(c1)
            obj_flow = x1 - pix
            on_obj = (alpha >= 0.5).unsqueeze(-1)
            f = torch.where(on_obj, obj_flow, bv.expand_as(obj_flow))
            flow[t] = f.T.reshape(2, size, size).float()
    return SyntheticClip(video=video, flow=flow, label=label, seed=seed, params=p)


def make_split(split: Split, n: int, frames: int = 16, size: int = 64,
               with_flow: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The first ``n`` clips of a fixed split.

    Returns:
        ``videos (n, T, 3, size, size)``, ``labels (n,)`` int64 and, if ``with_flow``,
        ``flows (n, T-1, 2, size, size)`` (else ``None``).
    """
    if split not in SPLIT_OFFSETS:
        raise ParameterError(f"split must be one of {list(SPLIT_OFFSETS)}, got {split!r}")
    if n < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    videos = torch.empty(n, frames, 3, size, size)
    labels = torch.empty(n, dtype=torch.long)
    flows = torch.empty(n, frames - 1, 2, size, size) if with_flow else None
    for j in range(n):
        clip = make_clip(j % NUM_CLASSES, SPLIT_OFFSETS[split] + j, frames, size)
        videos[j] = clip.video
        labels[j] = clip.label
        if flows is not None:
            flows[j] = clip.flow
    return videos, labels, flows


def parse_synthetic(name: str) -> tuple[int, int]:
    """Parse ``synthetic:<class>:<seed>`` into ``(label, seed)``."""
    parts = name.split(":")
    if len(parts) != 3 or parts[0] != "synthetic":
        raise VideoError(f"expected 'synthetic:<class>:<seed>', got {name!r}")
    try:
        seed = int(parts[2])
    except ValueError:
        raise VideoError(f"seed in {name!r} must be an integer") from None
    try:
        return class_index(parts[1]), seed
    except ParameterError as e:
        raise VideoError(str(e)) from None
