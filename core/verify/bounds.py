"""Bound propagation of our own (no auto_LiRPA: it needs torch < 2.9 and has no grid_sample/LSTM).

Three sound relaxations, all in float64:

* **IBP** (Gowal et al. 2018) for affine modules (Linear, Conv2d/3d, BatchNorm in eval mode,
  average pooling, flatten, and any module that is affine in its input): with centre ``c`` and
  radius ``r`` of a box, ``f(box) ⊆ [f(c) − |f|(r), f(c) + |f|(r)]`` where ``|f|`` is the same map with
  absolute weights and no bias; monotone maps (ReLU, sigmoid, tanh, max pooling) are applied to
  both ends.
* **CROWN** (Zhang et al. 2018) back-substitution for chains of affine maps and ReLUs: a linear
  lower bound ``A x + b`` of ``C · f(x)`` is pulled back layer by layer; through an affine layer
  ``A ← A W`` (computed as the VJP of the layer, so conv, pooling and BN need no special code) and
  ``b += A · f(0)``; through a ReLU with pre-activation bounds ``[l, u]`` (from IBP) the usual
  triangle relaxation: upper line ``u/(u−l)·(z − l)``, lower line ``α z`` with the adaptive
  ``α = 1 if u > −l else 0``. The bound is concretised over the input box:
  ``min_x A x + b = A c − |A| r + b``. The adaptive slopes do not make CROWN tighter than IBP in every
  case, so :func:`crown_lower` returns the better of the two per row: never looser than IBP (tested).
* **Recurrent cells** (LSTM, GRU, vanilla RNN, PyTorch gate layouts) by interval arithmetic: the
  gate pre-activations are affine (IBP), sigmoid/tanh are monotone (exact intervals), and each
  product of two intervals is bounded by the min/max of its four corner products — the interval
  hull of the McCormick envelope.
* **CROWN through time** for LSTM heads (:class:`LSTMCrown`, in the spirit of POPQORN, Ko et al.
  2019): linear bounds for every sigmoid/tanh (chord/tangent on the convex/concave side, parallel
  lines across 0) and for every product (averaged McCormick planes), with intermediate bounds of
  the gate pre-activations and cell states from back-substitution too; a specification of the last
  hidden state is pulled back through all steps to the per-step input boxes. Interval propagation
  compounds over perturbed steps (16 of them saturate every gate); back-substitution keeps the
  dependence linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Interval = tuple[torch.Tensor, torch.Tensor]

AFFINE = (nn.Linear, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.AvgPool2d,
          nn.AvgPool3d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Identity, nn.Dropout)


class Unsupported(Exception):
    """A layer our bound propagation does not handle (reported plainly, never a crash)."""


def flatten_chain(module: nn.Module) -> list[nn.Module]:
    """A ``Sequential`` (nested) as a flat list of leaf modules."""
    if isinstance(module, nn.Sequential):
        out = []
        for m in module:
            out += flatten_chain(m)
        return out
    return [module]


def is_affine(m: nn.Module) -> bool:
    return isinstance(m, AFFINE) or getattr(m, "is_affine", False)


def abs_apply(m: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """``|f|(r)`` for an affine module: the linear part with absolute weights, applied to ``r ≥ 0``."""
    if isinstance(m, nn.Linear):
        return F.linear(r, m.weight.abs())
    if isinstance(m, nn.Conv2d):
        return F.conv2d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.Conv3d):
        return F.conv3d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        scale = (m.weight / torch.sqrt(m.running_var + m.eps)).abs()
        shape = [1, -1] + [1] * (r.dim() - 2)
        return r * scale.view(shape)
    if isinstance(m, (nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten,
                      nn.Identity, nn.Dropout)):
        return m(r)  # non-negative weights
    if hasattr(m, "abs_forward"):
        return m.abs_forward(r)
    raise Unsupported(f"no interval rule for {type(m).__name__}")


def ibp_layer(m: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
    """Interval bound of one module."""
    if is_affine(m):
        c, r = (lo + hi) / 2, (hi - lo).clamp_min(0) / 2
        oc, orr = m(c), abs_apply(m, r)
        return oc - orr, oc + orr
    if isinstance(m, nn.ReLU):
        return lo.clamp_min(0), hi.clamp_min(0)
    if isinstance(m, (nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Sigmoid, nn.Tanh)):
        return m(lo), m(hi)
    raise Unsupported(f"layer {type(m).__name__} is not supported by the verifier")


def ibp(layers: list[nn.Module], lo: torch.Tensor, hi: torch.Tensor) -> tuple[Interval, list[Interval]]:
    """IBP through a chain; returns the output interval and the interval *entering* every layer."""
    inputs = []
    for m in layers:
        inputs.append((lo, hi))
        lo, hi = ibp_layer(m, lo, hi)
    return (lo, hi), inputs


def _pullback(m: nn.Module, a: torch.Tensor, in_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """For affine ``f``: ``(A W, A · f(0))`` with rows of ``A`` as a batch. Linear layers, zero-padded
    convolutions (rows that need no gradient) and BatchNorm in eval mode directly (a matrix product,
    the convolution's input gradient, a per-channel scale); any other affine module by one forward at
    0 and the vector-Jacobian products of all rows at once (``torch.func.vmap`` over ``vjp``)."""
    if isinstance(m, nn.Linear) and a.dim() == 2 and len(in_shape) == 2:
        return a @ m.weight, (a @ m.bias if m.bias is not None else a.new_zeros(a.shape[0]))
    if type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str) and a.dim() == 4 \
            and not a.requires_grad:
        # the input gradient of the convolution (its kernel needs the input's shape only: a zero
        # broadcast stands in); faster than vmap over vjp and than conv_transpose2d in float64
        x = a.new_zeros(1).expand(a.shape[0], *in_shape[1:])
        g = torch.ops.aten.convolution_backward(a, x, m.weight, None, list(m.stride), list(m.padding),
                                                list(m.dilation), False, [0, 0], m.groups, [True, False, False])[0]
        return g, (a.sum((2, 3)) @ m.bias if m.bias is not None else a.new_zeros(a.shape[0]))
    if isinstance(m, nn.BatchNorm2d) and not m.training and m.running_var is not None and a.dim() == 4:
        scale = torch.rsqrt(m.running_var + m.eps) * (m.weight if m.affine else 1.0)
        shift = (m.bias if m.affine else 0.0) - m.running_mean * scale
        return a * scale.view(1, -1, 1, 1), a.sum((2, 3)) @ shift
    from torch.func import vjp, vmap

    z = torch.zeros((1, *in_shape[1:]), dtype=a.dtype, device=a.device)
    out0, pull = vjp(m, z)
    bias = (a * out0).flatten(1).sum(1)
    (g,) = vmap(pull)(a.unsqueeze(1))
    return g.squeeze(1), bias


def relu_relaxation(l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CROWN's lines for ``relu`` on ``[l, u]``: upper ``s_up·z + b_up`` (the chord through
    ``(l, 0)`` and ``(u, u)`` when unstable), lower ``alpha·z`` (``alpha = 1`` if ``u > −l`` else 0);
    exact for stable neurons."""
    active, inactive = l >= 0, u <= 0
    unstable = ~(active | inactive)
    s_up = torch.where(unstable, u / (u - l).clamp_min(1e-30), active.to(l.dtype))
    alpha = torch.where(unstable, (u > -l).to(l.dtype), active.to(l.dtype))
    b_up = torch.where(unstable, -s_up * l, torch.zeros_like(l))
    return s_up, b_up, alpha


def crown_backward(layers: list[nn.Module], spec: torch.Tensor, inputs: list[Interval],
                   alphas: dict[int, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN back-substitution: ``(A, b)`` with ``spec @ f(x) ≥ A·x + b`` for every ``x`` in the box
    whose layer-input intervals are ``inputs`` (from :func:`ibp`). ``A`` has shape ``(R, *x.shape[1:])``.

    With ``alphas`` (α-CROWN, Xu et al. 2021, Eq. 7 of "Fast and complete"): ``{layer index: (R, …)}``
    lower slopes of the unstable ReLUs of that layer, one per row, clamped to [0, 1] — any slope in
    [0, 1] is a sound lower line of ``relu`` — and ``(A, b)`` stay differentiable in them."""
    out_shape = ibp_layer(layers[-1], *inputs[-1])[0].shape
    a = spec.view(spec.shape[0], *out_shape[1:]).to(inputs[0][0].dtype)
    bias = torch.zeros(spec.shape[0], dtype=a.dtype, device=a.device)
    with torch.enable_grad():
        for k in range(len(layers) - 1, -1, -1):
            m, (l, u) = layers[k], inputs[k]
            if is_affine(m):
                a, b = _pullback(m, a, l.shape)
                bias = bias + b
            elif isinstance(m, nn.ReLU):
                s_up, b_up, alpha = relu_relaxation(l, u)  # per neuron, broadcast over the rows
                if alphas is not None and k in alphas:
                    alpha = torch.where((l < 0) & (u > 0), alphas[k].clamp(0, 1), alpha)
                pos, neg = a.clamp_min(0), a.clamp_max(0)
                bias = bias + (neg * b_up).flatten(1).sum(1)
                a = pos * alpha + neg * s_up
            else:
                raise Unsupported(f"CROWN: layer {type(m).__name__} is not supported")
    return (a, bias) if alphas is not None else (a.detach(), bias.detach())


def alpha_crown(layers: list[nn.Module], spec: torch.Tensor, inputs: list[Interval], concretize,
                iters: int = 20, lr: float = 0.1, out_of_time=None, start: torch.Tensor | None = None
                ) -> torch.Tensor:
    """α-CROWN (Xu et al. 2021): the lower slopes of the unstable ReLUs, one per row and neuron, are
    optimised by projected gradient ascent (Adam) on the concretised bound ``concretize(A, b)`` →
    ``(R,)``; starts at CROWN's adaptive slopes. Every iterate is a sound bound, so the row-wise best
    over the iterates is returned (never looser than CROWN with the same intermediate bounds) — also
    when ``out_of_time()`` ends the optimisation early. ``start``: the CROWN bound, if the caller
    already has it."""
    alphas = {}
    for k, m in enumerate(layers):
        if isinstance(m, nn.ReLU):
            l, u = inputs[k]
            if bool(((l < 0) & (u > 0)).any()):
                alphas[k] = (u > -l).to(l.dtype).expand(spec.shape[0], *l.shape[1:]).clone().requires_grad_(True)
    if start is not None:
        best = start.detach()
    else:
        with torch.no_grad():
            best = concretize(*crown_backward(layers, spec, inputs))
    if not alphas:
        return best
    opt = torch.optim.Adam(list(alphas.values()), lr=lr)
    with torch.enable_grad():
        for _ in range(iters):
            if out_of_time is not None and out_of_time():
                return best.detach()
            bound = concretize(*crown_backward(layers, spec, inputs, alphas))
            best = torch.maximum(best, bound.detach())
            params = list(alphas.values())
            for v, g in zip(params, torch.autograd.grad(-bound.sum(), params)):  # never into the model's .grad
                v.grad = g
            opt.step()
            with torch.no_grad():
                for v in alphas.values():
                    v.clamp_(0, 1)
        with torch.no_grad():
            best = torch.maximum(best, concretize(*crown_backward(layers, spec, inputs, alphas)))
    return best.detach()


def concretize_box(a: torch.Tensor, bias: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``min_{x ∈ [lo, hi]} A·x + b = A·c − |A|·r + b`` per row."""
    c, r = (lo + hi) / 2, (hi - lo).clamp_min(0) / 2
    return (a * c).flatten(1).sum(1) - (a.abs() * r).flatten(1).sum(1) + bias


def crown_lower(layers: list[nn.Module], lo: torch.Tensor, hi: torch.Tensor, spec: torch.Tensor,
                inputs: list[Interval] | None = None) -> torch.Tensor:
    """CROWN lower bounds of ``spec @ f(x)`` over the box ``[lo, hi]`` (batch 1).

    Args:
        layers: chain of affine modules and ReLUs.
        lo, hi: input box, shape ``(1, …)``.
        spec: ``(R, out_numel)`` rows of linear functions of the output.
        inputs: IBP intervals entering each layer (computed if not given).

    Returns:
        ``(R,)`` lower bounds.
    """
    if inputs is None:
        _, inputs = ibp(layers, lo, hi)
    a, bias = crown_backward(layers, spec, inputs)
    crown = concretize_box(a, bias, lo, hi)
    ol, oh = ibp_layer(layers[-1], *inputs[-1])  # never looser than IBP: keep the better bound
    sp = spec.to(ol.dtype)
    ibp_bound = sp.clamp_min(0) @ ol.flatten() + sp.clamp_max(0) @ oh.flatten()
    return torch.maximum(crown, ibp_bound)


def crown_interval(layers: list[nn.Module], lo: torch.Tensor, hi: torch.Tensor) -> Interval:
    """Element-wise CROWN bounds of the chain's output (spec = ±identity, one backward pass),
    intersected with IBP."""
    (il, ih), inputs = ibp(layers, lo, hi)
    n = il[0].numel()
    eye = torch.eye(n, dtype=lo.dtype, device=lo.device)
    both = concretize_box(*crown_backward(layers, torch.cat([eye, -eye]), inputs), lo, hi)
    low, up = both[:n].view_as(il), -both[n:].view_as(il)
    return torch.maximum(low, il), torch.minimum(up, ih)


# -- recurrent cells ------------------------------------------------------------------------------
def imul(a: Interval, b: Interval) -> Interval:
    """Interval product (the interval hull of the McCormick envelope)."""
    p = torch.stack([a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]])
    return p.min(0).values, p.max(0).values


def iaffine(x: Interval, w: torch.Tensor, b: torch.Tensor | None) -> Interval:
    c, r = (x[0] + x[1]) / 2, (x[1] - x[0]).clamp_min(0) / 2
    oc = F.linear(c, w, b)
    orr = F.linear(r, w.abs())
    return oc - orr, oc + orr


def iadd(a: Interval, b: Interval) -> Interval:
    return a[0] + b[0], a[1] + b[1]


def imono(f, x: Interval) -> Interval:
    return f(x[0]), f(x[1])


def recurrent_ibp(rnn: nn.Module, xs: list[Interval], pre_widths: list | None = None) -> Interval:
    """Interval of the last hidden state of a one-layer, batch-first LSTM/GRU/RNN over the input
    intervals ``xs[t] = (lo, hi)`` of shape ``(B, F)`` (B ≥ 1), from a zero state. With
    ``pre_widths`` (a list), the mean width of every step's gate pre-activations is appended to it
    (differentiable: the regulariser of certified training, :mod:`core.models.certtrain`)."""
    if rnn.num_layers != 1 or rnn.bidirectional:
        raise Unsupported("only one-layer, unidirectional recurrent heads are supported")
    hid = rnn.hidden_size
    w_ih, w_hh = rnn.weight_ih_l0, rnn.weight_hh_l0
    b_ih = getattr(rnn, "bias_ih_l0", None)
    b_hh = getattr(rnn, "bias_hh_l0", None)
    z = torch.zeros(1, hid, dtype=w_ih.dtype, device=w_ih.device)
    h: Interval = (z, z)
    c: Interval = (z, z)
    for x in xs:
        gi = iaffine(x, w_ih, b_ih)
        gh = iaffine(h, w_hh, b_hh)
        if isinstance(rnn, nn.LSTM):  # gates i, f, g, o
            g = iadd(gi, gh)
            if pre_widths is not None:
                pre_widths.append((g[1] - g[0]).mean())
            sl = [(g[0][:, k * hid:(k + 1) * hid], g[1][:, k * hid:(k + 1) * hid]) for k in range(4)]
            i_, f_, g_, o_ = (imono(torch.sigmoid, sl[0]), imono(torch.sigmoid, sl[1]), imono(torch.tanh, sl[2]),
                              imono(torch.sigmoid, sl[3]))
            c = iadd(imul(f_, c), imul(i_, g_))
            h = imul(o_, imono(torch.tanh, c))
        elif isinstance(rnn, nn.GRU):  # gates r, z, n
            sl = lambda t, k: (t[0][:, k * hid:(k + 1) * hid], t[1][:, k * hid:(k + 1) * hid])
            r_ = imono(torch.sigmoid, iadd(sl(gi, 0), sl(gh, 0)))
            zz = imono(torch.sigmoid, iadd(sl(gi, 1), sl(gh, 1)))
            n_ = imono(torch.tanh, iadd(sl(gi, 2), imul(r_, sl(gh, 2))))
            # h' = n + z ⊙ (h − n)
            diff = (h[0] - n_[1], h[1] - n_[0])
            h = iadd(n_, imul(zz, diff))
        elif isinstance(rnn, nn.RNN):
            if rnn.nonlinearity != "tanh":
                h = imono(torch.relu, iadd(gi, gh))
            else:
                h = imono(torch.tanh, iadd(gi, gh))
        else:
            raise Unsupported(f"recurrent layer {type(rnn).__name__} is not supported")
    return h


def margin_lower_rows(h: Interval, fc: nn.Linear, labels: torch.Tensor) -> torch.Tensor:
    """Exact lower bounds of ``logit_y − logit_j`` of a final linear layer over a batch of boxes
    ``h = (lo, hi)`` of shape ``(B, F)``, labels ``(B,)`` → ``(B, K)`` (0 at ``j = y``): the
    specification folded into the layer (Gowal et al. 2018 §3), differentiable."""
    w, b = fc.weight, fc.bias
    cw = w[labels].unsqueeze(1) - w.unsqueeze(0)  # (B, K, F): rows w_y − w_j
    c, r = (h[0] + h[1]) / 2, (h[1] - h[0]).clamp_min(0) / 2
    return (torch.einsum("bkf,bf->bk", cw, c) - torch.einsum("bkf,bf->bk", cw.abs(), r)
            + b[labels].unsqueeze(1) - b.unsqueeze(0))


def margin_lower_linear(h: Interval, fc: nn.Linear, label: int) -> torch.Tensor:
    """Exact lower bounds of ``logit_y − logit_j`` (j ≠ y) of a final linear layer over a box."""
    others = [j for j in range(fc.weight.shape[0]) if j != label]
    rows = margin_lower_rows((h[0][:1], h[1][:1]), fc, torch.tensor([label], device=fc.weight.device))
    return rows[0, others]


def margin_spec(k: int, label: int, dtype=torch.float64) -> torch.Tensor:
    """Rows ``e_y − e_j`` for every ``j ≠ y``: ``(K − 1, K)``."""
    others = [j for j in range(k) if j != label]
    s = torch.zeros(len(others), k, dtype=dtype)
    s[:, label] = 1.0
    s[torch.arange(len(others)), others] = -1.0
    return s


# -- CROWN through an LSTM head (back-substitution through time) ----------------------------------
def _dsig(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _dtanh(x: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(x) ** 2


def _line_through_left(fn, dfn, l: torch.Tensor, u: torch.Tensor, at: torch.Tensor | None = None,
                       iters: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """The upper line of an S-shaped ``fn`` on ``[l, u]`` with ``l < 0 < u`` through ``(l, fn(l))``
    (CROWN, Zhang et al. 2018, §3.3 / Fig. 2): its slope is the largest secant slope from ``l``,
    ``max_{x ∈ (l, u]} (fn(x) − fn(l)) / (x − l)`` — the chord when ``h(u) ≤ 0`` for
    ``h(d) = fn(d) − fn(l) − fn'(d)(d − l)`` (increasing on d ≥ 0), else the tangent slope
    ``fn'(d*)`` at the root ``d* ∈ (0, u)`` of ``h``. The root is bracketed by bisection and the
    slope taken at the bracket's low end, so it is never below the exact one (sound: a steeper line
    through the same left point is higher on ``[l, u]``). With ``at`` (a point the inputs really
    take, e.g. the clean trajectory), the tangent at ``max(at, d*)`` instead when that is below ``u``:
    every tangent at ``d ≥ d*`` is above ``fn`` on ``[l, u]`` (it is above at ``l`` and on the concave
    side, and ``fn`` is convex in between), and it is exact at ``at``. Returns ``(slope, intercept)``."""
    fl = fn(l)
    chord = (fn(u) - fl) / (u - l).clamp_min(1e-12)
    def h(d):
        return fn(d) - fl - dfn(d) * (d - l)
    lo, hi = torch.zeros_like(l), u.clone()
    for _ in range(iters):
        mid = (lo + hi) / 2
        neg = h(mid) <= 0
        lo, hi = torch.where(neg, mid, lo), torch.where(neg, hi, mid)
    tangent = h(u) > 0
    s = torch.where(tangent, torch.maximum(dfn(lo), chord), chord)
    b = fl - s * l
    if at is not None:  # a tangent further right, exact at ``at``
        d = at.clamp(max=u)
        use = tangent & (d > hi)
        s2, b2 = dfn(d), fn(d) - dfn(d) * d
        s, b = torch.where(use, s2, s), torch.where(use, b2, b)
    return s, b


def s_shaped_lines(fn, dfn, l: torch.Tensor, u: torch.Tensor, at: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, ...]:
    """Sound lines ``al·x + bl ≤ fn(x) ≤ au·x + bu`` on ``[l, u]`` for sigmoid/tanh (convex on x ≤ 0,
    concave on x ≥ 0, derivative even and unimodal with its maximum at 0), CROWN-style:

    * ``u ≤ 0`` (convex): upper = the chord, lower = a tangent;
    * ``l ≥ 0`` (concave): lower = the chord, upper = a tangent;
    * otherwise: the upper line through ``(l, fn(l))`` and the lower one through ``(u, fn(u))``,
      each tangent where it touches (:func:`_line_through_left`; by the symmetry
      ``fn(x) = c − fn(−x)`` the lower line is the upper line of ``x ↦ −fn(−x)`` on ``[−u, −l]``) —
      or, where that leaves less area between line and ``fn`` (very lopsided intervals), the line of
      slope ``s = min(fn'(l), fn'(u))`` through the other end: ``fn' ≥ s`` on the whole interval, so
      ``fn(x) − s·x`` is non-decreasing and the line through ``(l, fn(l))`` is below, the one through
      ``(u, fn(u))`` above.

    The free tangent point is ``at`` clamped into the interval (``at``: a point the inputs really
    take, e.g. the clean run, where the line is then exact — the relaxation loses nothing there
    however wide the interval) or, without ``at``, the midpoint.
    """
    fl, fu = fn(l), fn(u)
    w = u - l
    wide = w > 1e-9
    s = torch.minimum(dfn(l), dfn(u))  # degenerate intervals: parallel lines through the ends
    al, bl, au, bu = s, fl - s * l, s, fu - s * u
    chord = torch.where(wide, (fu - fl) / w.clamp_min(1e-9), s)
    m = (l + u) / 2 if at is None else torch.minimum(torch.maximum(at, l), u)
    fm, dm = fn(m), dfn(m)
    convex, concave = wide & (u <= 0), wide & (l >= 0)
    au = torch.where(convex, chord, au)
    bu = torch.where(convex, fl - chord * l, bu)
    al = torch.where(convex, dm, al)
    bl = torch.where(convex, fm - dm * m, bl)
    al = torch.where(concave, chord, al)
    bl = torch.where(concave, fl - chord * l, bl)
    au = torch.where(concave, dm, au)
    bu = torch.where(concave, fm - dm * m, bu)
    cross = wide & (l < 0) & (u > 0)
    if bool(cross.any()):
        lc, uc = torch.where(cross, l, -torch.ones_like(l)), torch.where(cross, u, torch.ones_like(u))
        su, bu_ = _line_through_left(fn, dfn, lc, uc, at)
        sl, bl_ = _line_through_left(lambda x: -fn(-x), dfn, -uc, -lc, None if at is None else -at)
        mid = (l + u) / 2  # each side keeps the line with the smaller area between it and fn
        up, dn = cross & (su * mid + bu_ < au * mid + bu), cross & (sl * mid - bl_ > al * mid + bl)
        au, bu = torch.where(up, su, au), torch.where(up, bu_, bu)
        al, bl = torch.where(dn, sl, al), torch.where(dn, -bl_, bl)
    eps = 1e-12 * (1 + fl.abs() + fu.abs())  # float64 rounding
    return al, bl - eps, au, bu + eps


def mul_planes(lx: torch.Tensor, ux: torch.Tensor, ly: torch.Tensor, uy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Planes ``cy·x + cx·y + dl ≤ x·y ≤ cy·x + cx·y + du`` on the box: the averages of the two
    McCormick lower and of the two upper planes (a convex combination of valid bounds is valid)."""
    cx, cy = (lx + ux) / 2, (ly + uy) / 2
    return cy, cx, -(lx * ly + ux * uy) / 2, -(lx * uy + ux * ly) / 2


def _pos_neg(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return a.clamp_min(0), a.clamp_max(0)


class LSTMCrown:
    """CROWN for a one-layer LSTM head (PyTorch gate order i, f, g, o) over boxes of its inputs.

    ``xs[t] = (lo, hi)`` of shape ``(F,)``; steps before the first non-degenerate box are run exactly
    (their state is a point). Every nonlinearity gets linear bounds: sigmoid/tanh by
    :func:`s_shaped_lines`, the products ``f⊙c``, ``i⊙g``, ``o⊙tanh(c)`` by :func:`mul_planes`. The
    intermediate bounds those need (gate pre-activations ``p_t`` and cell states ``c_t``) come from
    back-substitution themselves, intersected with interval arithmetic. :meth:`lower` back-substitutes
    a linear specification of the last hidden state through all steps and concretises it over the
    input boxes — the dependence through time stays linear instead of compounding intervals.
    """

    def __init__(self, rnn: nn.LSTM, xs: list[Interval], lin: dict | None = None, zmin=None,
                 anchor: torch.Tensor | None = None) -> None:
        if not isinstance(rnn, nn.LSTM) or rnn.num_layers != 1 or rnn.bidirectional:
            raise Unsupported("CROWN through time supports one-layer unidirectional LSTMs")
        # joint mode: linear bounds ``lc + lz·z ≤ x_t ≤ uc + uz·z`` of the inputs of the boxed steps in
        # a shared perturbation ``z`` and ``zmin(coef)`` = min of coef·z over its domain; every bound is
        # then also concretised once over z for all steps together (the better of the two is kept)
        self.lin, self.zmin = (lin or {}), zmin
        # a step's forms touch only the variables of the flows that move its frames: keep those columns
        self._cols = {}
        for t, (lc, lz, uc, uz) in self.lin.items():
            cols = ((lz != 0) | (uz != 0)).any(0).nonzero().flatten()
            self._cols[t] = (cols, lz[:, cols], uz[:, cols], lz.shape[1])
        # joint mode, while a back-substitution runs: the z-coefficients and the constants' change
        # from the per-step boxes to the joint forms (``None`` when the joint bound is not wanted)
        self._zacc = None
        self._jdelta = 0.0
        self.H = hid = rnn.hidden_size
        self.W, self.U = rnn.weight_ih_l0, rnn.weight_hh_l0
        self.b = rnn.bias_ih_l0 + rnn.bias_hh_l0
        self.xs = [(lo.reshape(-1), hi.reshape(-1)) for lo, hi in xs]
        t_len = len(xs)
        moving = [t for t, (lo, hi) in enumerate(self.xs) if bool((hi > lo).any())]
        self.t0 = moving[0] if moving else t_len
        h = torch.zeros(hid, dtype=self.W.dtype)
        c = torch.zeros(hid, dtype=self.W.dtype)
        for t in range(self.t0):  # exact prefix
            p = self.W @ self.xs[t][0] + self.U @ h + self.b
            i, f, g, o = torch.sigmoid(p[:hid]), torch.sigmoid(p[hid:2 * hid]), torch.tanh(p[2 * hid:3 * hid]), \
                torch.sigmoid(p[3 * hid:])
            c = f * c + i * g
            h = o * torch.tanh(c)
        self.h0, self.c0 = h, c
        # the clean run (``anchor``: the unperturbed inputs, (T, F); else the boxes' midpoints): the
        # S-shaped lines touch the functions at its gate pre-activations and cell states
        xa = [(lo + hi) / 2 for lo, hi in self.xs] if anchor is None else list(anchor.reshape(t_len, -1))
        self._at: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        ha, ca = h, c
        for t in range(self.t0, t_len):
            p = self.W @ xa[t].to(self.W.dtype) + self.U @ ha + self.b
            i, f, g, o = torch.sigmoid(p[:hid]), torch.sigmoid(p[hid:2 * hid]), torch.tanh(p[2 * hid:3 * hid]), \
                torch.sigmoid(p[3 * hid:])
            ca = f * ca + i * g
            ha = o * torch.tanh(ca)
            self._at[t] = (p, ca)
        self.rel: dict[int, dict] = {}
        h_box, c_box = (h, h), (c, c)
        for t in range(self.t0, t_len):
            h_box, c_box = self._relax_step(t, h_box, c_box)
        self.h_box = h_box

    # one step of the backward pass ---------------------------------------------------------------
    def _back_h(self, t: int, lam_h: torch.Tensor, lam_c: torch.Tensor, const: torch.Tensor):
        r = self.rel[t]
        pos, neg = _pos_neg(lam_h)
        coef_o = lam_h * r["ot"][0]
        coef_tau = lam_h * r["ot"][1]
        const = const + (pos * r["ot"][2] + neg * r["ot"][3]).sum(-1)
        pos, neg = _pos_neg(coef_tau)
        lam_c = lam_c + pos * r["tau"][0] + neg * r["tau"][2]
        const = const + (pos * r["tau"][1] + neg * r["tau"][3]).sum(-1)
        return coef_o, lam_c, const

    def _back_c(self, t: int, coef_o: torch.Tensor, lam_c: torch.Tensor, const: torch.Tensor, acc: torch.Tensor):
        r = self.rel[t]
        pos, neg = _pos_neg(lam_c)
        coef_f, coef_cprev = lam_c * r["fc"][0], lam_c * r["fc"][1]
        coef_i, coef_g = lam_c * r["ig"][0], lam_c * r["ig"][1]
        const = const + (pos * (r["fc"][2] + r["ig"][2]) + neg * (r["fc"][3] + r["ig"][3])).sum(-1)
        kappa = torch.cat([coef_i, coef_f, coef_g, coef_o], -1)
        al, bl, au, bu = r["gates"]
        pos, neg = _pos_neg(kappa)
        pi = pos * al + neg * au
        const = const + (pos * bl + neg * bu).sum(-1) + pi @ self.b
        acc = acc + self._concretize(pi @ self.W, t)
        return pi @ self.U, coef_cprev, const, acc

    _sym: dict | None = None  # when set (by :meth:`linear`), coefficients of boxed steps are collected

    def _concretize(self, a: torch.Tensor, t: int) -> torch.Tensor:
        """``min a·x_t`` over step ``t``'s box; in joint mode also the same term through the step's
        linear forms in ``z`` (collected in ``_zacc`` and ``_jdelta``, concretised once at the end)."""
        lo, hi = self.xs[t]
        if self._sym is not None and bool((hi > lo).any()):
            self._sym[t] = self._sym[t] + a if t in self._sym else a
            return torch.zeros(a.shape[0], dtype=a.dtype)
        c, r = (lo + hi) / 2, (hi - lo).clamp_min(0) / 2
        box = a @ c - a.abs() @ r
        if self._zacc is not None and t in self.lin:
            lc, _, uc, _ = self.lin[t]
            cols, lz, uz, width = self._cols[t]
            pos, neg = _pos_neg(a)
            if not torch.is_tensor(self._zacc):
                self._zacc = torch.zeros(a.shape[0], width, dtype=a.dtype)
            self._zacc.index_add_(1, cols, pos @ lz + neg @ uz)
            self._jdelta = self._jdelta + (pos @ lc + neg @ uc - box)
        return box

    def _finish(self, t: int, lam_h, lam_c, const, acc, coef_o=None, pend=None) -> torch.Tensor:
        """Back-substitute from step ``t`` (with ``coef_o`` given, the h-part of step ``t`` is done;
        ``pend = (s, a)``: a term ``a·x_s`` still to concretise); in joint mode the better of the
        per-step-box and the joint concretisation, both from the same pass (they differ only in how
        each step's term ``a·x_s`` is concretised)."""
        if not self.lin or self._sym is not None:
            return self._finish_once(t, lam_h, lam_c, const, acc, coef_o, pend)
        self._zacc, self._jdelta = 0.0, 0.0
        try:
            box = self._finish_once(t, lam_h, lam_c, const, acc, coef_o, pend)
            joint = box + self._jdelta
            if torch.is_tensor(self._zacc):
                joint = joint + self.zmin(self._zacc)
        finally:
            self._zacc, self._jdelta = None, 0.0
        return torch.maximum(box, joint)

    def _finish_once(self, t: int, lam_h, lam_c, const, acc, coef_o=None, pend=None) -> torch.Tensor:
        if pend is not None:
            acc = acc + self._concretize(pend[1], pend[0])
        for s in range(t, self.t0 - 1, -1):
            if coef_o is None:
                coef_o, lam_c, const = self._back_h(s, lam_h, lam_c, const)
            lam_h, lam_c, const, acc = self._back_c(s, coef_o, lam_c, const, acc)
            coef_o = None
        return acc + const + lam_h @ self.h0 + lam_c @ self.c0

    # forward: relaxations step by step --------------------------------------------------------
    def _relax_step(self, t: int, h_box: Interval, c_box: Interval) -> tuple[Interval, Interval]:
        hid = self.H
        n4 = 4 * hid
        # gate pre-activations p_t = W η_t + U h_{t−1} + b: back-substitution of ±I, ∩ intervals
        eye = torch.eye(n4, dtype=self.W.dtype)
        spec = torch.cat([eye, -eye])
        const = spec @ self.b
        lam_h, lam_c = spec @ self.U, torch.zeros(2 * n4, hid, dtype=self.W.dtype)
        # from step t − 1 down (nothing to do below t0: the state there is the exact prefix's)
        both = self._finish(t - 1, lam_h, lam_c, const, torch.zeros(2 * n4, dtype=self.W.dtype),
                            pend=(t, spec @ self.W))
        p_lo, p_hi = both[:n4], -both[n4:]
        i_lo, i_hi = iaffine((self.xs[t][0].unsqueeze(0), self.xs[t][1].unsqueeze(0)), self.W, self.b)
        j_lo, j_hi = iaffine((h_box[0].unsqueeze(0), h_box[1].unsqueeze(0)), self.U, None)
        p_lo, p_hi = torch.maximum(p_lo, (i_lo + j_lo)[0]), torch.minimum(p_hi, (i_hi + j_hi)[0])
        p_hi = torch.maximum(p_hi, p_lo)
        sl = [slice(k * hid, (k + 1) * hid) for k in range(4)]
        p_at, c_at = self._at[t]
        lines = [s_shaped_lines(torch.tanh, _dtanh, p_lo[s], p_hi[s], p_at[s]) if k == 2 else
                 s_shaped_lines(torch.sigmoid, _dsig, p_lo[s], p_hi[s], p_at[s]) for k, s in enumerate(sl)]
        gates = tuple(torch.cat([ln[j] for ln in lines]) for j in range(4))
        act = [(torch.tanh(p_lo[s]), torch.tanh(p_hi[s])) if k == 2 else
               (torch.sigmoid(p_lo[s]), torch.sigmoid(p_hi[s])) for k, s in enumerate(sl)]
        (ilo, ihi), (flo, fhi), (glo, ghi), (olo, ohi) = act
        rel = {"gates": gates, "fc": mul_planes(flo, fhi, c_box[0], c_box[1]), "ig": mul_planes(ilo, ihi, glo, ghi)}
        self.rel[t] = rel
        # cell state c_t = f ⊙ c_{t−1} + i ⊙ g: back-substitution of ±I from step t, ∩ intervals
        eye = torch.eye(hid, dtype=self.W.dtype)
        spec = torch.cat([eye, -eye])
        zero = torch.zeros(2 * hid, dtype=self.W.dtype)
        both = self._finish(t, None, spec, zero, zero.clone(), coef_o=torch.zeros(2 * hid, hid, dtype=self.W.dtype))
        c_lo, c_hi = both[:hid], -both[hid:]
        ci = iadd(imul((flo, fhi), c_box), imul((ilo, ihi), (glo, ghi)))
        c_lo, c_hi = torch.maximum(c_lo, ci[0]), torch.minimum(c_hi, ci[1])
        c_hi = torch.maximum(c_hi, c_lo)
        tlo, thi = torch.tanh(c_lo), torch.tanh(c_hi)
        rel["tau"] = s_shaped_lines(torch.tanh, _dtanh, c_lo, c_hi, c_at)
        rel["ot"] = mul_planes(olo, ohi, tlo, thi)
        return imul((olo, ohi), (tlo, thi)), (c_lo, c_hi)

    def lower(self, spec: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Lower bounds of ``spec @ h_T (+ bias)`` over the input boxes, ``spec (R, H)``."""
        t_last = len(self.xs) - 1
        const = torch.zeros(spec.shape[0], dtype=spec.dtype) if bias is None else bias.clone()
        if self.t0 > t_last:
            return spec @ self.h0 + const
        zero = torch.zeros(spec.shape[0], dtype=spec.dtype)
        crown = self._finish(t_last, spec, torch.zeros_like(spec), const, zero)
        lo, hi = self.h_box  # never looser than the interval bound
        c, r = (lo + hi) / 2, (hi - lo).clamp_min(0) / 2
        return torch.maximum(crown, spec @ c - spec.abs() @ r + (0 if bias is None else bias))


    def linear(self, spec: torch.Tensor, bias: torch.Tensor | None = None
               ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """The linear lower bound of ``spec @ h_T (+ bias)`` before concretisation:
        ``({t: Λ_t (R, F)}, const)`` with ``spec @ h_T + bias ≥ Σ_t Λ_t · x_t + const`` for every input
        sequence inside the boxes (steps with a point box are folded into ``const``). A caller that
        knows more about the ``x_t`` than their boxes (linear bounds of the per-frame CNN in a shared
        perturbation) bounds ``Σ_t Λ_t · x_t`` jointly — tighter than one box per step."""
        t_last = len(self.xs) - 1
        const = torch.zeros(spec.shape[0], dtype=spec.dtype) if bias is None else bias.clone()
        if self.t0 > t_last:
            return {}, spec @ self.h0 + const
        self._sym = {}
        try:
            zero = torch.zeros(spec.shape[0], dtype=spec.dtype)
            const = self._finish(t_last, spec, torch.zeros_like(spec), const, zero)
            return self._sym, const
        finally:
            self._sym = None
