"""Video attacks, one algorithm per module, callable objects with the papers' defaults.

    atk = IterativeSaliency(clf, eps=0.01, refresh=True)
    result = atk(video, label)          # AttackResult; result.to_dict() is JSON-serialisable

``clf`` is a :class:`core.classifier.VideoClassifier` (a bare ``nn.Module`` is wrapped).
"""

from core.attacks.base import Attack, AttackResult, MaskedAttack, changed_frames, check_mask
from core.attacks.deepsava import PAPER_LAMBDAS, DeepSAVA
from core.attacks.flicker import Flicker
from core.attacks.oneshot import OneShot
from core.attacks.saliency import IterativeSaliency, saliency
from core.attacks.sparse import Sparse
from core.types import AttackName, parse

METHODS: tuple[str, ...] = tuple(m.value for m in AttackName)
DENSE = (AttackName.ONE_SHOT, AttackName.SALIENCY, AttackName.SALIENCY_RG)  # take ε
SPARSE = (AttackName.DEEPSAVA, AttackName.SPARSE, AttackName.FLICKER)  # take K key frames


def make_attack(method: str, model, eps: float = 0.01, frames: int = 1, select: str = "bo", **kw) -> Attack:
    """Build an attack by its name with the common knobs (``eps`` for the Inkawhich attacks,
    ``frames``/``select`` for the sparse ones); other keyword arguments go to the constructor."""
    m = parse(AttackName, method, "attack")
    if m == AttackName.ONE_SHOT:
        return OneShot(model, eps=eps, **kw)
    if m in (AttackName.SALIENCY, AttackName.SALIENCY_RG):
        return IterativeSaliency(model, eps=eps, refresh=m == AttackName.SALIENCY_RG, **kw)
    if m == AttackName.DEEPSAVA:
        return DeepSAVA(model, frames=frames, select=select, **kw)
    if m == AttackName.SPARSE:
        return Sparse(model, frames=frames, **kw)
    return Flicker(model, frames=frames, **kw)


__all__ = ["DENSE", "METHODS", "PAPER_LAMBDAS", "SPARSE", "Attack", "AttackName", "AttackResult", "DeepSAVA",
           "Flicker", "IterativeSaliency", "MaskedAttack", "OneShot", "Sparse", "changed_frames", "check_mask",
           "make_attack", "saliency"]
