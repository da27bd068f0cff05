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
    """For affine ``f``: ``(A W, A · f(0))`` with rows of ``A`` as a batch (VJP by autograd)."""
    r = a.shape[0]
    z = torch.zeros((r, *in_shape[1:]), dtype=a.dtype, device=a.device, requires_grad=True)
    out = m(z)
    bias = (a * out.detach()).flatten(1).sum(1)
    (g,) = torch.autograd.grad(out, z, grad_outputs=a)
    return g, bias


def crown_backward(layers: list[nn.Module], spec: torch.Tensor, inputs: list[Interval]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN back-substitution: ``(A, b)`` with ``spec @ f(x) ≥ A·x + b`` for every ``x`` in the box
    whose layer-input intervals are ``inputs`` (from :func:`ibp`). ``A`` has shape ``(R, *x.shape[1:])``."""
    out_shape = ibp_layer(layers[-1], *inputs[-1])[0].shape
    a = spec.view(spec.shape[0], *out_shape[1:]).to(inputs[0][0].dtype)
    bias = torch.zeros(spec.shape[0], dtype=a.dtype, device=a.device)
    with torch.enable_grad():
        for m, (l, u) in zip(reversed(layers), reversed(inputs)):
            if is_affine(m):
                a, b = _pullback(m, a, l.shape)
                bias = bias + b
            elif isinstance(m, nn.ReLU):
                l, u = l.expand_as(a), u.expand_as(a)
                active, inactive = l >= 0, u <= 0
                unstable = ~(active | inactive)
                den = (u - l).clamp_min(1e-30)
                s_up = torch.where(unstable, u / den, active.to(a.dtype))
                alpha = torch.where(unstable, (u > -l).to(a.dtype), active.to(a.dtype))
                pos, neg = a.clamp_min(0), a.clamp_max(0)
                bias = bias + (neg * torch.where(unstable, -s_up * l, torch.zeros_like(l))).flatten(1).sum(1)
                a = pos * alpha + neg * s_up
            else:
                raise Unsupported(f"CROWN: layer {type(m).__name__} is not supported")
    return a.detach(), bias.detach()


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


def recurrent_ibp(rnn: nn.Module, xs: list[Interval]) -> Interval:
    """Interval of the last hidden state of a one-layer, batch-first LSTM/GRU/RNN over the input
    intervals ``xs[t] = (lo, hi)`` of shape ``(1, F)``, from a zero state."""
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
            sl = [(g[0][:, k * hid:(k + 1) * hid], g[1][:, k * hid:(k + 1) * hid]) for k in range(4)]
            i_, f_, g_, o_ = (imono(torch.sigmoid, sl[0]), imono(torch.sigmoid, sl[1]), imono(torch.tanh, sl[2]),
                              imono(torch.sigmoid, sl[3]))
            c = iadd(imul(f_, c), imul(i_, g_))
            h = imul(o_, imono(torch.tanh, c))
        elif isinstance(rnn, nn.GRU):  # gates r, z, n
            sl = lambda t, k: (t[0][:, k * hid:(k + 1) * hid], t[1][:, k * hid:(k + 1) * hid])  # noqa: E731
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


def margin_lower_linear(h: Interval, fc: nn.Linear, label: int) -> torch.Tensor:
    """Exact lower bounds of ``logit_y − logit_j`` (j ≠ y) of a final linear layer over a box."""
    w, b = fc.weight, fc.bias
    k = w.shape[0]
    others = [j for j in range(k) if j != label]
    cw = w[label].unsqueeze(0) - w[others]
    cb = b[label] - b[others]
    c, r = (h[0] + h[1]) / 2, (h[1] - h[0]).clamp_min(0) / 2
    return (cw @ c[0]) - (cw.abs() @ r[0]) + cb


def margin_spec(k: int, label: int, dtype=torch.float64) -> torch.Tensor:
    """Rows ``e_y − e_j`` for every ``j ≠ y``: ``(K − 1, K)``."""
    others = [j for j in range(k) if j != label]
    s = torch.zeros(len(others), k, dtype=dtype)
    s[:, label] = 1.0
    s[torch.arange(len(others)), others] = -1.0
    return s
