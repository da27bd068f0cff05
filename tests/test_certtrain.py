"""Certified training (core.models.certtrain): its box, its bounds, its loop and the shipped model."""

import json
import math

import pytest
import torch
from torch import nn

from core.data import make_split
from core.errors import ParameterError
from core.flow import warp
from core.models import load_model
from core.models.certtrain import (
    adversarial_orthant,
    ball_train_bounds,
    certified_train,
    ibp_train_bounds,
    shift_forms,
    window_box,
)
from core.models.nets import CNNRecurrent


def test_window_box_holds_every_frame_imposed_within_kappa():
    """Any per-pixel shift field with |s_x|, |s_y| ≤ κ (border padding) lands inside the box; frame 0 is
    never imposed and stays a point."""
    x, _, _ = make_split("test", 2, 6, 32)
    g = torch.Generator().manual_seed(0)
    for kappa in (0.05, 0.3, 1.0):
        lo, hi = window_box(x, kappa)
        assert torch.equal(lo[:, 0], x[:, 0]) and torch.equal(hi[:, 0], x[:, 0])
        for trial in range(20):
            frames = x[:, 1:].flatten(0, 1)
            if trial < 4:  # the corners of the shift square are where a box is tightest
                sx, sy = [(1, 1), (1, -1), (-1, 1), (-1, -1)][trial]
                flow = torch.tensor([sx, sy], dtype=x.dtype).view(1, 2, 1, 1).expand(len(frames), 2, 32, 32) * kappa
            else:
                flow = (torch.rand(len(frames), 2, 32, 32, generator=g) * 2 - 1) * kappa
            imposed = warp(frames, flow).view_as(x[:, 1:])
            assert bool((imposed >= lo[:, 1:] - 1e-6).all()) and bool((imposed <= hi[:, 1:] + 1e-6).all())
    assert torch.equal(window_box(x, 0.0)[0], x)
    with pytest.raises(ParameterError):
        window_box(x, 1.5)
    with pytest.raises(ParameterError):
        window_box(x[0], 0.1)


def test_ibp_train_bounds_hold_and_are_exact_on_a_point():
    torch.manual_seed(0)
    net = CNNRecurrent(8, "lstm", feat_dim=16, hidden=12).double().eval()
    x, y, _ = make_split("test", 3, 5, 32)
    x = x.double()
    with torch.no_grad():
        logits = net(x)
        exact = logits.gather(1, y[:, None]) - logits
        marg, wf, wg = ibp_train_bounds(net, x, x, y)
        assert torch.allclose(marg, exact, atol=1e-9) and float(wf) == 0 and float(wg) < 1e-9
        lo, hi = window_box(x, 0.2)
        marg, wf, wg = ibp_train_bounds(net, lo, hi, y)
        assert float(wf) > 0 and float(wg) > 0 and bool((marg[torch.arange(3), y] == 0).all())
        # the same bound by the verifier's own path (snippet module, IBP chain, LSTM, margin rows)
        from types import SimpleNamespace

        from core.classifier import as_classifier
        from core.verify.certify import ModelBounds

        for b in range(3):
            dom = SimpleNamespace(relax={t: SimpleNamespace(lo=lo[b, t], hi=hi[b, t]) for t in range(1, 5)})
            ref = ModelBounds(as_classifier(net), x[b], int(y[b]), "ibp").margin_lower(dom)
            others = [j for j in range(8) if j != int(y[b])]
            assert torch.allclose(marg[b, others], ref, atol=1e-9)
        g = torch.Generator().manual_seed(1)
        for _ in range(50):
            pt = lo + (hi - lo) * torch.rand(lo.shape, generator=g, dtype=lo.dtype)
            out = net(pt)
            assert bool((out.gather(1, y[:, None]) - out >= marg - 1e-9).all())


