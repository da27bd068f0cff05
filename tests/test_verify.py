"""Soundness of our bound propagation: sampled and attacked points inside every certified region
never beat the bounds; CROWN is never looser than IBP; exact comparison on a tiny network."""


import itertools

import pytest
import torch
from torch import nn

from core.data import make_clip
from core.models import load_classifier
from core.msr.space import Evaluator, FlowSpace
from core.verify import CertifiedRadius, certify, supported, warp_bounds
from core.verify.bounds import crown_lower, ibp, recurrent_ibp
from core.verify.certify import Domain, ModelBounds, ball_box
from core.viz.msr import diagnosis_figure


@pytest.fixture(scope="module")
def lstm():
    return load_classifier("cnn_lstm", "cpu")


@pytest.fixture(scope="module")
def certified():
    return load_classifier("cnn_lstm_certified", "cpu")


@pytest.fixture(scope="module")
def box_certified():
    """The earlier shipped certified model (box threat, κ 0.05; ``assets/candidates/box``). Unlike the
    shipped ball-trained one, whose recurrent matrix is 0, it carries state from step to step: the
    tests of the bounds through time use it."""
    from core.classifier import as_classifier
    from core.models import ASSETS, load_model

    net, spec = load_model("cnn_lstm_certified", "cpu", root=ASSETS.parent / "candidates" / "box")
    assert float(net.rnn.weight_hh_l0.abs().max()) > 0.1
    return as_classifier(net, spec)


@pytest.fixture(scope="module")
def c3d():
    return load_classifier("c3d", "cpu")


def _space(flow=14, cls="translate_left", seed=0):
    return FlowSpace(make_clip(cls, seed).video, [flow], 16)


def test_warp_bounds_contain_every_imposed_frame():
    sp = _space(7, "rotate_cw", 2000004)
    g = torch.Generator().manual_seed(0)
    for r in (0.05, 0.4, 1.7):  # inside one cell, across a knot, across several pixels
        lo, hi = ball_box(sp, r * sp.weight("linf"), "linf")
        b = warp_bounds(sp, lo, hi)[8]
        z = (torch.rand(400, sp.dims, generator=g, dtype=torch.float64) * 2 - 1) * r
        z[:4] = torch.tensor([[1.0], [-1.0], [0.0], [0.5]], dtype=torch.float64) * r  # corners, centre
        frames = sp.apply(z)[:, 8].double()
        assert bool((frames >= b[0] - 1e-9).all()) and bool((frames <= b[1] + 1e-9).all())
    # the range shrinks with the box (unlike a window of source pixels)
    small = warp_bounds(sp, *ball_box(sp, 0.01, "linf"))[8]
    large = warp_bounds(sp, *ball_box(sp, 0.5, "linf"))[8]
    assert float((small[1] - small[0]).max()) < 0.1 * float((large[1] - large[0]).max())


def test_linear_warp_relaxation_contains_every_imposed_frame():
    sp = _space(7, "rotate_cw", 2000004)
    lo, hi = ball_box(sp, 0.6, "linf")
    rel = Domain(sp, lo, hi, None, "linf").relax[8]
    g = torch.Generator().manual_seed(1)
    z = (torch.rand(300, sp.dims, generator=g, dtype=torch.float64) * 2 - 1) * 0.6
    frames = sp.apply(z)[:, 8].double()
    zz = z.view(-1, 1, 2, sp.gh, sp.gw).repeat_interleave(16, -2).repeat_interleave(16, -1)  # per pixel
    lin = rel.xc + (rel.gz[0] * zz[:, :, 0] + rel.gz[1] * zz[:, :, 1])
    assert bool((frames >= lin - rel.elo - 1e-9).all()) and bool((frames <= lin + rel.ehi + 1e-9).all())


@pytest.mark.parametrize("metric,radius", [("l2", 3.0), ("l2", 12.0), ("l1", 20.0)])
def test_lifted_warp_forms_hold_pointwise_and_their_minimum_is_a_lower_bound(metric, radius):
    """``A·x(z) ≥ const + a·z + b·|z| + β·q(z)`` at every sampled z of the ball (corners of the box
    and single-block moves included), and :meth:`Domain.zmin` is below the form's sampled minimum."""
    sp = FlowSpace(make_clip("rotate_cw", 2000004).video, [6, 7], 16)
    lo, hi = ball_box(sp, radius, metric)
    dom = Domain(sp, lo, hi, radius, metric)
    assert dom.lifted and dom.width == 2 * sp.dims + sp.dims // 2
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 3, 64, 64, generator=g, dtype=torch.float64)
    parts = [(7, a), (8, -0.5 * a), (2, a)]  # two imposed frames and one clean frame
    coef, const = dom.linear(parts, torch.zeros(6, dtype=torch.float64), sp.video)
    z = torch.randn(400, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, metric).view(-1, 1) * radius * torch.rand(400, 1, generator=g, dtype=torch.float64) ** 0.3
    nb = sp.gh * sp.gw  # the whole budget on one block: along x, or diagonally (the cross term)
    one = torch.zeros(4 * nb, sp.dims, dtype=torch.float64)
    for b in range(nb):
        one[b, b] = float(hi[0])
        for j, (sx, sy) in enumerate(((1, 1), (1, -1), (-1, 1))):
            one[nb * (j + 1) + b, b], one[nb * (j + 1) + b, nb + b] = sx * float(hi[0]) / 2 ** 0.5, sy * float(hi[0]) / 2 ** 0.5
    one = one / (sp.norm(one, metric) / radius).clamp_min(1).view(-1, 1)  # inside the ball
    z = torch.cat([z, one, torch.zeros(1, sp.dims, dtype=torch.float64)])
    z = torch.maximum(torch.minimum(z, hi), lo)
    fr = sp.apply(z).double()
    val = sum((a_t.unsqueeze(0) * fr[:, t].unsqueeze(1)).flatten(2).sum(2) for t, a_t in parts)
    d = sp.dims
    q = z.view(-1, 2, 2, sp.gh * sp.gw).square().sum(2).flatten(1)
    # per pixel: |x(z) − (p0 + g·z + k·|z|)| ≤ c·q of its block (+ the float32 slack)
    w = dom.lift[8]
    zz = z.view(-1, 2, 2, sp.gh, sp.gw)[:, 1].repeat_interleave(16, -2).repeat_interleave(16, -1).unsqueeze(2)
    qq = q.view(-1, 2, sp.gh, sp.gw)[:, 1].repeat_interleave(16, -2).repeat_interleave(16, -1).unsqueeze(1)
    rest = fr[:, 8] - (w.p0 + w.g[0] * zz[:, 0] + w.g[1] * zz[:, 1] + w.k[0] * zz[:, 0].abs() + w.k[1] * zz[:, 1].abs())
    assert float((rest.abs() - w.c * qq).max()) <= 1e-5
    if float(hi[0]) > 0.5:  # shifts large enough for the cross terms to show
        assert float((rest.abs() - w.c * qq / 2).max()) > 1e-4  # the cross-term bound is needed…
        assert float(rest.abs().max()) < 0.25 * float((fr[:, 8] - w.p0).abs().max())  # …the rest is second order
    form = const + z @ coef[:, :d].T + z.abs() @ coef[:, d:2 * d].T + q @ coef[:, 2 * d:].T
    assert float((val - form).min()) >= -1e-9
    assert bool((const + dom.zmin(coef) <= form.min(0).values + 1e-9).all())
    # tighter than the secant relaxation on this ball (the kinks are paid once, not per block)
    sec = Domain(sp, lo, hi, radius, metric, lift=False)
    c2, k2 = sec.linear(parts, torch.zeros(6, dtype=torch.float64), sp.video)
    assert bool((const + dom.zmin(coef) > k2 + sec.zmin(c2)).all())


@pytest.mark.parametrize("layer,shape", [
    (nn.Linear(7, 5), (1, 7)), (nn.Conv2d(3, 4, 3, padding=1), (1, 3, 9, 9)),
    (nn.Conv2d(3, 4, 3, stride=2, padding=1), (1, 3, 9, 9)), (nn.Conv2d(3, 4, 3, stride=2, padding=1), (1, 3, 8, 8)),
    (nn.Conv2d(4, 4, 5, stride=3, padding=2, groups=2), (1, 4, 11, 10)),
    (nn.Conv2d(3, 4, 3, dilation=2, padding=2, bias=False), (1, 3, 8, 8)), (nn.BatchNorm2d(3), (1, 3, 5, 5))])
def test_direct_pullbacks_equal_the_vector_jacobian_products(layer, shape):
    """``_pullback``'s direct rules (a matrix product, the convolution's input gradient, a channel
    scale) give ``(A W, A f(0))`` exactly as autograd's vector-Jacobian products do."""
    from torch.func import vjp, vmap

    from core.verify.bounds import _pullback

    torch.manual_seed(0)
    m = layer.double().eval()
    if isinstance(m, nn.BatchNorm2d):
        m.running_mean.normal_(), m.running_var.uniform_(0.5, 2.0), m.weight.data.normal_(), m.bias.data.normal_()
    out0, pull = vjp(m, torch.zeros(shape, dtype=torch.float64))
    a = torch.randn(6, *out0.shape[1:], dtype=torch.float64)
    (ref,) = vmap(pull)(a.unsqueeze(1))
    g, b = _pullback(m, a, torch.Size(shape))
    assert g.shape == ref.squeeze(1).shape
    assert torch.allclose(g, ref.squeeze(1), atol=1e-12) and torch.allclose(b, (a * out0).flatten(1).sum(1), atol=1e-12)


