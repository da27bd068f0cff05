"""Strict JSON: NaN and ±inf become ``null`` (``json.dumps`` would print bare ``NaN``, which is not
JSON), enums their values, tensors/numpy scalars plain numbers, tuples lists."""

from __future__ import annotations

import json
import math
from enum import Enum
from typing import Any


def clean(obj: Any) -> Any:
    """A copy of ``obj`` that :func:`json.dumps` writes as strict JSON."""
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k.value if isinstance(k, Enum) else k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [clean(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return clean(obj.tolist())
    return str(obj)


def dumps(obj: Any, **kw) -> str:
    """``json.dumps(clean(obj), allow_nan=False)``."""
    return json.dumps(clean(obj), allow_nan=False, **kw)


__all__ = ["clean", "dumps"]
