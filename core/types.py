"""Choices as enums (RobustBench style): each member *is* its string, so ``Metric.L2 == "l2"``,
``json.dumps`` writes ``"l2"``, and the CLI and pages can pass plain strings.

``parse(Enum, value, name)`` turns a user string into a member or raises one clear
:class:`~core.errors.ParameterError` naming every allowed value.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from core.errors import ParameterError


class Metric(StrEnum):
    """ℓp norm of a perturbation."""

    L1 = "l1"
    L2 = "l2"
    LINF = "linf"


class Heuristic(StrEnum):
    """A* heuristic of the MSR lower bound (Wu & Kwiatkowska §5.2)."""

    ZERO = "zero"  # no assumption: a grid (FMSR) lower bound
    LIPSCHITZ = "lipschitz"  # h = margin / L: valid only if L is a true Lipschitz constant
    CERTIFIED = "certified"  # h = certified radius by bound propagation: sound, no assumption


class Select(StrEnum):
    """DeepSAVA key-frame selection (Mu et al. Alg. 1)."""

    BO = "bo"
    BRUTE = "brute"
    RANDOM = "random"
    FIRST = "first"


class Mode(StrEnum):
    """DeepSAVA perturbation ablation: D (additive), S (spatial), D+S (both)."""

    BOTH = "both"
    ADDITIVE = "additive"
    SPATIAL = "spatial"


class AttackName(StrEnum):
    ONE_SHOT = "one-shot"
    SALIENCY = "saliency"
    SALIENCY_RG = "saliency-rg"
    DEEPSAVA = "deepsava"
    SPARSE = "sparse"
    FLICKER = "flicker"


class Guarantee(StrEnum):
    """What a bound rests on. Never shown without it."""

    SOUND = "sound"  # holds for the continuous MSR with no assumption
    GRID = "grid"  # holds for FMSR (the τ-grid) only
    CONDITIONAL = "conditional"  # needs the user's L to be a true Lipschitz constant and τ within Eq. 5
    ESTIMATE = "estimate"  # rests on a sampled L: no guarantee at all


E = TypeVar("E", bound=StrEnum)


def parse(enum: type[E], value: object, name: str) -> E:
    """``value`` as a member of ``enum``; a clear error listing the allowed values otherwise."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise ParameterError(f"{name} must be one of {allowed}; got {value!r}") from None


__all__ = ["AttackName", "Guarantee", "Heuristic", "Metric", "Mode", "Select", "parse"]
