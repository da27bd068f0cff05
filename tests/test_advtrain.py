"""Adversarial training (PGD-AT) and the robust-accuracy table."""

import json

import pytest
import torch
import torch.nn.functional as F

from core.errors import ParameterError
from core.models import load_model
from core.models.advtrain import adversarial_train, combined_pgd, pgd, robust_accuracy, salient_frame


@pytest.fixture(scope="module")
def frame_cnn():
    return load_model("frame_cnn", "cpu")


def test_pgd_stays_in_the_ball_and_raises_the_loss(frame_cnn):
    from core.data import make_split

    net, _ = frame_cnn
    x, y, _ = make_split("test", 4, 16, 64)
    g = torch.Generator().manual_seed(0)
    adv = pgd(net, x, y, 0.01, 0.004, 5, g)
    assert float((adv - x).abs().max()) <= 0.01 + 1e-6 and 0 <= float(adv.min()) and float(adv.max()) <= 1
    with torch.no_grad():
        assert F.cross_entropy(net(adv), y) > F.cross_entropy(net(x), y)
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(pgd(net, x, y, 0.0, 0.004, 5), x)
    assert 0 <= robust_accuracy(net, x, y, 0.01, steps=2) <= 1


def test_combined_pgd_perturbs_only_the_key_frame_within_its_bounds(frame_cnn):
    """Alg. 4's inner maximisation: one key frame per clip, warped by ≤ flow_eps px plus ≤ eps noise."""
    from core.data import make_split
    net, _ = frame_cnn
    x, y, _ = make_split("test", 4, 16, 64)
    key = torch.tensor([0, 5, 15, 7])
    g = torch.Generator().manual_seed(0)
    adv = combined_pgd(net, x, y, 0.03, 1.0, 5, g, key=key)
    for b in range(4):
        others = [t for t in range(16) if t != key[b]]
        assert torch.equal(adv[b, others], x[b, others])
        assert float((adv[b, key[b]] - x[b, key[b]]).abs().max()) > 0.03  # the warp moved it beyond the noise
    # noise alone (flow bound ~0) stays in the ε-ball of the pixel ℓ∞
    adv_n = combined_pgd(net, x, y, 0.03, 1e-9, 5, torch.Generator().manual_seed(0), key=key)
    assert float((adv_n - x).abs().max()) <= 0.03 + 1e-5
    # a pure warp of ≤ 1 px: the frame equals warp(x, u) for some u, so it stays within the
    # range of the source pixels' 3×3 neighbourhood
    adv_u = combined_pgd(net, x, y, 1e-9, 1.0, 5, torch.Generator().manual_seed(0), key=key)
    f = adv_u[0, 0]
    lo = -torch.nn.functional.max_pool2d(-x[0, 0].unsqueeze(0), 3, 1, 1).squeeze(0)
    hi = torch.nn.functional.max_pool2d(x[0, 0].unsqueeze(0), 3, 1, 1).squeeze(0)
    assert bool(((f >= lo - 1e-5) & (f <= hi + 1e-5)).all()) and not torch.equal(f, x[0, 0])
    with torch.no_grad():
        assert F.cross_entropy(net(adv), y) > F.cross_entropy(net(x), y)
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(combined_pgd(net, x, y, 0.0, 0.0, 5), x)
    sal = salient_frame(net, x, y)
    assert sal.shape == (4,) and bool(((sal >= 0) & (sal < 16)).all())
    assert 0 <= robust_accuracy(net, x, y, 0.03, steps=2, flow_eps=1.0) <= robust_accuracy(net, x, y, 0.0, steps=2)


def test_adversarial_training_writes_a_loadable_model_and_resumes(tmp_path, monkeypatch):
    import core.models.advtrain as at
    from core.models import registry

    monkeypatch.setitem(registry.ARCHITECTURES, "frame_cnn_pgd_at", "test")
    kw = dict(n_train=16, n_val=8, n_test=8, batch_size=8, out_dir=tmp_path, progress=None, steps=1)
    real_save = torch.save
    calls = []

    def stop_after_first_epoch(obj, path, *a, **k):  # simulate an interrupted run: die after epoch 1
        real_save(obj, path, *a, **k)
        if str(path).endswith(".ckpt"):
            calls.append(obj["epoch"])
            if obj["epoch"] == 1 and len(calls) == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(at.torch, "save", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        adversarial_train("frame_cnn", epochs=2, **kw)
    assert (tmp_path / "frame_cnn_pgd_at.ckpt").exists()
    logs = []
    card = adversarial_train("frame_cnn", epochs=2, **{**kw, "progress": logs.append})
    assert logs[0].startswith("resuming frame_cnn_pgd_at after epoch 1") and calls == [1, 2]
    assert not (tmp_path / "frame_cnn_pgd_at.ckpt").exists()
    saved = json.loads((tmp_path / "frame_cnn_pgd_at.json").read_text())
    assert saved == card and card["adversarial_training"]["eps"] == 0.01 and card["base_model"] == "frame_cnn"
    for k in ("test_accuracy", "robust_accuracy_pgd10", "regular_test_accuracy", "regular_robust_accuracy_pgd10"):
        assert 0 <= card[k] <= 1
    model, spec = load_model("frame_cnn_pgd_at", "cpu", root=tmp_path)  # sha256 checked, weights_only
    assert spec.classes == card["classes"]
    with pytest.raises(ParameterError):
        adversarial_train("motion_stream_farneback", **kw)
    with pytest.raises(ParameterError):
        adversarial_train("frame_cnn", method="trades", **kw)
    with pytest.raises(ParameterError):
        adversarial_train("frame_cnn", method="deepsava", flow_eps=0, **kw)


def test_deepsava_adversarial_training_writes_its_card(tmp_path, monkeypatch):
    from core.models import registry

    monkeypatch.setitem(registry.ARCHITECTURES, "frame_cnn_sava_at", "test")
    card = adversarial_train("frame_cnn", method="deepsava", epochs=1, n_train=8, n_val=8, n_test=8, batch_size=8,
                             out_dir=tmp_path, progress=None, steps=1)
    at = card["adversarial_training"]
    assert card["name"] == "frame_cnn_sava_at" and at["eps"] == 0.03 and at["flow_eps"] == 1.0
    assert card["robust_accuracy"] == card["robust_accuracy_sava10"] <= card["test_accuracy"]
    assert "most salient" in at["robust_eval"] and "robust_accuracy_pgd10" not in card
    load_model("frame_cnn_sava_at", "cpu", root=tmp_path)


def test_robust_table():
    from core.experiments.robust import robust_table

    out = robust_table(["c3d"], {"one-shot": {"eps": 0.02}, "saliency-rg": {"eps": 0.0}}, clips=3, engine="serial")
    rows = {r["attack"]: r for r in out["rows"]}
    assert rows["one-shot"]["n"] == 3 and rows["one-shot"]["clean_accuracy"] == 1.0
    assert rows["one-shot"]["robust_accuracy"] < 1.0
    assert rows["saliency-rg"]["robust_accuracy"] == rows["saliency-rg"]["clean_accuracy"]  # ε = 0 changes nothing
