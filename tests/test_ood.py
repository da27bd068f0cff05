"""Out-of-distribution scores calibrated on the test split (core.ood)."""

import pytest
import torch

from core.data import make_clip
from core.inference import predict
from core.models import load_classifier
from core.ood import ALPHA, calibration, energy, ood_report
from core.video import read_video
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def clf():
    return load_classifier("cnn_lstm", "cpu")


def test_p_values_are_ranks_in_the_calibration():
    calib = {"msp": [0.5, 0.6, 0.9, 0.95], "energy": [-5.0, -4.0, -3.0, -2.0], "n": 4}
    z = torch.tensor([2.0, 0.0, 0.0])
    r = ood_report(z, calib)
    msp = float(torch.softmax(z.double(), 0).max())
    assert r["msp"] == pytest.approx(msp) and r["energy"] == pytest.approx(float(energy(z.double())))
    assert r["msp_p"] == sum(m <= msp for m in calib["msp"]) / 4
    assert r["energy_p"] == sum(e >= r["energy"] for e in calib["energy"]) / 4
    assert r["out_of_distribution"] == (min(r["msp_p"], r["energy_p"]) < ALPHA)
    flat = ood_report(torch.zeros(3), calib)  # uniform: less confident than every test clip
    assert flat["msp_p"] == 0.0 and flat["out_of_distribution"]
    bare = ood_report(z, None)
    assert not bare["calibrated"] and bare["msp_p"] is None and bare["out_of_distribution"] is None


def test_calibrated_on_the_test_split(clf):
    cal = calibration(clf, n=32)
    assert cal["n"] == 32 and len(cal["msp"]) == 32 and cal["msp"] == sorted(cal["msp"])
    assert cal["energy"] == sorted(cal["energy"])
    typical = ood_report(predict(clf, None, make_clip("zoom_in", 5).video)["logits"], cal)
    assert not typical["out_of_distribution"] and typical["msp_p"] > 0.2
    real, _ = read_video(ROOT / "assets" / "samples" / "bigbuckbunny_320x180.mp4")
    movie = ood_report(predict(clf, None, real)["logits"], cal)
    assert movie["out_of_distribution"] and movie["msp_p"] < ALPHA  # a cartoon is not a synthetic motion
    assert calibration(torch.nn.Linear(2, 2)) is None  # no spec, no training distribution: not calibrated