def _zmin_lifted_reference(dom, coef, sub=None):
    """The lifted minimum as first written: the box bound always, the knapsack by a full sort."""
    zi, qi = sub if sub is not None else (slice(None), slice(None))
    lo, hi = dom.zlo[zi], dom.zhi[zi]
    d = lo.shape[0]
    a, b, beta = coef[:, :d], coef[:, d:2 * d], coef[:, 2 * d:]
    per = torch.minimum(a * lo + b * lo.abs(), a * hi + b * hi.abs())
    best = torch.where((lo <= 0) & (hi >= 0), per.clamp_max(0), per).sum(1)
    cap = torch.maximum(dom.zlo.square(), dom.zhi.square()).view(len(dom.space.flows), 2, -1).sum(1).flatten()[qi]
    total = float(cap.sum())
    if dom.radius is not None:
        p, q, rz = dom._ball()
        best = torch.maximum(best, -rz * torch.linalg.vector_norm((a.abs() - b).clamp_min(0), ord=q, dim=1))
        total = min(total, rz * rz) if p <= 2.0 else total
    gain = (-beta).clamp_min(0)
    order = torch.argsort(gain, dim=1, descending=True)
    c_sorted = cap[order]
    fill = torch.minimum(c_sorted, (total - (torch.cumsum(c_sorted, 1) - c_sorted)).clamp_min(0))
    return best - (gain.gather(1, order) * fill).sum(1)


@pytest.mark.parametrize("metric,radius", [("l2", 3.0), ("l2", 15.0), ("l1", 20.0)])
def test_lifted_minimum_skips_only_what_cannot_matter(metric, radius):
    """The fast lifted minimum (no box bound when the box holds the ball; the knapsack sorts only the
    blocks that can be filled) equals the full computation on the ball's box, on sub-boxes of it
    (split, shrunk, some coordinates pinned to 0: blocks with no room) and on a column subset."""
    sp = FlowSpace(make_clip("rotate_cw", 2000004).video, [6, 7], 16)
    lo, hi = ball_box(sp, radius, metric)
    g = torch.Generator().manual_seed(5)
    d, nb = sp.dims, sp.gh * sp.gw  # z: per flow, x of every block, then y
    lo2, hi2 = lo.clone(), hi.clone()
    lo2[:5] = 0.0  # a half-space split
    hi2[5:9] = 0.3 * hi[5:9]
    for b in (9, 10, 12):  # pinned: no room left in these blocks of the first flow…
        lo2[b], hi2[b], lo2[nb + b], hi2[nb + b] = 0.0, 0.0, 0.0, 0.0
    lo2[13], hi2[13] = 0.0, 0.0  # …and only y in this one
    for zlo, zhi in ((lo, hi), (lo2, hi2)):
        dom = Domain(sp, zlo, zhi, radius, metric)
        assert dom.lifted
        coef = torch.randn(40, dom.width, generator=g, dtype=torch.float64)
        coef[:10, 2 * d:] = -coef[:10, 2 * d:].abs()  # every block worth filling
        coef[10:12, 2 * d:] = 0.0  # ties: nothing to gain
        coef[12:20, 2 * d + 9] = -50.0  # most to gain in a block with no room
        ref, fast = _zmin_lifted_reference(dom, coef), dom.zmin(coef, tight=False)
        assert torch.allclose(fast, ref, rtol=0, atol=1e-12), (fast - ref).abs().max()
        zi = torch.tensor([0, 1, 9, 10, nb, nb + 1, nb + 9, nb + 10])  # blocks 0, 1, 9, 10 of the first flow
        qi = torch.tensor([0, 1, 9, 10])
        sub_coef = torch.randn(8, 8 + 8 + 4, generator=g, dtype=torch.float64)
        sub_coef[:4, -2] = -50.0
        ref, fast = _zmin_lifted_reference(dom, sub_coef, (zi, qi)), dom.zmin(sub_coef, (zi, qi), tight=False)
        assert torch.allclose(fast, ref, rtol=0, atol=1e-12), (fast - ref).abs().max()


