"""SSIM vs Lp analyses (DeepSAVA Fig. 1): the five-panel comparison, metric curves, budgets.

Pure functions over one frame ``(3, H, W)`` in [0, 1]; the SSIM-vs-Lp page and the CLI call them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.checks import check_video
from core.metrics import distances
from core.transforms import compose

METRICS = ("ssim", "l1", "l2", "linf")

#: Transforms swept by the curves and budget views: (transform, largest magnitude, unit).
SWEEPS: dict[str, tuple[float, str]] = {
    "noise": (0.1, "σ"), "rotate": (10.0, "°"), "zoom": (0.1, "|zoom − 1|"), "shift_x": (3.0, "px"),
    "brightness": (0.2, "offset"),
}


def _frame(frame: torch.Tensor) -> torch.Tensor:
    check_video(frame.unsqueeze(0), name="frame")
    return frame


def _op(name: str, m: float) -> list[tuple[str, float]]:
    return [("zoom", 1.0 + m)] if name == "zoom" else [(name, m)]


def fig1_panels(frame: torch.Tensor, sigma: float = 0.02, angle: float = 5.0, zoom_out: float = 0.95,
                zoom_in: float = 1.05, seed: int = 0) -> list[dict]:
    """DeepSAVA Fig. 1: (a) original, (b) noise, (c) zoom-out + noise, (d) rotation + noise,
    (e) rotation + zoom-in + noise. Rotation is counter-clockwise (positive degrees), as in the paper.

    Returns:
        rows ``{panel, name, spec, image (3, H, W) tensor, ssim, l1, l2, linf, l1_mean, l2_rms}``.
    """
    x = _frame(frame)
    specs = [
        ("a", "original", []),
        ("b", "noise", [("noise", sigma)]),
        ("c", "zoom-out + noise", [("zoom", zoom_out), ("noise", sigma)]),
        ("d", f"rotation {angle:g}° + noise", [("rotate", angle), ("noise", sigma)]),
        ("e", "rotation + zoom + noise", [("rotate", angle), ("zoom", zoom_in), ("noise", sigma)]),
    ]
    rows = []
    for panel, name, ops in specs:
        y = compose(x, ops, seed) if ops else x.clone()
        d = distances(x, y)
        rows.append({"panel": panel, "name": name, "spec": ",".join(f"{k}={v:g}" for k, v in ops) or "none",
                     "image": y, **d})
    return rows


def claim_check(rows: list[dict], factor: float = 2.0) -> dict:
    """Does SSIM barely move from (b) noise to (d) rotation + noise while ℓ2 jumps?

    Relative changes: ``rel_ssim = (1 − SSIM_d)/(1 − SSIM_b) − 1`` (of the SSIM *distance*) and
    ``rel_l2 = ℓ2_d / ℓ2_b − 1``. The claim holds on this frame when ℓ2 grows at least ``factor``
    times as much (relatively) as the SSIM distance; it holds *strongly* (the paper's "identical
    SSIM") when in addition the SSIM distance changes by less than 10 %.
    """
    b = next(r for r in rows if r["panel"] == "b")
    d = next(r for r in rows if r["panel"] == "d")
    rel_ssim = (1 - d["ssim"]) / max(1 - b["ssim"], 1e-12) - 1
    rel_l2 = d["l2"] / max(b["l2"], 1e-12) - 1
    holds = rel_l2 >= factor * max(rel_ssim, 0.0) and rel_l2 > 0
    strong = holds and abs(rel_ssim) < 0.1
    return {"rel_ssim": rel_ssim, "rel_l2": rel_l2, "holds": bool(holds), "strong": bool(strong),
            "ssim_b": b["ssim"], "ssim_d": d["ssim"], "l2_b": b["l2"], "l2_d": d["l2"]}


def metric_curves(frame: torch.Tensor, points: int = 11, seed: int = 0,
                  sweeps: dict[str, tuple[float, str]] = SWEEPS) -> dict:
    """Each metric vs magnitude for each transform.

    Returns:
        ``{transform: {"magnitude": [...], "fraction": [...], "ssim_dist": [...], "l1": [...],
        "l2": [...], "linf": [...]}}`` plus ``"normaliser"``: each metric's maximum over all
        transforms and magnitudes (divide by it to compare on one axis). ``ssim_dist`` = 1 − SSIM.
    """
    x = _frame(frame)
    out: dict = {}
    for name, (mmax, _unit) in sweeps.items():
        mags = np.linspace(0.0, mmax, points)
        rec: dict[str, list[float]] = {"magnitude": mags.tolist(), "fraction": (mags / mmax).tolist(),
                                       "ssim_dist": [], "l1": [], "l2": [], "linf": []}
        for m in mags:
            d = distances(x, compose(x, _op(name, float(m)), seed))
            rec["ssim_dist"].append(1 - d["ssim"])
            for k in ("l1", "l2", "linf"):
                rec[k].append(d[k])
        out[name] = rec
    out["normaliser"] = {k: max(max(out[n][k]) for n in sweeps) or 1.0
                         for k in ("ssim_dist", "l1", "l2", "linf")}
    return out


def budget_limits(frame: torch.Tensor, ssim_budget: float = 0.95, l2_budget: float = 0.03,
                  points: int = 41, seed: int = 0, sweeps: dict[str, tuple[float, str]] = SWEEPS) -> list[dict]:
    """Largest magnitude of each transform that stays within an SSIM budget (SSIM ≥ budget) and
    within an ℓ2 budget (RMS per value ≤ budget), scanning ``points`` magnitudes from 0 up to the
    sweep maximum. The limit is the last magnitude before the first violation (``None`` means
    the first step already violates; ``≥ max`` means never violated within the sweep).
    """
    x = _frame(frame)
    rows = []
    for name, (mmax, unit) in sweeps.items():
        mags = np.linspace(0.0, mmax, points)
        lim_s = lim_2 = 0.0
        ok_s = ok_2 = True
        for m in mags[1:]:
            d = distances(x, compose(x, _op(name, float(m)), seed))
            if ok_s and d["ssim"] >= ssim_budget:
                lim_s = float(m)
            else:
                ok_s = False
            if ok_2 and d["l2_rms"] <= l2_budget:
                lim_2 = float(m)
            else:
                ok_2 = False
            if not ok_s and not ok_2:
                break
        rows.append({"transform": name, "unit": unit, "max_scanned": mmax,
                     "limit_ssim": lim_s, "limit_l2": lim_2,
                     "ssim_never_violated": ok_s, "l2_never_violated": ok_2})
    return rows


#: Playground transforms in the order they are applied (geometry, photometry, compression, noise).
PLAYGROUND_ORDER = ("rotate", "zoom", "shift_x", "shift_y", "brightness", "blur", "jpeg", "noise")


def playground(frame: torch.Tensor, settings: dict[str, float], seed: int = 0) -> dict:
    """Apply the playground's transforms (in :data:`PLAYGROUND_ORDER`, identities skipped)
    to one frame and measure every distance.

    Args:
        frame: ``(3, H, W)`` in [0, 1].
        settings: ``{transform: value}``; missing transforms are at their identity.

    Returns:
        ``{ops, perturbed (3, H, W), distances, diff (H, W) mean |y − x| over channels, dmax,
        ssim_map (H, W)}``.
    """
    from core.metrics import ssim_map
    from core.transforms import IDENTITY

    frame = _frame(frame)
    unknown = set(settings) - set(PLAYGROUND_ORDER)
    if unknown:
        raise ValueError(f"unknown playground transforms {sorted(unknown)}; expected {list(PLAYGROUND_ORDER)}")
    ops = [(n, float(settings[n])) for n in PLAYGROUND_ORDER if n in settings and settings[n] != IDENTITY[n]]
    y = compose(frame, ops, seed) if ops else frame.clone()
    diff = (y - frame).abs().mean(0)
    return {"ops": ops, "perturbed": y, "distances": distances(frame, y), "diff": diff,
            "dmax": float(diff.max()), "ssim_map": ssim_map(frame, y)}


def per_frame_distances(original: torch.Tensor, adversarial: torch.Tensor) -> dict:
    """Per-frame SSIM and ℓ2 of two clips ``(T, 3, H, W)`` in [0, 1]: ``{frame, ssim, l2}`` lists."""
    from core.metrics import ssim

    check_video(original, name="original")
    check_video(adversarial, name="adversarial")
    if original.shape != adversarial.shape:
        raise ValueError(f"clips differ in shape: {tuple(original.shape)} vs {tuple(adversarial.shape)}")
    with torch.no_grad():
        per_ssim = ssim(original, adversarial)
        per_l2 = (original - adversarial).flatten(1).norm(dim=1)
    return {"frame": list(range(original.shape[0])), "ssim": [float(v) for v in per_ssim],
            "l2": [float(v) for v in per_l2]}


@dataclass
class AdversarialClip:
    """What the Attack explorer hands the SSIM page: the original and adversarial clips
    ``(T, 3, H, W)`` float in [0, 1] (numpy) and the attack's name."""

    original: object
    adversarial: object
    method: str = "attack"
