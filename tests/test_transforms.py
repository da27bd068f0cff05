import pytest
import torch

from core.data import make_clip
from core.errors import ParameterError
from core.metrics import distances
from core.ssim_lp import SWEEPS, budget_limits, claim_check, fig1_panels, metric_curves
from core.transforms import IDENTITY, RANGES, apply, compose, parse


@pytest.fixture(scope="module")
def frame():
    return make_clip("rotate_ccw", 4, frames=2, size=48).video[0]


@pytest.mark.parametrize("name", [n for n in RANGES if n not in ("jpeg", "h264")])
def test_identities_are_exact(name, frame):
    assert torch.equal(apply(frame, name, IDENTITY[name]), frame)


@pytest.mark.parametrize("name,value", [("noise", 0.05), ("rotate", 7), ("zoom", 0.9), ("shift_x", 2),
                                        ("shift_y", -2), ("brightness", 0.1), ("blur", 1.0),
                                        ("jpeg", 30), ("h264", 35)])
def test_each_transform_changes_the_frame_and_stays_in_range(name, value, frame):
    y = apply(frame, name, value)
    assert y.shape == frame.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert distances(frame, y)["l2"] > 0.1


def test_rotation_sense_and_shift_direction():
    x = torch.zeros(3, 21, 21)
    x[:, 10, 16] = 1.0  # a dot right of the centre
    y = apply(x, "rotate", 90)  # counter-clockwise on screen: right -> up
    yy, xx = divmod(int(y[0].argmax()), 21)
    assert (yy, xx) == (4, 10)
    s = apply(x, "shift_x", 2)
    assert divmod(int(s[0].argmax()), 21) == (10, 18)


def test_compose_is_left_to_right_and_parse_checks(frame):
    assert parse("rotate=5, zoom=0.95,noise=0.02") == [("rotate", 5.0), ("zoom", 0.95), ("noise", 0.02)]
    a = compose(frame, "rotate=5,zoom=0.9")
    b = apply(apply(frame, "rotate", 5), "zoom", 0.9)
    assert torch.equal(a, b)
    assert torch.equal(compose(frame, "noise=0.1", seed=3), compose(frame, "noise=0.1", seed=3))
    for bad, match in (("rotate", "NAME=VALUE"), ("spin=3", "unknown transform"), ("zoom=abc", "number"),
                       ("zoom=100", r"\[0.25, 4\]"), ("", "empty")):
        with pytest.raises(ParameterError, match=match):
            parse(bad)


def test_fig1_panels_and_claim(frame):
    rows = fig1_panels(frame)
    assert [r["panel"] for r in rows] == list("abcde")
    assert rows[0]["ssim"] == pytest.approx(1.0) and rows[0]["l2"] == 0.0
    for r in rows[1:]:
        assert r["ssim"] < 1 and r["l2"] > 0
    # the rotated panel moves more pixels than noise alone, in ℓ2
    assert rows[3]["l2"] > rows[1]["l2"]
    cc = claim_check(rows)
    assert cc["rel_l2"] == pytest.approx(rows[3]["l2"] / rows[1]["l2"] - 1)
    assert cc["holds"] == (cc["rel_l2"] >= 2 * max(cc["rel_ssim"], 0) and cc["rel_l2"] > 0)


def test_claim_check_verdicts():
    def rows(sb, l2b, sd, l2d):
        return [{"panel": "b", "ssim": sb, "l2": l2b}, {"panel": "d", "ssim": sd, "l2": l2d}]
    assert claim_check(rows(0.9, 1.0, 0.9, 3.0))["strong"]
    weak = claim_check(rows(0.9, 1.0, 0.8, 4.0))
    assert weak["holds"] and not weak["strong"]
    assert not claim_check(rows(0.9, 1.0, 0.6, 2.0))["holds"]


def test_curves_are_monotone_for_noise(frame):
    c = metric_curves(frame, points=5, sweeps={"noise": SWEEPS["noise"], "rotate": SWEEPS["rotate"]})
    n = c["noise"]
    assert n["magnitude"][0] == 0 and n["ssim_dist"][0] == pytest.approx(0, abs=1e-6)
    assert all(a <= b + 1e-6 for a, b in zip(n["l2"], n["l2"][1:]))
    assert all(a <= b + 1e-6 for a, b in zip(n["ssim_dist"], n["ssim_dist"][1:]))
    assert c["normaliser"]["l2"] == max(max(c["noise"]["l2"]), max(c["rotate"]["l2"]))


def test_budget_limits_respect_budgets(frame):
    rows = budget_limits(frame, ssim_budget=0.95, l2_budget=0.03, points=11,
                         sweeps={"noise": SWEEPS["noise"], "rotate": SWEEPS["rotate"]})
    for r in rows:
        op = [(r["transform"], r["limit_ssim"])]
        assert distances(frame, compose(frame, op))["ssim"] >= 0.95
        op = [(r["transform"], r["limit_l2"])]
        assert distances(frame, compose(frame, op))["l2_rms"] <= 0.03
        if not r["ssim_never_violated"]:  # the next scanned step violates
            step = r["max_scanned"] / 10
            nxt = [(r["transform"], r["limit_ssim"] + step)]
            assert distances(frame, compose(frame, nxt))["ssim"] < 0.95