def _in_box_and_ball(n, lo, hi, radius, p, g):
    """``n`` points of ``{lo ≤ z ≤ hi, ‖z‖_p ≤ radius}`` (the box holds 0): random directions at
    random radii and on the sphere, clipped to the box (which keeps them in the ball)."""
    z = torch.randn(n, lo.shape[0], generator=g, dtype=torch.float64)
    if p == 1.0:
        z = z.sign() * torch.empty_like(z).exponential_(generator=g)
    rad = torch.rand(n, 1, generator=g, dtype=torch.float64) ** 0.3
    rad[: n // 4] = 1.0
    z = z / torch.linalg.vector_norm(z, ord=p, dim=1, keepdim=True) * radius * rad
    return torch.maximum(torch.minimum(z, hi), lo)


@pytest.mark.parametrize("p", [2.0, 1.0])
def test_box_ball_minimum_bounds_the_intersection_and_is_exact_when_convex(p):
    """:func:`box_ball_min` (the Lagrangian dual over box ∩ ball): below the objective at every sampled
    point of the intersection, sphere and faces included; for convex rows (``b ≥ 0``, ``β = 0``) as
    high as the best multiplier of a dense scan (strong duality: the true minimum); over the ball's
    own box equal to the ball's dual-norm bound; where the box cuts the ball, never looser than the
    better of the separate box and ball bounds, and tighter on most rows."""
    from core.verify.certify import _box_ball_dual, box_ball_min

    g = torch.Generator().manual_seed(11)
    rows, d, rz = 16, 6, 0.7
    a = torch.randn(rows, d, generator=g, dtype=torch.float64)
    b = torch.randn(rows, d, generator=g, dtype=torch.float64) * 0.5
    beta = -torch.rand(rows, d, generator=g, dtype=torch.float64) * 0.3
    b[:6], beta[:6] = b[:6].abs(), 0.0  # convex rows
    lo, hi = torch.full((d,), -rz, dtype=torch.float64), torch.full((d,), rz, dtype=torch.float64)
    lo[0], hi[1], lo[2], hi[3] = 0.0, 0.0, -0.3, 0.05  # cuts (a split at 0 on both sides, two shrinks)
    bound = box_ball_min(a, b, beta, lo, hi, rz, p)
    z = _in_box_and_ball(200_000, lo, hi, rz, p, g)
    f = z @ a.T + z.abs() @ b.T + (z * z) @ beta.T
    assert bool((bound <= f.min(0).values + 1e-9).all())
    mus = torch.logspace(-6, 4, 4000, dtype=torch.float64)
    scan = torch.stack([_box_ball_dual(a[:6], b[:6], beta[:6], lo, hi, rz, p, mu.expand(6), False)[0] for mu in mus]).max(0).values
    assert bool((bound[:6] >= scan - (1e-4 if p == 2.0 else 2e-3) * (1 + scan.abs())).all())  # (10 bisection steps)
    # linear forms: over the ball's own box the ball's bound; over the cut box tighter than the separate bounds
    zero = torch.zeros_like(a)
    full = box_ball_min(a, zero, zero, -torch.full((d,), rz, dtype=torch.float64), torch.full((d,), rz, dtype=torch.float64), rz, p)
    ball = -rz * torch.linalg.vector_norm(a, ord=2.0 if p == 2.0 else float("inf"), dim=1)
    assert torch.allclose(full, ball, rtol=0, atol=1e-6 if p == 2.0 else 2e-3)
    cut = box_ball_min(a, zero, zero, lo, hi, rz, p)
    box = torch.minimum(a * lo, a * hi).sum(1)
    sep = torch.maximum(box, ball)
    tol = 1e-6 if p == 2.0 else 2e-3  # the multiplier is located in float32
    assert bool((cut >= sep - tol).all()) and int((cut > sep + 1e-2).sum()) >= rows // 2


@pytest.mark.parametrize("metric,radius", [("l2", 3.0), ("l2", 12.0), ("l1", 20.0)])
def test_joint_minimum_of_lifted_forms_is_sound_and_tighter(metric, radius):
    """:meth:`Domain.zmin` with the joint bound over box ∩ ball (:meth:`Domain.zmin_dual`) on real
    lifted warp forms, on the ball's box and on a branch-and-bound sub-box: below the form at every
    sampled point of the domain, never looser than the separate bounds, tighter on most rows."""
    sp = FlowSpace(make_clip("rotate_cw", 2000004).video, [6, 7], 16)
    lo, hi = ball_box(sp, radius, metric)
    lo2, hi2 = lo.clone(), hi.clone()
    lo2[:6] = 0.0
    hi2[40:50] = 0.2 * hi[40:50]
    g = torch.Generator().manual_seed(6)
    a = torch.randn(24, 3, 64, 64, generator=g, dtype=torch.float64)
    parts = [(7, a), (8, -0.5 * a)]
    p = 2.0 if metric == "l2" else 1.0
    d, nb = sp.dims, sp.gh * sp.gw
    for zlo, zhi in ((lo, hi), (lo2, hi2)):
        dom = Domain(sp, zlo, zhi, radius, metric)
        assert dom.lifted and dom.dual_pays and dom.clipped == (zlo is lo2)
        coef, const = dom.linear(parts, torch.zeros(24, dtype=torch.float64), sp.video)
        z = _in_box_and_ball(4000, zlo, zhi, radius / sp.weight(metric), p, g)
        q = z.view(-1, 2, 2, nb).square().sum(2).flatten(1)
        form = const + z @ coef[:, :d].T + z.abs() @ coef[:, d:2 * d].T + q @ coef[:, 2 * d:].T
        joint, sep = dom.zmin(coef), dom.zmin(coef, tight=False)
        assert bool((const + joint <= form.min(0).values + 1e-9).all())
        assert bool((joint >= sep).all()) and int((joint > sep + 1e-6).sum()) >= 12
        one = torch.zeros(1, dom.width, dtype=torch.float64)
        one[0, 2 * d + nb + 3] = -1.0  # −q of block 3 of the second flow: at most the whole ball
        rz = radius / sp.weight(metric)
        assert float(dom.zmin_dual(one)[0]) == pytest.approx(-rz * rz, rel=1e-2)  # (below it: sound)


@pytest.mark.parametrize("lift", [True, False])
def test_step_forms_bound_the_imposed_frames_pointwise(lift):
    """:meth:`Domain.step_forms` of two frames (one imposed by each flow): ``L·w(z) + l0 ≤ x(z) ≤
    U·w(z) + u0`` at sampled z, corners and single-block diagonal moves included; the secant forms on
    a ball around a point away from 0 (an A* node)."""
    sp = FlowSpace(make_clip("rotate_cw", 2000004).video, [6, 7], 16)
    g = torch.Generator().manual_seed(4)
    radius = 10.0
    centre = None if lift else torch.randn(sp.dims, generator=g, dtype=torch.float64) * 0.3
    lo, hi = ball_box(sp, radius, "l2")
    if centre is not None:
        lo, hi = lo + centre, hi + centre
    dom = Domain(sp, lo, hi, radius, "l2", centre=centre)
    assert dom.lifted == lift
    big_l, big_u, l0, u0, (zi, qi) = dom.step_forms([8, 7], sp.video)
    nb, r = sp.gh * sp.gw, float(hi[0] - lo[0]) / 2
    z = (torch.rand(200, sp.dims, generator=g, dtype=torch.float64) * 2 - 1) * r
    diag = torch.zeros(3 * nb, sp.dims, dtype=torch.float64)
    for b in range(nb):
        diag[b, b], diag[b, nb + b] = r, r
        diag[nb + b, b], diag[nb + b, nb + b] = -r, r
        diag[2 * nb + b, 2 * nb + b] = -r
    z = torch.cat([z, diag, torch.full((1, sp.dims), r, dtype=torch.float64)])
    z = z + (0 if centre is None else centre)
    z = torch.maximum(torch.minimum(z, hi), lo)
    fr = sp.apply(z).double()
    x = torch.cat([fr[:, 8], fr[:, 7]], 1)  # (N, 6, H, W)
    zs = z[:, zi]
    w = torch.cat([zs, zs.abs(), z.view(-1, 2, 2, nb).square().sum(2).flatten(1)[:, qi]], 1) if lift else zs
    low = torch.einsum("nv,vchw->nchw", w, big_l) + l0
    up = torch.einsum("nv,vchw->nchw", w, big_u) + u0
    assert float((x - low).min()) >= -1e-9 and float((up - x).min()) >= -1e-9


@pytest.mark.parametrize("name", ["lstm", "c3d", "certified", "box_certified"])
@pytest.mark.parametrize("metric,radius", [("linf", 0.05), ("l2", 0.5), ("l2", 3.0)])
def test_margin_bounds_hold_for_random_and_attacked_points(name, metric, radius, request):
    clf = request.getfixturevalue(name)
    sp = _space()
    ev = Evaluator(clf, sp)
    mb = ModelBounds(clf, sp.video, ev.label)
    lo, hi = ball_box(sp, radius, metric)
    bound = float(mb.margin_lower(Domain(sp, lo, hi, radius, metric)).min())
    g = torch.Generator().manual_seed(2)
    z = torch.randn(200, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, metric).view(-1, 1) * radius * torch.rand(200, 1, generator=g, dtype=torch.float64)
    z = torch.maximum(torch.minimum(z, hi), lo)
    assert float(ev.margins(z).min()) >= bound - 1e-4
    # PGD inside the region, minimising the margin
    x = torch.zeros(sp.dims, dtype=torch.float64)
    for _ in range(15):
        _, grad = ev.margin_and_grad(x)
        x = x - (hi - lo).max() * 0.1 * torch.sign(grad)
        x = torch.maximum(torch.minimum(x, hi), lo)
        n = float(sp.norm(x, metric))
        if n > radius:
            x = x * (radius / n)
        assert float(ev.margins(x.unsqueeze(0))[0]) >= bound - 1e-4


@pytest.mark.parametrize("name", ["lstm", "c3d"])
def test_crown_is_never_looser_than_ibp(name, request):
    clf = request.getfixturevalue(name)
    sp = _space()
    for r in (0.01, 0.1, 1.0):
        i = certify(clf, sp.video, sp, r, "linf", "ibp")["margin_lower"]
        c = certify(clf, sp.video, sp, r, "linf", "crown")["margin_lower"]
        assert c >= i - 1e-9


def test_crown_on_tiny_networks_against_exact_enumeration():
    """20 random 2-input ReLU networks, random boxes, both signs of the output: the CROWN lower
    bound is below the true minimum (dense enumeration), and at least as tight as IBP."""
    g = torch.Generator().manual_seed(0)
    tighter = 0
    for trial in range(20):
        torch.manual_seed(trial)
        net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 1)).double()
        c = torch.rand(1, 2, generator=g, dtype=torch.float64) * 2 - 1
        w = torch.rand(1, 2, generator=g, dtype=torch.float64) * 0.8 + 0.05
        lo, hi = c - w, c + w
        axes = [torch.linspace(float(lo[0, k]), float(hi[0, k]), 121, dtype=torch.float64) for k in range(2)]
        out = net(torch.cartesian_prod(*axes)).flatten().detach()
        for sign in (1.0, -1.0):
            spec = torch.full((1, 1), sign, dtype=torch.float64)
            cl = float(crown_lower(list(net), lo, hi, spec)[0])
            (il, ih), _ = ibp(list(net), lo, hi)
            ibp_low = float(il[0, 0]) if sign > 0 else -float(ih[0, 0])
            exact = float((sign * out).min())
            assert cl <= exact + 1e-9, (trial, sign)
            assert ibp_low <= cl + 1e-9
            tighter += cl > ibp_low + 1e-6
    assert tighter >= 20  # CROWN is strictly tighter in most cases


def test_forward_intermediate_bounds_on_tiny_networks_against_exact_enumeration():
    """:func:`forward_relu_inputs` on 20 random ReLU networks whose input is a linear form of two
    variables in [−1, 1]² plus an interval: every ReLU input interval holds the pre-activations of a
    dense grid of inputs, and is never looser than interval arithmetic."""
    import sys

    cm = sys.modules["core.verify.certify"]
    g = torch.Generator().manual_seed(5)
    w = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 61, dtype=torch.float64),
                                   torch.linspace(-1, 1, 61, dtype=torch.float64), indexing="ij"), -1).view(-1, 2)
    for _ in range(20):
        torch.manual_seed(int(torch.randint(0, 10_000, (1,), generator=g)))
        layers = [nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU()]
        layers = [m.double() for m in layers]
        big = torch.randn(2, 4, generator=g, dtype=torch.float64)
        c0 = torch.randn(4, generator=g, dtype=torch.float64)
        slack = torch.rand(4, generator=g, dtype=torch.float64) * 0.2  # x ∈ big·w + c0 ± slack
        xl, xh = (c0 - big.abs().sum(0) - slack).unsqueeze(0), (c0 + big.abs().sum(0) + slack).unsqueeze(0)
        _, inputs = ibp(layers, xl, xh)
        forms = (big, big, c0 - slack, c0 + slack, None)
        out = cm.forward_relu_inputs(layers, inputs, forms, lambda coef, sub: -coef.abs().sum(1))
        e = (torch.rand(w.shape[0], 4, generator=g, dtype=torch.float64) * 2 - 1) * slack
        x = w @ big + c0 + e
        with torch.no_grad():
            for k, m in enumerate(layers):
                if isinstance(m, nn.ReLU):
                    lo, hi = out[k]
                    assert bool((x >= lo - 1e-9).all()) and bool((x <= hi + 1e-9).all())
                    assert bool((lo >= inputs[k][0] - 1e-9).all()) and bool((hi <= inputs[k][1] + 1e-9).all())
                x = m(x)


