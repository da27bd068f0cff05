"""Certified safe radius on optical flow: a *sound* lower bound on the continuous MSR.

**The flow manipulation, relaxed exactly.** In a :class:`~core.msr.space.FlowSpace` every dimension
``z_i`` moves one block of one flow in x or y; the engine imposes frame ``t+1`` as
``warp(v[t+1], −δ_t)`` — bilinear, border padding, then clamped to [0, 1]. For ``z`` in a box, each
pixel of a block samples ``v`` at ``x + s`` with the block's shift ``s = −δ`` in a rectangle
``[a_x, b_x] × [a_y, b_y]``. A bilinear interpolant is linear along each axis inside every unit cell,
so its extremes over that rectangle are attained at the rectangle's corners and at the integer knots
between them; border clamping maps those points to the clamped rectangle's corners and knots. We
therefore evaluate **the engine's own warp** at the shifts ``{a, b} ∪ (ℤ ∩ (a, b))`` in x × y and
take the per-pixel min/max: the exact range of each imposed pixel (widened by 1e-5 for the engine's
float32 rounding). As the box shrinks, so does the range (unlike a window of source pixels). Linear
bounds in ``z``: for ℓ2/ℓ1 balls around the clip the *lifted* forms of :class:`WarpLift` (exact up to
second-order cross terms: the kink at zero shift becomes a variable ``|z|``), else the secant plane
of :func:`warp_relax`.

**Through the model** (float64, :mod:`core.verify.bounds`): ``cnn_lstm``/``cnn_gru``/``cnn_rnn`` —
CROWN through the per-step CNN N_C of the affected steps (its input is the affine snippet
``[v_s, v_s − v_{s−1}]`` of the two boxed frames), then through the recurrent head N_R — CROWN
through time for LSTMs (:class:`core.verify.bounds.LSTMCrown`, the better of it and intervals),
interval propagation for GRU/RNN — and an exact bound of the final linear layer's margin rows. For
LSTMs the linear bound through time is also pulled back through every perturbed step's CNN into
``z`` and concretised *once* over the whole domain (``joint``): the per-step feature boxes let every
step spend the whole ℓ2 budget on its own, the joint bound shares it; likewise every bound *inside*
:class:`~core.verify.bounds.LSTMCrown` is concretised once over ``z`` from linear bounds of the
features (``lin``, :func:`_relu_forms`). ``method="alpha"`` optimises the ReLU slopes (α-CROWN),
``"crown+"`` tightens the CNN's intermediate bounds by linear bounds carried forward in each step's
flow variables (:func:`forward_relu_inputs`). ``c3d`` — CROWN end to end with
the margin rows ``e_y − e_j`` as the specification. Other models (Horn–Schunck inside
``motion_stream``, non-differentiable flows, ``frame_cnn``, TorchScript uploads) raise
:class:`Unsupported` with a plain sentence.

**Certification** (:func:`certify`): ``min_j lower(logit_y − logit_j) > 0`` over every ``z`` with
``‖δ(z)‖_p ≤ ρ`` ⇒ no such flow perturbation changes the decision. For ℓ∞ the ball *is* a box; for
ℓ2 and ℓ1 the enclosing box ``|z_i| ≤ ρ / w_p`` is certified, and :class:`CertifiedRadius` refines it by
**branch and bound**: boxes are split along the dimension with the largest ``width × |∂m/∂z|``, a
sub-box that misses the ball (its smallest ‖z‖ exceeds the radius) needs no proof, and every other
is bounded over its intersection with the ball by Lagrangian duality (:func:`box_ball_min`). Its anytime loop
only ever raises the certified radius. The certificate is for the real-valued network evaluated in
float64; the deployed float32 model may differ by rounding (~1e-6), so a box counts as certified
only with a margin lower bound above ``tol = 1e-4``.
"""

from __future__ import annotations

import copy
import math
import os
import time

import torch
from torch import nn

from core.classifier import VideoClassifier, as_classifier
from core.errors import ParameterError
from core.flow import warp
from core.msr.space import FlowSpace, check_metric
from core.verify.bounds import (LSTMCrown, Unsupported, abs_apply, alpha_crown, crown_backward, flatten_chain, ibp,
                                ibp_layer, is_affine, margin_lower_linear, margin_spec, recurrent_ibp, relu_relaxation, _pullback)

TOL = 1e-4
WARP_SLACK = 1e-5
METHODS = ("crown", "crown+", "crown++", "alpha", "ibp")
ALPHA_ITERS = 10


# -- the flow manipulation ------------------------------------------------------------------------
def _knots(a: float, b: float) -> list[float]:
    pts = {a, b}
    pts.update(float(k) for k in range(math.ceil(a), math.floor(b) + 1))
    return sorted(pts)


class WarpRelax:
    """Bounds of one imposed frame over a box of its flow's block shifts: the exact per-pixel range
    ``[lo, hi]`` and a linear relaxation ``x(z) ∈ xc + gz·(z − z_c) + [−elo, ehi]`` (per pixel and
    channel; ``gz`` is ``(2, 3, H, W)``: the derivative w.r.t. the block's x and y displacement)."""

    def __init__(self, fi: int, lo, hi, xc, gz, elo, ehi) -> None:
        self.fi, self.lo, self.hi, self.xc, self.gz, self.elo, self.ehi = fi, lo, hi, xc, gz, elo, ehi


def warp_relax(space: FlowSpace, lo: torch.Tensor, hi: torch.Tensor) -> dict[int, WarpRelax]:
    """Interval and linear bounds of every imposed frame for ``z ∈ [lo, hi]`` (module docstring).

    The linear part is the secant plane through the box centre: with shift ``s = −δ``,
    ``L(s) = p(s_c) + G (s − s_c)``, ``G_x = (p(b_x, c_y) − p(a_x, c_y)) / (b_x − a_x)`` (likewise y);
    ``p − L`` is bilinear inside every unit cell, so its extremes over the box are at the same
    corner-and-knot points as those of ``p``: the residual bounds ``elo, ehi`` are exact.
    """
    v = space.video
    b = space.block
    lo = lo.double().view(len(space.flows), 2, space.gh, space.gw)
    hi = hi.double().view(len(space.flows), 2, space.gh, space.gw)
    out = {}
    for fi, f in enumerate(space.flows):
        frame = v[f + 1].unsqueeze(0)
        h, w = frame.shape[-2:]
        cache: dict[tuple[float, float], torch.Tensor] = {}

        def at(sx: float, sy: float) -> torch.Tensor:
            if (sx, sy) not in cache:
                flow = torch.tensor([sx, sy], dtype=frame.dtype, device=frame.device).view(1, 2, 1, 1)
                cache[(sx, sy)] = warp(frame, flow.expand(1, 2, h, w))[0].clamp(0, 1).double().cpu()
            return cache[(sx, sy)]

        flo, fhi, xc, elo, ehi = (torch.empty(3, h, w, dtype=torch.float64) for _ in range(5))
        gz = torch.zeros(2, 3, h, w, dtype=torch.float64)
        for by in range(space.gh):
            for bx in range(space.gw):
                ys_, xs_ = slice(by * b, (by + 1) * b), slice(bx * b, (bx + 1) * b)
                ax, bxx = -float(hi[fi, 0, by, bx]), -float(lo[fi, 0, by, bx])  # shift range in x
                ay, byy = -float(hi[fi, 1, by, bx]), -float(lo[fi, 1, by, bx])
                cx, cy = (ax + bxx) / 2, (ay + byy) / 2
                pc = at(cx, cy)[:, ys_, xs_]
                gx = (at(bxx, cy)[:, ys_, xs_] - at(ax, cy)[:, ys_, xs_]) / (bxx - ax) if bxx > ax else pc * 0
                gy = (at(cx, byy)[:, ys_, xs_] - at(cx, ay)[:, ys_, xs_]) / (byy - ay) if byy > ay else pc * 0
                vals, res = [], []
                for sx in _knots(ax, bxx):
                    for sy in _knots(ay, byy):
                        pv = at(sx, sy)[:, ys_, xs_]
                        vals.append(pv)
                        res.append(pv - (pc + gx * (sx - cx) + gy * (sy - cy)))
                st, rs = torch.stack(vals), torch.stack(res)
                flo[:, ys_, xs_], fhi[:, ys_, xs_] = st.min(0).values, st.max(0).values
                xc[:, ys_, xs_] = pc
                elo[:, ys_, xs_], ehi[:, ys_, xs_] = (-rs).max(0).values.clamp_min(0), rs.max(0).values.clamp_min(0)
                gz[0, :, ys_, xs_], gz[1, :, ys_, xs_] = -gx, -gy  # d/dz = −d/ds
        out[f + 1] = WarpRelax(fi, (flo - WARP_SLACK).clamp(0, 1), (fhi + WARP_SLACK).clamp(0, 1), xc, gz,
                               elo + WARP_SLACK, ehi + WARP_SLACK)
    return out


class WarpLift:
    """The imposed frame as an *exact* function of its flow's block shifts inside the first cell ring
    (every ``|z_i| ≤ 1`` px): ``x(z) = p0 + g·z + k·|z| + r(z)`` per pixel and channel, with
    ``|r(z)| ≤ c·(z_x² + z_y²)`` for the pixel's block.

    Why: the bilinear interpolant is bilinear in each of the four unit cells around a zero shift,
    so along x it has the slopes ``g⁺ = p(1, 0) − p0`` and ``g⁻ = p0 − p(−1, 0)`` on either side of
    the knot at 0, and ``g⁺ s + …`` for ``s ≥ 0``, ``g⁻ s`` for ``s ≤ 0`` is exactly
    ``(g⁺ + g⁻)/2 · s + (g⁺ − g⁻)/2 · |s|`` (likewise y; ``s = −z``). What remains is the cell's
    cross term ``d_q s_x s_y`` with ``d_q = p(q) − p(q_x, 0) − p(0, q_y) + p0`` in quadrant ``q``,
    and ``|s_x s_y| ≤ (s_x² + s_y²)/2``. Border padding clamps the sample position, which keeps every
    knot at an integer shift. The secant relaxation of :func:`warp_relax` instead pays the kink
    ``|g⁺ − g⁻|·R/2`` at *every* pixel for the box half-width ``R`` of *every* block at once — an ℓ2
    ball of radius ρ lets only one block move ρ. Here the kink is a variable ``|z|`` that the
    concretisation (:meth:`Domain.zmin`) bounds jointly with ``z`` through the ball's dual norm
    (``min a·z + b·|z| = −ρ ‖(|a| − b)₊‖_q``), and the cross terms share the ball's ``‖z‖₂²``.
    ``g``, ``k`` are ``(2, 3, H, W)`` (derivatives w.r.t. the block's x and y displacement)."""

    def __init__(self, fi: int, p0, g, k, c) -> None:
        self.fi, self.p0, self.g, self.k, self.c = fi, p0, g, k, c


