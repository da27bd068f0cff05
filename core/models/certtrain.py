"""Certified training of ``cnn_lstm`` against flow manipulations.

``python -m core train --model cnn_lstm --certified`` fine-tunes the shipped regular model and
writes ``cnn_lstm_certified`` (weights + model card). Two threats (``--threat``):

**ball** (the shipped ``cnn_lstm_certified`` since 2026-11-23: box run → ball ℓ2 8 → three ball ℓ2 12
runs, each ``--init`` the one before; README): the threat the certificate is asked about — the ℓ2 ball of the 16-px
block shifts of *every* flow (the Safe radius page's defaults), of radius ``radius`` in the page's
flow distance (``‖δ‖₂ = 16‖z‖₂``). :func:`ball_train_bounds` bounds the margins over it jointly:

* each imposed frame near ``z = 0`` as ``x_t(z) ≈ x_t + g_t·z + k_t·|z|`` (:func:`shift_forms`: the
  linear and kink parts of the verifier's lifted forms);
* zonotope forms ``c + a·ζ ± e`` with DeepZ's transformers (Singh et al., NeurIPS 2018) through the
  per-frame CNN (:func:`zono_chain`) and the LSTM (:func:`zono_lstm`; products
  ``x·y = m_y x + m_x y − m_x m_y ± r_x r_y``);
* the ``D = 480`` shift variables (and their absolute values) carried in Gaussian sketches of ``k = 8``
  columns each: linear maps commute with them and ``min_{‖z‖₂ ≤ ρ} a·z = −ρ‖a‖₂ ≈ −ρ‖aΞ‖₂/√k`` — the
  cost of ``2k + 1`` forward passes. An estimate, not a certificate (the certificates come from
  :mod:`core.verify`); with ``sketch=None`` it is exact and sound for the linearised threat (tested).

**Why the recurrent matrix is held at 0.** The interval part of the hidden state re-enters the gates
through ``|U|`` at every step: on the box-trained model the zonotope bound doubled the
cell-state width at every step and collapsed at ℓ2 1 (−1.8 against a clean margin of 1.69), and the
verifier's own cell-state intervals were ≈ 20× the range a search finds. With ``U = 0`` the gates
see the current step only; the cell still integrates over time (``c_t = f_t c_{t−1} + i_t g_t``) and the
relaxations no longer compound (untrained, ``U = 0`` alone kept the bound at +0.11 at ℓ2 7.1).
Objective, with the mean widths ``w_f`` (features), ``w_g`` (gate pre-activations), ``w_c`` (cells):

    L = CE(z(x), y) + λ_f log(1 + w_f/0.02) + λ [log(1 + w_g/2) + log(1 + w_c)] + β·ρ·CE(ẑ, y),

the radius and ``ρ`` ramped from 0 over the first half of the steps, the best validation state after
the ramp kept; ``λ = 0.5``, ``λ_f = 0``, ``β = 0.25``, 800 steps of 8 clips, Adam 3·10⁻⁴.

**box** (default; the first step of the shipped model's chain, shipped alone until 2026-11-23 and kept
in ``assets/candidates/box``): frame ``t ≥ 1`` re-sampled at a shift of at most ``κ`` ≤ 1 px
in x and y. A bilinear, border-padded sample at such a shift is a convex combination of the 3 × 3
window around the pixel (replicate padding) in which the pixel itself keeps weight
``(1 − |s_x|)(1 − |s_y|) ≥ (1 − κ)²``, so with ``w = 1 − (1 − κ)²``

    x_t ∈ [x_t − w (x_t − minpool₃(x_t)),  x_t + w (maxpool₃(x_t) − x_t)]            (window box)

holds every frame imposed at shifts ``|s_x|, |s_y| ≤ κ`` (tested by sampling). Interval bounds go
through the frame-difference snippet, the per-frame CNN (BatchNorm statistics frozen: an affine map)
and the LSTM (:func:`core.verify.bounds.recurrent_ibp`); the worst-case logits
``ẑ_j = −lower(z_y − z_j)`` give the robust loss. Plain IBP training never started (the LSTM's gates
saturate, so the IBP loss has no gradient), hence width regularisers in the spirit of Shi et al.
(NeurIPS 2021): ``L = CE + λ [log(1 + w_f / (10 κ)) + log(1 + w_g)] + β·ρ·CE(ẑ(box), y)``.

Both: BatchNorm statistics frozen; fine-tuned from the regular weights (cost-saving choice). The card
reports clean test accuracy and the **sound certified flow radius** (CROWN + branch and bound,
:class:`core.verify.CertifiedRadius`) of this and the regular model on the same test clips. A
checkpoint is written every 100 steps (``ckpt_every``); an interrupted run resumes from it.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.data import CLASSES
from core.device import DeviceLike
from core.errors import ParameterError
from core.models.registry import ARCHITECTURES, ASSETS, load_model

CERTIFIABLE = ("cnn_lstm",)


def window_box(x: torch.Tensor, kappa: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, C, H, W)`` → ``(lo, hi)``: a box holding every clip whose frames ``t ≥ 1`` are re-imposed
    (bilinear, border padding) at shifts of at most ``kappa`` ≤ 1 px per axis; frame 0 stays a point."""
    if x.dim() != 5:
        raise ParameterError(f"expected (B, T, C, H, W), got {tuple(x.shape)}")
    if not 0 <= kappa <= 1:
        raise ParameterError(f"kappa must be in [0, 1] px, got {kappa!r}")
    b, t, c, h, w = x.shape
    wgt = 1.0 - (1.0 - kappa) ** 2
    f = F.pad(x[:, 1:].reshape(-1, c, h, w), (1, 1, 1, 1), mode="replicate")
    hi = F.max_pool2d(f, 3, 1).view(b, t - 1, c, h, w)
    lo = -F.max_pool2d(-f, 3, 1).view(b, t - 1, c, h, w)
    cur = x[:, 1:]
    lo = torch.cat([x[:, :1], cur - wgt * (cur - lo)], 1)
    hi = torch.cat([x[:, :1], cur + wgt * (hi - cur)], 1)
    return lo, hi