def test_alpha_crown_on_tiny_networks_against_exact_enumeration():
    """α-CROWN's optimised ReLU slopes: below the true minimum (dense enumeration), never looser than
    CROWN with the same intermediate bounds, strictly tighter on most networks, and the optimisation
    leaves no gradient in the model."""
    from core.verify.bounds import alpha_crown, concretize_box, crown_backward

    g = torch.Generator().manual_seed(1)
    tighter = 0
    for trial in range(20):
        torch.manual_seed(100 + trial)
        net = nn.Sequential(nn.Linear(2, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)).double()
        c = torch.rand(1, 2, generator=g, dtype=torch.float64) * 2 - 1
        w = torch.rand(1, 2, generator=g, dtype=torch.float64) * 0.8 + 0.05
        lo, hi = c - w, c + w
        axes = [torch.linspace(float(lo[0, k]), float(hi[0, k]), 161, dtype=torch.float64) for k in range(2)]
        spec = torch.randn(4, 3, generator=g, dtype=torch.float64)
        with torch.no_grad():
            exact = (net(torch.cartesian_prod(*axes)) @ spec.T).min(0).values
        _, inputs = ibp(list(net), lo, hi)
        crown = concretize_box(*crown_backward(list(net), spec, inputs), lo, hi)
        alpha = alpha_crown(list(net), spec, inputs, lambda a, b: concretize_box(a, b, lo, hi), iters=30)
        assert bool((alpha <= exact + 1e-9).all()), trial
        assert bool((alpha >= crown - 1e-12).all())
        tighter += int((alpha > crown + 1e-4).any())
        assert all(p.grad is None for p in net.parameters())
    assert tighter >= 15


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_intervals_contain_sampled_states(cell):
    torch.manual_seed(1)
    rnn = cell(4, 6, batch_first=True).double()
    c = torch.randn(5, 4, dtype=torch.float64)
    xs = [(c[t:t + 1] - 1.0, c[t:t + 1] + 1.0) for t in range(5)]
    lo, hi = recurrent_ibp(rnn, xs)
    x = c.unsqueeze(0) + (torch.rand(2000, 5, 4, dtype=torch.float64) * 2 - 1)
    out, _ = rnn(x)
    h = out[:, -1]
    assert bool((h >= lo - 1e-12).all()) and bool((h <= hi + 1e-12).all())


def test_certified_radius_is_monotone_and_safe(c3d):
    sp = _space()
    cr = CertifiedRadius(c3d, sp, "l2")
    res = cr.run(time_limit=8)
    lows = [t["certified_lower"] for t in res["trace"]]
    assert res["certified_lower"] > 0 and lows == sorted(lows)
    # no per-step CNN for crown+ to tighten: the default runs CROWN, and says so
    assert res["method"] == "crown" and certify(c3d, sp.video, sp, 0.01)["method"] == "crown"


def test_unsupported_models_say_why():
    assert "optical flow inside" in supported(load_classifier("motion_stream", "cpu"))
    assert supported(load_classifier("cnn_gru", "cpu")) is None


@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_s_shaped_lines_bound_the_function_on_the_interval(fn):
    from core.verify.bounds import _dsig, _dtanh, s_shaped_lines

    f, df = (torch.sigmoid, _dsig) if fn == "sigmoid" else (torch.tanh, _dtanh)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, generator=g, dtype=torch.float64) * 4
    b = a + torch.rand(500, generator=g, dtype=torch.float64) * torch.tensor([0.0, 1e-10, 0.5, 8.0]).repeat(125).double()
    x = a.unsqueeze(1) + (b - a).unsqueeze(1) * torch.linspace(0, 1, 401, dtype=torch.float64)
    y = f(x)
    at = a + (b - a) * torch.rand(500, generator=g, dtype=torch.float64) * 1.4 - 0.2  # inside and outside
    for anchor in (None, at):
        al, bl, au, bu = s_shaped_lines(f, df, a, b, anchor)
        assert bool((al.unsqueeze(1) * x + bl.unsqueeze(1) <= y + 1e-12).all())
        assert bool((au.unsqueeze(1) * x + bu.unsqueeze(1) >= y - 1e-12).all())


@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_s_shaped_lines_touch_the_function_where_crown_says(fn):
    """Across zero the upper line passes through the left end and the lower through the right end,
    each tangent where it touches (CROWN's lines), unless the interval is so lopsided that parallel
    lines with the smaller end slope leave less area: on wide intervals the band is never wider than
    the parallel lines' and on average much narrower. With an anchor the free
    tangent touches there."""
    from core.verify.bounds import _dsig, _dtanh, s_shaped_lines

    f, df = (torch.sigmoid, _dsig) if fn == "sigmoid" else (torch.tanh, _dtanh)
    g = torch.Generator().manual_seed(1)
    lo = -0.5 - 5 * torch.rand(300, generator=g, dtype=torch.float64)
    hi = 0.5 + 5 * torch.rand(300, generator=g, dtype=torch.float64)
    al, bl, au, bu = s_shaped_lines(f, df, lo, hi)
    even = (hi + lo).abs() < 2  # not too lopsided: the lines through the ends are the tighter ones
    assert torch.allclose((au * lo + bu)[even], f(lo)[even], atol=1e-9)
    assert torch.allclose((al * hi + bl)[even], f(hi)[even], atol=1e-9)
    x = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.linspace(0, 1, 401, dtype=torch.float64)
    band = ((au.unsqueeze(1) - al.unsqueeze(1)) * x + (bu - bl).unsqueeze(1)).mean(1)
    s = torch.minimum(df(lo), df(hi))  # parallel lines through the two ends
    parallel = (f(hi) - s * hi - f(lo) + s * lo)
    assert bool((band <= parallel + 1e-9).all()) and float((band / parallel).mean()) < 0.7
    # concave side: the upper tangent touches at the anchor
    lo2, hi2 = torch.rand(300, generator=g, dtype=torch.float64), 1 + 3 * torch.rand(300, generator=g, dtype=torch.float64)
    at = lo2 + (hi2 - lo2) * torch.rand(300, generator=g, dtype=torch.float64)
    _, _, au, bu = s_shaped_lines(f, df, lo2, hi2, at)
    assert torch.allclose(au * at + bu, f(at), atol=1e-9)


def test_lstm_crown_is_sound_and_tighter_than_intervals():
    """Back-substitution through time on random LSTMs: below the minimum of 20 000 sampled input
    sequences (corners included) and never looser than interval propagation — strictly tighter on
    most of them."""
    from core.verify.bounds import LSTMCrown

    g = torch.Generator().manual_seed(0)
    tighter = 0
    for trial in range(20):
        torch.manual_seed(trial)
        rnn = nn.LSTM(5, 4, batch_first=True).double()
        with torch.no_grad():
            for p in rnn.parameters():
                p.mul_(1 + 2 * torch.rand(1, generator=g).item())
        centers = torch.randn(6, 5, generator=g, dtype=torch.float64)
        radius = torch.rand(6, 5, generator=g, dtype=torch.float64) * 0.4
        radius[:2] = 0  # an exact prefix, then boxes
        lo, hi = centers - radius, centers + radius
        xs = [(lo[t].unsqueeze(0), hi[t].unsqueeze(0)) for t in range(6)]
        spec = torch.randn(3, 4, generator=g, dtype=torch.float64)
        with torch.no_grad():
            bound = LSTMCrown(rnn, xs).lower(spec)
            x = lo + (hi - lo) * torch.rand(20_000, 6, 5, generator=g, dtype=torch.float64)
            x[:256] = torch.where(torch.rand(256, 6, 5, generator=g) < 0.5, lo, hi)
            sampled = (rnn(x)[0][:, -1] @ spec.T).min(0).values
            h_lo, h_hi = recurrent_ibp(rnn, xs)
        c, r = (h_lo[0] + h_hi[0]) / 2, (h_hi[0] - h_lo[0]) / 2
        interval = spec @ c - spec.abs() @ r
        assert bool((bound <= sampled + 1e-9).all()), (trial, bound, sampled)
        assert bool((bound >= interval - 1e-9).all())
        tighter += int((bound > interval + 1e-3).any())
    assert tighter >= 15


def test_page_default_space_is_certified(lstm):
    """All 15 flows of the Safe radius page: interval bounds through 16 perturbed LSTM steps certify
    nothing; CROWN through time certifies a small ℓ2 ball, and points inside it keep the label."""
    video = make_clip("translate_left", 0).video
    sp = FlowSpace(video, list(range(15)), 16)
    assert not certify(lstm, video, sp, 0.005, "l2", "ibp")["certified"]
    out = certify(lstm, video, sp, 0.005, "l2", "crown")
    assert out["certified"] and out["margin_lower"] > 0
    ev = Evaluator(lstm, sp)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, "l2").unsqueeze(1) * 0.005
    assert bool((ev.margins(z) >= out["margin_lower"] - 1e-4).all())


