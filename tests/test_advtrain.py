"""Adversarial training (PGD-AT) and the robust-accuracy table."""

import json

import pytest
import torch
import torch.nn.functional as F

from core.errors import ParameterError
from core.models import load_model
from core.models.advtrain import adversarial_train, pgd, robust_accuracy


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


def test_robust_table():
    from core.experiments.robust import robust_table

    out = robust_table(["c3d"], {"one-shot": {"eps": 0.02}, "saliency-rg": {"eps": 0.0}}, clips=3, engine="serial")
    rows = {r["attack"]: r for r in out["rows"]}
    assert rows["one-shot"]["n"] == 3 and rows["one-shot"]["clean_accuracy"] == 1.0
    assert rows["one-shot"]["robust_accuracy"] < 1.0
    assert rows["saliency-rg"]["robust_accuracy"] == rows["saliency-rg"]["clean_accuracy"]  # ε = 0 changes nothing
