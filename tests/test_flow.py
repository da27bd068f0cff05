import math

import numpy as np
import pytest
import torch

from core.data import make_clip
from core.errors import ParameterError, VideoError
from core.flow import METHODS, compute_flow, horn_schunck, impose_flow, warp
from core.flow.evaluate import epe, evaluate_methods
from core.viz.flow import color_wheel, flow_to_color

# Documented tolerances (README, "Flow accuracy"): mean end-point error in the interior
# (8-px margin) on a smooth 64×64 texture.
TRANSLATION_TOL = {"farneback": 0.15, "tvl1": 0.1, "ilk": 0.15, "horn_schunck": 0.3}
ROTATION_TOL = {"farneback": 0.35, "tvl1": 0.15, "ilk": 0.35, "horn_schunck": 0.35}
M = 8  # margin


@pytest.fixture(scope="module")
def texture():
    return make_clip("zoom_out", 12, frames=2, size=64).video[:1]  # (1, 3, 64, 64)


def _moved(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """A second frame in which the content of ``img`` has moved by ``flow`` (pixels)."""
    # v2(x + f) = v1(x)  ⇔  v2(y) ≈ v1(y - f) for a smooth f
    return warp(img, -flow)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("d", [(1.5, 0.0), (0.0, -1.0), (-0.8, 0.6)])
def test_translation_recovered(method, d, texture):
    f = torch.tensor(d, dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, 64, 64)
    video = torch.cat([texture, _moved(texture, f)])
    est = compute_flow(video, method)
    assert est.shape == (1, 2, 64, 64) and est.dtype == torch.float32
    err = epe(est[..., M:-M, M:-M], f[..., M:-M, M:-M])
    assert err < TRANSLATION_TOL[method], (method, d, err)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("deg", [4.0, -4.0])
def test_rotation_recovered(method, deg, texture):
    th = math.radians(deg)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    c = 31.5
    # content at x moves to R(x - c) + c; positive angle is clockwise on screen (y down)
    fx = math.cos(th) * (xs - c) - math.sin(th) * (ys - c) + c - xs
    fy = math.sin(th) * (xs - c) + math.cos(th) * (ys - c) + c - ys
    truth = torch.stack([fx, fy]).unsqueeze(0)
    # exact second frame: v2(y) = v1(R^-1 (y - c) + c)
    bx = math.cos(th) * (xs - c) + math.sin(th) * (ys - c) + c - xs
    by = -math.sin(th) * (xs - c) + math.cos(th) * (ys - c) + c - ys
    second = warp(texture, torch.stack([bx, by]).unsqueeze(0))
    est = compute_flow(torch.cat([texture, second]), method)
    err = epe(est[..., M:-M, M:-M], truth[..., M:-M, M:-M])
    assert err < ROTATION_TOL[method], (method, deg, err)
    # and the rotation sense is right: right of the centre moves down for clockwise
    assert np.sign(float(est[0, 1, 32, 48])) == np.sign(deg)


@pytest.mark.parametrize("method", METHODS)
def test_identical_frames_give_zero_flow(method, texture):
    est = compute_flow(torch.cat([texture, texture, texture]), method)
    assert est.shape == (2, 2, 64, 64)
    mag = est.norm(dim=1)
    # Farneback's polynomial fit leaves sub-pixel noise on identical frames; the others are exact
    assert float(mag.mean()) < 0.01 and float(mag.max()) < (0.2 if method == "farneback" else 1e-3)


def test_warp_zero_is_identity_and_shift_is_exact(texture):
    assert torch.allclose(warp(texture, torch.zeros(1, 2, 64, 64)), texture, atol=1e-6)
    one = torch.zeros(1, 2, 64, 64)
    one[:, 0] = 1.0  # sample one pixel to the right
    assert torch.allclose(warp(texture, one)[..., :-1], texture[..., 1:], atol=1e-5)


@pytest.mark.parametrize("method", ["tvl1", "horn_schunck"])
def test_impose_flow_is_recovered(method, texture):
    video = texture.expand(3, 3, 64, 64).contiguous()  # a still clip: its flow is zero
    delta = torch.zeros(2, 2, 64, 64)
    delta[0, 0], delta[0, 1] = 1.0, -0.5  # shift pair 0 only
    out = impose_flow(video, delta)
    assert torch.equal(out[0], video[0])
    est = compute_flow(out, method)[..., M:-M, M:-M]
    d = delta[0, :, M:-M, M:-M]
    assert epe(est[0], d) < 0.3  # pair 0 moved by +delta_0
    assert epe(est[1], -d) < 0.3  # and pair 1 back by -delta_0 (frame 2 untouched)


def test_horn_schunck_gradcheck():
    torch.manual_seed(0)
    a = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    fn = lambda x, y: horn_schunck(x, y, alpha=0.5, iterations=3, levels=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b), eps=1e-6, atol=1e-5)


def test_horn_schunck_batched_equals_single(texture):
    clip = make_clip("rotate_cw", 2, frames=4, size=32).video
    both = horn_schunck(clip[:-1], clip[1:])
    one = horn_schunck(clip[1:2], clip[2:3])
    assert torch.allclose(both[1:2], one, atol=1e-5)