def test_crown_with_crown_intermediate_bounds_is_tighter_and_sound(lstm):
    """``crown+`` (CROWN bounds for every unstable ReLU of the per-frame CNN): certifies a ball that
    interval intermediates cannot, never looser, and random and PGD points inside keep the margin."""
    sp = _space(14)
    video = sp.video
    plain = certify(lstm, video, sp, 0.5, "l2", "crown")
    full = certify(lstm, video, sp, 0.5, "l2", "crown+")
    assert not plain["certified"] and full["certified"] and full["margin_lower"] >= plain["margin_lower"]
    both = certify(lstm, video, sp, 0.5, "l2", "crown++")  # back-substitution on top: never looser
    assert both["margin_lower"] >= full["margin_lower"] - 1e-9
    full = both
    ev = Evaluator(lstm, sp)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(128, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, "l2").unsqueeze(1) * 0.5 * torch.rand(128, 1, generator=g, dtype=torch.float64).sqrt()
    assert bool((ev.margins(z) >= full["margin_lower"] - 1e-4).all())
    zz = torch.zeros(sp.dims, dtype=torch.float64)  # PGD on the margin inside the ball
    for _ in range(20):
        _, grad = ev.margin_and_grad(zz)
        zz = zz - 0.1 * grad / grad.norm().clamp_min(1e-12)
        n = float(sp.norm(zz, "l2"))
        if n > 0.5:
            zz = zz * (0.5 / n)
    assert float(ev.margins(zz.unsqueeze(0))[0]) >= full["margin_lower"] - 1e-4
    with pytest.raises(Exception, match="method must be"):
        certify(lstm, video, sp, 0.5, "l2", "beta")


def _last_step_chain(lstm, r: float, lift: bool = True):
    """Step 15 of the regular model over flows 13 and 14 (both of its frames imposed), ℓ2 ball of
    radius ``r``: ``(certify module, space, ModelBounds, Domain, layers, interval inputs)``."""
    import sys

    cm = sys.modules["core.verify.certify"]
    sp = FlowSpace(make_clip("translate_left", 0).video, [13, 14], 16)
    mb = ModelBounds(lstm, sp.video, int(lstm.predict(sp.video)[0]), "crown+")
    dom = Domain(sp, *ball_box(sp, r, "l2"), r, "l2", lift=lift)
    layers = [cm._Snippet(False)] + mb.pre
    xl = torch.cat([dom.relax[15].lo, dom.relax[14].lo], 0).unsqueeze(0)
    xh = torch.cat([dom.relax[15].hi, dom.relax[14].hi], 0).unsqueeze(0)
    return cm, sp, mb, dom, layers, ibp(layers, xl, xh)[1]


@pytest.mark.parametrize("lift,backward", [(True, False), (False, False), (True, True)])
def test_crown_intermediate_bounds_contain_sampled_activations(lstm, lift, backward):
    """Every ReLU input interval of the per-frame CNN from the forward linear bounds (``crown+``,
    lifted and secant warp forms, two imposed frames) holds the real pre-activations of imposed frames
    sampled inside the ball — the whole budget on one block included — and is much tighter than
    intervals (the intermediate bounds themselves, not just the margin)."""
    cm, sp, mb, dom, layers, inputs = _last_step_chain(lstm, 1.0, lift)
    r, (_, hi), (s, prev) = 1.0, ball_box(sp, 1.0, "l2"), (15, 14)
    assert dom.lifted == lift
    # as ModelBounds runs it: the separate concretisation, the joint one for the neurons left unstable
    refined = cm.forward_relu_inputs(layers, inputs, dom.step_forms([s, prev], mb.video),
                                     lambda a, sub: dom.zmin(a, sub, tight=False),
                                     tighten=dom.zmin_dual if dom.dual_pays else None)
    relus = [k for k, m in enumerate(layers) if isinstance(m, nn.ReLU)]
    if backward:  # crown++: back-substitution for the deeper ReLUs, never looser than the forward bounds
        fwd = refined
        refined = cm.refine_relu_inputs(layers, fwd, lambda a, b, win=None: dom.concretize(
            [(s, a[:, :3]), (prev, a[:, 3:])], b, mb.video, win))
        for k in relus:
            assert bool((refined[k][0] >= fwd[k][0] - 1e-12).all()) and bool((refined[k][1] <= fwd[k][1] + 1e-12).all())
        assert sum(float((refined[k][1] - refined[k][0]).sum()) for k in relus[1:]) < \
            0.98 * sum(float((fwd[k][1] - fwd[k][0]).sum()) for k in relus[1:])
    assert sum(float((refined[k][1] - refined[k][0]).sum()) for k in relus) < \
        0.5 * sum(float((inputs[k][1] - inputs[k][0]).sum()) for k in relus)  # much tighter than intervals
    g = torch.Generator().manual_seed(0)
    z = torch.randn(48, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, "l2").unsqueeze(1) * r * torch.rand(48, 1, generator=g, dtype=torch.float64).sqrt()
    one = torch.zeros(2 * sp.dims, sp.dims, dtype=torch.float64)  # ±the whole budget on one coordinate
    one[torch.arange(sp.dims), torch.arange(sp.dims)] = float(hi[0])
    one[sp.dims + torch.arange(sp.dims), torch.arange(sp.dims)] = -float(hi[0])
    z = torch.cat([z, one])
    frames = sp.apply(z).double()
    x = torch.cat([frames[:, s], frames[:, prev]], 1)
    with torch.no_grad():
        for k, m in enumerate(layers):
            if k in relus:
                assert bool((x >= refined[k][0] - 1e-6).all()) and bool((x <= refined[k][1] + 1e-6).all()), k
            x = m(x)


@pytest.mark.parametrize("lift", [True, False])
def test_crown_plus_forward_windows_give_the_dense_bounds(lstm, lift):
    """crown+ carries each flow variable's forms through the convolutional prefix only on the window
    where they can be non-zero (the receptive field of its block): exactly the intermediate bounds of
    the dense forward pass, with the lifted and the secant warp forms."""
    cm, _, mb, dom, layers, inputs = _last_step_chain(lstm, 1.0, lift)
    forms = dom.step_forms([15, 14], mb.video)
    windowed = cm.forward_relu_inputs(layers, inputs, forms, dom.zmin)
    dense = cm.forward_relu_inputs(layers, inputs, forms, dom.zmin, windows=False)
    relus = [k for k, m in enumerate(layers) if isinstance(m, nn.ReLU)]
    assert sum(float((dense[k][1] - dense[k][0]).sum()) for k in relus) < \
        0.5 * sum(float((inputs[k][1] - inputs[k][0]).sum()) for k in relus)  # the forms do something
    for k in range(len(layers)):
        for e in range(2):
            assert torch.allclose(windowed[k][e], dense[k][e], rtol=0, atol=1e-10), k


def test_crown_plus_plus_windows_give_the_dense_bounds(lstm, monkeypatch):
    """crown++ back-substitutes the convolutional ReLUs' neurons by spatial tiles on the input window
    each reads (padding at the frame's border, windows cut there): exactly the bounds of the dense
    pass, for tiles of every size (one tile = the whole grid), a tile without unstable neurons
    included (an empty batch once crashed the process)."""
    cm, _, mb, dom, layers, inputs = _last_step_chain(lstm, 1.0)
    s, prev = 15, 14
    fwd = cm.forward_relu_inputs(layers, inputs, dom.step_forms([s, prev], mb.video), dom.zmin)
    relus = [k for k, m in enumerate(layers) if isinstance(m, nn.ReLU)]
    k = relus[1]  # no unstable neuron in the top-left quarter of this layer's grid
    lo, hi = fwd[k]
    gh = lo.shape[-2]
    hi = hi.clone()
    hi[..., : gh // 2, : gh // 2] = torch.minimum(hi[..., : gh // 2, : gh // 2], torch.zeros(()) - 1e-3)
    lo = torch.minimum(lo, hi)
    fwd[k] = (lo, hi)

    def conc(a, b, win=None):
        return dom.concretize([(s, a[:, :3]), (prev, a[:, 3:])], b, mb.video, win)

    windowed = {t: cm.refine_relu_inputs(layers, fwd, conc, tiles=t) for t in (1, 3, 4)}
    monkeypatch.setattr(cm, "_spatial", lambda layers: False)
    dense = cm.refine_relu_inputs(layers, fwd, conc)
    assert sum(float((dense[j][1] - dense[j][0]).sum()) for j in relus[1:]) < \
        0.98 * sum(float((fwd[j][1] - fwd[j][0]).sum()) for j in relus[1:])  # the refinement does something
    for got in windowed.values():
        for j in relus:
            for e in range(2):
                assert torch.allclose(got[j][e], dense[j][e], rtol=0, atol=1e-10), j


def test_margin_rows_of_the_last_layer_are_exact_over_a_box():
    """The specification folded into the final linear layer: its lower bound equals the minimum over
    the box's corners (a linear function attains its minimum at one), for a batch of boxes."""
    import itertools

    from core.verify.bounds import margin_lower_linear, margin_lower_rows

    g = torch.Generator().manual_seed(3)
    fc = nn.Linear(6, 5).double()
    lo = torch.randn(4, 6, generator=g, dtype=torch.float64)
    hi = lo + torch.rand(4, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 4, 3])
    rows = margin_lower_rows((lo, hi), fc, y)
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6)), dtype=torch.float64)
    with torch.no_grad():
        for b in range(4):
            out = fc(lo[b] + corners * (hi[b] - lo[b]))  # (64, 5)
            exact = (out[:, y[b]].unsqueeze(1) - out).min(0).values
            assert torch.allclose(rows[b], exact, atol=1e-12)
            others = [j for j in range(5) if j != int(y[b])]
            single = margin_lower_linear((lo[b:b + 1], hi[b:b + 1]), fc, int(y[b]))
            assert torch.allclose(single, exact[others], atol=1e-12)


