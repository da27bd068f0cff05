"""Out-of-distribution honesty: how typical is a prediction for the data the model was trained on?

The shipped models know only the 8 synthetic motions. Beside a prediction we report two standard
scores — maximum softmax probability (MSP; Hendrycks & Gimpel, ICLR 2017) and the energy
``E(x) = −logsumexp(logits)`` (Liu et al., NeurIPS 2020) — **calibrated on the test split**: each
score's *in-distribution p-value* is the fraction of held-out synthetic test clips that look at
least as unusual. A p-value below ``ALPHA`` (5 %) flags the clip as out of distribution: fewer than
5 % of real test clips score that badly. Calibration needs the training distribution, so it is
available for shipped models only; it is cached on disk per model weights.
"""

from __future__ import annotations

import bisect

import torch

from core.cache import DiskCache
from core.classifier import VideoClassifier, as_classifier

ALPHA = 0.05
CALIBRATION_CLIPS = 64


def energy(logits: torch.Tensor) -> torch.Tensor:
    """Energy score ``−logsumexp(logits)`` over the last axis (lower = more typical)."""
    return -torch.logsumexp(logits, dim=-1)


def calibration(model: VideoClassifier | torch.nn.Module, n: int = CALIBRATION_CLIPS, batch: int = 16) -> dict | None:
    """Sorted MSP and energy of the model on the first ``n`` clips of the synthetic test split, or
    ``None`` when the model was not trained on that dataset (user TorchScript models)."""
    from core.data import CLASSES, make_split

    clf = as_classifier(model)
    spec = clf.spec
    if spec is None or list(spec.classes) != list(CLASSES) or spec.card.get("source") == "torchscript":
        return None
    cache = DiskCache()
    key = cache.key("ood-calibration", model=spec.name, weights=spec.card.get("sha256", ""), n=n)

    def compute() -> dict:
        videos, _, _ = make_split("test", n, spec.frames, spec.size)
        run = clf.fork()
        with torch.no_grad():
            logits = torch.cat([run.logits(videos[i:i + batch]).cpu() for i in range(0, n, batch)]).double()
        msp = torch.softmax(logits, -1).max(-1).values
        return {"msp": sorted(msp.tolist()), "energy": sorted(energy(logits).tolist()), "n": n}

    return cache.get_or_compute(key, compute)


def ood_report(logits: torch.Tensor | list[float], calib: dict | None) -> dict:
    """Scores of one prediction and, with a calibration, their in-distribution p-values.

    Returns:
        ``{msp, energy, msp_p, energy_p, out_of_distribution, alpha, calibrated, n}``; the p-values
        are the share of test clips with MSP ≤ this MSP, resp. energy ≥ this energy.
    """
    z = torch.as_tensor(logits, dtype=torch.float64).reshape(-1)
    msp = float(torch.softmax(z, -1).max())
    e = float(energy(z))
    out = {"msp": msp, "energy": e, "msp_p": None, "energy_p": None, "out_of_distribution": None,
           "alpha": ALPHA, "calibrated": calib is not None, "n": None if calib is None else calib["n"]}
    if calib is None:
        return out
    m, en = calib["msp"], calib["energy"]
    out["msp_p"] = bisect.bisect_right(m, msp) / len(m)  # test clips at most this confident
    out["energy_p"] = (len(en) - bisect.bisect_left(en, e)) / len(en)  # test clips at least this high
    out["out_of_distribution"] = min(out["msp_p"], out["energy_p"]) < ALPHA
    return out
