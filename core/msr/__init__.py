"""Maximum safe radius on optical flow: converging upper/lower bounds (Wu & Kwiatkowska, CVPR 2020)."""

from core.msr.astar import AdmissibleAStar
from core.msr.solver import (DEFAULT_BUDGETS, MSRParams, MSRSolver, estimate_lipschitz, lipschitz_report, make_space,
                             tau_from_lipschitz)
from core.msr.space import METRICS, BrightnessSpace, Evaluator, FlowSpace, ManipulationSpace
from core.msr.upper import GradientSearch, finite_difference_grad

__all__ = ["DEFAULT_BUDGETS", "METRICS", "AdmissibleAStar", "BrightnessSpace", "Evaluator", "FlowSpace", "GradientSearch",
           "MSRParams", "MSRSolver", "ManipulationSpace", "estimate_lipschitz", "lipschitz_report", "finite_difference_grad",
           "make_space", "tau_from_lipschitz"]
