"""Device choice: CUDA when present, else CPU. Every ``core`` function takes ``device=None``."""

from __future__ import annotations

import torch

DeviceLike = torch.device | str | None


def get_device(device: DeviceLike = None) -> torch.device:
    """Return ``device`` as a ``torch.device``; ``None`` picks ``cuda`` if available, else ``cpu``.

    The environment variable ``VRD_DEVICE`` (e.g. ``cpu``) overrides the automatic choice.
    """
    import os

    if device is None:
        device = os.environ.get("VRD_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from core.errors import ParameterError

        raise ParameterError("device 'cuda' was requested but no CUDA GPU is available")
    return dev
