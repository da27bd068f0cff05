import io

import av
import numpy as np
import pytest
import torch

from core.data import make_clip
from core.errors import VideoError
from core.video import (encode_mp4, fit_clip, open_video, read_video, sample_indices, write_video)
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def clip():
    return make_clip("translate_right", 3, frames=8, size=32).video


def test_h264_round_trip(clip, tmp_path):
    p = write_video(tmp_path / "c.mp4", clip, fps=10, scale=2)
    with av.open(str(p)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
    video, info = read_video(p)
    assert video.shape == (8, 3, 64, 64) and info.frames == 8 and info.codec == "h264"
    assert info.fps == pytest.approx(10.0) and info.duration == pytest.approx(0.8, abs=0.11)
    back = torch.nn.functional.avg_pool2d(video, 2)
    assert (back - clip).abs().mean() < 0.03  # lossy but close


def test_odd_sizes_are_padded_for_yuv420(tmp_path):
    v = torch.rand(3, 3, 15, 17)
    video, _ = read_video(encode_mp4(v))
    assert video.shape == (3, 3, 16, 18)


def test_other_containers(clip, tmp_path):
    """avi (mpeg4), webm (vp9) and gif written by PyAV are read back."""
    arr = (clip.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    for ext, codec, fmt in (("avi", "mpeg4", "yuv420p"), ("webm", "libvpx-vp9", "yuv420p"),
                            ("gif", "gif", "rgb8")):
        p = tmp_path / f"c.{ext}"
        with av.open(str(p), "w") as out:
            s = out.add_stream(codec, rate=8)
            s.width, s.height, s.pix_fmt = 32, 32, fmt
            for a in arr:
                for pk in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                    out.mux(pk)
            for pk in s.encode():
                out.mux(pk)
        video, info = read_video(p)
        assert video.shape[1:] == (3, 32, 32) and video.shape[0] >= 2, ext
        assert (video[0] - clip[0]).abs().mean() < 0.1, ext


def test_sampling_and_fit(clip):
    assert sample_indices(10, 4) == [0, 3, 6, 9]
    assert sample_indices(2, 5) == [0, 0, 0, 1, 1] or sample_indices(2, 5) == [0, 0, 1, 1, 1]
    wide = torch.rand(5, 3, 40, 80)
    out = fit_clip(wide, frames=3, size=20)
    assert out.shape == (3, 3, 20, 20)
    # centre crop: a left-right gradient keeps its middle
    ramp = torch.linspace(0, 1, 80).view(1, 1, 1, 80).expand(2, 3, 40, 80).contiguous()
    mid = fit_clip(ramp, size=40)
    assert mid[0, 0, 0, 0] > 0.2 and mid[0, 0, 0, -1] < 0.8


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (b"this is plainly text, not a video at all" * 10, "not a readable video"),
])
def test_bad_bytes(data, match):
    with pytest.raises(VideoError, match=match):
        read_video(data)


def test_truncated_file(clip):
    data = encode_mp4(clip)
    with pytest.raises(VideoError):
        read_video(data[: len(data) // 2])


def test_single_frame_is_refused(clip):
    with pytest.raises(VideoError, match="at least 2"):
        read_video(encode_mp4(clip[:1]))


def test_missing_and_directory(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match="directory"):
        read_video(tmp_path)


def test_huge_file_refused(monkeypatch, clip):
    import core.video as cv

    monkeypatch.setattr(cv, "MAX_BYTES", 100)
    with pytest.raises(VideoError, match="limit"):
        cv.read_video(encode_mp4(clip))


def test_huge_frames_refused(monkeypatch, clip):
    import core.video as cv

    monkeypatch.setattr(cv, "MAX_SIDE", 16)
    with pytest.raises(VideoError, match="refused"):
        cv.read_video(encode_mp4(clip))


def test_long_video_truncated(monkeypatch, clip):
    import core.video as cv

    monkeypatch.setattr(cv, "MAX_DECODE_FRAMES", 5)
    video, info = cv.read_video(encode_mp4(clip))
    assert video.shape[0] == 5 and info.truncated


def test_open_video_names(clip, tmp_path):
    v, info, label = open_video("synthetic:translate_right:3", frames=8, size=32)
    assert torch.equal(v, clip) and label == 1 and info.frames == 8
    p = write_video(tmp_path / "x.mp4", clip)
    v2, _, label2 = open_video(str(p))
    assert v2.shape == clip.shape and label2 is None
    with pytest.raises(VideoError):
        open_video("synthetic:fly:3")


def test_file_object(clip):
    buf = io.BytesIO(encode_mp4(clip))
    buf.name = "clip.mp4"
    video, info = read_video(buf)
    assert info.source == "clip.mp4" and video.shape[0] == 8


def _long_video(path, frames: int, h: int, w: int):
    """A smooth moving gradient (cheap to encode) as H.264."""
    import av

    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for t in range(frames):
            img = np.stack([(xx + 3 * t) % 256, (yy + t) % 256, np.full_like(xx, 128)], -1).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_long_upload_is_kept_as_uint8_and_the_peak_stays_near_its_size(tmp_path):
    """360 frames at 480×272: the decoded frames take 141 MB as uint8 (564 MB as float). Decoding
    in a fresh process must peak near the uint8 size — not list + stack + float (6×)."""
    import subprocess
    import sys

    path = _long_video(tmp_path / "long.mp4", 360, 272, 480)
    code = ("import resource, sys, av, torch, numpy\n"
            "from core.video import decode_video\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "frames, info = decode_video(sys.argv[1])\n"
            "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(base * 1024, peak * 1024, frames.numel(), str(frames.dtype), tuple(frames.shape))\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    base, peak, n, dtype, shape = r.stdout.strip().split(" ", 4)
    base, peak, n = int(base), int(peak), int(n)
    assert dtype == "torch.uint8" and shape == "(360, 3, 272, 480)"
    grew = peak - base
    assert grew < 1.5 * n + 80 * 2**20, f"decoding grew the process by {grew / 2**20:.0f} MB for {n / 2**20:.0f} MB of frames"


def test_decoding_stops_at_the_byte_budget(tmp_path, monkeypatch):
    import core.video as cv

    path = _long_video(tmp_path / "v.mp4", 40, 64, 96)
    per_frame = 3 * 64 * 96
    monkeypatch.setattr(cv, "MAX_DECODED_BYTES", 10 * per_frame)
    frames, info = cv.decode_video(path)
    assert frames.shape[0] == 10 and info.truncated and not info.incomplete
    video, _ = cv.read_video(path, frames=4)
    assert video.dtype == torch.float32 and video.shape[0] == 4 and 0 <= float(video.min()) <= float(video.max()) <= 1
    assert torch.equal(cv.to_float(frames[:2]), frames[:2].float() / 255)