def test_joint_bound_through_cnn_and_lstm_is_sound_and_shares_the_budget(box_certified):
    """The ``joint`` bound (CROWN through time pulled back through every perturbed step's CNN,
    concretised once): on its own below the margin of random and PGD points in the ball, and
    tighter than per-step feature boxes on the 15 flows of the page defaults."""
    video = make_clip("translate_left", 0).video
    sp = FlowSpace(video, list(range(15)), 16)
    ev = Evaluator(box_certified, sp)
    mb = ModelBounds(box_certified, video, ev.label)
    r = 1.0
    out = mb.margin_bounds(Domain(sp, *ball_box(sp, r, "l2"), r, "l2"))
    assert set(out) == {"ibp", "crown", "joint"}
    joint = float(out["joint"].min())
    assert joint > float(out["crown"].min()) + 0.02 and joint > 0
    g = torch.Generator().manual_seed(3)
    z = torch.randn(64, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, "l2").unsqueeze(1) * r
    assert float(ev.margins(z).min()) >= joint - 1e-4
    zz = torch.zeros(sp.dims, dtype=torch.float64)  # PGD on the margin inside the ball
    for _ in range(10):
        _, grad = ev.margin_and_grad(zz)
        zz = zz - 0.3 * grad / grad.norm().clamp_min(1e-12)
        zz = zz * min(1.0, r / float(sp.norm(zz, "l2")))
    assert float(ev.margins(zz.unsqueeze(0))[0]) >= joint - 1e-4


def test_certified_ball_around_a_node(lstm):
    """``CertifiedRadius.around`` (the per-node radius of the A* ``certified`` heuristic): at the clip
    it agrees with :func:`certify`; a ball around a point next to a verified adversarial video is
    never certified (a ball centred at the clip would be); where it certifies a ball around a point
    far from the clip, random points inside keep the label."""
    from core.msr.upper import GradientSearch

    sp = _space(14)
    cr = CertifiedRadius(lstm, sp, "l2")
    zero = torch.zeros(sp.dims, dtype=torch.float64)
    for r in (0.02, 0.5):
        assert cr.around(zero, r) == certify(lstm, sp.video, sp, r, "l2")["certified"]
    ev = Evaluator(lstm, sp)
    gs = GradientSearch(ev, "l2", 0.5)
    gs.step(quick=True)
    assert gs.best is not None and gs.best.check["adversarial"]
    zs = gs.best.z.double()
    near = zs * (1 - 0.03 / gs.best.distance)  # 0.03 from the witness
    assert not cr.around(near, 0.05)
    mid = zs * 0.5  # halfway: find a certified ball around it, then sample inside
    rho = 0.2
    while rho > 1e-4 and not cr.around(mid, rho):
        rho /= 2
    assert rho > 1e-4
    g = torch.Generator().manual_seed(4)
    d = torch.randn(128, sp.dims, generator=g, dtype=torch.float64)
    d = d / sp.norm(d, "l2").unsqueeze(1) * rho * torch.rand(128, 1, generator=g, dtype=torch.float64)
    assert float(ev.margins(mid + d).min()) > 0
    assert cr.around(zero, 0.02)
    cr.abandon()  # Stop or the time limit while A* probes a node: nothing proved, and no exception
    assert cr.around(zero, 0.02) is False


def test_alpha_method_is_tighter_and_sound_on_the_certified_model(box_certified):
    """``method="alpha"`` (α-CROWN for the per-step CNN feature bounds): a larger margin bound than
    ``crown`` on the same ball, and random and PGD points inside stay above it."""
    sp = _space(14)
    ev = Evaluator(box_certified, sp)
    r = 8.0
    dom = Domain(sp, *ball_box(sp, r, "l2"), r, "l2")
    crown = float(ModelBounds(box_certified, sp.video, ev.label, "crown").margin_lower(dom).min())
    alpha = float(ModelBounds(box_certified, sp.video, ev.label, "alpha").margin_lower(dom).min())
    assert alpha > crown + 0.05 and alpha > 0
    g = torch.Generator().manual_seed(5)
    z = torch.randn(128, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, "l2").unsqueeze(1) * r * torch.rand(128, 1, generator=g, dtype=torch.float64).sqrt()
    assert float(ev.margins(z).min()) >= alpha - 1e-4
    zz = torch.zeros(sp.dims, dtype=torch.float64)
    for _ in range(20):
        _, grad = ev.margin_and_grad(zz)
        zz = zz - 1.0 * grad / grad.norm().clamp_min(1e-12)
        zz = zz * min(1.0, r / float(sp.norm(zz, "l2")))
    assert float(ev.margins(zz.unsqueeze(0))[0]) >= alpha - 1e-4


def test_lstm_crown_joint_mode_shares_the_budget_and_is_sound():
    """CROWN through time with linear bounds of the inputs in a shared perturbation (``lin``,
    ``zmin``): inputs ``x_t = c_t + M_t z ± 0.05`` with ``‖z‖₂ ≤ r``. Below the minimum over 20 000 sampled
    ``z`` (sphere included), never looser than the per-step boxes, strictly tighter on most LSTMs."""
    from core.verify.bounds import LSTMCrown

    g = torch.Generator().manual_seed(7)
    tighter = 0
    for trial in range(12):
        torch.manual_seed(200 + trial)
        rnn = nn.LSTM(5, 4, batch_first=True).double()
        d, steps, r = 6, 6, 0.4
        c = torch.randn(steps, 5, generator=g, dtype=torch.float64)
        m = torch.randn(steps, 5, d, generator=g, dtype=torch.float64) * 0.5
        m[:2] = 0  # an exact prefix
        e = torch.full((steps, 5), 0.05, dtype=torch.float64)
        e[:2] = 0
        rad = r * m.norm(dim=2) + e  # per-step boxes of the same set
        xs = [((c[t] - rad[t]).unsqueeze(0), (c[t] + rad[t]).unsqueeze(0)) for t in range(steps)]
        lin = {t: (c[t] - e[t], m[t], c[t] + e[t], m[t]) for t in range(2, steps)}  # x_t ∈ c_t + M_t z ± e
        spec = torch.randn(3, 4, generator=g, dtype=torch.float64)
        with torch.no_grad():
            box = LSTMCrown(rnn, xs).lower(spec)
            joint = LSTMCrown(rnn, xs, lin=lin, zmin=lambda a: -r * a.norm(dim=1)).lower(spec)
            z = torch.randn(20_000, d, generator=g, dtype=torch.float64)
            z = z / z.norm(dim=1, keepdim=True) * r * torch.rand(20_000, 1, generator=g, dtype=torch.float64).pow(1 / d)
            z[:2000] = z[:2000] / z[:2000].norm(dim=1, keepdim=True) * r
            u = torch.where(torch.rand(20_000, steps, 5, generator=g) < 0.5, -e, e)  # corners of the ±e slack
            x = c.unsqueeze(0) + torch.einsum("tfd,nd->ntf", m, z) + u
            sampled = (rnn(x)[0][:, -1] @ spec.T).min(0).values
        assert bool((joint <= sampled + 1e-9).all()), (trial, joint, sampled)
        assert bool((joint >= box - 1e-9).all())
        tighter += int((joint > box + 1e-3).any())
    assert tighter >= 8


def test_certified_radius_refines_with_crown_plus_and_keeps_its_time_limit(box_certified):
    """Once the CROWN bisection has converged, CertifiedRadius continues with crown+; a crown+ probe
    that would pass the time limit is abandoned (nothing proved, nothing lost) and the run ends on
    time; the bound only grows, and random points inside the certified ball keep the label."""
    import time

    sp = FlowSpace(make_clip("translate_left", 0).video, list(range(8, 15)), 16)
    cr = CertifiedRadius(box_certified, sp, "l2", method="crown")
    for _ in range(60):  # the CROWN bisection, probe by probe, until it hands over to crown+
        if cr.method != "crown":
            break
        cr.step()
    assert cr.method == "crown → crown+" and cr.lower > 0.5
    before = cr.lower
    probe = time.perf_counter()
    cr.mb.margin_lower(Domain(sp, *ball_box(sp, 2 * before, "l2"), 2 * before, "l2"))
    probe = time.perf_counter() - probe
    t0 = time.perf_counter()
    res = cr.run(time_limit=0.25 * probe)  # relative: probes got faster (windows), the limit must stay inside one
    assert time.perf_counter() - t0 < 0.5 * probe  # the crown+ probe in flight was cut off
    assert res["certified_lower"] >= before
    lows = [e["certified_lower"] for e in res["trace"]]
    assert lows == sorted(lows)
    ev = Evaluator(box_certified, sp)
    g = torch.Generator().manual_seed(6)
    z = torch.randn(64, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, "l2").unsqueeze(1) * res["certified_lower"]
    assert float(ev.margins(z).min()) > 0
    assert CertifiedRadius(box_certified, sp, "l2", refine=False).run(time_limit=3.0)["method"] == "crown+"  # default