def _near(x: torch.Tensor, forms: tuple[torch.Tensor, torch.Tensor], z: torch.Tensor, block: int = 16) -> torch.Tensor:
    """``x_t + g_t·z_t + k_t·|z_t|`` for block shifts ``z (B, T−1, 2, gh, gw)`` of frames 1 … T−1."""
    g, k = forms
    up = z.repeat_interleave(block, -2).repeat_interleave(block, -1).unsqueeze(3)  # (B, T−1, 2, 1, H, W)
    moved = x[:, 1:] + (g[:, 1:] * up + k[:, 1:] * up.abs()).sum(2)
    return torch.cat([x[:, :1], moved], 1)


def test_shift_forms_are_the_warp_near_zero():
    """Within the first pixel cell along one axis the bilinear warp is exactly ``x + g·z + k·|z|``."""
    x, _, _ = make_split("test", 2, 4, 32)
    x = x.double()
    g, k = shift_forms(x, 16)
    assert g.shape == k.shape == (2, 4, 2, 3, 32, 32) and not bool(g[:, 0].any()) and not bool(k[:, 0].any())
    f = x[:, 2]
    for c in range(2):
        for zc in (-0.7, -0.25, 0.3, 1.0):
            flow = torch.zeros(2, 2, 32, 32, dtype=torch.float64)
            flow[:, c] = -zc  # the engine imposes warp(frame, −z)
            want = warp(f, flow).clamp(0, 1)
            got = f + g[:, 2, c] * zc + k[:, 2, c] * abs(zc)
            assert torch.allclose(got, want, atol=1e-9), (c, zc)
    with pytest.raises(ParameterError):
        shift_forms(x, 10)


def test_zonotope_transformers_contain_the_functions_at_every_point():
    """Each transformer maps forms ``x(ζ) = c + a·ζ`` (ζ in the unit disk, 2 variables) to ``c' + a'·ζ ± e'``
    that holds *pointwise*: ``f(x(ζ))`` lies in it for 2000 points of the circle (where the relaxations
    are tightest) and 500 inside — the ReLU and a CNN chain, sigmoid and tanh, the product, and the
    whole LSTM over three steps."""
    from core.models.certtrain import (
        _zono_box,
        _zono_linear,
        _zono_mul,
        _zono_s,
        zono_chain,
        zono_lstm,
    )
    from core.verify.bounds import _dsig, _dtanh

    gen = torch.Generator().manual_seed(0)
    ang = torch.rand(2000, generator=gen, dtype=torch.float64) * 2 * math.pi
    inner = torch.randn(500, 2, generator=gen, dtype=torch.float64)
    inner = inner / inner.norm(dim=1, keepdim=True) * torch.rand(500, 1, generator=gen, dtype=torch.float64).sqrt()
    zeta = torch.cat([torch.stack([ang.cos(), ang.sin()], 1), inner])  # on the unit circle, then inside

    def form(n: int, spread: float = 1.0):
        return (torch.randn(1, n, generator=gen, dtype=torch.float64) * spread,
                torch.randn(1, 2, n, generator=gen, dtype=torch.float64), torch.zeros(1, n, dtype=torch.float64))

    def at(z, pts):  # the form's value at every point: (P, n) ± e
        c, a, e = z
        return c + pts @ a[0], e

    def holds(value, z):
        mid, e = at(z, zeta)
        return bool(((value - mid).abs() <= e + 1e-9).all())

    x = form(300)
    c, a, e, _ = zono_chain([nn.ReLU()], *x, 1.0)
    assert holds(torch.relu(at(x, zeta)[0]), (c, a, e))
    for fn, dfn in ((torch.sigmoid, _dsig), (torch.tanh, _dtanh)):
        y, (flo, fhi) = _zono_s(fn, dfn, x, 1.0)
        assert holds(fn(at(x, zeta)[0]), y)
        assert bool((fn(at(x, zeta)[0]) >= flo - 1e-12).all()) and bool((fn(at(x, zeta)[0]) <= fhi + 1e-12).all())
    u, v = form(300), form(300)
    assert holds(at(u, zeta)[0] * at(v, zeta)[0], _zono_mul(u, v, _zono_box(u, 1.0), _zono_box(v, 1.0)))
    chain = [nn.Linear(300, 40).double(), nn.ReLU(), nn.Linear(40, 20).double(), nn.ReLU()]
    c, a, e, share = zono_chain(chain, *x, 1.0)
    want = torch.nn.Sequential(*chain)(at(x, zeta)[0])
    assert holds(want, (c, a, e)) and 0 < float(share[0]) < 1
    # affine maps carry the error box tightly: its vertex sign(∂y_j/∂x) reaches y_j's upper end exactly
    for layer in (nn.Linear(30, 20).double(), nn.Conv2d(3, 4, 3, 2, 1).double()):
        shape = (30,) if isinstance(layer, nn.Linear) else (3, 6, 6)
        c = torch.randn(1, *shape, generator=gen, dtype=torch.float64)
        a = torch.randn(1, 2, *shape, generator=gen, dtype=torch.float64)
        e = torch.rand(1, *shape, generator=gen, dtype=torch.float64)
        yc, _, ye = zono_chain([layer], c, a, e, 1.0)[:3] if isinstance(layer, nn.Conv2d) else \
            _zono_linear((c, a, e), layer.weight, layer.bias)
        for j in range(0, ye.numel(), 7):
            pt = c.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(layer(pt).flatten()[j], pt)
            with torch.no_grad():
                top = layer(c + torch.sign(grad) * e).flatten()[j]
            assert float(top) == pytest.approx(float((yc + ye).detach().flatten()[j]), abs=1e-9)
    torch.manual_seed(1)
    rnn = nn.LSTM(6, 5, batch_first=True).double()
    steps = [form(6, 2.0) for _ in range(3)]
    with torch.no_grad():
        h, gate_w, cell_w = zono_lstm(rnn, steps, 1.0)
        out, _ = rnn(torch.stack([at(s, zeta)[0] for s in steps], 1))  # (P, 3, 6) → (P, 3, 5)
    assert holds(out[:, -1], h) and float(gate_w) > 0 and float(cell_w) > 0


