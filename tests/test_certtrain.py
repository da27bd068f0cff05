"""Certified training (core.models.certtrain): its box, its bounds, its loop and the shipped model."""

import json

import pytest
import torch

from core.data import make_split
from core.errors import ParameterError
from core.flow import warp
from core.models import load_model
from core.models.certtrain import certified_train, ibp_train_bounds, window_box
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
    assert card["certified_training"]["flow_px"] == 0.05 and 0 <= card["test_accuracy"] <= 1
    cr = card["certified_radius"]
    assert cr["guarantee"] == "sound" and cr["space"]["flows"] == [7]
    assert len(cr["cnn_lstm_certified"]["radii"]) == len(cr["cnn_lstm"]["radii"]) == cr["clips"]
    model, spec = load_model("cnn_lstm_certified", "cpu", root=tmp_path)
    assert spec.classes == card["classes"] and registry.ARCHITECTURES["cnn_lstm_certified"]
    after = load_model("cnn_lstm", "cpu")[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the shipped regular model is untouched
    for bad in (dict(base="c3d"), dict(flow_px=0.0), dict(steps=0), dict(lam=-1.0)):
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
    assert card["test_accuracy"] >= 0.9
    stats = card["certified_radius"]
    assert stats["cnn_lstm_certified"]["median"] > 5 * stats["cnn_lstm"]["median"] > 0
    x, y, _ = make_split("test", 1, 16, 64)
    space = FlowSpace(x[0], flows=[7], block=16)
    r = stats["cnn_lstm"]["max"] * 2
    ok = certify(cert, x[0], space, r, "l2", label=int(y[0]))
    no = certify(regular, x[0], space, r, "l2", label=int(y[0]))
    assert ok["certified"] and not no["certified"] and ok["margin_lower"] > no["margin_lower"]