def test_certified_radius_goes_on_with_crown_plus_plus_and_only_rises(lstm):
    """The three stages on one flow of the regular model: CROWN locates, crown+ bisects, crown++
    (back-substitution for the deeper ReLUs) tries to raise it; the trace only rises and random points
    on the certified sphere keep the label."""
    import time

    sp = _space(14)
    cr = CertifiedRadius(lstm, sp, "l2", method="crown")
    t0 = time.perf_counter()
    while "crown++" not in cr.method and time.perf_counter() - t0 < 60:
        cr.step()
    assert cr.method == "crown → crown+ → crown++" and cr._try is not None and cr._try >= 1.2 * cr.lower
    before = cr.lower
    res = cr.run(time_limit=8.0)
    lows = [e["certified_lower"] for e in res["trace"]]
    assert lows == sorted(lows) and res["certified_lower"] >= before > 1.0
    ev = Evaluator(lstm, sp)
    g = torch.Generator().manual_seed(7)
    z = torch.randn(64, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, "l2").unsqueeze(1) * res["certified_lower"]
    assert float(ev.margins(z).min()) > 0


def test_crown_plus_threads_give_the_same_bounds(certified):
    """The per-step CNN bounds of crown+ run on a few threads: exactly the bounds of one thread."""
    sp = FlowSpace(make_clip("translate_left", 0).video, list(range(11, 15)), 16)
    mb = ModelBounds(certified, sp.video, certified.predict(sp.video)[0], "crown+")
    dom = Domain(sp, *ball_box(sp, 2.0, "l2"), 2.0, "l2")
    mb.workers = 1
    one = mb.margin_bounds(dom)
    mb.workers = 3
    three = mb.margin_bounds(dom)
    assert one.keys() == three.keys() and all(torch.equal(one[k], three[k]) for k in one)


def test_certified_radius_search_order(certified):
    """CROWN hands over to crown+ at its first failed radius; between a proved and a failed radius
    the next probe is 85 % of the way to the zero of the line through their margin bounds (after a
    proof from below, the whole way with the failed end's margin halved), kept in the middle 80 % of
    the gap (the midpoint when a margin is unknown, and for CROWN)."""
    sp = FlowSpace(make_clip("translate_left", 0).video, list(range(12, 15)), 16)
    cr = CertifiedRadius(certified, sp, "l2", method="crown")
    seen = []
    probe = cr._box_margin
    cr._box_margin = lambda lo, hi, r: seen.append((r, probe(lo, hi, r))) or seen[-1][1]
    while cr.method == "crown":
        cr.step()
    failed = [r for r, m in seen if m <= 0]
    assert cr.method == "crown → crown+" and len(failed) == 1 and cr._try == failed[0] and cr.lower > 0
    cr.lower, cr._hi, cr._m_lo, cr._m_hi, cr._wins = 2.0, 4.0, 1.5, -0.5, 0
    assert cr._between() == pytest.approx(2.0 + 0.85 * 2.0 * 1.5 / 2.0)
    cr._wins = 1  # proved from below once already: the failed end's margin counts half (Illinois)
    assert cr._between() == pytest.approx(2.0 + 2.0 * 1.5 / 1.75)
    cr._wins = 0
    cr._fine = False  # CROWN (coarse): bisection
    assert cr._between() == pytest.approx(3.0)
    cr._fine = True
    cr._m_lo = 0.01
    assert cr._between() == pytest.approx(2.2)
    cr._m_lo = None
    assert cr._between() == pytest.approx(3.0)


def test_crown_plus_first_locates_fast_then_grows_carefully(certified):
    """The default pipeline starts with crown+ (no CROWN stage): until a probe first fails it grows
    like CROWN did (up to 8× per proof, by the concave model of the margin bound), afterwards at most
    2× (crown++, the last stage: 1.5×); the radii it proves hold for random points on the sphere."""
    sp = FlowSpace(make_clip("translate_left", 0).video, list(range(12, 15)), 16)
    cr = CertifiedRadius(certified, sp, "l2")
    assert cr.method == "crown+"
    seen = []
    probe = cr._box_margin
    cr._box_margin = lambda lo, hi, r: seen.append((r, probe(lo, hi, r))) or seen[-1][1]
    while cr.phase == "bisect" and len(seen) < 8:  # (branch and bound after that: not this test's)
        cr.step()
    first_fail = next(i for i, (_, m) in enumerate(seen) if m <= 0)
    grows = [seen[i + 1][0] / seen[i][0] for i in range(first_fail)]
    assert max(grows) > 2.5 and max(grows) <= 64.0 + 1e-9  # locating: faster than the careful 2×
    assert cr.lower > 1.0 and "crown →" not in cr.method
    ev = Evaluator(certified, sp)
    g = torch.Generator().manual_seed(8)
    z = torch.randn(64, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, "l2").unsqueeze(1) * cr.lower
    assert float(ev.margins(z).min()) > 0
    # the caps, with a margin bound that barely moves (the concave model would grow without end)
    cr = CertifiedRadius(certified, sp, "l2")
    cr._box_margin = lambda lo, hi, r: 0.998 * cr._m0
    cr._try = 1.0
    cr.step()
    assert cr._try == pytest.approx(8.0)  # nothing failed yet
    cr._box_margin = lambda lo, hi, r: 0.99999 * cr._m0  # within 0.01 % of the clean margin: far below
    cr._try = 1.0
    cr.step()
    assert cr._try == pytest.approx(64.0)
    cr._box_margin = lambda lo, hi, r: 0.999 * cr._m0
    cr._failed, cr._try = True, 1.0
    cr.step()
    assert cr._try == pytest.approx(2.0)  # crown+ after a failure
    cr._stages, cr._try = [], 1.0
    cr.step()
    assert cr._try == pytest.approx(1.5)  # the last stage after a failure
    cr = CertifiedRadius(certified, sp, "l2")  # a real failure, then the next stage from 0.5
    margins = iter([-1.0, 0.999 * cr._m0])
    cr._box_margin = lambda lo, hi, r: next(margins)
    cr._try = 1.0
    cr.step()
    assert cr._refine(0.5) and cr.method == "crown+ → crown++"
    cr.step()
    assert cr.lower == 0.5 and cr._try == pytest.approx(0.75)


def test_verify_workers_follow_the_environment():
    """``VRD_VERIFY_WORKERS`` sets the certifier's threads (Ray workers set 1); else one per core, ≤ 4."""
    import os
    import subprocess
    import sys

    code = "from core.verify import ModelBounds; print(ModelBounds.workers)"
    for env, want in (("1", 1), ("3", 3), ("", max(1, min(4, os.cpu_count() or 1)))):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "VRD_VERIFY_WORKERS": env})
        assert int(out.stdout.strip()) == want


def test_lstm_crown_joint_mode_with_step_sparse_forms_is_sound():
    """As in the real model, each step's input forms touch only its own flow's variables (LSTMCrown
    keeps just those columns): with a box of very different radii per variable the joint bound
    stays below the minimum over 20 000 sampled z (corners included) and equals the bound of the
    same forms touching every column (a wrong column map would differ)."""
    from core.verify.bounds import LSTMCrown

    g = torch.Generator().manual_seed(11)
    for trial in range(8):
        torch.manual_seed(300 + trial)
        rnn = nn.LSTM(5, 4, batch_first=True).double()
        steps, d = 6, 12
        r = 10 ** (-2 * torch.rand(d, generator=g, dtype=torch.float64))  # radii from 0.01 to 1
        c = torch.randn(steps, 5, generator=g, dtype=torch.float64)
        m = torch.zeros(steps, 5, d, dtype=torch.float64)
        for t in range(2, steps):
            m[t, :, 2 * t:2 * t + 2] = torch.randn(5, 2, generator=g, dtype=torch.float64) * 0.8
        rad = (m.abs() * r).sum(2)
        xs = [((c[t] - rad[t]).unsqueeze(0), (c[t] + rad[t]).unsqueeze(0)) for t in range(steps)]
        lin = {t: (c[t], m[t], c[t], m[t]) for t in range(2, steps)}
        spec = torch.randn(3, 4, generator=g, dtype=torch.float64)
        with torch.no_grad():
            def zmin(a, r=r):  # min of a·z over the box |z_i| ≤ r_i
                return -(a.abs() * r).sum(1)
            joint = LSTMCrown(rnn, xs, lin=lin, zmin=zmin).lower(spec)
            # the same forms with every column touched (1e-13 everywhere): the dense path, same bound
            dense = {t: (lc, lz + 1e-13, uc, uz + 1e-13) for t, (lc, lz, uc, uz) in lin.items()}
            same = LSTMCrown(rnn, xs, lin=dense, zmin=zmin).lower(spec)
            z = (torch.rand(20_000, d, generator=g, dtype=torch.float64) * 2 - 1) * r
            z[:4000] = torch.sign(z[:4000]) * r  # corners
            x = c.unsqueeze(0) + torch.einsum("tfd,nd->ntf", m, z)
            sampled = (rnn(x)[0][:, -1] @ spec.T).min(0).values
        assert bool((joint <= sampled + 1e-9).all()), (trial, joint, sampled)
        assert torch.allclose(joint, same, atol=1e-8), (trial, joint, same)