def test_ball_bounds_hold_over_the_flow_ball_near_zero():
    """With the exact sketch (``sketch=None``), the zonotope bound of every margin holds for every
    point of the ℓ2 ball of the linearised threat — random points on its sphere and a projected-gradient
    search for the worst — and equals the clean margins at radius 0; the Gaussian sketch estimates it."""
    torch.manual_seed(0)
    net = CNNRecurrent(8, "lstm", feat_dim=16, hidden=12).double().eval()
    x, y, _ = make_split("test", 3, 5, 32)  # 2 × 2 blocks of 16 px: 4 flows × 8 = 32 variables per clip
    x = x.double()
    with torch.no_grad():
        logits = net(x)
        exact = logits.gather(1, y[:, None]) - logits
        marg, w = ball_train_bounds(net, x, y, 0.0, None)
        assert torch.allclose(marg, exact, atol=1e-9) and float(w["feature"]) == 0 and float(w["cell"]) == 0
    radius = 3.0
    rz = radius / 16  # ‖δ‖₂ = 16 ‖z‖₂ on 16-px blocks
    with torch.no_grad():
        bound, w = ball_train_bounds(net, x, y, radius, None)
    assert float(w["feature"]) > 0 and float(w["cell"]) > 0 and float(w["unstable"]) > 0
    forms = shift_forms(x, 16)
    gen = torch.Generator().manual_seed(1)
    lowest = torch.full_like(bound, math.inf)
    with torch.no_grad():
        for _ in range(64):  # random points of the sphere
            z = torch.randn(3, 4, 2, 2, 2, generator=gen, dtype=torch.float64)
            z = z * rz / z.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
            out = net(_near(x, forms, z))
            lowest = torch.minimum(lowest, out.gather(1, y[:, None]) - out)
    for j in range(8):  # projected gradient descent on each margin
        z = torch.zeros(3, 4, 2, 2, 2, dtype=torch.float64, requires_grad=True)
        for _ in range(30):
            out = net(_near(x, forms, z))
            m = out.gather(1, y[:, None])[:, 0] - out[:, j]
            (grad,) = torch.autograd.grad(m.sum(), z)
            with torch.no_grad():
                z -= rz / 4 * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1, 1)
                z *= (rz / z.flatten(1).norm(dim=1).clamp_min(rz)).view(-1, 1, 1, 1, 1)
        with torch.no_grad():
            out = net(_near(x, forms, z))
            lowest[:, j] = torch.minimum(lowest[:, j], out.gather(1, y[:, None])[:, 0] - out[:, j])
    assert bool((lowest >= bound - 1e-9).all()), (lowest - bound).min()
    loss = exact - bound
    assert float(loss.max()) > 0.01  # the radius is not trivial: the bound gave something up
    with torch.no_grad():  # a large Gaussian sketch estimates the exact bound
        est, _ = ball_train_bounds(net, x, y, radius, 1024, generator=torch.Generator().manual_seed(2))
    assert float((est - bound).abs().max()) < 0.1 * float(loss.max())
    with pytest.raises(ParameterError):
        ball_train_bounds(net, x, y, -1.0)
    with pytest.raises(ParameterError):
        ball_train_bounds(CNNRecurrent(8, "gru", feat_dim=16, hidden=12).double(), x, y, 1.0)


