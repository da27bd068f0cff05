"""Disk cache for expensive results.

Keys are sha256 digests of a JSON document holding a code/version salt, the kind of result and
its parts (content hash of the video, model id + weights hash, method, parameters). Values are
written with ``torch.save`` (tensors, dicts, lists, numbers, strings) atomically, and read back
with ``torch.load(weights_only=True)``; an unreadable entry is deleted and recomputed, never a
crash.

Location: ``$VRD_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/video-robustness`` (default
``~/.cache/video-robustness``). ``VRD_CACHE_DIR=off`` disables the disk cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import core

#: Bump when a computation's meaning changes, so old entries are not reused.
CACHE_SALT = f"vrd-{core.__version__}-1"


def default_cache_dir() -> Path | None:
    env = os.environ.get("VRD_CACHE_DIR")
    if env:
        return None if env.lower() == "off" else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "video-robustness"


def tensor_hash(x: torch.Tensor) -> str:
    """Content hash of a tensor (shape, dtype and bytes)."""
    h = hashlib.sha256()
    t = x.detach().cpu().contiguous()
    h.update(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def bytes_hash(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class _GetOrCompute:
    """``get_or_compute`` for any cache with ``get(key)`` (None = miss) and ``put(key, value)``."""

    def get(self, key: str) -> Any | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def put(self, key: str, value: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def get_or_compute(self, key: str, fn: Callable[[], Any]) -> Any:
        hit = self.get(key)
        if hit is not None:
            return hit
        value = fn()
        self.put(key, value)
        return value


class DiskCache(_GetOrCompute):
    """A directory of ``<key>.pt`` files. ``DiskCache(None)`` uses the default location."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    @staticmethod
    def key(kind: str, **parts: Any) -> str:
        doc = json.dumps({"salt": CACHE_SALT, "kind": kind, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(doc.encode()).hexdigest()

    def _path(self, key: str) -> Path | None:
        return None if self.root is None else self.root / f"{key}.pt"

    def get(self, key: str) -> Any | None:
        p = self._path(key)
        if p is None or not p.exists():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - corrupt entry: drop it and recompute
            try:
                p.unlink()
            except OSError:
                pass
            return None

    def put(self, key: str, value: Any) -> None:
        p = self._path(key)
        if p is None:
            return
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
            os.close(fd)
            torch.save(value, tmp)
            os.replace(tmp, p)
        except OSError:
            pass  # a read-only or full disk must not break the computation



class BytesLRU(_GetOrCompute):
    """In-memory least-recently-used cache bounded by the **bytes** of its values (tensors and
    numpy arrays are measured by their buffers), not by a number of entries: one 3000-frame upload
    and a hundred tiny clips are not the same thing. Thread-safe; a value larger than the bound is
    returned but not kept.

    Args:
        max_bytes: the bound (default ``$VRD_CLIP_CACHE_MB`` MiB, else 1024 MiB).
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        import threading
        from collections import OrderedDict

        if max_bytes is None:
            max_bytes = int(float(os.environ.get("VRD_CLIP_CACHE_MB", "1024")) * 2**20)
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    @staticmethod
    def size_of(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            return value.element_size() * value.nelement()
        if hasattr(value, "nbytes"):
            return int(value.nbytes)
        if isinstance(value, (tuple, list)):
            return sum(BytesLRU.size_of(v) for v in value)
        if isinstance(value, dict):
            return sum(BytesLRU.size_of(v) for v in value.values())
        if isinstance(value, (bytes, bytearray)):
            return len(value)
        return 64

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> Any | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: str, value: Any) -> None:
        n = self.size_of(value)
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            if n > self.max_bytes:
                return
            while self._items and self.bytes + n > self.max_bytes:
                _, (_, old) = self._items.popitem(last=False)
                self.bytes -= old
            self._items[key] = (value, n)
            self.bytes += n

