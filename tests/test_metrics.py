import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from core.data import make_clip
from core.metrics import SSIM, distances, l21, lp_distances, ssim, ssim_map, video_ssim


def _sk(x: torch.Tensor, y: torch.Tensor) -> float:
    return structural_similarity(x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy(), gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2)


@pytest.fixture(scope="module")
def natural():
    """A natural-looking frame: a synthetic clip frame and the bundled Big Buck Bunny frame."""
    from core.models.registry import ASSETS
    from core.video import read_video

    bbb, _ = read_video(ASSETS.parent / "samples" / "bigbuckbunny_320x180.mp4")
    return [make_clip("zoom_in", 3).video[5], bbb[60, :, :96, :128].contiguous()]


def test_identity_is_one(natural):
    for x in natural:
        assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(ssim_map(natural[0], natural[0]), torch.ones(64, 64), atol=1e-5)


@pytest.mark.parametrize("kind", ["random", "noisy", "shifted", "natural"])
def test_agrees_with_scikit_image(kind, natural):
    g = torch.Generator().manual_seed(0)
    if kind == "random":
        x, y = torch.rand(3, 40, 50, generator=g), torch.rand(3, 40, 50, generator=g)
        pairs = [(x, y)]
    else:
        pairs = []
        for x in natural:
            if kind == "noisy":
                y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
            elif kind == "shifted":
                y = torch.roll(x, 1, dims=-1)
            else:
                y = (x * 0.8 + 0.1).clamp(0, 1)
            pairs.append((x, y))
    for x, y in pairs:
        assert abs(float(ssim(x, y)) - _sk(x, y)) < 1e-3


def test_symmetry_and_batching(natural):
    x = natural[0]
    y = (x + 0.1).clamp(0, 1)
    assert float(ssim(x, y)) == pytest.approx(float(ssim(y, x)), abs=1e-6)
    d1, d2 = lp_distances(x, y), lp_distances(y, x)
    assert d1 == pytest.approx(d2)
    v = make_clip("rotate_cw", 1, frames=4).video
    w = (v + 0.05).clamp(0, 1)
    mean, per = video_ssim(v, w)
    assert per.shape == (4,) and float(mean) == pytest.approx(float(per.mean()))
    assert torch.allclose(SSIM()(v, w), per)


def test_ssim_is_differentiable():
    x = torch.rand(2, 3, 24, 24)
    y = torch.rand(2, 3, 24, 24, requires_grad=True)
    (1 - ssim(x, y)).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_lp_values():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[1, 0, 0, 0] = 0.5
    y[1, 1, 0, 0] = -0.5
    d = distances(x, y)
    assert d["l1"] == pytest.approx(1.0) and d["l2"] == pytest.approx(np.sqrt(0.5)) and d["linf"] == 0.5
    assert d["l21"] == pytest.approx(np.sqrt(0.5))  # only frame 1 differs
    assert d["l21_norm"] == pytest.approx(np.sqrt(0.5) / np.sqrt(48))
    assert float(l21(x, x)) == 0.0
    assert len(d["ssim_per_frame"]) == 2 and d["ssim_per_frame"][0] == pytest.approx(1.0)
