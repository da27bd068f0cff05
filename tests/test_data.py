import pytest
import torch
import torch.nn.functional as F

from core.data import CLASSES, NUM_CLASSES, make_clip, make_split, parse_synthetic
from core.errors import ParameterError, VideoError
from core.flow import warp


def test_shapes_and_range():
    c = make_clip("rotate_cw", 3, frames=6, size=32)
    assert c.video.shape == (6, 3, 32, 32) and c.flow.shape == (5, 2, 32, 32)
    assert c.video.dtype == torch.float32 and c.flow.dtype == torch.float32
    assert 0.0 <= float(c.video.min()) and float(c.video.max()) <= 1.0
    assert c.class_name == "rotate_cw" and NUM_CLASSES == len(CLASSES) >= 8


def test_deterministic_and_seed_dependent():
    a, b = make_clip(2, 11), make_clip(2, 11)
    assert torch.equal(a.video, b.video) and torch.equal(a.flow, b.flow)
    assert not torch.equal(a.video, make_clip(2, 12).video)


def test_split_is_fixed_and_balanced():
    v1, y1, f1 = make_split("test", 16, frames=4, size=24, with_flow=True)
    v2, y2, _ = make_split("test", 16, frames=4, size=24)
    assert torch.equal(v1, v2) and torch.equal(y1, y2)
    assert torch.bincount(y1, minlength=NUM_CLASSES).tolist() == [2] * NUM_CLASSES
    assert f1.shape == (16, 3, 2, 24, 24)
    vt, _, _ = make_split("train", 1, frames=4, size=24)
    assert not torch.equal(vt[0], v1[0])  # splits use disjoint seeds


@pytest.mark.parametrize("name,sign_axis", [("translate_right", (0, 1)), ("translate_left", (0, -1)),
                                            ("translate_down", (1, 1)), ("translate_up", (1, -1))])
def test_translation_flow_is_the_object_velocity(name, sign_axis):
    c = make_clip(name, 5)
    axis, sign = sign_axis
    v = c.params["velocity"]
    # on object pixels the flow equals the velocity exactly (pure translation)
    f = c.flow[0]
    on_obj = (f - torch.tensor(c.params["background_velocity"]).view(2, 1, 1)).norm(dim=0) > 1e-3
    assert on_obj.sum() > 50
    assert torch.allclose(f[:, on_obj], torch.tensor(v).view(2, 1).expand(2, int(on_obj.sum())), atol=1e-4)
    assert sign * v[axis] >= 0.9


def test_flow_explains_the_frames():
    """Backward-warping frame t+1 by the exact flow reproduces frame t far better than no warp."""
    for label in range(NUM_CLASSES):
        c = make_clip(label, 21)
        warped = warp(c.video[1:], c.flow)
        # leave out a 3-px band around the object outline: (dis)occlusions have no true match
        bg = torch.tensor(c.params["background_velocity"]).view(1, 2, 1, 1)
        obj = ((c.flow - bg).norm(dim=1, keepdim=True) > 1e-3).float()
        band = F.max_pool2d(obj, 7, 1, 3) - (-F.max_pool2d(-obj, 7, 1, 3))
        keep = (band == 0).expand(-1, 3, -1, -1)
        border = torch.zeros_like(keep)
        border[..., 3:-3, 3:-3] = True
        keep = keep & border
        err = (warped - c.video[:-1]).abs()[keep].mean()
        base = (c.video[1:] - c.video[:-1]).abs()[keep].mean()
        wrong = (warp(c.video[1:], -c.flow) - c.video[:-1]).abs()[keep].mean()  # reversed motion
        assert err < 0.6 * base and err < 0.6 * wrong, (CLASSES[label], float(err), float(base))


def test_rotation_direction_on_screen():
    """Clockwise on screen with y down: a point right of the centre moves down."""
    c = make_clip("rotate_cw", 1)
    cx, cy = c.params["centre"]
    x, y = round(cx + 0.5 * c.params["radius"]), round(cy)
    assert c.flow[7, 1, y, x] > 0
    c = make_clip("rotate_ccw", 1)
    cx, cy = c.params["centre"]
    x, y = round(cx + 0.5 * c.params["radius"]), round(cy)
    assert c.flow[7, 1, y, x] < 0


def test_bad_parameters():
    with pytest.raises(ParameterError, match="unknown class"):
        make_clip("jump", 0)
    with pytest.raises(ParameterError, match="frames"):
        make_clip(0, 0, frames=1)
    with pytest.raises(ParameterError, match="size"):
        make_clip(0, 0, size=4096)
    with pytest.raises(VideoError):
        parse_synthetic("synthetic:zoom_in")
    assert parse_synthetic("synthetic:zoom_in:7") == (CLASSES.index("zoom_in"), 7)