def ibp_train_bounds(net: nn.Module, lo: torch.Tensor, hi: torch.Tensor, y: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interval propagation of a ``CNNRecurrent`` over the input box (differentiable).

    Returns:
        ``(margins (B, K), feature width, gate width)``: lower bounds of ``z_y − z_j`` (0 at ``j = y``),
        the mean width of the features entering the recurrent head and the mean width of its gate
        pre-activations.
    """
    from core.models.nets import CNNRecurrent
    from core.verify.bounds import flatten_chain, ibp, margin_lower_rows, recurrent_ibp

    if not isinstance(net, CNNRecurrent):
        raise ParameterError(f"certified training supports the CNN + recurrent models, got {type(net).__name__}")
    b, t = lo.shape[:2]
    prev = [0, *range(t - 1)]
    zero = torch.zeros_like(lo[:, :1])
    d_lo = torch.cat([zero, (lo - hi[:, prev])[:, 1:]], 1)  # step 0: frame 0 minus itself = 0
    d_hi = torch.cat([zero, (hi - lo[:, prev])[:, 1:]], 1)
    s_lo = torch.cat([lo, d_lo], 2).flatten(0, 1)
    s_hi = torch.cat([hi, d_hi], 2).flatten(0, 1)
    chain = flatten_chain(net.encoder.body) + flatten_chain(net.encoder.proj)
    (fl, fh), _ = ibp(chain, s_lo, s_hi)
    fl, fh = fl.view(b, t, -1), fh.view(b, t, -1)
    widths: list[torch.Tensor] = []
    h = recurrent_ibp(net.rnn, [(fl[:, s], fh[:, s]) for s in range(t)], pre_widths=widths)
    marg = margin_lower_rows(h, net.fc, y)
    gate = torch.stack(widths).mean() if widths else torch.zeros((), dtype=lo.dtype)
    return marg, (fh - fl).mean(), gate


# -- the flow-ball threat: sketched zonotopes (``threat="ball"``) -------------------------------------
def shift_forms(x: torch.Tensor, block: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, C, H, W)`` → ``(g, k)``, each ``(B, T, 2, C, H, W)``: every imposed frame ``t ≥ 1`` near
    ``z = 0`` as ``x_t(z) ≈ x_t + g·z + k·|z|`` per block shift (x, y) — the linear and the kink part of
    the verifier's lifted forms (:class:`core.verify.certify.WarpLift`: exact up to the cross term within
    one pixel), from the engine's own warp at ±1 px (border padding, clamped to [0, 1]):
    ``g = −(p(+1) − p(−1))/2`` (``z = −s``), ``k = (p(+1) + p(−1))/2 − p(0)``. Frame 0 is never imposed (zero)."""
    from core.verify.certify import AXIS_SHIFTS, lift_slopes, unit_shifts

    if x.dim() != 5:
        raise ParameterError(f"expected (B, T, C, H, W), got {tuple(x.shape)}")
    b, t, c, h, w = x.shape
    if h % block or w % block:
        raise ParameterError(f"block {block} must divide the frame size {h}×{w}")
    g, k = lift_slopes(unit_shifts(x[:, 1:].reshape(-1, c, h, w), AXIS_SHIFTS))

    def per_frame(v: torch.Tensor) -> torch.Tensor:
        v = v.view(b, t - 1, 2, c, h, w)
        return torch.cat([torch.zeros_like(v[:, :1]), v], 1)

    return per_frame(g), per_frame(k)


Radius = float | tuple[float, int]  # :func:`_rad`


def _rad(a: torch.Tensor, r: Radius) -> torch.Tensor:
    """``r‖a‖₂`` over the sketch columns (axis 1): ``ρ‖a‖₂`` when ``r = ρ/√k`` for a Gaussian sketch
    (``E‖aΞ‖² = k‖a‖²``), exactly when ``r = ρ`` and ``Ξ = I``. With ``r = (r, k)`` the first ``k``
    columns sketch ``z`` and the others ``|z|``, each in the ball (``‖|z|‖₂ = ‖z‖₂``): ``r(‖a_z‖ + ‖a_u‖)``."""
    if isinstance(r, tuple):
        r, k = r
        return r * (a[:, :k].norm(dim=1) + a[:, k:].norm(dim=1))
    return r * a.norm(dim=1)


Zono = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _zono_linear(x: Zono, w: torch.Tensor, b: torch.Tensor | None = None) -> Zono:
    """``y = W x + b`` on the last axis: ``c' = Wc + b``, ``a' = W a``, ``e' = |W| e`` (tight: the vertex
    ``sign(W_j)`` of the error box reaches ``e'_j``)."""
    c, a, e = x
    return F.linear(c, w, b), F.linear(a, w), F.linear(e, w.abs())


def zono_chain(layers: list[nn.Module], c: torch.Tensor, a: torch.Tensor, e: torch.Tensor, r: Radius
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Zonotope forms ``x = c + a·ζ ± e`` through a CNN chain (Conv2d, Linear, BatchNorm2d in eval, ReLU,
    AdaptiveAvgPool2d, Flatten): ``c, e (N, …)``, ``a (N, k, …)``. Affine maps act on ``c`` and ``a`` and
    on ``e`` by ``|W|``; an unstable ReLU on ``[l, u]`` is DeepZ's ``λx + μ ± μ``, ``λ = u/(u − l)``,
    ``μ = −λl/2`` (Singh et al., NeurIPS 2018, Thm. 3.1). Returns the output forms and, per ReLU, the
    share of unstable neurons."""
    k = a.shape[1]
    unstable = []
    for m in layers:
        if isinstance(m, nn.Linear):
            c, a, e = _zono_linear((c, a, e), m.weight, m.bias)
        elif isinstance(m, nn.Conv2d):
            def conv(x: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor | None = None, m: nn.Conv2d = m) -> torch.Tensor:
                return F.conv2d(x, wt, bias, m.stride, m.padding, m.dilation, m.groups)
            n = c.shape[0]
            c, e = conv(c, m.weight, m.bias), conv(e, m.weight.abs())
            a = conv(a.reshape(n * k, *a.shape[2:]), m.weight)
            a = a.view(n, k, *a.shape[1:])
        elif isinstance(m, nn.BatchNorm2d):
            s = m.weight / torch.sqrt(m.running_var + m.eps)
            sh = (1, -1, 1, 1)
            c, e, a = s.view(sh) * c + (m.bias - m.running_mean * s).view(sh), s.abs().view(sh) * e, s.view(1, 1, -1, 1, 1) * a
        elif isinstance(m, nn.ReLU):
            rr = _rad(a, r) + e
            lo, hi = c - rr, c + rr
            act, unst = lo >= 0, (lo < 0) & (hi > 0)
            unstable.append(unst.float().mean())
            lam = torch.where(unst, hi / (hi - lo).clamp_min(1e-12), act.to(c.dtype))
            mu = torch.where(unst, -lam * lo / 2, torch.zeros_like(c))
            c, e, a = lam * c + mu, lam * e + mu, lam.unsqueeze(1) * a
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            n = c.shape[0]
            c, e = F.adaptive_avg_pool2d(c, m.output_size), F.adaptive_avg_pool2d(e, m.output_size)
            a = F.adaptive_avg_pool2d(a.reshape(n * k, *a.shape[2:]), m.output_size)
            a = a.view(n, k, *a.shape[1:])
        elif isinstance(m, nn.Flatten):
            c, e, a = c.flatten(1), e.flatten(1), a.flatten(2)
        else:
            raise ParameterError(f"the flow-ball bound does not relax {type(m).__name__}")
    return c, a, e, unstable


def _zono_s(fn, dfn, x: Zono, r: Radius) -> tuple[Zono, tuple[torch.Tensor, torch.Tensor]]:
    """DeepZ's sigmoid/tanh: on ``[l, u]``, ``fn(x) ∈ λx + μ₁ ± μ₂`` with ``λ = min(fn'(l), fn'(u))``,
    ``μ₁ = (fn(u) + fn(l) − λ(u + l))/2``, ``μ₂ = (fn(u) − fn(l) − λ(u − l))/2``. Also returns ``fn``'s range."""
    c, a, e = x
    rr = _rad(a, r) + e
    lo, hi = c - rr, c + rr
    flo, fhi = fn(lo), fn(hi)
    lam = torch.minimum(dfn(lo), dfn(hi))
    mu1, mu2 = (fhi + flo - lam * (hi + lo)) / 2, (fhi - flo - lam * (hi - lo)) / 2
    return (lam * c + mu1, lam.unsqueeze(1) * a, lam * e + mu2), (flo, fhi)


def _zono_mul(x: Zono, y: Zono, bx: tuple[torch.Tensor, torch.Tensor], by: tuple[torch.Tensor, torch.Tensor]) -> Zono:
    """``x·y = m_y x + m_x y − m_x m_y + (x − m_x)(y − m_y)`` with midpoints ``m`` of the ranges ``bx, by``:
    the last term lies in ``±r_x r_y`` (half-widths)."""
    mx, my = (bx[0] + bx[1]) / 2, (by[0] + by[1]) / 2
    return (my * x[0] + mx * y[0] - mx * my, my.unsqueeze(1) * x[1] + mx.unsqueeze(1) * y[1],
            my.abs() * x[2] + mx.abs() * y[2] + (bx[1] - bx[0]) * (by[1] - by[0]) / 4)


def _zono_box(x: Zono, r: Radius) -> tuple[torch.Tensor, torch.Tensor]:
    rr = _rad(x[1], r) + x[2]
    return x[0] - rr, x[0] + rr


def zono_lstm(rnn: nn.LSTM, steps: list[Zono], r: Radius) -> tuple[Zono, torch.Tensor, torch.Tensor]:
    """The LSTM (gate order i, f, g, o) over zonotope inputs ``steps[t] = (c (B, F), a (B, k, F), e (B, F))``.
    Returns the last hidden state's forms and the mean width of the gate pre-activations and of the
    cell states over the steps. The interval part ``e`` of ``h`` re-enters the gates through ``|U|`` at
    every step (the compounding that certified training must keep small)."""
    from core.verify.bounds import _dsig, _dtanh

    w, u, bias = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0
    hid = u.shape[1]
    c0, a0, _ = steps[0]
    zero = c0.new_zeros(c0.shape[0], hid)
    h: Zono = (zero, a0.new_zeros(a0.shape[0], a0.shape[1], hid), zero)
    cell: Zono = h
    cbox = (zero, zero)
    gate_w, cell_w = [], []
    for xc, xa, xe in steps:
        pin, prec = _zono_linear((xc, xa, xe), w, bias), _zono_linear(h, u)
        p = (pin[0] + prec[0], pin[1] + prec[1], pin[2] + prec[2])
        plo, phi = _zono_box(p, r)
        gate_w.append((phi - plo).mean())
        gates = []
        for j in range(4):
            sl = slice(j * hid, (j + 1) * hid)
            fn, dfn = (torch.tanh, _dtanh) if j == 2 else (torch.sigmoid, _dsig)
            gates.append(_zono_s(fn, dfn, (p[0][:, sl], p[1][..., sl], p[2][:, sl]), r))
        (gi, bi), (gf, bf), (gg, bg), (go, bo) = gates
        fc, ig = _zono_mul(gf, cell, bf, cbox), _zono_mul(gi, gg, bi, bg)
        cell = (fc[0] + ig[0], fc[1] + ig[1], fc[2] + ig[2])
        cbox = _zono_box(cell, r)
        cell_w.append((cbox[1] - cbox[0]).mean())
        tc, bt = _zono_s(torch.tanh, _dtanh, cell, r)
        h = _zono_mul(go, tc, bo, bt)
    return h, torch.stack(gate_w).mean(), torch.stack(cell_w).mean()


def ball_train_bounds(net: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: float, sketch: int | None = 8,
                      block: int = 16, generator: torch.Generator | None = None, kinks: bool = True,
                      signs: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Estimated lower bounds of ``z_y − z_j`` over the **ℓ2 ball of block shifts** of radius ``radius``
    (in the flow distance of the Safe radius page: ``‖δ‖₂ = block · ‖z‖₂``) moving every frame ``t ≥ 1``.

    The threat the certificate is asked about, jointly over all ``D = 2 (T − 1) (H/block)(W/block)``
    shift variables, at the cost of ``sketch + 1`` forward passes of the CNN:

    * every imposed frame as ``x_t(z) ≈ x_t + g_t·z + k_t·|z|`` (:func:`shift_forms`; with ``kinks=False``
      the linear part only), the cross term within a pixel cell dropped;
    * forms carried in Gaussian sketches ``Ξᵀz`` and ``Ξ'ᵀ|z|``, ``Ξ ∈ ℝ^{D×k}`` i.i.d. N(0, 1), fresh per
      call: linear maps commute with them, so ``a·Ξ`` propagates exactly, and ``min_{‖z‖₂ ≤ ρ} a·z + b·|z|
      ≥ −ρ(‖a‖₂ + ‖b‖₂)`` is estimated by ``ρ(‖aΞ‖₂ + ‖bΞ'‖₂)/√k`` (Johnson–Lindenstrauss);
    * zonotope (DeepZ) transformers through the CNN (:func:`zono_chain`) and the LSTM (:func:`zono_lstm`).

    An **estimate, not a certificate** (the sketch, the dropped cross term): a training signal that sees the
    ball's geometry, where the window box (:func:`window_box`) sees a pixel box. With ``sketch=None``
    the sketch is the identity (one column per variable): then the bound is sound for the threat
    ``x_t + g_t·z + k_t·|z|`` (the tests check it against sampled and worst-direction points). The certificates come
    from :mod:`core.verify`. With ``signs`` ``(B, T, 2, H/block, W/block)`` of ±1 the bound is over one orthant
    of the shifts (``s_i z_i ≥ 0``, e.g. :func:`adversarial_orthant`), where the frames are linear,
    ``x_t + (g_t + s·k_t)·z``: with ``sketch=None`` sound there (tested), not over the ball.
    Returns ``(margins (B, K), widths)`` with ``widths`` = mean ``feature``,
    ``gate`` and ``cell`` widths and the share of ``unstable`` ReLUs of the CNN."""
    from core.models.nets import CNNRecurrent
    from core.verify.bounds import flatten_chain

    if not isinstance(net, CNNRecurrent) or not isinstance(net.rnn, nn.LSTM):
        raise ParameterError(f"the flow-ball bound supports the CNN + LSTM model, got {type(net).__name__}")
    if radius < 0 or (sketch is not None and sketch < 1):
        raise ParameterError(f"radius must be >= 0 and sketch >= 1 (or None), got {radius!r}, {sketch!r}")
    b, t, _, hh, ww = x.shape
    gh, gw = hh // block, ww // block
    if signs is not None:  # one orthant: there x_t(z) = x_t + (g + s·k)·z, linear (the ball around it: an outer bound)
        if signs.shape != (b, t, 2, gh, gw):
            raise ParameterError(f"signs must be (B, T, 2, H/block, W/block) = {(b, t, 2, gh, gw)}, got {tuple(signs.shape)}")
        g, k = shift_forms(x, block)
        up = signs.to(x.dtype).repeat_interleave(block, -2).repeat_interleave(block, -1).unsqueeze(3)
        parts, kinks = (g + up * k,), False
    else:
        parts = shift_forms(x, block) if kinks else shift_forms(x, block)[:1]
    if sketch is None:  # Ξ = I: one column per shift variable of frames 1 … T−1 (exact, for tests)
        d = (t - 1) * 2 * gh * gw
        eye = torch.zeros(t, d, 2 * gh * gw, dtype=x.dtype, device=x.device)
        eye[1:].view(t - 1, d, -1).copy_(torch.eye(d, dtype=x.dtype).view(t - 1, 2 * gh * gw, d).transpose(1, 2))
        xis = [eye.view(1, t, d, 2, gh, gw).expand(b, -1, -1, -1, -1, -1)] * len(parts)
        sketch, r = d, radius / block
    else:
        xis = [torch.randn(b, t, sketch, 2, gh, gw, generator=generator, dtype=x.dtype, device=x.device)
               for _ in parts]  # independent sketches of z and |z|
        r = radius / block / math.sqrt(sketch)
    dirs = torch.cat([(xi.repeat_interleave(block, -2).repeat_interleave(block, -1).unsqueeze(4) * v.unsqueeze(2)).sum(3)
                      for xi, v in zip(xis, parts)], 2)  # (B, T, k·parts, C, H, W): frame t along Ξ's rows
    cols = dirs.shape[2]
    if kinks:
        r = (r, sketch)
    prev = [0, *range(t - 1)]
    dprev = torch.cat([torch.zeros_like(dirs[:, :1]), dirs[:, prev[1:]]], 1)
    centre = torch.cat([x, x - x[:, prev]], 2)  # the snippet [cur, cur − prev]; step 0: cur − cur = 0
    a = torch.cat([dirs, dirs - dprev], 3)  # its forms: frame s's and frame s−1's variables
    chain = flatten_chain(net.encoder.body) + flatten_chain(net.encoder.proj)
    fc, fa, fe, unstable = zono_chain(chain, centre.flatten(0, 1), a.flatten(0, 1), torch.zeros_like(centre.flatten(0, 1)), r)
    flo, fhi = _zono_box((fc, fa, fe), r)
    fc, fa, fe = fc.view(b, t, -1), fa.view(b, t, cols, -1), fe.view(b, t, -1)
    h, gate_w, cell_w = zono_lstm(net.rnn, [(fc[:, s], fa[:, s], fe[:, s]) for s in range(t)], r)
    wd = net.fc.weight[y].unsqueeze(1) - net.fc.weight.unsqueeze(0)  # (B, K, H): rows of z_y − z_j
    bd = net.fc.bias[y].unsqueeze(1) - net.fc.bias.unsqueeze(0)
    marg = ((wd * h[0].unsqueeze(1)).sum(-1) + bd - _rad(torch.einsum("bkh,bjh->bkj", h[1], wd), r)
            - (wd.abs() * h[2].unsqueeze(1)).sum(-1))
    widths = {"feature": (fhi - flo).mean(), "gate": gate_w, "cell": cell_w,
              "unstable": torch.stack(unstable).mean() if unstable else x.new_zeros(())}
    return marg, widths


def adversarial_orthant(net: nn.Module, x: torch.Tensor, y: torch.Tensor, block: int = 16) -> torch.Tensor:
    """``(B, T, 2, H/block, W/block)`` signs ``s`` of the orthant of block shifts in which the clean loss rises
    fastest to first order: with ``x_t(z) = x_t + g·z + k·|z|`` and ``∇`` the loss gradient at the clip,
    ``z_i = s_i t_i`` changes the loss by ``(s_i ∇·g_i + ∇·k_i) t_i``, so ``s_i = sign(∇·g_i)``."""
    b, t, _, hh, ww = x.shape
    xx = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(F.cross_entropy(net(xx), y, reduction="sum"), xx)
    g, _ = shift_forms(x.detach(), block)
    alpha = (grad.unsqueeze(2) * g).sum(3).view(b, t, 2, hh // block, block, ww // block, block).sum((4, 6))
    return torch.where(alpha >= 0, 1.0, -1.0).to(x.dtype)


def _frozen_bn(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
        if isinstance(m, nn.ReLU):
            m.inplace = False  # the interval pass needs both ends


def certified_radius_stats(models: dict[str, nn.Module], videos: torch.Tensor, labels: torch.Tensor,
                           flows: list[int], time_limit: float, block: int = 16, metric: str = "l2",
                           log: Callable[[str], None] | None = None) -> dict:
    """Sound certified radius (:class:`core.verify.CertifiedRadius`) of each model on the clips that
    every model classifies correctly: ``{name: {median, mean, min, max, radii}}`` plus the space."""
    from core.classifier import as_classifier
    from core.msr.space import FlowSpace
    from core.verify import CertifiedRadius

    clfs = {n: as_classifier(m.eval()) for n, m in models.items()}
    radii: dict[str, list[float]] = {n: [] for n in models}
    used = 0
    for v, y in zip(videos, labels):
        if any(c.predict(v)[0] != int(y) for c in clfs.values()):
            continue
        used += 1
        for n, c in clfs.items():
            r = CertifiedRadius(c, FlowSpace(v, flows=flows, block=block), metric).run(time_limit)["certified_lower"]
            radii[n].append(round(r, 5))
            if log:
                log(f"certified radius, clip {used}, {n}: {r:.4g}")
    out: dict = {"space": {"flows": flows, "block": block, "metric": metric}, "time_limit_s": time_limit,
                 "clips": used, "guarantee": "sound"}
    for n, rs in radii.items():
        out[n] = ({"median": statistics.median(rs), "mean": round(statistics.fmean(rs), 5), "min": min(rs),
                   "max": max(rs), "radii": rs} if rs else {"radii": []})
    return out


THREATS = ("ball", "box")
# per threat: steps, batch size, learning rate, β (robust-loss weight)
_DEFAULTS = {"ball": (800, 8, 3e-4, 0.25), "box": (3000, 16, 5e-4, 0.5)}


def certified_train(base: str = "cnn_lstm", threat: str = "box", flow_px: float = 0.05, radius: float = 8.0,
                    steps: int | None = None, lam: float = 0.5, lam_f: float = 0.0, beta: float | None = None,
                    sketch: int = 8, zero_recurrent: bool = True, orthant: bool = False, init: str | None = None, n_train: int = 1600,
                    n_val: int = 200, n_test: int = 400, lr: float | None = None, batch_size: int | None = None, seed: int = 0,
                    out_dir: Path = ASSETS, device: DeviceLike = None, cert_clips: int = 8, cert_time: float = 20.0,
                    resume: bool = True, ckpt_every: int = 100, progress: Callable[[str], None] | None = print) -> dict:
    """Certifiably train ``base``; write ``{base}_certified`` and return its card (module docstring:
    objectives, schedules, cost-saving choices).

    ``threat="box"`` (default; the shipped model's first step): the window box of shifts ≤ ``flow_px`` px on every
    frame (IBP). ``threat="ball"``: the ℓ2 ball of block shifts of radius ``radius`` (16-px blocks, every
    flow; :func:`ball_train_bounds`, ``sketch`` columns), the recurrent matrix held at 0 with
    ``zero_recurrent``; with ``orthant`` each clip's bound is over the orthant of block shifts in which its
    loss rises fastest (:func:`adversarial_orthant`), where the warp is linear, instead of the whole ball
    with its kinks sketched apart.
    ``steps``, ``batch_size``, ``lr`` and ``beta`` default per threat (``_DEFAULTS``). ``init``: the
    weights to start from: a shipped name or ``DIR/NAME.pt`` written with ``out_dir`` (default ``base``, the
    regular model)."""
    from core.models.advtrain import fine_tune_start, finish_card
    from core.models.train import accuracy

    if base not in CERTIFIABLE:
        raise ParameterError(f"certified training supports {', '.join(CERTIFIABLE)}, got {base!r}")
    if threat not in THREATS:
        raise ParameterError(f"threat must be one of {', '.join(THREATS)}, got {threat!r}")
    d_steps, d_batch, d_lr, d_beta = _DEFAULTS[threat]
    steps = d_steps if steps is None else steps
    batch_size = d_batch if batch_size is None else batch_size
    lr = d_lr if lr is None else lr
    beta = d_beta if beta is None else beta
    if threat == "box" and not 0 < flow_px <= 1:
        raise ParameterError(f"flow_px must be in (0, 1] px, got {flow_px!r}")
    if orthant and threat != "ball":
        raise ParameterError("orthant is an option of threat='ball'")
    if threat == "ball" and not (0 < radius <= 64 and sketch >= 1):
        raise ParameterError(f"radius must be in (0, 64] and sketch >= 1, got {radius!r}, {sketch!r}")
    if steps < 1 or batch_size < 1:
        raise ParameterError(f"steps and batch_size must be >= 1, got {steps!r}, {batch_size!r}")
    if lam < 0 or beta < 0 or lam_f < 0 or not lr > 0:
        raise ParameterError(f"lam, lam_f and beta must be >= 0 and lr > 0, got {lam!r}, {lam_f!r}, {beta!r}, {lr!r}")
    name = f"{base}_certified"
    log = progress or (lambda s: None)
    t0 = time.time()
    dev, data, regular, net = fine_tune_start(base, n_train, n_val, n_test, seed, device)
    if init is not None and init != base:  # a shipped name, or DIR/NAME.pt that `train --out DIR` wrote
        src = Path(init)
        start_from = load_model(src.stem, dev, root=src.parent) if src.suffix == ".pt" else load_model(init, dev)
        net.load_state_dict(start_from[0].state_dict())
    (xtr, ytr), (xva, yva), (xte, yte) = data["train"], data["val"], data["test"]
    ball = threat == "ball"
    if ball and zero_recurrent:  # the path through which the LSTM's bounds compound (module docstring)
        with torch.no_grad():
            net.rnn.weight_hh_l0.zero_()
        net.rnn.weight_hh_l0.requires_grad_(False)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    ckpt = out_dir / f"{name}.ckpt"
    start, spent, best = 0, 0.0, (-1.0, None)
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, spent = int(state["step"]), float(state["seconds"])
        best = (float(state["best_val"]), state.get("best_model"))
        log(f"resuming {name} after step {start}")
    ramp = max(1, steps // 2)
    every = max(1, min(100, steps // 8)) if ball else max(1, min(250, steps // 4))
    for step in range(start, steps):
        net.train()
        _frozen_bn(net)
        idx = torch.randint(0, len(xtr), (batch_size,), generator=gen)
        xb, yb = xtr[idx].to(dev), ytr[idx].to(dev)
        rho = min(1.0, step / ramp)
        clean = F.cross_entropy(net(xb), yb)
        if ball:
            size = radius * rho
            signs = adversarial_orthant(net, xb, yb) if orthant else None
            marg, w = ball_train_bounds(net, xb, yb, size, sketch, generator=gen, signs=signs)
            reg = lam_f * torch.log1p(w["feature"] / 0.02) + lam * (torch.log1p(w["gate"] / 2) + torch.log1p(w["cell"]))
            wf, wg = w["feature"], w["gate"]
        else:
            size = max(flow_px * rho, 1e-4)  # κ
            marg, wf, wg = ibp_train_bounds(net, *window_box(xb, size), yb)
            reg = lam * (torch.log1p(wf / (10 * size)) + torch.log1p(wg))
        robust = F.cross_entropy(-marg, yb)  # worst-case logits ẑ_j = −lower(z_y − z_j), ẑ_y = 0
        loss = clean + reg + beta * rho * robust
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        last = step + 1 == steps
        if (step + 1) % every == 0 or last:
            net.eval()
            val = accuracy(net, xva, yva, dev)
            log(f"{name} step {step + 1}/{steps} {'ℓ2' if ball else 'κ'} {size:.4f} clean {clean.item():.3f} "
                f"robust {robust.item():.3f} feature width {wf.item():.4f} gate width {wg.item():.3f} "
                f"val_acc {val:.3f} ({time.time() - t0 + spent:.0f} s)")
            if rho >= 1.0 and val >= best[0]:  # select among the states trained at the full threat
                best = (val, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        if (step + 1) % ckpt_every == 0 and not last:
            out_dir.mkdir(parents=True, exist_ok=True)
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step + 1,
                        "seconds": time.time() - t0 + spent, "best_val": best[0],
                        **({"best_model": best[1]} if best[1] is not None else {})}, ckpt)
    if best[1] is not None:
        net.load_state_dict(best[1])
    net.eval()
    regular.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    wp = out_dir / f"{name}.pt"
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, wp)
    if ball:
        how = {
            "method": "sketched zonotope (DeepZ) bounds over the ℓ2 ball of block shifts (core.models.certtrain."
                      "ball_train_bounds: each imposed frame as x + g·z + k·|z|, Gaussian sketches of z and |z|) + width "
                      "regularisers; L = CE + λ_f·log(1 + w_f/0.02) + λ[log(1 + w_g/2) + log(1 + w_c)] + β·ρ·CE(worst case)",
            "threat": f"ℓ2 ball of radius {radius} (flow distance, 16-px blocks) of the block shifts of every flow",
            "radius": radius, "sketch": sketch, "recurrent_matrix": "held at 0" if zero_recurrent else "trained",
            "kinks": ("one orthant per clip, the adversarial one (adversarial_orthant): x + (g + s·k)·z" if orthant
                      else "sketched apart from z: x + g·z + k·|z|"),
            "lambda": lam, "lambda_f": lam_f, "beta": beta, "steps": steps, "batch_size": batch_size, "lr": lr,
            "ramp": "the radius and ρ linear from 0 over the first half of the steps; the best validation state "
                    "after the ramp is kept",
            "init": f"fine-tuned from {init or base}", "batchnorm": "statistics frozen (affine)",
            "cost_saving": "fine-tuned from shipped weights; a sketched estimate rather than a sound bound in "
                           "training (the certificates come from core.verify)"}
    else:
        how = {
            "method": "IBP (Gowal et al. 2018) + width regularisers on the LSTM's input and gate pre-activations "
                      "(Shi et al. 2021); L = CE + λ[log(1 + w_f/10κ) + log(1 + w_g)] + β·ρ·CE(worst case)",
            "threat": f"every frame t ≥ 1 re-imposed at a shift ≤ {flow_px} px per axis (3×3 window box)",
            "flow_px": flow_px, "lambda": lam, "beta": beta, "steps": steps, "batch_size": batch_size, "lr": lr,
            "ramp": "κ and ρ linear from 0 over the first half of the steps; the best validation state "
                    "after the ramp is kept",
            "init": f"fine-tuned from {init or base}", "batchnorm": "statistics frozen (affine)",
            "cost_saving": "fine-tuned from the regular weights; IBP rather than CROWN-IBP in training"}
    card = {
        "name": name,
        "architecture": ARCHITECTURES[base] + " — certified training against flow manipulations",
        "base_model": base,
        "classes": list(CLASSES),
        "input": {"frames": 16, "size": 64, "channels": 3, "layout": "(B, T, 3, H, W)", "range": [0.0, 1.0],
                  "dtype": "float32"},
        "output": "logits (B, 8)",
        "certified_training": {"threat_kind": threat, **how},
        "val_accuracy": round(best[0], 4) if best[1] is not None else None,
        "test_accuracy": round(accuracy(net, xte, yte, dev), 4),
        "regular_test_accuracy": round(accuracy(regular, xte, yte, dev), 4),
    }
    if cert_clips:
        n = min(cert_clips, len(xte))
        card["certified_radius"] = certified_radius_stats({name: net, base: regular}, xte[:n], yte[:n], [7],
                                                          cert_time, log=log)
    finish_card(card, net, wp, dev, (n_train, n_val, n_test), seed, time.time() - t0 + spent)
    log(f"{name}: clean test accuracy {card['test_accuracy']:.3f} (regular {card['regular_test_accuracy']:.3f})")
    return card


# The recipe of the shipped ``cnn_lstm_certified`` (README, *Larger radii, and bounds over one orthant*):
# the box run, then ball runs, each fine-tuned from the one before.
SHIPPED_CHAIN: tuple[dict, ...] = (
    {"threat": "box", "flow_px": 0.05},
    {"threat": "ball", "radius": 8.0},
    {"threat": "ball", "radius": 12.0, "steps": 400},
    {"threat": "ball", "radius": 12.0, "steps": 400},
    {"threat": "ball", "radius": 12.0, "steps": 400},
)


def _stage_name(stage: dict) -> str:
    if stage["threat"] == "box":
        return f"box κ {stage.get('flow_px', 0.05)}, {stage.get('steps', _DEFAULTS['box'][0])} steps"
    return f"ball ℓ2 {stage['radius']:g}, {stage.get('steps', _DEFAULTS['ball'][0])} steps"


def certified_chain(base: str = "cnn_lstm", stages: tuple[dict, ...] = SHIPPED_CHAIN, out_dir: Path = ASSETS,
                    work_dir: Path | None = None, progress: Callable[[str], None] | None = print, **kw) -> dict:
    """Run :func:`certified_train` once per stage, each stage ``init`` from the one before, and write
    the last stage's ``{base}_certified`` into ``out_dir`` (``train --certified --recipe shipped``).

    Stage ``i`` trains into ``work_dir/stage{i}`` (default ``out_dir/.{base}_certified_chain``); a stage
    whose card is there already is skipped, and an interrupted one resumes from its checkpoint, so the
    whole chain (≈ 2.9 h on 1 core) resumes where it stopped. Only the last stage measures the card's
    certified radius. Returns the final card, whose ``certified_training.init`` names the chain and
    ``chain_train_seconds`` each stage's training time."""
    if not stages:
        raise ParameterError("a chain needs at least one stage")
    name = f"{base}_certified"
    log = progress or (lambda s: None)
    work = Path(work_dir) if work_dir is not None else Path(out_dir) / f".{name}_chain"
    init, seconds = None, {}
    for i, stage in enumerate(stages):
        folder = work / f"stage{i}"
        card_file = folder / f"{name}.json"
        last = i == len(stages) - 1
        if card_file.exists():
            log(f"chain stage {i + 1}/{len(stages)} ({_stage_name(stage)}): done already, in {folder}")
            card = json.loads(card_file.read_text())
        else:
            log(f"chain stage {i + 1}/{len(stages)} ({_stage_name(stage)}) into {folder}")
            card = certified_train(base, **stage, init=init, out_dir=folder, progress=progress,
                                   **{**kw, **({} if last else {"cert_clips": 0})})
        seconds[f"{i + 1}. {_stage_name(stage)}"] = card.get("train_seconds")
        init = str(folder / f"{name}.pt")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(init, out_dir / f"{name}.pt")
    card["certified_training"]["init"] = "fine-tuned along a chain of runs, each from the one before: " + \
        " → ".join([base] + [_stage_name(s) for s in stages])
    card["chain_train_seconds"] = {**seconds, "total": round(sum(v or 0.0 for v in seconds.values()), 1)}
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    log(f"{name}: the chain's last stage written to {out_dir}")
    return card