def test_branch_and_bound_boxes_are_sound_and_the_joint_bound_pays(lstm, monkeypatch):
    """A branch-and-bound sub-box of the ℓ2 ball (crown++): random and PGD points of box ∩ ball keep a
    margin above its bound, and the joint concretisation over box ∩ ball (:meth:`Domain.zmin_dual`)
    gives a tighter bound than the separate box and ball bounds."""
    sp = _space(14)
    ev = Evaluator(lstm, sp)
    mb = ModelBounds(lstm, sp.video, ev.label, "crown++")
    radius = 4.0
    lo, hi = ball_box(sp, radius, "l2")
    z0 = torch.zeros(sp.dims, dtype=torch.float64)
    grad = ev.margin_and_grad(z0)[1]
    top = grad.abs().argsort(descending=True)[:4]  # split where the margin falls: keep the worse halves
    lo, hi = lo.clone(), hi.clone()
    for i in top.tolist():
        (lo if float(grad[i]) < 0 else hi)[i] = 0.0
    dom = Domain(sp, lo, hi, radius, "l2")
    assert dom.clipped
    bound = float(mb.margin_lower(dom).min())
    rz = radius / sp.weight("l2")
    g = torch.Generator().manual_seed(9)
    z = _in_box_and_ball(256, lo, hi, rz, 2.0, g)
    assert float(ev.margins(z).min()) >= bound - 1e-4
    x = z0.clone()  # PGD on the margin, projected onto box ∩ ball
    for _ in range(15):
        x = x - 0.1 * rz * ev.margin_and_grad(x)[1].sign()
        x = torch.maximum(torch.minimum(x, hi), lo)
        x = x * min(1.0, rz / float(x.norm()))
        assert float(ev.margins(x.unsqueeze(0))[0]) >= bound - 1e-4
    monkeypatch.setattr(Domain, "dual_pays", property(lambda self: False))
    separate = float(mb.margin_lower(Domain(sp, lo, hi, radius, "l2")).min())
    assert bound > separate + 0.05


def test_branch_and_bound_schedule(certified):
    """Branch and bound, one box per step: it starts at the radius the last bisection probe failed at,
    splitting its root box unprobed; the radius counts only once every box is certified; after a
    success it tries 1.05×; after giving up (box budget), halfway to the failed radius, until within
    1 %; a probe cut off by the deadline leaves its box on the stack."""
    from core.verify.certify import OutOfTime

    sp = _space(14)
    cr = CertifiedRadius(certified, sp, "l2", max_boxes=3)
    assert cr.describe() == "crown+: first probe"  # (the live page's progress line)
    cr.phase, cr.lower, cr._hi = "bab", 1.0, 1.03
    full = ball_box(sp, 1.03, "l2")
    seen = []
    cr._box_margin = lambda lo, hi, r: seen.append((r, torch.equal(lo, full[0]) and torch.equal(hi, full[1]))) or 1.0
    cr.step()
    assert len(seen) == 1 and not seen[0][1] and cr.lower == 1.0  # one half certified, the other not yet
    cr.step()
    assert len(seen) == 2 and cr.lower == 1.03 and cr._bab_state is None and {r for r, _ in seen} == {1.03}
    cr._box_margin = lambda lo, hi, r: (_ for _ in ()).throw(OutOfTime("cut off"))
    cr.step()  # the next radius' root box, cut off: still on the stack
    assert cr.lower == 1.03 and len(cr._bab_state["stack"]) == 1 and cr._bab_state["r"] == pytest.approx(1.03 * 1.05)
    assert cr.describe() == "crown+: branch and bound at radius 1.082 (boxes open: 1)"
    seen.clear()
    cr._box_margin = lambda lo, hi, r: seen.append((r, False)) or -1.0  # nothing certifies: the budget ends it
    for _ in range(4):
        cr.step()
    assert len(seen) == 4 and cr.lower == 1.03 and cr._bab_fail == pytest.approx(1.03 * 1.05) and not cr.done
    seen.clear()
    steps = 0
    while not cr.done and steps < 100:
        cr.step()
        steps += 1
    tried = list(dict.fromkeys(r for r, _ in seen))
    assert tried[0] == pytest.approx((1.03 + 1.03 * 1.05) / 2)  # halfway…
    assert all(b < a for a, b in itertools.pairwise(tried)) and cr.done  # …and closer each time, then done
    assert cr._bab_fail <= 1.03 * 1.01 + 1e-12 and cr.lower == 1.03


def test_diagnosis_says_where_a_probe_loses(lstm, c3d):
    """``certify(…, diagnose=True)`` (CLI ``--diagnose``): each relaxation's bound (the reported margin
    is at least the best of them), and per perturbed step the unstable ReLUs of every CNN layer and
    the feature box's width — which holds every sampled move's features, and grows with the radius."""
    sp = _space(14)
    g = torch.Generator().manual_seed(0)
    outs = {r: certify(lstm, sp.video, sp, r, "l2", diagnose=True) for r in (1e-4, 1.0)}
    for r, out in outs.items():
        assert set(out["bounds"]) == {"ibp", "crown", "joint"}
        assert out["margin_lower"] >= max(out["bounds"].values()) - 1e-12
        assert out["margin_lower"] == certify(lstm, sp.video, sp, r, "l2")["margin_lower"]
        (row,) = out["diagnosis"]["steps"]  # flow 14 moves frame 15: step 15 only
        assert row["step"] == 15 and row["neurons"] == [16384, 8192, 2048, 128]
    small, big = (outs[r]["diagnosis"]["steps"][0] for r in (1e-4, 1.0))
    bars = [t for t in diagnosis_figure(outs[1.0]["diagnosis"]).data if t.type == "bar"]  # the page's chart
    assert [t.name for t in bars] == [f"ReLU layer {k + 1} ({n} neurons)" for k, n in enumerate(big["neurons"])]
    assert [t.y[0] for t in bars] == pytest.approx([100 * u / n for u, n in zip(big["unstable"], big["neurons"])])
    assert sum(small["unstable"]) < sum(big["unstable"]) < 0.2 * sum(big["neurons"])
    assert small["feature_width_max"] < 0.1 * big["feature_width_max"]
    # the box holds every sampled move's features: its widest feature is at least their range
    z = torch.randn(64, sp.dims, generator=g, dtype=torch.float64)
    z = z / sp.norm(z, "l2").unsqueeze(1) * 1.0
    with torch.no_grad():
        feats = lstm.model.features(sp.apply(z).to(next(lstm.model.parameters()).dtype), steps=[15])[:, 0]
    spread = float((feats.max(0).values - feats.min(0).values).max())
    assert big["feature_width_max"] >= spread > 0
    c = certify(c3d, sp.video, sp, 0.01, "l2", diagnose=True)
    (row,) = c["diagnosis"]["steps"]
    assert row["step"] == "all" and len(row["unstable"]) == len(row["neurons"]) >= 3
    assert c["margin_lower"] >= max(c["bounds"].values()) - 1e-12


def test_the_certifier_explains_the_radius_it_failed_at(lstm):
    """``CertifiedRadius.failure`` / ``explain()``: the probe at the radius a stage failed at, re-run
    exactly as the certifier ran it (method and domain), does not certify, and lies above the
    certified radius; a stage that has not failed yet reports the stage before's failure."""
    sp = _space(14)
    cr = CertifiedRadius(lstm, sp, "l2")
    assert cr.failure is None and cr.explain() is None
    while cr.failure is None:
        cr.step()
    radius, method = cr.failure
    assert radius > cr.lower and method == cr.mb.method == "crown+"
    out = cr.explain()
    assert not out["certified"] and out["radius"] == radius
    assert out["margin_lower"] == pytest.approx(cr._m_hi, abs=1e-9)  # the certifier's own probe, re-run
    assert out["diagnosis"]["method"] == method and out["diagnosis"]["steps"][0]["step"] == 15
    cr._refine(cr.lower)  # the next stage, before it fails: the previous stage's failure stands
    assert cr.mb.method == "crown++" and cr.failure == (radius, "crown+")
    cr._hi, cr.lower = 0.9 * radius, radius  # proved since (branch and bound past a failed bisection probe):
    assert cr.failure is None  # no stale failure below the certified radius
    cr._bab_state = {"r": 1.05 * radius, "stack": [], "splits": 0}  # branch and bound under way
    assert cr.failure == (1.05 * radius, "crown++")
