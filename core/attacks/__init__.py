"""Video attacks, one algorithm per module, callable objects with the papers' defaults.

    atk = IterativeSaliency(model, eps=0.01, refresh=True)
    result = atk(video, label)          # AttackResult; result.to_dict() is JSON-serialisable
"""

from core.attacks.base import Attack, AttackResult, changed_frames
from core.attacks.deepsava import DeepSAVA
from core.attacks.flicker import Flicker
from core.attacks.oneshot import OneShot
from core.attacks.saliency import IterativeSaliency, saliency
from core.attacks.sparse import Sparse

METHODS = ("one-shot", "saliency", "saliency-rg", "deepsava", "sparse", "flicker")


def make_attack(method: str, model, eps: float = 0.01, frames: int = 1, select: str = "bo", **kw) -> Attack:
    """Build an attack by its CLI name with the common knobs (``eps`` for the Inkawhich attacks,
    ``frames``/``select`` for the sparse ones); other keyword arguments go to the constructor."""
    from core.errors import ParameterError

    if method == "one-shot":
        return OneShot(model, eps=eps, **kw)
    if method in ("saliency", "saliency-rg"):
        return IterativeSaliency(model, eps=eps, refresh=method == "saliency-rg", **kw)
    if method == "deepsava":
        return DeepSAVA(model, frames=frames, select=select, **kw)
    if method == "sparse":
        return Sparse(model, frames=frames, **kw)
    if method == "flicker":
        return Flicker(model, frames=frames, **kw)
    raise ParameterError(f"unknown attack {method!r}; expected one of {', '.join(METHODS)}")


__all__ = ["METHODS", "Attack", "AttackResult", "DeepSAVA", "Flicker", "IterativeSaliency", "OneShot", "Sparse",
           "changed_frames", "make_attack", "saliency"]
