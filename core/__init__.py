"""Headless core of the video-robustness dashboard.

Conventions (checked everywhere, stated once here):

* A video is a ``(T, C, H, W)`` float tensor in ``[0, 1]`` (C = 3, RGB); a batch of videos is
  ``(B, T, C, H, W)``.
* An optical-flow sequence is ``(T-1, 2, H, W)`` float32 **in pixels**: channel 0 is the x
  displacement (to the right), channel 1 the y displacement (down). ``flow[t]`` maps frame ``t``
  to frame ``t+1``: the content at pixel ``x`` of frame ``t`` is at ``x + flow[t](x)`` in frame
  ``t+1``.

``core`` never imports streamlit; it is used by the pages, the CLI (``python -m core``), tests and
batch jobs.
"""

from core.errors import CoreError, ModelError, VideoError

__version__ = "0.1.0"

__all__ = ["CoreError", "ModelError", "VideoError", "__version__"]
