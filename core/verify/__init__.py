"""Sound verification of flow robustness: our own bound propagation (IBP, CROWN) through the flow
warp and the model, certification and branch and bound (see :mod:`core.verify.certify`)."""

from core.verify.bounds import Unsupported, crown_interval, crown_lower, ibp, recurrent_ibp
from core.verify.certify import CertifiedRadius, ModelBounds, certify, supported, warp_bounds

__all__ = ["CertifiedRadius", "ModelBounds", "Unsupported", "certify", "crown_interval", "crown_lower", "ibp",
           "recurrent_ibp", "supported", "warp_bounds"]