def test_orthant_bounds_hold_in_their_orthant_and_the_adversarial_one_raises_the_loss():
    """Restricted to one orthant of the block shifts the threat is linear, ``x + (g + s·k)·z``: the bound
    with ``signs`` (exact sketch) holds for random points of the orthant's part of the sphere and a
    projected-gradient search there. :func:`adversarial_orthant` picks the orthant in which a small shift
    raises the clean loss more than in the opposite one."""
    torch.manual_seed(0)
    net = CNNRecurrent(8, "lstm", feat_dim=16, hidden=12).double().eval()
    x, y, _ = make_split("test", 3, 5, 32)
    x = x.double()
    forms = shift_forms(x, 16)
    s = adversarial_orthant(net, x, y)
    assert s.shape == (3, 5, 2, 2, 2) and bool((s.abs() == 1).all())
    t = torch.full((3, 4, 2, 2, 2), 1e-3, dtype=torch.float64)
    with torch.no_grad():
        def loss(z: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(net(_near(x, forms, z)), y, reduction="none")
        assert bool((loss(s[:, 1:] * t) > loss(-s[:, 1:] * t)).all())
    radius = 3.0
    rz = radius / 16
    signs = torch.where(torch.rand(3, 5, 2, 2, 2, generator=torch.Generator().manual_seed(3)) < 0.5, 1.0, -1.0).double()
    so = signs[:, 1:]
    with torch.no_grad():
        bound, _ = ball_train_bounds(net, x, y, radius, None, signs=signs)
        kinked, _ = ball_train_bounds(net, x, y, radius, None)
    gen = torch.Generator().manual_seed(1)
    lowest = torch.full_like(bound, math.inf)

    def into(z: torch.Tensor) -> torch.Tensor:  # onto the orthant ∩ ball
        z = torch.where(z * so > 0, z, torch.zeros_like(z))
        return z * (rz / z.flatten(1).norm(dim=1).clamp_min(rz)).view(-1, 1, 1, 1, 1)

    with torch.no_grad():
        for _ in range(64):
            z = so * torch.randn(3, 4, 2, 2, 2, generator=gen, dtype=torch.float64).abs()
            z = z * rz / z.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
            out = net(_near(x, forms, z))
            lowest = torch.minimum(lowest, out.gather(1, y[:, None]) - out)
    for j in range(8):
        z = into(so * rz / 8)
        for _ in range(30):
            z.requires_grad_(True)
            out = net(_near(x, forms, z))
            (grad,) = torch.autograd.grad((out.gather(1, y[:, None])[:, 0] - out[:, j]).sum(), z)
            with torch.no_grad():
                z = into(z - rz / 4 * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1, 1))
        with torch.no_grad():
            out = net(_near(x, forms, z))
            lowest[:, j] = torch.minimum(lowest[:, j], out.gather(1, y[:, None])[:, 0] - out[:, j])
    assert bool((lowest >= bound - 1e-9).all()), (lowest - bound).min()
    assert float((bound - kinked).max()) > 0  # one orthant is a smaller threat than the kinked ball
    # at a tiny radius the bound is first-order exact for the orthant's linear forms x + (g + s·k)·z:
    # margin − r‖∇_z margin‖ (each margin's gradient along those forms)
    g, k = forms
    lin = (g + signs.repeat_interleave(16, -2).repeat_interleave(16, -1).unsqueeze(3) * k)[:, 1:]
    z = torch.zeros(3, 4, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    up = z.repeat_interleave(16, -2).repeat_interleave(16, -1).unsqueeze(3)
    out = net(torch.cat([x[:, :1], x[:, 1:] + (lin * up).sum(2)], 1))
    exact = (out.gather(1, y[:, None]) - out).detach()
    with torch.no_grad():
        tiny, _ = ball_train_bounds(net, x, y, 16e-6, None, signs=signs)
    for j in range(8):
        (grad,) = torch.autograd.grad((out.gather(1, y[:, None])[:, 0] - out[:, j]).sum(), z, retain_graph=True)
        first = 1e-6 * grad.flatten(1).norm(dim=1)  # (0 for j = y: that margin is 0 everywhere)
        assert torch.allclose(exact[:, j] - tiny[:, j], first, rtol=1e-2, atol=1e-14), (j, exact[:, j] - tiny[:, j], first)
    with pytest.raises(ParameterError):
        ball_train_bounds(net, x, y, radius, None, signs=signs[:, :2])


def test_certified_training_writes_a_loadable_model_and_resumes(tmp_path, monkeypatch):
    import core.models.certtrain as ct
    from core.models import registry

    kw = dict(n_train=16, n_val=8, n_test=8, batch_size=4, steps=4, ckpt_every=2, out_dir=tmp_path, progress=None,
              cert_clips=2, cert_time=2.0)
    regular, _ = load_model("cnn_lstm", "cpu")
    before = {k: v.clone() for k, v in regular.state_dict().items()}
    real_save = torch.save
    saved_steps = []

    def interrupt_once(obj, path, *a, **k):
        real_save(obj, path, *a, **k)
        if str(path).endswith(".ckpt"):
            saved_steps.append(obj["step"])
            if len(saved_steps) == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(ct.torch, "save", interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        certified_train(**kw)
    assert (tmp_path / "cnn_lstm_certified.ckpt").exists()
    logs = []
    card = certified_train(**{**kw, "progress": logs.append})
    assert logs[0] == "resuming cnn_lstm_certified after step 2" and saved_steps == [2]
    assert not (tmp_path / "cnn_lstm_certified.ckpt").exists()
    assert json.loads((tmp_path / "cnn_lstm_certified.json").read_text()) == card
    assert card["certified_training"]["threat_kind"] == "box" and card["certified_training"]["flow_px"] == 0.05
    assert 0 <= card["test_accuracy"] <= 1
    cr = card["certified_radius"]
    assert cr["guarantee"] == "sound" and cr["space"]["flows"] == [7]
    assert len(cr["cnn_lstm_certified"]["radii"]) == len(cr["cnn_lstm"]["radii"]) == cr["clips"]
    model, spec = load_model("cnn_lstm_certified", "cpu", root=tmp_path)
    assert spec.classes == card["classes"] and registry.ARCHITECTURES["cnn_lstm_certified"]
    assert bool(model.rnn.weight_hh_l0.any())
    ball = certified_train(**{**kw, "threat": "ball", "out_dir": tmp_path / "ball", "cert_clips": 0})
    how = ball["certified_training"]
    assert how["threat_kind"] == "ball" and how["radius"] == 8.0 and how["recurrent_matrix"] == "held at 0"
    net = load_model("cnn_lstm_certified", "cpu", root=tmp_path / "ball")[0]
    assert not bool(net.rnn.weight_hh_l0.any()) and bool(net.rnn.weight_ih_l0.any())  # U held at 0, W trained
    assert not torch.equal(net.rnn.weight_ih_l0, regular.rnn.weight_ih_l0)
    orth = certified_train(**{**kw, "threat": "ball", "orthant": True, "steps": 2, "cert_clips": 0,
                              "init": str(tmp_path / "ball" / "cnn_lstm_certified.pt"), "out_dir": tmp_path / "orth"})
    assert orth["certified_training"]["kinks"].startswith("one orthant") and "sketched" in how["kinks"]
    assert orth["certified_training"]["init"] == f"fine-tuned from {tmp_path / 'ball' / 'cnn_lstm_certified.pt'}"
    moved = load_model("cnn_lstm_certified", "cpu", root=tmp_path / "orth")[0]
    assert not torch.equal(moved.rnn.weight_ih_l0, net.rnn.weight_ih_l0)  # trained on from the folder's weights
    assert float((moved.rnn.weight_ih_l0 - net.rnn.weight_ih_l0).abs().max()) < \
        float((moved.rnn.weight_ih_l0 - regular.rnn.weight_ih_l0).abs().max())
    after = load_model("cnn_lstm", "cpu")[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the shipped regular model is untouched
    for bad in ({"base": "c3d"}, {"flow_px": 0.0}, {"threat": "ball", "radius": 0.0}, {"threat": "cube"},
                {"steps": 0}, {"lam": -1.0}, {"threat": "ball", "sketch": 0}, {"orthant": True}):
        with pytest.raises(ParameterError):
            certified_train(**{**kw, **bad})


def test_shipped_certified_model_certifies_a_radius_the_regular_model_cannot():
    """The card's claim, re-checked: on a test clip, a radius the certified model proves (sound,
    CROWN) is not provable for the regular model, and both classify the clip correctly."""
    from core.msr.space import FlowSpace
    from core.verify import certify

    cert, spec = load_model("cnn_lstm_certified", "cpu")
    regular, _ = load_model("cnn_lstm", "cpu")
    card = spec.card
    x, y, _ = make_split("test", 400, 16, 64)  # the card's test split: its accuracy, reproduced
    with torch.no_grad():
        pred = torch.cat([cert(x[i:i + 100]).argmax(1) for i in range(0, 400, 100)])
    assert card["test_accuracy"] >= 0.9 and (pred == y).float().mean().item() == pytest.approx(card["test_accuracy"])
    stats = card["certified_radius"]
    assert stats["cnn_lstm_certified"]["median"] > 5 * stats["cnn_lstm"]["median"] > 0
    with torch.no_grad():  # the first test clip that both models classify correctly
        i = next(i for i in range(400) if pred[i] == y[i] == regular(x[i:i + 1]).argmax(1)[0])
    space = FlowSpace(x[i], flows=[7], block=16)
    r = stats["cnn_lstm"]["max"] * 2
    ok = certify(cert, x[i], space, r, "l2", label=int(y[i]))
    no = certify(regular, x[i], space, r, "l2", label=int(y[i]))
    assert ok["certified"] and not no["certified"] and ok["margin_lower"] > no["margin_lower"]


def test_certified_chain_trains_each_stage_from_the_one_before_and_resumes(tmp_path, monkeypatch):
    """``certified_chain`` (``train --certified --recipe shipped``): stage i+1 starts from stage i's
    weights, only the last stage measures the certified radius, finished stages are skipped when the
    chain is run again, and the last stage's weights and card land in ``out_dir`` with the chain named."""
    import core.models.certtrain as ct

    calls = []

    def fake(base, **kw):
        calls.append(kw)
        kw["out_dir"].mkdir(parents=True)
        torch.save({"w": torch.tensor([float(len(calls))])}, kw["out_dir"] / f"{base}_certified.pt")
        card = {"name": f"{base}_certified", "train_seconds": 10.0 * len(calls),
                "certified_training": {"threat_kind": kw["threat"], "init": f"fine-tuned from {kw['init']}"}}
        (kw["out_dir"] / f"{base}_certified.json").write_text(json.dumps(card))
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped during the second stage: its card is written, the third's not
        return card

    monkeypatch.setattr(ct, "certified_train", fake)
    with pytest.raises(KeyboardInterrupt):
        ct.certified_chain("cnn_lstm", out_dir=tmp_path / "out", progress=None, seed=3)
    assert len(calls) == 2
    card = ct.certified_chain("cnn_lstm", out_dir=tmp_path / "out", progress=None, seed=3)
    work = tmp_path / "out" / ".cnn_lstm_certified_chain"
    assert len(calls) == len(ct.SHIPPED_CHAIN) + 1 - 2 + 1  # stages 1-2 not run again
    assert [c["threat"] for c in calls] == ["box", "ball", "ball", "ball", "ball"]
    assert calls[0]["init"] is None and calls[0]["flow_px"] == 0.05 and calls[1]["radius"] == 8.0
    for i, c in enumerate(calls[2:], start=2):
        assert c["init"] == str(work / f"stage{i - 1}" / "cnn_lstm_certified.pt") and c["radius"] == 12.0
        assert c["steps"] == 400 and c["seed"] == 3
    assert all(c["cert_clips"] == 0 for c in calls[:-1]) and "cert_clips" not in calls[-1]
    final = torch.load(tmp_path / "out" / "cnn_lstm_certified.pt", weights_only=True)["w"]
    assert float(final) == 5.0  # the last stage's weights
    assert json.loads((tmp_path / "out" / "cnn_lstm_certified.json").read_text()) == card
    assert card["certified_training"]["init"].endswith("ball ℓ2 12, 400 steps → ball ℓ2 12, 400 steps")
    assert card["chain_train_seconds"]["total"] == 10 + 20 + 30 + 40 + 50
    with pytest.raises(ParameterError):
        ct.certified_chain("cnn_lstm", stages=(), out_dir=tmp_path / "x")


def test_certified_chain_end_to_end_on_a_tiny_recipe(tmp_path):
    """The real training through two tiny stages (box, then ball from the box's weights): the final
    weights load with their card (sha256 checked), carry the ball stage's U = 0, and differ from the
    box stage's."""
    from core.models.certtrain import certified_chain

    stages = ({"threat": "box", "steps": 2}, {"threat": "ball", "radius": 1.0, "steps": 2})
    card = certified_chain("cnn_lstm", stages=stages, out_dir=tmp_path, progress=None, n_train=16, n_val=8,
                           n_test=8, batch_size=4, cert_clips=1, cert_time=1.0)
    net, spec = load_model("cnn_lstm_certified", "cpu", root=tmp_path)
    box = load_model("cnn_lstm_certified", "cpu", root=tmp_path / ".cnn_lstm_certified_chain" / "stage0")[0]
    assert spec.card == card and card["certified_training"]["threat_kind"] == "ball"
    assert card["certified_training"]["init"] == ("fine-tuned along a chain of runs, each from the one before: "
                                                  "cnn_lstm → box κ 0.05, 2 steps → ball ℓ2 1, 2 steps")
    assert card["certified_radius"]["clips"] <= 1 and list(card["chain_train_seconds"])[-1] == "total"
    assert bool(box.rnn.weight_hh_l0.any()) and not bool(net.rnn.weight_hh_l0.any())
    assert not torch.equal(net.rnn.weight_ih_l0, box.rnn.weight_ih_l0)