def test_middlebury_colours_pixel_for_pixel():
    """Values of the Middlebury coding (Baker et al. 2007; flow_vis / torchvision's flow_to_image)
    worked out by hand from its definition: wheel RY 15, YG 6, GC 4, CB 11, BM 13, MR 6."""
    from core.viz.flow import make_colorwheel

    def rgb(dx, dy, m=None):
        f = np.zeros((2, 4, 4), np.float32)
        f[0], f[1] = dx, dy
        return tuple(int(c) for c in flow_to_color(f, m)[0, 0])

    wheel = make_colorwheel()
    assert wheel.shape == (55, 3) and tuple(wheel[0]) == (255, 0, 0) and tuple(wheel[15]) == (255, 255, 0)
    assert tuple(wheel[21]) == (0, 255, 0) and tuple(wheel[25]) == (0, 255, 255) and tuple(wheel[36]) == (0, 0, 255)
    assert rgb(1, 0) == (255, 0, 0)  # rightward: red (a = −1, k0 = 0)
    assert rgb(0, 1) == (255, 229, 0)  # downward: between wheel[13] and wheel[14]
    assert rgb(-1, 0) == (0, 209, 255)  # leftward: wheel[27]
    assert rgb(0, -1) == (88, 0, 255)  # upward: between wheel[40] and wheel[41]
    assert rgb(0, 0) == (255, 255, 255)  # no motion: white
    assert rgb(0.5, 0, 1.0) == (255, 127, 127)  # half the global maximum: whitened by half
    assert rgb(2, 0, 1.0) == (191, 0, 0)  # beyond the maximum: darkened ×0.75
    assert tuple(color_wheel(51)[25, 50]) == (255, 0, 0)  # right edge of the legend is red


def test_bad_inputs():
    with pytest.raises(ParameterError, match="unknown flow method"):
        compute_flow(torch.rand(2, 3, 8, 8), "deepflow")
    with pytest.raises(VideoError, match="T >= 2"):
        compute_flow(torch.rand(1, 3, 8, 8))
    with pytest.raises(VideoError, match=r"\[0, 1\]"):
        compute_flow(torch.rand(2, 3, 8, 8) * 3)
    with pytest.raises(ParameterError, match="delta"):
        impose_flow(torch.rand(3, 3, 8, 8), torch.zeros(3, 2, 8, 8))


def test_every_method_beats_zero_flow_on_the_dataset():
    r = evaluate_methods(clips_per_class=1, frames=4)
    assert r["clips"] == 8 and set(r["methods"]) == set(METHODS)
    for m, v in r["methods"].items():
        assert v["epe"] < r["zero_flow_epe"], m
        assert len(v["per_class"]) == 8
    assert r["methods"]["tvl1"]["epe"] < 0.5 * r["zero_flow_epe"]


def test_robust_scale_ignores_a_border_outlier_and_says_how_much_it_clips():
    from core.viz.flow import arrow_segments, flow_to_color, histogram_figure, robust_max

    f = np.zeros((2, 40, 40), np.float32)
    f[0] = 1.0  # 1 px to the right everywhere …
    f[:, 0, 0] = (20.9, 0.0)  # … and one 20.9-px outlier in a corner (vtest.avi-like)
    other = np.full((2, 40, 40), 0.5, np.float32)
    scale, clipped = robust_max([f, other], 99.0)
    assert scale == pytest.approx(1.0, abs=1e-6) and clipped == pytest.approx(1 / 3200)
    # with the robust scale the ordinary pixels are fully saturated (not washed out to near-white) …
    img = flow_to_color(f, scale, clip=True)
    assert img[20, 20].min() < 10  # a full colour has a channel near 0
    washed = flow_to_color(f)  # per-image maximum (the outlier) as the scale
    assert washed[20, 20].min() > 200
    # … and the outlier is clipped to the same full colour, not darkened (Middlebury's ×0.75)
    assert np.array_equal(img[0, 0], img[20, 20])
    assert not np.array_equal(flow_to_color(f, scale)[0, 0], img[20, 20])
    xs, _ = arrow_segments(f, step=4, scale=50.0)  # a huge shared scale: arrows capped at 2 steps
    lengths = [abs(xs[i + 1] - xs[i]) for i in range(0, len(xs), 7)]
    assert max(lengths) <= 8 + 1e-6
    h = histogram_figure({"a": f, "b": other}, bins=10, max_mag=scale)
    assert "1 pixels above" in h.layout.title.text
    assert all(max(t.x) <= scale + 1e-6 for t in h.data) and h.data[0].xbins.size == h.data[1].xbins.size
    with pytest.raises(ValueError, match="percentile"):
        robust_max([f], 0)
    assert robust_max([np.zeros((2, 4, 4))])[0] == 1.0  # still flow: a positive scale, no division by 0


def test_subplot_images_keep_square_pixels_and_separate_colour_bars():
    from core.viz.flow import comparison_figure, direction_figure

    a, b = np.random.rand(2, 16, 24), np.random.rand(2, 16, 24)
    f = comparison_figure(a, b, "magnitude")
    assert [f.layout[ax].scaleanchor for ax in ("yaxis", "yaxis2", "yaxis3")] == ["x", "x2", "x3"]
    xs = [t.colorbar.x for t in f.data]
    assert len(set(xs)) == 3  # one colour bar per panel, not stacked on each other
    assert direction_figure(a).layout.yaxis2.scaleanchor == "x2"