def unit_shifts(frames: torch.Tensor, shifts) -> dict[tuple[int, int], torch.Tensor]:
    """The engine's warp of ``frames (N, C, H, W)`` at each constant shift ``(s_x, s_y)`` px (border
    padding), clamped to [0, 1] — the samples the lifted forms are read from."""
    n, _, h, w = frames.shape
    out = {}
    for sx, sy in shifts:
        flow = torch.tensor([sx, sy], dtype=frames.dtype, device=frames.device).view(1, 2, 1, 1)
        out[(sx, sy)] = warp(frames, flow.expand(n, 2, h, w)).clamp(0, 1)
    return out


AXIS_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def lift_slopes(p: dict[tuple[int, int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g, k)`` of :class:`WarpLift` from the warps ``p`` at :data:`AXIS_SHIFTS`, stacked on axis −4
    (x, then y): ``g = −(p(+1) − p(−1))/2`` (``d/dz = −d/ds``), ``k = (p(+1) + p(−1))/2 − p(0)``."""
    p0 = p[(0, 0)]
    g = torch.stack([-(p[(1, 0)] - p[(-1, 0)]) / 2, -(p[(0, 1)] - p[(0, -1)]) / 2], -4)
    k = torch.stack([(p[(1, 0)] + p[(-1, 0)]) / 2 - p0, (p[(0, 1)] + p[(0, -1)]) / 2 - p0], -4)
    return g, k


def warp_lift(space: FlowSpace) -> dict[int, WarpLift]:
    """:class:`WarpLift` of every imposed frame, from nine warps of each (shifts in {−1, 0, 1}²)."""
    out = {}
    grid = [(sx, sy) for sx in (-1, 0, 1) for sy in (-1, 0, 1)]
    for fi, f in enumerate(space.flows):
        p = {s: v[0].double().cpu() for s, v in unit_shifts(space.video[f + 1].unsqueeze(0), grid).items()}
        p0 = p[(0, 0)]
        g, k = lift_slopes(p)
        c = torch.stack([(p[(qx, qy)] - p[(qx, 0)] - p[(0, qy)] + p0).abs()
                         for qx in (-1, 1) for qy in (-1, 1)]).max(0).values / 2
        out[f + 1] = WarpLift(fi, p0, g, k, c)
    return out


def warp_bounds(space: FlowSpace, lo: torch.Tensor, hi: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Exact per-pixel range of every imposed frame for ``z ∈ [lo, hi]``:
    ``{frame index: (lo (3, H, W), hi (3, H, W))}`` in float64."""
    return {t: (r.lo, r.hi) for t, r in warp_relax(space, lo, hi).items()}


def _side_min(s: torch.Tensor, kappa: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(min, argmin)`` of ``s·z + κ·z²`` over ``z ∈ [lo, hi]`` elementwise (``+inf`` where the interval is
    empty): the better end, or the vertex ``−s/2κ`` where ``κ > 0`` puts it inside."""
    f_lo, f_hi = lo * (s + kappa * lo), hi * (s + kappa * hi)
    first = f_lo <= f_hi
    val, arg = torch.where(first, f_lo, f_hi), torch.where(first, lo, hi)
    v = -s / (2 * kappa).clamp_min(1e-30)
    inside = (kappa > 0) & (v > lo) & (v < hi)
    val, arg = torch.where(inside, s * v / 2, val), torch.where(inside, v, arg)  # s·v + κv² = s·v/2
    return torch.where(lo <= hi, val, torch.full_like(val, math.inf)), arg


def _box_ball_dual(a: torch.Tensor, b: torch.Tensor, beta: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                   rz: float, p: float, mu: torch.Tensor, slope: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``g(μ)`` of :func:`box_ball_min` per row (``μ (R,)``) and, with ``slope``, its supergradient
    ``Σ φ(z_i*) − φ(rz)`` (else ``None``)."""
    m = mu.unsqueeze(1)
    if p == 2.0:
        kap, sp, sn, rhs = beta + m, a + b, a - b, mu * (rz * rz)
    else:
        kap, sp, sn, rhs = beta, a + b + m, a - b - m, mu * rz
    vp, zp = _side_min(sp, kap, lo.clamp_min(0), hi)  # z ≥ 0
    vn, zn = _side_min(sn, kap, lo, hi.clamp_max(0))  # z ≤ 0
    val = torch.minimum(vp, vn).sum(1) - rhs
    if not slope:
        return val, None
    z = torch.where(vp <= vn, zp, zn)
    return val, ((z * z).sum(1) - rz * rz if p == 2.0 else z.abs().sum(1) - rz)


def box_ball_min(a: torch.Tensor, b: torch.Tensor, beta: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                 rz: float, p: float, iters: int = 10, chunk: int = 4096) -> torch.Tensor:
    """A lower bound of ``min Σ_i a_i z_i + b_i |z_i| + β_i z_i²`` over ``{lo ≤ z ≤ hi, ‖z‖_p ≤ rz}``
    (``p`` = 1 or 2), per row of ``a, b, β (R, D)`` — the minimum over the box ∩ ball *jointly*, where
    the separate bounds take the better of the box's and the ball's for ``a·z + b·|z|`` and fill the
    quadratic part on its own (:meth:`Domain._zmin_lifted`).

    Lagrangian duality: for every ``μ ≥ 0``,
    ``g(μ) = Σ_i min_{lo_i ≤ z_i ≤ hi_i} [a_i z_i + b_i |z_i| + β_i z_i² + μ φ(z_i)] − μ φ(rz)``,
    ``φ(z) = z²`` (``p = 2``) or ``|z|`` (``p = 1``; then ``φ(rz)`` = ``rz``), is below the minimum (weak
    duality), and each inner minimum is closed-form (a quadratic on each side of 0, :func:`_side_min`).
    ``g`` is concave: ``iters`` bisection steps on the sign of its supergradient ``Σ φ(z_i*) − φ(rz)``
    over ``log μ`` (in a bracket around the linear part's multiplier) locate the best ``μ`` (in
    float32, fast), then ``g`` is evaluated there and at
    ``μ = 0`` (the box alone) in float64 — sound at every ``μ``, exact for convex objectives
    (``β ≥ 0``) up to the bisection's resolution."""
    out = []
    for k in range(0, a.shape[0], chunk):
        ak, bk, qk = a[k:k + chunk], b[k:k + chunk], beta[k:k + chunk]
        f32 = [x.float() for x in (ak, bk, qk, lo, hi)]
        # the bracket: around the multiplier of the linear part alone over the ball (ℓ2: ‖(|a| − b)₊‖₂/2ρ;
        # ℓ1: the largest |a| − b) plus what the quadratic part asks (ℓ2: the largest −β, which the
        # multiplier must outweigh for an interior minimum; ℓ1: 2ρ times it), e^±8 wide (a multiplier
        # outside it is still sound, only less tight)
        e = (ak.abs() - bk).clamp_min(0)
        quad = (-qk).clamp_min(0).amax(1) if qk.shape[1] else torch.zeros(ak.shape[0], dtype=ak.dtype)
        mu0 = e.norm(dim=1) / (2 * max(rz, 1e-12)) + quad if p == 2.0 else e.amax(1) + 2 * rz * quad
        centre = (mu0 + 1e-12).log().float()
        x0, x1 = centre - 8.0, centre + 8.0
        best_v = torch.full_like(centre, -math.inf)
        best_x = x0.clone()
        for _ in range(iters):
            mid = (x0 + x1) / 2
            val, slope = _box_ball_dual(*f32, rz, p, mid.exp())
            better = val > best_v
            best_v, best_x = torch.where(better, val, best_v), torch.where(better, mid, best_x)
            up = slope > 0  # the constraint is violated: a larger multiplier
            x0, x1 = torch.where(up, mid, x0), torch.where(up, x1, mid)
        at, _ = _box_ball_dual(ak, bk, qk, lo, hi, rz, p, best_x.double().exp(), slope=False)
        box, _ = _box_ball_dual(ak, bk, qk, lo, hi, rz, p, torch.zeros_like(at), slope=False)
        out.append(torch.maximum(at, box))
    return torch.cat(out) if out else torch.zeros(0, dtype=a.dtype)


class Domain:
    """The perturbation set: the box ``[zlo, zhi]`` intersected with the ball ``‖δ(z − centre)‖_p ≤ radius``
    (centre 0 unless given: the ball around a node of the A* search)."""

    def __init__(self, space: FlowSpace, zlo: torch.Tensor, zhi: torch.Tensor, radius: float | None,
                 metric: str, centre: torch.Tensor | None = None, lift: bool = True, joint: bool = True) -> None:
        self.space, self.zlo, self.zhi, self.radius, self.metric = space, zlo.double(), zhi.double(), radius, metric
        self.joint = joint  # the joint bound of the lifted forms on the ball's own box too (:attr:`dual_pays`)
        self.centre = None if centre is None else centre.double().cpu()
        self.relax = warp_relax(space, zlo, zhi)
        # the lifted linear forms (:class:`WarpLift`) hold inside the first cell ring; they pay off
        # for ℓ2/ℓ1 balls centred at 0, whose ‖z‖₂² bounds the cross terms of all blocks together
        # (ℓ∞ boxes and the A* node balls keep the secant relaxation)
        self.lifted = bool(lift and centre is None and radius is not None and check_metric(metric) <= 2.0
                           and float(torch.maximum(self.zlo.abs(), self.zhi.abs()).max()) <= 1.0)
        self.lift = warp_lift(space) if self.lifted else {}

    @property
    def width(self) -> int:
        """Columns of a linear form's ``coef``: ``D`` (``z``), or ``2D + D/2`` when lifted
        (``z``, ``|z|``, then ``z_x² + z_y²`` of every block)."""
        d = self.space.dims
        return d + d + d // 2 if self.lifted else d

    def linear(self, parts: list[tuple[int, torch.Tensor]], bias: torch.Tensor, video: torch.Tensor,
               win: tuple[int, int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``A·x + b ≥ const + coef·z`` for every ``z`` of the domain, where ``x`` is built from frames:
        ``parts`` lists ``(frame index, A_t (R, 3, H, W))``; perturbed frames use the linear relaxation
        in ``z`` (its residual goes into ``const``). Returns ``(coef (R, width), const (R,))``: ``width``
        is ``D``, or ``2D + D/2`` for the lifted forms (:attr:`width`, :meth:`_linear_lifted`). With
        ``win = (y0, y1, x0, x1)`` (inclusive) the ``A_t`` cover only that window of the frames (zero
        elsewhere)."""
        sp = self.space
        r_rows = bias.shape[0]
        const = bias.clone()
        coef = torch.zeros(r_rows, len(sp.flows), 2, sp.gh, sp.gw, dtype=torch.float64)
        crop, blocks = self._window(r_rows, win)
        if self.lifted:
            return self._linear_lifted(parts, const, coef, video, crop, blocks)
        for t, a in parts:
            if t in self.relax:
                w = self.relax[t]
                const = const + (a * crop(w.xc)).flatten(1).sum(1)
                const = (const - (a.clamp_min(0) * crop(w.elo)).flatten(1).sum(1)
                         + (a.clamp_max(0) * crop(w.ehi)).flatten(1).sum(1))
                for c in range(2):
                    coef[:, w.fi, c] += blocks((a * crop(w.gz[c])).sum(1))
            else:
                const = const + (a * crop(video[t])).flatten(1).sum(1)
        return coef.flatten(1), const

    def _window(self, r_rows: int, win: tuple[int, int, int, int] | None):
        """``(crop, blocks)``: the window of a per-pixel tensor, and the per-block sums ``(R, gh, gw)``
        of a per-pixel map ``(R, h, w)`` over the window (the whole frame without ``win``)."""
        sp = self.space
        if win is None:
            return (lambda x: x), (lambda x: x.view(r_rows, sp.gh, sp.block, sp.gw, sp.block).sum((2, 4)))
        y0, y1, x0, x1 = win
        rows = torch.arange(y0, y1 + 1) // sp.block
        cols = torch.arange(x0, x1 + 1) // sp.block

        def blocks(x: torch.Tensor) -> torch.Tensor:
            tmp = torch.zeros(r_rows, sp.gh, x.shape[2], dtype=x.dtype).index_add_(1, rows, x)
            return torch.zeros(r_rows, sp.gh, sp.gw, dtype=x.dtype).index_add_(2, cols, tmp)

        return (lambda x: x[..., y0:y1 + 1, x0:x1 + 1]), blocks

    def _linear_lifted(self, parts, const, coef, video, crop, blocks):
        """:meth:`linear` with the lifted warp forms: ``coef`` is ``[a | b | β]`` for
        ``a·z + b·|z| + β·q`` (``q`` = every block's ``z_x² + z_y²``; ``β ≤ 0`` from the cross terms)."""
        sp = self.space
        r_rows = const.shape[0]
        kink = torch.zeros_like(coef)
        quad = torch.zeros(r_rows, len(sp.flows), sp.gh, sp.gw, dtype=torch.float64)
        for t, a in parts:
            if t in self.lift:
                w = self.lift[t]
                const = const + (a * crop(w.p0)).flatten(1).sum(1) - WARP_SLACK * a.abs().flatten(1).sum(1)
                for c in range(2):
                    coef[:, w.fi, c] += blocks((a * crop(w.g[c])).sum(1))
                    kink[:, w.fi, c] += blocks((a * crop(w.k[c])).sum(1))
                quad[:, w.fi] -= blocks((a.abs() * crop(w.c)).sum(1))
            else:
                const = const + (a * crop(video[t])).flatten(1).sum(1)
        return torch.cat([coef.flatten(1), kink.flatten(1), quad.flatten(1)], 1), const

    def _ball(self) -> tuple[float, float, float]:
        """``(p, q, ρ/w_p)``: the ball's norm, its dual exponent and its radius in ``z``."""
        p = check_metric(self.metric)
        q = 1.0 if math.isinf(p) else (math.inf if p == 1.0 else p / (p - 1.0))
        return p, q, self.radius / self.space.weight(self.metric)

    def _zmin_lifted(self, coef: torch.Tensor, sub: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``min a·z + b·|z| + β·q`` over the domain (a lower bound): the linear-and-kink part by the
        better of the box (per coordinate, at ``lo``, ``hi`` or 0) and the ball centred at 0
        (``−ρ/w_p ‖(|a| − b)₊‖_q``: put each coordinate's sign against ``a``); the quadratic part
        separately, as a fractional knapsack: every ``q_blk`` up to its box maximum, their sum up to
        the largest ``‖z‖₂²`` in the domain."""
        zi, qi = sub if sub is not None else (slice(None), slice(None))
        lo, hi = self.zlo[zi], self.zhi[zi]
        d = lo.shape[0]
        a, b, beta = coef[:, :d], coef[:, d:2 * d], coef[:, 2 * d:]
        cap = torch.maximum(self.zlo.square(), self.zhi.square()).view(len(self.space.flows), 2, -1).sum(1).flatten()[qi]
        total = float(cap.sum())
        best, rz = None, math.inf
        if self.radius is not None:
            p, q, rz = self._ball()
            best = -rz * torch.linalg.vector_norm((a.abs() - b).clamp_min(0), ord=q, dim=1)
            if p <= 2.0:
                total = min(total, rz * rz)  # ‖z‖₂ ≤ ‖z‖_p
        # the box's bound, where the box does not contain the ball (sub-boxes of branch and bound;
        # a box containing the ball has its minimum over a superset, never above the ball's)
        if best is None or float(lo.max()) > -rz or float(hi.min()) < rz:
            at_lo, at_hi = a * lo + b * lo.abs(), a * hi + b * hi.abs()
            per = torch.minimum(at_lo, at_hi)
            per = torch.where((lo <= 0) & (hi >= 0), per.clamp_max(0), per)
            best = per.sum(1) if best is None else torch.maximum(best, per.sum(1))
        # greedy fill by decreasing gain; every block filled before the last takes its whole cap, so
        # at most ⌊total / smallest positive cap⌋ + 1 blocks get any: only those are sorted (blocks
        # with no cap get gain 0, so they cannot take a place from one that has)
        gain = torch.where(cap > 0, (-beta).clamp_min(0), torch.zeros_like(beta))
        pos = cap[cap > 0]
        if not len(pos):
            return best
        k = min(gain.shape[1], int(total / float(pos.min())) + 2)  # + 1 more for rounding
        g_sorted, order = torch.topk(gain, k, dim=1)
        c_sorted = cap[order]
        before = torch.cumsum(c_sorted, 1) - c_sorted
        fill = torch.minimum(c_sorted, (total - before).clamp_min(0))
        return best - (g_sorted * fill).sum(1)

    @property
    def clipped(self) -> bool:
        """Does the box cut the ball (ℓ2/ℓ1; the sub-boxes of branch and bound)?"""
        if self.radius is None or check_metric(self.metric) > 2.0:
            return False
        _, _, rz = self._ball()
        c = 0.0 if self.centre is None else self.centre
        return float((self.zlo - c).max()) > -rz or float((self.zhi - c).min()) < rz

    @property
    def dual_pays(self) -> bool:
        """Is :meth:`zmin_dual` tighter than the separate bounds here? Where the box cuts the ball
        (:attr:`clipped`), and for the lifted forms (their quadratic part shares the ball with the
        linear one; with ``joint``: it costs 10–35 % more per probe); not for plain linear forms over
        the ball's own box (both give the ball's bound)."""
        return self.radius is not None and check_metric(self.metric) <= 2.0 and \
            (self.clipped or (self.lifted and self.joint))

    def zmin_dual(self, coef: torch.Tensor, sub: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``min coef·z`` over the box ∩ ball itself (:func:`box_ball_min`; lifted forms: ``a·z + b·|z|``
        and each block's ``β·q`` spread on its two coordinates, ``β ≤ 0`` kept — a positive ``β·q`` is
        dropped, which only lowers the bound). Columns and ``sub`` as in :meth:`zmin`."""
        sp = self.space
        p, _, rz = self._ball()
        zi = sub[0] if sub is not None else torch.arange(sp.dims)
        c = torch.zeros(len(zi), dtype=torch.float64) if self.centre is None else self.centre[zi]
        lo, hi = self.zlo[zi] - c, self.zhi[zi] - c
        d = len(zi)
        if not self.lifted:
            zero = torch.zeros_like(coef)
            return coef @ c + box_ball_min(coef, zero, zero, lo, hi, rz, p)
        nb = sp.gh * sp.gw
        qi = sub[1] if sub is not None else torch.arange(len(sp.flows) * nb)
        look = torch.zeros(len(sp.flows) * nb, dtype=torch.long)
        look[qi] = torch.arange(len(qi))
        a, b, beta = coef[:, :d], coef[:, d:2 * d], coef[:, 2 * d:].clamp_max(0)[:, look[(zi // sp.per_flow) * nb + zi % nb]]
        # only the coordinates some row depends on (a window's forms touch two flows of fifteen): a
        # dropped one adds min μ·φ(z_i) ≥ 0 to g, so leaving it out only lowers the bound
        keep = ((a != 0) | (b != 0) | (beta != 0)).any(0)
        if not bool(keep.all()):
            a, b, beta, lo, hi = a[:, keep], b[:, keep], beta[:, keep], lo[keep], hi[keep]
        return box_ball_min(a, b, beta, lo, hi, rz, p)

    def zmin(self, coef: torch.Tensor, sub: tuple[torch.Tensor, torch.Tensor] | None = None,
             tight: bool = True) -> torch.Tensor:
        """``min coef·z`` over the domain, per row: the better of the box bound and the dual-norm
        ball bound ``coef·centre − ρ/w_p ‖coef‖_q`` (lifted forms: :meth:`_zmin_lifted`), and with
        ``tight`` where it pays (:attr:`dual_pays`) also the joint bound over the box ∩ ball
        (:meth:`zmin_dual`, slower). With ``sub = (z indices, block indices)`` the
        columns of ``coef`` are only those variables (all others have coefficient 0), as in
        :meth:`step_forms`."""
        best = self._zmin_fast(coef, sub)
        if tight and self.dual_pays:
            best = torch.maximum(best, self.zmin_dual(coef, sub))
        return best

    def _zmin_fast(self, coef: torch.Tensor, sub: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if self.lifted:
            return self._zmin_lifted(coef, sub)
        zi = sub[0] if sub is not None else slice(None)
        zc, zr = (self.zlo[zi] + self.zhi[zi]) / 2, (self.zhi[zi] - self.zlo[zi]) / 2
        best = -(coef.abs() * zr).sum(1)
        if self.radius is not None:
            _, q, rz = self._ball()
            shift = 0.0 if self.centre is None else coef @ self.centre[zi]
            best = torch.maximum(best, shift - rz * torch.linalg.vector_norm(coef, ord=q, dim=1) - coef @ zc)
        return coef @ zc + best

    def step_forms(self, frames: list[int], video: torch.Tensor):
        """Linear forms of the input ``[v_{f_1}, v_{f_2}, …]`` (frames stacked on channels) in the
        variables of the flows that move those frames: ``L·w + l0 ≤ x ≤ U·w + u0`` for every ``z`` of
        the domain, ``w`` = (``z``, then ``|z|`` and every block's ``q`` when lifted) restricted to
        ``sub`` (:meth:`zmin`). Returns ``(L, U (V, C, H, W), l0, u0 (C, H, W), sub)``."""
        sp = self.space
        nb, pf = sp.gh * sp.gw, sp.per_flow
        moved = [t for t in frames if t in self.relax]
        fis = [self.relax[t].fi for t in moved]
        zi = torch.cat([fi * pf + torch.arange(pf) for fi in fis]) if fis else torch.zeros(0, dtype=torch.long)
        qi = torch.cat([fi * nb + torch.arange(nb) for fi in fis]) if fis else torch.zeros(0, dtype=torch.long)
        d = len(zi)
        h, w = video.shape[-2:]
        v = 2 * d + len(qi) if self.lifted else d
        big_l = torch.zeros(v, 3 * len(frames), h, w, dtype=torch.float64)
        big_u = torch.zeros_like(big_l)
        l0 = torch.cat([video[t] for t in frames]).clone()
        u0 = l0.clone()
        mask = torch.zeros(nb, 1, h, w, dtype=torch.float64)  # one image per block
        for by in range(sp.gh):
            for bx in range(sp.gw):
                mask[by * sp.gw + bx, 0, by * sp.block:(by + 1) * sp.block, bx * sp.block:(bx + 1) * sp.block] = 1.0
        for j, t in enumerate(frames):
            if t not in self.relax:
                continue
            k = moved.index(t)
            ch, zs = slice(3 * j, 3 * j + 3), slice(k * pf, (k + 1) * pf)
            if self.lifted:
                wl = self.lift[t]
                lin = torch.cat([wl.g[c].unsqueeze(0) * mask for c in range(2)])  # (pf, 3, H, W)
                kink = torch.cat([wl.k[c].unsqueeze(0) * mask for c in range(2)])
                quad = wl.c.unsqueeze(0) * mask
                for big, sign in ((big_l, -1.0), (big_u, 1.0)):
                    big[zs, ch] = lin
                    big[d + k * pf:d + (k + 1) * pf, ch] = kink
                    big[2 * d + k * nb:2 * d + (k + 1) * nb, ch] = sign * quad
                l0[ch], u0[ch] = wl.p0 - WARP_SLACK, wl.p0 + WARP_SLACK
            else:
                wr = self.relax[t]
                lin = torch.cat([wr.gz[c].unsqueeze(0) * mask for c in range(2)])
                zc = ((self.zlo + self.zhi) / 2)[zi[zs]]
                base = wr.xc - (lin * zc.view(-1, 1, 1, 1)).sum(0)  # x = xc + gz·(z − z_c)
                big_l[zs, ch], big_u[zs, ch] = lin, lin
                l0[ch], u0[ch] = base - wr.elo, base + wr.ehi
        return big_l, big_u, l0, u0, (zi, qi)

    def concretize(self, parts: list[tuple[int, torch.Tensor]], bias: torch.Tensor, video: torch.Tensor,
                   win: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """``min A·x + b`` over the domain (:meth:`linear`, then :meth:`zmin`)."""
        coef, const = self.linear(parts, bias, video, win)
        return const + self.zmin(coef)


# -- model adapters -------------------------------------------------------------------------------
class _Snippet(nn.Module):
    """``[cur, prev] (1, 6, H, W) → [cur, cur − prev]`` (step s ≥ 1) or ``[cur, 0]`` (step 0): affine."""

    is_affine = True

    def __init__(self, first: bool) -> None:
        super().__init__()
        self.first = first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cur, prev = x[:, :3], x[:, 3:]
        return torch.cat([cur, cur * 0 if self.first else cur - prev], 1)

    def abs_forward(self, r: torch.Tensor) -> torch.Tensor:
        cur, prev = r[:, :3], r[:, 3:]
        return torch.cat([cur, cur * 0 if self.first else cur + prev], 1)


class _ToC3D(nn.Module):
    """``(1, T, 3, H, W) → (1, 3, T, H, W)``: affine (a permutation)."""

    is_affine = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)

    def abs_forward(self, r: torch.Tensor) -> torch.Tensor:
        return r.transpose(1, 2)


def supported(model) -> str | None:
    """``None`` if the classifier can be certified, else the reason in one sentence."""
    from core.models.nets import C3D, CNNRecurrent

    m = getattr(model, "model", model)
    if isinstance(m, (CNNRecurrent, C3D)):
        return None
    kind = type(m).__name__
    if kind == "MotionStream":
        return ("this model computes optical flow inside itself (Horn–Schunck iterations or a "
                "non-differentiable flow method), which our bound propagation cannot relax soundly")
    if kind == "ScriptedVideoModel":
        return "a user TorchScript model is opaque: its layers cannot be relaxed by our verifier"
    return f"the verifier supports cnn_lstm/cnn_gru/cnn_rnn and c3d; {kind} has layers it does not relax"


class OutOfTime(Exception):
    """A probe passed its deadline (``ModelBounds.deadline``) and was abandoned: nothing was proved."""


class ModelBounds:
    """Lower bounds of the margin ``logit_y − logit_j`` given boxes for the changed frames."""

    deadline = math.inf  # perf_counter time after which a slow probe stops: crown+ is abandoned
    # (OutOfTime), α-CROWN ends its optimisation early with the best (sound) slopes so far

    # threads for the per-step CNN bounds of crown+/crown++ (see ``margin_bounds``): one per core up
    # to 4 (a 15-flow crown+ probe: 16.5 s with 1, 11.1 s with 2 on the 2-core box; same bounds);
    # ``VRD_VERIFY_WORKERS`` overrides (Ray workers, which run one task per core, set it to 1)
    workers = max(1, int(os.environ["VRD_VERIFY_WORKERS"]) if os.environ.get("VRD_VERIFY_WORKERS", "").isdigit()
                  else min(4, os.cpu_count() or 1))

    def _out_of_time(self) -> bool:
        return time.perf_counter() > self.deadline

    def __init__(self, clf: VideoClassifier, video: torch.Tensor, label: int, method: str = "crown") -> None:
        from core.models.nets import C3D, CNNRecurrent

        why = supported(clf)
        if why:
            raise Unsupported(why)
        self.m = copy.deepcopy(clf.model).cpu().double().eval()
        self.video = video.detach().cpu().double()
        self.label = label
        if method not in METHODS:
            raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        # crown+ tightens the CNN's intermediate bounds (recurrent models; c3d: crown); alpha optimises
        # the ReLU lower slopes of the final CROWN passes (α-CROWN)
        self.kind = "recurrent" if isinstance(self.m, CNNRecurrent) else "c3d"
        assert isinstance(self.m, (CNNRecurrent, C3D))
        # c3d has no per-step CNN for crown+/crown++ to tighten: it runs (and is named) crown
        self.method = "crown" if self.kind == "c3d" and method in ("crown+", "crown++") else method
        with torch.no_grad():
            if self.kind == "recurrent":
                self.eta = self.m.features(self.video.unsqueeze(0))[0]  # (T, F)
                self.chain = flatten_chain(self.m.encoder.body) + flatten_chain(self.m.encoder.proj)
                assert isinstance(self.chain[-1], nn.ReLU)
                self.pre = self.chain[:-1]
            else:
                self.chain = [_ToC3D()] + flatten_chain(self.m.body) + [self.m.fc]
                self.spec = margin_spec(self.m.fc.out_features, label)

    @torch.no_grad()
    def _step_bounds(self, s: int, dom: Domain, lo: torch.Tensor, hi: torch.Tensor):
        """Step ``s`` of a recurrent model: the box of its CNN features (after the final ReLU), and for
        non-IBP methods the chain with its intermediate bounds and the features' linear forms in ``z``
        (:func:`_relu_forms`), else ``None``s."""
        prev = max(s - 1, 0)
        xl = torch.cat([lo[s], lo[prev]], 0).unsqueeze(0)
        xh = torch.cat([hi[s], hi[prev]], 0).unsqueeze(0)
        layers = [_Snippet(s == 0)] + self.pre
        (pl, ph), inputs = ibp(layers, xl, xh)

        def conc(a, bias, win=None):  # min of a·x + bias over the domain, x = [frame s, frame prev]
            return dom.concretize([(s, a[:, :3]), (prev, a[:, 3:])], bias, self.video, win)

        if self.method in ("crown+", "crown++"):  # linear (forward) intermediate bounds for every ReLU
            # (the fast concretisation for every neuron, the joint one over the box ∩ ball for those it
            # leaves unstable)
            inputs = forward_relu_inputs(layers, inputs, dom.step_forms([s, prev], self.video),
                                         lambda a, sub: dom.zmin(a, sub, tight=False), out_of_time=self._out_of_time,
                                         tighten=dom.zmin_dual if dom.dual_pays else None)
            if self.method == "crown++":  # …then back-substitution for the deeper ReLUs' unstable neurons
                inputs = refine_relu_inputs(layers, inputs, conc, out_of_time=self._out_of_time)
            pl, ph = ibp_layer(layers[-1], *inputs[-1])
        live = (ph.flatten() > 0).nonzero().flatten()  # features the final ReLU does not zero for sure
        cnn = form = None
        if self.method != "ibp" and len(live):
            n, f = len(live), pl[0].numel()
            rows = torch.zeros(2 * n, f, dtype=torch.float64)
            rows[torch.arange(n), live] = 1.0
            rows[n + torch.arange(n), live] = -1.0
            a, bias = crown_backward(layers, rows, inputs)  # also the linear forms of the joint mode
            lform = dom.linear([(s, a[:, :3]), (prev, a[:, 3:])], bias, self.video)
            both = lform[1] + dom.zmin(lform[0])
            if self.method == "alpha":
                both = alpha_crown(layers, rows, inputs, conc, ALPHA_ITERS, out_of_time=self._out_of_time,
                                   start=both)
            pl, ph = pl.clone().flatten(), ph.clone().flatten()
            pl[live], ph[live] = torch.maximum(pl[live], both[:n]), torch.minimum(ph[live], -both[n:])
            form = _relu_forms(lform, live, pl, ph, dom.width)
            pl, ph = pl.view(1, f), ph.view(1, f)
            cnn = (layers + [nn.ReLU()], inputs + [(pl, ph)], prev)
        return (pl.clamp_min(0), ph.clamp_min(0)), cnn, form  # the final ReLU of N_C

    diagnose = False  # keep the last call's per-step bounds for :meth:`diagnosis` (``certify(…, diagnose=True)``)
    last_steps: dict | None = None

    def diagnosis(self) -> dict:
        """Where the last :meth:`margin_bounds` call lost: for every perturbed step of a recurrent model
        (c3d: the whole chain, ``step: "all"``) the **unstable ReLUs** of each layer (pre-activation
        interval containing 0, with the intermediate bounds the method used; ``None`` for ``ibp``,
        which keeps none) out of its neurons, and the mean / max width of the output box (recurrent:
        the CNN features entering the LSTM; c3d: the logits, by interval propagation). A relaxation's
        looseness is concentrated in its unstable ReLUs, and a feature box that is wide relative to
        the clean features is what the LSTM's lines then compound (README, *Certified safe radius*)."""
        if self.last_steps is None:
            raise ParameterError("diagnosis() needs diagnose = True and a margin_bounds() call first")
        steps = []
        for s, (box, cnn, _) in self.last_steps.items():  # (in step order)
            w = (box[1] - box[0]).flatten()
            row = {"step": s, "feature_width_mean": float(w.mean()), "feature_width_max": float(w.max()),
                   "unstable": None, "neurons": None}
            if cnn is not None:
                layers, ins = cnn[0], cnn[1]
                relu = [(lo_, hi_) for m, (lo_, hi_) in zip(layers, ins) if isinstance(m, nn.ReLU)]
                row["unstable"] = [int(((lo_ < 0) & (hi_ > 0)).sum()) for lo_, hi_ in relu]
                row["neurons"] = [int(lo_.numel()) for lo_, _ in relu]
            steps.append(row)
        return {"method": self.method, "steps": steps}

    def margin_lower(self, dom: Domain) -> torch.Tensor:
        """``(K − 1,)`` lower bounds of ``logit_y − logit_j`` over the domain: the best of
        :meth:`margin_bounds` per row."""
        return self.best(self.margin_bounds(dom))

    @staticmethod
    def best(bounds: dict[str, torch.Tensor]) -> torch.Tensor:
        """The best of several sound margin bounds, per class."""
        return torch.stack(list(bounds.values())).max(0).values

    @torch.no_grad()
    def margin_bounds(self, dom: Domain) -> dict[str, torch.Tensor]:
        """Every lower bound of ``logit_y − logit_j`` the method computes, by name, each sound on its
        own: ``ibp``; ``crown`` (c3d: end to end; recurrent: CROWN through time over per-step feature
        boxes) — ``alpha`` instead for c3d with ``method="alpha"`` (the recurrent models' per-step
        feature boxes then come from α-CROWN); ``joint`` (LSTMs: the linear bound through time pulled
        back through every perturbed step's CNN into ``z`` and concretised once over the domain)."""
        lo, hi = self.video.clone(), self.video.clone()
        for t, r in dom.relax.items():
            lo[t], hi[t] = r.lo, r.hi
        t_len = self.video.shape[0]
        if self.kind == "c3d":
            xl, xh = lo.unsqueeze(0), hi.unsqueeze(0)
            (ol, oh), inputs = ibp(self.chain, xl, xh)
            if self.diagnose:
                self.last_steps = {"all": ((ol, oh), (self.chain, inputs, None), None)}
            others = [j for j in range(ol.shape[1]) if j != self.label]
            ibp_m = ol[0, self.label] - oh[0, others]
            if self.method == "ibp":
                return {"ibp": ibp_m}
            def conc3(a, bias):
                return dom.concretize([(t, a[:, t]) for t in range(t_len)], bias, self.video)
            if self.method == "alpha":
                return {"ibp": ibp_m, "alpha": alpha_crown(self.chain, self.spec, inputs, conc3, ALPHA_ITERS,
                                                           out_of_time=self._out_of_time)}
            return {"ibp": ibp_m, "crown": conc3(*crown_backward(self.chain, self.spec, inputs))}
        steps = sorted({t for t in dom.relax} | {t + 1 for t in dom.relax if t + 1 < t_len})
        work = [s for s in range(t_len) if s in steps]
        if self.workers > 1 and self.method in ("crown+", "crown++") and len(work) > 1:
            # the steps' CNN bounds are independent: a few threads (torch releases the GIL), 1 torch
            # thread each — unlike intra-op threads these do not spin against each other
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.workers) as pool:
                done = dict(zip(work, pool.map(lambda s: self._step_bounds(s, dom, lo, hi), work)))
        else:
            done = {s: self._step_bounds(s, dom, lo, hi) for s in work}
        if self.diagnose:
            self.last_steps = done
        xs, cnn, lin = [], {}, {}
        for s in range(t_len):
            if s not in steps:
                e = self.eta[s].unsqueeze(0)
                xs.append((e, e))
                continue
            box, c, form = done[s]
            xs.append(box)
            if c is not None:
                cnn[s], lin[s] = c, form
        h = recurrent_ibp(self.m.rnn, xs)
        ibp_m = margin_lower_linear(h, self.m.fc, self.label)
        if self.method == "ibp" or not isinstance(self.m.rnn, nn.LSTM):
            return {"ibp": ibp_m}
        # CROWN through time (back-substitution through the LSTM cells)
        # (the LSTM's many intermediate bounds take the fast concretisation: the joint one costs more
        # there than it gains; the final bounds below take it)
        lc = LSTMCrown(self.m.rnn, xs, lin=lin, zmin=lambda a: dom.zmin(a, tight=False), anchor=self.eta)
        fc, y = self.m.fc, self.label
        others = [j for j in range(fc.out_features) if j != y]
        spec, bias = fc.weight[y].unsqueeze(0) - fc.weight[others], fc.bias[y] - fc.bias[others]
        out = {"ibp": ibp_m, "crown": lc.lower(spec, bias)}
        # …and through the CNN of every perturbed step into the flow perturbation, concretised once
        # for all steps together (one dual norm over z instead of one box per step and feature)
        lam, const = lc.linear(spec, bias)
        parts = []
        for s, coef in lam.items():
            chain, ins, prev = cnn[s]
            a, b = crown_backward(chain, coef, ins)
            parts += [(s, a[:, :3]), (prev, a[:, 3:])]
            const = const + b
        out["joint"] = dom.concretize(parts, const, self.video)
        return out


def _relu_forms(form: tuple[torch.Tensor, torch.Tensor], live: torch.Tensor, pl: torch.Tensor, ph: torch.Tensor,
                dims: int) -> tuple[torch.Tensor, ...]:
    """Linear bounds in ``z`` of the CNN features after its final ReLU, from the rows ``±e_i`` of the
    live features (``form = (coef, const)`` of :meth:`Domain.linear`, lower rows then negated upper
    rows) and the final pre-activation bounds ``[pl, ph]``: ``lc + lz·z ≤ η ≤ uc + uz·z``. Active
    features keep both lines; unstable ones get 0 below and the chord ``s (p − pl)``, ``s = ph/(ph − pl)``,
    above; dead ones are 0."""
    coef, const = form
    n, f = len(live), pl.numel()
    lc, uc = torch.zeros(f, dtype=torch.float64), torch.zeros(f, dtype=torch.float64)
    lz, uz = torch.zeros(f, dims, dtype=torch.float64), torch.zeros(f, dims, dtype=torch.float64)
    l, h = pl[live], ph[live]
    act, uns = l >= 0, (l < 0) & (h > 0)
    sl = torch.where(act, torch.ones_like(l), torch.where(uns, h / (h - l).clamp_min(1e-30), torch.zeros_like(l)))
    lc[live] = torch.where(act, const[:n], torch.zeros_like(l))
    lz[live] = torch.where(act.unsqueeze(1), coef[:n], torch.zeros_like(coef[:n]))
    uc[live] = sl * -const[n:] - torch.where(uns, sl * l, torch.zeros_like(l))
    uz[live] = sl.unsqueeze(1) * -coef[n:]
    return lc, lz, uc, uz


def _relu_input(ll, uu, cl, cu, lo, hi, zmin, sub, tighten=None):
    """A ReLU's input bounds from the forward forms (concretised over the domain, intersected with the
    intervals ``[lo, hi]``) and CROWN's lines for it: ``(lo, hi, (s_up, b_up, alpha))``. ``tighten``
    (a slower, tighter concretisation, e.g. :meth:`Domain.zmin_dual`) is applied to the neurons that
    are still unstable: only their bounds change the relaxation."""
    fl = cl.flatten() + zmin(ll.flatten(1).T, sub)
    fu = cu.flatten() - zmin(-uu.flatten(1).T, sub)
    lo = torch.maximum(lo, fl.view_as(lo))
    hi = torch.maximum(torch.minimum(hi, fu.view_as(hi)), lo)
    if tighten is not None:
        uns = ((lo < 0) & (hi > 0)).flatten().nonzero().flatten()
        if len(uns):
            lo, hi = lo.clone(), hi.clone()
            lf, hf = lo.view(-1), hi.view(-1)
            lf[uns] = torch.maximum(lf[uns], cl.flatten()[uns] + tighten(ll.flatten(1)[:, uns].T, sub))
            hf[uns] = torch.maximum(torch.minimum(hf[uns], cu.flatten()[uns] - tighten(-uu.flatten(1)[:, uns].T, sub)),
                                    lf[uns])
    return lo, hi, relu_relaxation(lo, hi)


def forward_relu_inputs(layers: list[nn.Module], inputs: list, forms, zmin, out_of_time=None,
                        windows: bool = True, tighten=None) -> list:
    """The intermediate bounds of ``method="crown+"``: linear bounds carried *forward* through the
    chain (forward LiRPA; Xu et al. 2020, "Automatic perturbation analysis", §3.2) in the few
    perturbation variables of one step (:meth:`Domain.step_forms`) — every neuron's lower and upper
    form, ``W⁺L + W⁻U`` through affine layers, CROWN's ReLU lines (lower ``α·L``, upper
    ``s·U + b``) — concretised over the domain at every ReLU (:meth:`Domain.zmin` with ``sub``) and
    intersected with interval arithmetic. One pass costs a few forward convolutions per variable
    instead of a backward pass per unstable neuron; through the first layer it is exact. With
    ``windows`` the convolutional prefix carries each variable's forms only where they can be non-zero
    (:func:`_forward_windows`; the same bounds)."""
    big_l, big_u, l0, u0, sub = forms
    ll, uu, cl, cu = big_l, big_u, l0.unsqueeze(0), u0.unsqueeze(0)
    inputs = list(inputs)
    lo, hi = inputs[0]
    start = 0
    if windows and ll.dim() == 4:  # the convolutional prefix on windows, then the rest dense
        while start < len(layers) and _spatial(layers[start:start + 1]):
            start += 1
        if start:
            ll, uu, cl, cu, lo, hi = _forward_windows(layers[:start], inputs, ll, uu, cl, cu, zmin, sub, out_of_time,
                                                       tighten)
    for k, m in enumerate(layers):
        if k < start:
            continue
        if out_of_time is not None and out_of_time():
            raise OutOfTime("the probe passed its deadline")
        if isinstance(m, nn.ReLU):
            lo, hi, (s_up, b_up, alpha) = _relu_input(ll, uu, cl, cu, lo, hi, zmin, sub, tighten)
            inputs[k] = (lo, hi)
            ll, cl = ll * alpha, cl * alpha
            uu, cu = uu * s_up, cu * s_up + b_up
        elif is_affine(m):
            inputs[k] = (lo, hi)
            # W⁺L + W⁻U = W·(L + U)/2 − |W|·(U − L)/2 (and the upper form with +): two passes
            m0 = m(torch.zeros_like(cl))
            both = torch.cat([(ll + uu) / 2, (cl + cu) / 2])
            mid = m(both) - m0
            rad = abs_apply(m, torch.cat([(uu - ll) / 2, (cu - cl) / 2]))
            v = ll.shape[0]
            ll, uu = mid[:v] - rad[:v], mid[:v] + rad[:v]
            cl, cu = mid[v:] - rad[v:] + m0, mid[v:] + rad[v:] + m0
        else:
            raise Unsupported(f"forward bounds: layer {type(m).__name__} is not supported")
        lo, hi = ibp_layer(m, lo, hi)
    return inputs


def _conv_window(m: nn.Conv2d, x: torch.Tensor, win: tuple[int, int, int, int], out_hw: tuple[int, int],
                 weight: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """The linear part of a plain zero-padded convolution applied to forms that vanish outside the
    window ``win`` (inclusive) of its input: the outputs whose receptive field meets the window,
    computed as the unpadded convolution of the window zero-extended to their receptive fields."""
    y0, y1, x0, x1 = win
    (sy, sx), (py, px), (ky, kx) = m.stride, m.padding, m.kernel_size
    o0 = max(0, -((-(y0 + py - ky + 1)) // sy))
    o1 = min(out_hw[0] - 1, (y1 + py) // sy)
    q0 = max(0, -((-(x0 + px - kx + 1)) // sx))
    q1 = min(out_hw[1] - 1, (x1 + px) // sx)
    pad = (x0 - (q0 * sx - px), q1 * sx - px + kx - 1 - x1, y0 - (o0 * sy - py), o1 * sy - py + ky - 1 - y1)
    return nn.functional.conv2d(nn.functional.pad(x, pad), weight, None, (sy, sx)), (o0, o1, q0, q1)


def _forward_windows(layers: list[nn.Module], inputs: list, ll, uu, cl, cu, zmin, sub, out_of_time, tighten=None):
    """:func:`forward_relu_inputs` through a chain of plain convolutions, ReLUs and per-pixel affine
    maps (:func:`_spatial`) with each variable's forms kept on the window where they can be non-zero:
    a flow variable moves one block of a frame, so its form in a conv layer is supported on that
    block's receptive field (grown by each kernel), a fraction of the frame. Variables are grouped by
    the bounding box of their support; at every ReLU their forms are assembled for the concretisation.
    Updates ``inputs`` in place and returns the dense ``(ll, uu, cl, cu, lo, hi)`` after the chain."""
    v = ll.shape[0]
    sup = ((ll != 0) | (uu != 0)).any(1)
    rows, cols = sup.any(2), sup.any(1)
    boxes: dict[tuple[int, int, int, int], list[int]] = {}
    for i in range(v):
        ys, xs = rows[i].nonzero().flatten(), cols[i].nonzero().flatten()
        if len(ys):  # a variable that touches nothing here keeps zero forms
            boxes.setdefault((int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])), []).append(i)
    groups = []
    for (y0, y1, x0, x1), idx in boxes.items():
        ix = torch.tensor(idx)
        groups.append([(y0, y1, x0, x1), ix, ll[ix][..., y0:y1 + 1, x0:x1 + 1], uu[ix][..., y0:y1 + 1, x0:x1 + 1]])

    def dense():
        dl = torch.zeros(v, *cl.shape[1:], dtype=cl.dtype)
        du = torch.zeros_like(dl)
        for (y0, y1, x0, x1), ix, gl, gu in groups:
            dl[ix, :, y0:y1 + 1, x0:x1 + 1] = gl
            du[ix, :, y0:y1 + 1, x0:x1 + 1] = gu
        return dl, du

    lo, hi = inputs[0]
    for k, m in enumerate(layers):
        if out_of_time is not None and out_of_time():
            raise OutOfTime("the probe passed its deadline")
        if isinstance(m, nn.ReLU):
            lo, hi, (s_up, b_up, alpha) = _relu_input(*dense(), cl, cu, lo, hi, zmin, sub, tighten)
            inputs[k] = (lo, hi)
            for g in groups:
                y0, y1, x0, x1 = g[0]
                g[2], g[3] = g[2] * alpha[..., y0:y1 + 1, x0:x1 + 1], g[3] * s_up[..., y0:y1 + 1, x0:x1 + 1]
            cl, cu = cl * alpha, cu * s_up + b_up
        else:
            inputs[k] = (lo, hi)
            m0 = m(torch.zeros_like(cl))
            mid, rad = m((cl + cu) / 2) - m0, abs_apply(m, (cu - cl) / 2)
            out_hw = mid.shape[-2:]
            cl, cu = mid - rad + m0, mid + rad + m0
            for g in groups:
                x, r = (g[2] + g[3]) / 2, (g[3] - g[2]) / 2
                if isinstance(m, nn.Conv2d):
                    lin, win = _conv_window(m, x, g[0], out_hw, m.weight)
                    rad_g, _ = _conv_window(m, r, g[0], out_hw, m.weight.abs())
                else:  # per pixel
                    lin, win, rad_g = m(x) - m(torch.zeros_like(x)), g[0], abs_apply(m, r)
                g[0], g[2], g[3] = win, lin - rad_g, lin + rad_g
        lo, hi = ibp_layer(m, lo, hi)
    ll, uu = dense()
    return ll, uu, cl, cu, lo, hi


def _window_backward(layers: list[nn.Module], inputs: list, spec: torch.Tensor, win: tuple[int, int, int, int]
                     ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
    """:func:`crown_backward` for rows that only read the positions ``win = (y0, y1, x0, x1)``
    (inclusive) of the last layer's output, through a chain of per-pixel affine maps, ReLUs and
    ``Conv2d`` — on windows: a row of a deep convolutional neuron reads a few input pixels (a layer-2
    neuron of the CNNRecurrent encoder reads 9 × 9 of 64 × 64). A convolution with padding ``P`` is the
    unpadded convolution of the zero-padded input, so the pull-back of a window is the transposed,
    unpadded convolution onto the window ``[y0·S − P, y1·S − P + K − 1]`` (likewise x), whose
    coefficients on padding positions multiply zeros and are dropped. ``spec`` is ``(R, C, h, w)``
    over the window. Returns ``(A, b, window)``: ``A`` over the input window ``(R, C_in, h', w')``."""
    a = spec
    bias = torch.zeros(a.shape[0], dtype=a.dtype)
    y0, y1, x0, x1 = win
    for k in range(len(layers) - 1, -1, -1):
        m, (l, u) = layers[k], inputs[k]
        if isinstance(m, nn.Conv2d):  # plain, zero-padded (:func:`_spatial`)
            if m.bias is not None:
                bias = bias + a.sum((2, 3)) @ m.bias
            (sy, sx), (py, px), (ky, kx) = m.stride, m.padding, m.kernel_size
            a = nn.functional.conv_transpose2d(a, m.weight, stride=(sy, sx))
            y0, y1, x0, x1 = y0 * sy - py, y1 * sy - py + ky - 1, x0 * sx - px, x1 * sx - px + kx - 1
            h, w = l.shape[-2:]
            cy0, cx0 = max(y0, 0), max(x0, 0)
            cy1, cx1 = min(y1, h - 1), min(x1, w - 1)
            a = a[:, :, cy0 - y0:cy1 - y0 + 1, cx0 - x0:cx1 - x0 + 1]
            y0, y1, x0, x1 = cy0, cy1, cx0, cx1
        elif isinstance(m, nn.ReLU):
            s_up, b_up, alpha = relu_relaxation(l[..., y0:y1 + 1, x0:x1 + 1], u[..., y0:y1 + 1, x0:x1 + 1])
            pos, neg = a.clamp_min(0), a.clamp_max(0)
            bias = bias + (neg * b_up).flatten(1).sum(1)
            a = pos * alpha + neg * s_up
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, _Snippet)):  # per-pixel affine maps
            a, b = _pullback(m, a, torch.Size((1, l.shape[1], y1 - y0 + 1, x1 - x0 + 1)))
            bias = bias + b
        else:
            raise Unsupported(f"windowed CROWN: layer {type(m).__name__} is not supported")
    return a, bias, (y0, y1, x0, x1)


def _spatial(layers: list[nn.Module]) -> bool:
    """Can :func:`_window_backward` run this chain: plain zero-padded convolutions, ReLUs and per-pixel
    affine maps (BatchNorm in eval mode, the snippet) only."""
    def ok(m: nn.Module) -> bool:
        if isinstance(m, nn.Conv2d):
            return (m.groups == 1 and m.dilation == (1, 1) and m.padding_mode == "zeros"
                    and not isinstance(m.padding, str))
        return isinstance(m, (nn.ReLU, _Snippet)) or (isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training)
    return all(ok(m) for m in layers)


def _unstable_batches(unstable: torch.Tensor, shape: torch.Size, spatial: bool, chunk: int, tiles: int):
    """Batches of the unstable neurons of one layer for :func:`refine_relu_inputs`: ``(flat indices,
    ±one-hot rows (2n, …), window or None)`` — by spatial tiles on windows, else over the whole layer."""
    if spatial and len(shape) == 4:
        c, gh, gw = shape[1:]
        ty, tx = -(-gh // tiles), -(-gw // tiles)
        grid = unstable.view(c, gh, gw)
        for y0 in range(0, gh, ty):
            for x0 in range(0, gw, tx):
                y1, x1 = min(y0 + ty, gh) - 1, min(x0 + tx, gw) - 1
                cc, yy, xx = grid[:, y0:y1 + 1, x0:x1 + 1].nonzero(as_tuple=True)
                for part in torch.arange(len(cc)).split(chunk) if len(cc) else ():
                    n = len(part)
                    spec = torch.zeros(2 * n, c, y1 - y0 + 1, x1 - x0 + 1, dtype=torch.float64)
                    spec[torch.arange(n), cc[part], yy[part], xx[part]] = 1.0
                    spec[n + torch.arange(n), cc[part], yy[part], xx[part]] = -1.0
                    yield (cc[part] * gh + yy[part] + y0) * gw + xx[part] + x0, spec, (y0, y1, x0, x1)
        return
    idx = unstable.nonzero().flatten()
    for part in idx.split(chunk) if len(idx) else ():  # (an empty batch crashed torch's kernels)
        n = len(part)
        spec = torch.zeros(2 * n, unstable.numel(), dtype=torch.float64)
        spec[torch.arange(n), part] = 1.0
        spec[n + torch.arange(n), part] = -1.0
        yield part, spec, None


def refine_relu_inputs(layers: list[nn.Module], inputs: list, concretize, skip: int = 1, chunk: int = 256,
                       out_of_time=None, tiles: int = 4) -> list:
    """``method="crown++"``: after :func:`forward_relu_inputs`, the input interval of every ReLU but the
    first ``skip`` (the first is already exact there: an affine function of the input) is tightened by
    CROWN back-substitution through the layers before it, for its unstable neurons only, in chunks of
    ``chunk`` rows, concretised over the domain; interval arithmetic is re-run from there, intersected
    with the bounds already known. Backward CROWN keeps each path's lines per sign of its coefficient,
    which forward bounds cannot; it costs one backward pass per unstable neuron. Behind a purely
    convolutional chain the neurons go by spatial tiles (``tiles`` × ``tiles`` of the grid), each
    back-substituted on the input window it reads (:func:`_window_backward`; the same bounds)."""
    inputs = list(inputs)
    relus = [k for k, m in enumerate(layers) if isinstance(m, nn.ReLU)]
    for k in relus[skip:]:
        lo, hi = inputs[k]
        fl, fh = lo.flatten().clone(), hi.flatten().clone()
        batches = _unstable_batches((fl < 0) & (fh > 0), lo.shape, _spatial(layers[:k]), chunk, tiles)
        for flat, spec, win in batches:
            if out_of_time is not None and out_of_time():
                raise OutOfTime("the probe passed its deadline")
            n = len(flat)
            if win is None:
                both = concretize(*crown_backward(layers[:k], spec.to(lo.dtype), inputs[:k]))
            else:
                a, bias, win = _window_backward(layers[:k], inputs[:k], spec.to(lo.dtype), win)
                both = concretize(a, bias, win)
            fl[flat] = torch.maximum(fl[flat], both[:n])
            fh[flat] = torch.minimum(fh[flat], -both[n:])
        lo, hi = fl.view_as(lo), torch.maximum(fh, fl).view_as(hi)
        for j in range(k, len(layers)):
            if j > k and isinstance(layers[j], nn.ReLU):
                lo = torch.maximum(lo, inputs[j][0])
                hi = torch.maximum(torch.minimum(hi, inputs[j][1]), lo)
            inputs[j] = (lo, hi)
            lo, hi = ibp_layer(layers[j], lo, hi)
    return inputs


# -- certification --------------------------------------------------------------------------------
def ball_box(space: FlowSpace, radius: float, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The box enclosing the ball ``‖δ(z)‖_p ≤ radius``: ``|z_i| ≤ radius / w_p``."""
    r = radius / space.weight(metric)
    z = torch.full((space.dims,), r, dtype=torch.float64)
    return -z, z


def min_norm(space: FlowSpace, lo: torch.Tensor, hi: torch.Tensor, metric: str) -> float:
    """The smallest distance ‖δ(z)‖_p over a box (0 if it contains 0)."""
    m = torch.where((lo <= 0) & (hi >= 0), torch.zeros_like(lo), torch.minimum(lo.abs(), hi.abs()))
    return float(space.norm(m, metric))


def certify(model, video: torch.Tensor, space: FlowSpace, radius: float, metric: str = "l2",
            method: str = "crown+", label: int | None = None, diagnose: bool = False, joint: bool = True) -> dict:
    """Is every flow perturbation with ``‖δ‖_p ≤ radius`` safe? (enclosing box, no splitting)

    Returns ``{certified, margin_lower, radius, metric, method, seconds}``: ``certified`` means the
    decision provably does not change (guarantee ``sound``). With ``diagnose``, also ``bounds``
    (the worst-class margin bound of each relaxation the method computes, by name:
    :meth:`ModelBounds.margin_bounds`; ``margin_lower`` is at least the best of them, as it takes the
    best per class) and ``diagnosis`` (:meth:`ModelBounds.diagnosis`). ``joint``: the joint bound of
    the lifted forms on the ball's own box too (:attr:`Domain.dual_pays`; the certifier's crown+ stage
    probes without it).
    """
    check_metric(metric)
    if not radius >= 0:
        raise ParameterError(f"radius must be >= 0, got {radius}")
    t0 = time.perf_counter()
    clf = as_classifier(model)
    if label is None:
        label = clf.fork().predict(space.video)[0]
    mb = ModelBounds(clf, space.video, label, method)
    mb.diagnose = diagnose
    lo, hi = ball_box(space, radius, metric)
    bounds = mb.margin_bounds(Domain(space, lo, hi, radius, metric, joint=joint))
    m = float(mb.best(bounds).min())
    out = {"certified": m > TOL, "margin_lower": m, "radius": radius, "metric": metric, "method": mb.method,
           "seconds": time.perf_counter() - t0, "guarantee": "sound"}
    if diagnose:
        out["bounds"] = {k: float(v.min()) for k, v in bounds.items()}
        out["diagnosis"] = mb.diagnosis()
    return out


class CertifiedRadius:
    """Anytime sound lower bound on the continuous MSR of one FlowSpace: call :meth:`step`.

    Phase 1 searches the radius certified on the enclosing box (no splitting). The default
    ``crown+`` (forward linear intermediate bounds for the CNN) locates it, growing up to 8× per
    success until a probe first fails (85 % of the way to the zero of a concave model of the margin
    bound; up to 64× while the bound is within 0.01 % of the clean margin), then 1.1–2×, and closes
    in to 5 %; with ``refine`` (recurrent models) ``crown++`` (back-substitution for the deeper ReLUs
    too, and the joint concretisation of the lifted forms, :meth:`Domain.zmin_dual`; slower per probe)
    then tries 1.25× of it and closes in to 2 %, growing at most 1.5×. With ``method="crown"``, CROWN
    (interval intermediate bounds) comes first and hands over to ``crown+`` at its first failed
    radius. Between a proved and a failed radius the next probe follows the margin bounds
    (:meth:`_between`). A probe that would pass the time limit is abandoned, proving nothing.
    Phase 2 tries larger radii by branch and bound (:meth:`_bab_box`, one box per step; ℓ1, ℓ2): from the radius the last
    probe failed at, in steps of 1.05×, each box bounded over its intersection with the ball.
    ``lower`` only ever increases; ``trace`` records ``(seconds, lower)``.
    """

    def __init__(self, model, space: FlowSpace, metric: str = "l2", method: str = "crown+",
                 upper: float | None = None, max_boxes: int = 256, refine: bool = True) -> None:
        self.p = check_metric(metric)
        self.clf = as_classifier(model).fork()
        self.space, self.metric = space, metric
        self.label = self.clf.predict(space.video)[0]
        with torch.no_grad():
            self._m0 = float(self.clf.margin_of(self.clf.logits(space.video.unsqueeze(0))[0], self.label))
        self.mb = ModelBounds(self.clf, space.video, self.label, method)
        self.method = method = self.mb.method  # what really runs (c3d: crown for crown+)
        self.mb_nodes = self.mb  # A* node radii keep the fast method
        # the methods still to come, each from what the one before proved: CROWN locates the radius,
        # crown+ (forward intermediate bounds) bisects it, crown++ (…and back-substitution for the
        # deeper ReLUs) tries to raise it
        after = {"crown": ["crown+", "crown++"], "crown+": ["crown++"]}.get(method, [])
        self._stages = after if refine and self.mb.kind == "recurrent" else []
        self._fine = method in ("crown+", "crown++")
        self.upper = upper
        self.max_boxes = max_boxes
        self.lower = 0.0
        self.boxes_checked = 0
        self.t0 = time.perf_counter()
        self.trace: list[dict] = []
        self._hi: float | None = None  # smallest radius that failed (bisection)
        self._bab_fail: float | None = None  # smallest radius branch and bound gave up on
        self._prev_failure: tuple[float, str] | None = None  # (radius, method) the stage before failed at
        self._bab_state: dict | None = None  # branch and bound under way: radius, box stack, splits
        self._m_lo: float | None = None  # the margin bounds of this stage at ``lower`` and ``_hi``
        self._m_hi: float | None = None
        self._wins = 0  # probes proved in a row since the last failure
        self._failed = False  # has any probe failed yet (any stage)?
        self._try = None
        self.phase = "bisect"
        self.done = False
        self.note: str | None = None

    def _box_margin(self, lo: torch.Tensor, hi: torch.Tensor, radius: float) -> float:
        self.boxes_checked += 1
        self.mb.deadline = self._deadline
        # the joint concretisation on the ball's own box only in the last, closing-in stage (crown++):
        # the stages that locate the radius probe faster without it (:meth:`explain` follows the same rule)
        dom = Domain(self.space, lo, hi, radius, self.metric, joint=self.mb.method == "crown++")
        return float(self.mb.margin_lower(dom).min())

    def abandon(self) -> None:
        """Make a probe in flight (another thread) stop at its next check; ``run``/``step`` reset it."""
        self._deadline = -math.inf
        self.mb.deadline = -math.inf

    def _refine(self, start: float) -> bool:
        """Switch the bisection to the next method of ``_stages``, starting at radius ``start``."""
        if not self._stages:
            return False
        nxt = self._stages.pop(0)
        if self._hi is not None:
            self._prev_failure = (self._hi, self.mb.method)
        self._fine = True
        self.mb = ModelBounds(self.clf, self.space.video, self.label, nxt)
        self.method = f"{self.method} → {nxt}"
        self._hi, self._try, self.phase = None, self._cap(start), "bisect"
        self._m_lo = self._m_hi = None  # another method's margins do not predict this one's
        self._wins = 0
        return True

    def around(self, z: torch.Tensor, rho: float) -> bool:
        """Is the ball ``‖δ(z' − z)‖_p ≤ rho`` around the point ``z`` certified (enclosing box, no
        splitting)? The certified radius of an A* node (:mod:`core.msr.astar`, heuristic ``certified``)."""
        z = z.double().cpu()
        lo, hi = ball_box(self.space, rho, self.metric)
        dom = Domain(self.space, z + lo, z + hi, rho, self.metric, centre=z)
        self.boxes_checked += 1
        try:
            return float(self.mb_nodes.margin_lower(dom).min()) > TOL
        except OutOfTime:  # a crown+ probe past the time limit (or stopped): it proves nothing
            return False

    @property
    def failure(self) -> tuple[float, str] | None:
        """``(radius, method)``: the smallest radius above ``lower`` the current stage failed to prove (a
        bisection probe, or branch and bound out of boxes) or is splitting (branch and bound under way:
        its ball failed as one box, or was split unprobed), else the one the stage before failed at;
        ``None`` before any failure. :meth:`explain` probes it again and says where the bound is lost."""
        fails = [r for r in (self._hi, self._bab_fail) if r is not None and r > self.lower]  # (branch and
        if self._bab_state is not None:  # bound may have proved a radius the bisection failed at)
            fails.append(self._bab_state["r"])
        if fails:
            return min(fails), self.mb.method
        prev = self._prev_failure  # (unless this stage has proved that radius since)
        return prev if prev is not None and prev[0] > self.lower else None

    def explain(self) -> dict | None:
        """The probe at :attr:`failure`, exactly as the certifier ran it (same method, same domain), with
        its diagnosis (:func:`certify` with ``diagnose``); ``None`` before any failure."""
        fail = self.failure
        if fail is None:
            return None
        radius, method = fail
        return certify(self.clf, self.space.video, self.space, radius, self.metric, method, label=self.label,
                       diagnose=True, joint=method == "crown++")

    def _record(self) -> None:
        self.trace.append({"seconds": time.perf_counter() - self.t0, "certified_lower": self.lower})

    def _raise(self, r: float) -> None:
        if r > self.lower:
            self.lower = r
            self._record()

    def _cap(self, r: float) -> float:
        return min(r, self.upper) if self.upper is not None else r

    def step(self) -> float:
        """One unit of work (one bisection probe or one branch-and-bound box); returns ``lower``."""
        if self.done:
            return self.lower
        if self.phase == "bisect":
            # first probe: 0.02 px per dimension, shared by the manipulated flows
            first = 0.02 * self.space.weight(self.metric) / max(1, len(getattr(self.space, "flows", [0])))
            r = self._try if self._try is not None else self._cap(first)
            lo, hi = ball_box(self.space, r, self.metric)
            try:
                m = self._box_margin(lo, hi, r)
            except OutOfTime:
                return self.lower  # abandoned at the time limit: nothing proved, nothing lost
            ok = m > TOL
            coarse = self._stages and not self._fine
            if ok:
                self._raise(r)
                self._m_lo, self._wins = m, self._wins + 1
                # no failure yet (a search order only: every radius is still proved by a probe) —
                # CROWN: by the secant of the margin bound through (0, m0) and (r, m), 2× to 8×;
                # crown+/crown++: 85 % of the way to the zero of the concave model m0 − a·r² through
                # (r, m), 1.1× to 8× while nothing has failed yet in any stage (locating the radius; to
                # 64× while the margin bound is within 0.01 % of the clean margin), then to 2× (the last
                # stage, whose probes cost most, to 1.5×)
                if not self._fine:
                    grow = min(8.0, max(2.0, self._m0 / max(self._m0 - m, 1e-12))) if self._m0 > m else 8.0
                else:
                    most = 8.0 if not self._failed else (2.0 if self._stages else 1.5)
                    if not self._failed and self._m0 - m < 1e-4 * abs(self._m0):
                        most = 64.0  # the bound has barely moved: the first probes are far below the radius
                    grow = min(most, max(1.1, 0.85 * math.sqrt(self._m0 / (self._m0 - m)))) if self._m0 > m else most
                nxt = r * grow if self._hi is None else self._between()
            else:
                self._wins, self._failed = 0, True
                if self._hi is None or r <= self._hi:
                    self._hi, self._m_hi = r, m
                nxt = self._between() if self.lower > 0 else r / 4
                if coarse and self.lower > 0 and self._refine(self._cap(r)):
                    # CROWN only locates the radius: at its first failure crown+ (tighter) takes over
                    # from that very radius (the probes between would cost more than they tell)
                    return self.lower
            # crown+ closes in to 5 % before crown++ tries 1.25× that; the last to 2 %
            tol = 1 / 3 if coarse else (0.05 if self._stages else 0.02)
            if self._hi is not None and (self._hi - self.lower) <= tol * max(self._hi, 1e-9):
                if self.lower > 0 and self._refine(self._cap(self.lower * (2.0 if coarse else 1.25))):
                    return self.lower
                self.phase, self._try = ("bab" if math.isfinite(self.p) else "done"), None
                if self.phase == "done":
                    self.done = True
                return self.lower
            if self.upper is not None and nxt >= self.upper:
                nxt = (self.lower + self.upper) / 2
            if self.lower == 0 and nxt < 1e-5 * self.space.weight(self.metric):
                if self._refine(first):
                    return self.lower
                # not even a displacement of 1/100 000 px per dimension can be certified: stop, say why
                self.phase, self.done = "none", True
                self.note = ("no radius could be certified: the relaxation is too loose for this space "
                             "(the bounds through the per-frame CNN and the recurrent head over many perturbed steps)")
                return self.lower
            self._try = nxt
            return self.lower
        # branch and bound a little above the certified radius (ℓ1, ℓ2), one box per step
        if self._bab_state is None and not self._bab_begin():
            self.done = True
            return self.lower
        try:
            self._bab_box()
        except OutOfTime:
            pass  # the box whose probe was cut off is back on the stack: nothing proved, nothing lost
        return self.lower

    def _between(self) -> float:
        """The next radius between ``lower`` (proved) and ``_hi`` (failed): 85 % of the way to where
        the line through their margin bounds crosses zero (regula falsi; the margin bound falls ever
        faster with the radius, so the crossing itself tends to fail, and a failed probe proves
        nothing) — after k proofs in a row the failed end's margin counts 2^−k (the Illinois rule:
        no creeping up from below) — kept in the middle 80 % of the gap; the bisection midpoint when
        a margin is unknown and in the coarse CROWN stage. Only a search order: the radius is then
        proved by a probe."""
        lo, hi = self.lower, self._hi
        if not self._fine or self._m_lo is None or self._m_hi is None or not self._m_lo > TOL > self._m_hi:
            return (lo + hi) / 2  # CROWN's margin bounds collapse to interval ones: no line to follow
        m_hi = self._m_hi / 2 ** self._wins
        at = lo + (0.85 if self._wins == 0 else 1.0) * (hi - lo) * self._m_lo / (self._m_lo - m_hi)
        return min(max(at, lo + 0.1 * (hi - lo)), hi - 0.1 * (hi - lo))

    def describe(self) -> str:
        """What the next step does, in a few words (the live page's progress line)."""
        if self.done:
            return f"{self.method}: done"
        if self.phase == "bisect":
            return f"{self.method}: first probe" if self._try is None else f"{self.method}: probing radius {self._try:.4g}"
        st = self._bab_state
        if st is None:
            return f"{self.method}: branch and bound"
        return f"{self.method}: branch and bound at radius {st['r']:.4g} (boxes open: {len(st['stack'])})"

    def _bab_begin(self) -> bool:
        """Pick the next branch-and-bound radius and put its ball's box on the stack (False: none
        left to try). First the radius the last bisection probe failed at (its root box is known to
        fail: it is split at once) when that is within 1.05×, then 1.05× after every success (a box
        costs a probe: small steps pay); after a failure (more boxes than ``max_boxes``) halfway
        between the certified radius and the failed one, until they are within 1 %."""
        base = self.lower if self.lower > 0 else (self._hi or 1.0) / 2
        r = self._cap(base * 1.05)
        if self._hi is not None and base < self._hi < r:
            r = self._hi
        elif self._bab_fail is not None:
            if self._bab_fail <= base * 1.01:
                return False
            r = min(r, (base + self._bab_fail) / 2)
        if self.upper is not None and r <= self.lower:
            return False
        lo, hi = ball_box(self.space, r, self.metric)
        self._bab_state = {"r": r, "stack": [(lo, hi, r == self._hi)], "splits": 0}
        return True

    def _bab_box(self) -> None:
        """One box of branch and bound at the current radius (boxes that miss the ball are dropped
        on the way): certified, or split in two along the coordinate with the largest
        ``width × |∂m/∂z|`` at its centre, depth first. Each box is bounded over its intersection
        with the ball (:meth:`Domain.zmin_dual`). An empty stack proves the radius; more than
        ``max_boxes`` splits give it up. A probe cut off by the deadline (``OutOfTime``) leaves its
        box on the stack."""
        st = self._bab_state
        r, stack = st["r"], st["stack"]
        while stack:
            lo, hi, known = stack.pop()
            if min_norm(self.space, lo, hi, self.metric) > r:
                continue  # misses the ball
            if not known:
                try:
                    m = self._box_margin(lo, hi, r)
                except OutOfTime:
                    stack.append((lo, hi, known))
                    raise
                if m > TOL:
                    break  # certified: one probe done
            st["splits"] += 1
            if st["splits"] > self.max_boxes:  # more splits than the budget allows: give the radius up
                self._bab_fail, self._hi, self._bab_state = r, None, None
                return
            c = (lo + hi) / 2
            g = self._grad(c)
            i = int(((hi - lo) * g.abs()).argmax()) if float(g.abs().max()) > 0 else int((hi - lo).argmax())
            mid = float(c[i])
            hi1, lo2 = hi.clone(), lo.clone()
            hi1[i], lo2[i] = mid, mid
            stack += [(lo, hi1, False), (lo2, hi, False)]
            if not known:
                break  # one probe done
        if not any(min_norm(self.space, lo, hi, self.metric) <= r for lo, hi, _ in stack):
            self._bab_state = None  # every box of the ball certified
            self._raise(r)

    def _grad(self, z: torch.Tensor) -> torch.Tensor:
        from core.msr.space import Evaluator

        if not hasattr(self, "_ev"):
            self._ev = Evaluator(self.clf, self.space)
        return self._ev.margin_and_grad(z)[1]

    _deadline = math.inf

    def run(self, time_limit: float = 60.0, callback=None) -> dict:
        end = time.perf_counter() + time_limit
        self._deadline = end
        while not self.done and time.perf_counter() < end:
            self.step()
            if callback:
                callback(self.result())
        return self.result()

    def result(self) -> dict:
        return {"certified_lower": self.lower, "guarantee": "sound", "seconds": time.perf_counter() - self.t0,
                "trace": list(self.trace), "boxes": self.boxes_checked, "method": self.method,
                "metric": self.metric, "phase": self.phase, "note": self.note}


__all__ = ["CertifiedRadius", "ModelBounds", "OutOfTime", "TOL", "Unsupported", "ball_box", "certify", "min_norm", "supported",
           "warp_bounds"]
