"""The SSIM-vs-Lp page's core: playground, per-frame distances, image decoding, tidy SSIM axes."""

import cv2
import numpy as np
import pytest
import torch

from core.errors import VideoError
from core.metrics import SSIM_RADIUS, distances
from core.ssim_lp import per_frame_distances, playground
from core.transforms import compose
from core.video import decode_image
from core.viz.ssim import curves_figure, per_frame_figure, relative_bars_figure, ssim_axis_range, ssim_map_figure


@pytest.fixture(scope="module")
def frame():
    from core.data import make_clip

    return make_clip("zoom_in", 3, frames=2, size=48).video[0]


def test_playground_skips_identities_and_measures(frame):
    same = playground(frame, {"rotate": 0.0, "zoom": 1.0, "jpeg": 100})
    assert same["ops"] == [] and same["dmax"] == 0.0 and same["distances"]["ssim"] == pytest.approx(1.0)
    assert torch.equal(same["perturbed"], frame)
    out = playground(frame, {"noise": 0.05, "rotate": 3.0, "zoom": 1.0}, seed=4)
    assert out["ops"] == [("rotate", 3.0), ("noise", 0.05)]  # fixed order, identity (zoom) left out
    ref = compose(frame, [("rotate", 3.0), ("noise", 0.05)], 4)
    assert torch.equal(out["perturbed"], ref)
    assert out["distances"] == distances(frame, ref)
    assert out["diff"].shape == frame.shape[1:] and out["dmax"] == pytest.approx(float((ref - frame).abs().mean(0).max()))
    assert out["ssim_map"].shape == frame.shape[1:]
    r = SSIM_RADIUS  # SSIM is the map's mean away from the border
    assert float(out["ssim_map"][r:-r, r:-r].mean()) == pytest.approx(out["distances"]["ssim"], abs=1e-4)
    with pytest.raises(ValueError, match="unknown playground"):
        playground(frame, {"twirl": 1.0})


def test_per_frame_distances():
    a = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[2] = (b[2] + 0.1).clamp(0, 1)
    per = per_frame_distances(a, b)
    assert per["frame"] == [0, 1, 2, 3]
    assert per["ssim"][0] == pytest.approx(1.0) and per["ssim"][2] < 0.99
    assert per["l2"][1] == 0.0 and per["l2"][2] == pytest.approx(float((b[2] - a[2]).norm()), rel=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        per_frame_distances(a, b[:3])


def test_decode_image_round_trip_and_errors():
    rgb = (np.random.default_rng(0).random((10, 12, 3)) * 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", rgb[..., ::-1])  # OpenCV writes BGR
    x = decode_image(png.tobytes())
    assert x.shape == (3, 10, 12) and x.dtype == torch.float32
    assert torch.equal((x * 255).round().byte().permute(1, 2, 0), torch.from_numpy(rgb))  # RGB order kept
    for bad in (b"", b"not an image"):
        with pytest.raises(VideoError, match="not a readable image"):
            decode_image(bad)


@pytest.mark.parametrize("values", [[0.98044, 0.999, 1.0], [0.5, 0.9], [0.9991, 0.9995], [1.0], [0.0, 0.3]])
def test_ssim_axis_ends_at_one_and_contains_every_value(values):
    (lo, hi), fmt = ssim_axis_range(values)
    assert hi == 1.0 and 0.0 <= lo < min(values) or (lo == 0.0 and min(values) == 0.0)
    assert lo < min(values) or min(values) == 0.0
    decimals = int(fmt[1:-1])
    assert 1 <= decimals <= 5
    assert round(lo, decimals) == pytest.approx(lo)  # ticks at round values


def test_figures(frame):
    from core.ssim_lp import SWEEPS, fig1_panels, metric_curves

    rows = fig1_panels(frame)
    bars = relative_bars_figure(rows)
    assert len(bars.data) == 4 and all(len(t.y) == len(rows) - 1 for t in bars.data)
    assert ssim_map_figure(np.ones((5, 5))).data[0].zmax == 1
    curves = metric_curves(frame, points=3)
    cf = curves_figure(curves, SWEEPS)
    assert len(cf.data) == 4 * len(SWEEPS)
    assert max(max(t.y) for t in cf.data) <= 1.0 + 1e-9  # normalised by the maximum over all panels
    per = {"frame": [0, 1, 2], "ssim": [1.0, 0.98044, 0.999], "l2": [0.0, 1.2, 0.1]}
    pf = per_frame_figure(per, "t")
    assert tuple(pf.layout.yaxis.range) == (0.97, 1.0) and pf.layout.yaxis.tickformat == ".3f"
