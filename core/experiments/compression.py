"""Do adversarial perturbations survive video compression? (DeepSAVA §4.2.3)

The adversarial clip and, for reference, the clean clip are round-tripped through H.264 (a CRF
sweep, ``core.transforms.h264``: libx264, yuv444p) or per-frame JPEG (a quality sweep); each is
classified again. A perturbation *survives* a level when the compressed adversarial clip is still
misclassified while the compressed clean clip is still classified correctly (otherwise the codec,
not the attack, changed the decision; such levels are reported as ``clean_broken``).
"""

from __future__ import annotations

import torch

from core.errors import ParameterError

CODECS = {"h264": ("crf", (0.0, 51.0)), "jpeg": ("quality", (1.0, 100.0))}


def compression_survival(model, video: torch.Tensor, label: int, method: str, codec: str = "h264",
                         levels: list[float] | None = None, attack_kw: dict | None = None) -> dict:
    """Attack ``video`` once, then compress clean and adversarial clips at every level.

    Args:
        model: a :class:`core.classifier.VideoClassifier` (or module).
        video: ``(T, 3, H, W)`` in [0, 1], already fitted to the model.
        codec: ``h264`` (levels = CRF, larger = stronger) or ``jpeg`` (levels = quality, smaller =
            stronger).

    Returns:
        ``{codec, method, attack: {success, ssim, adv_label}, levels: [{level, clean_ok, adv_fooled,
        survives, clean_broken, ssim_adv_vs_clean_compressed}], params}``.
    """
    from core.attacks import make_attack
    from core.classifier import as_classifier
    from core.metrics import ssim
    from core.transforms import apply

    if codec not in CODECS:
        raise ParameterError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    name, (lo, hi) = CODECS[codec]
    levels = list(levels if levels is not None else ([18, 23, 28] if codec == "h264" else [95, 75, 50]))
    if not levels:
        raise ParameterError(f"give at least one {name}")
    for v in levels:
        if not lo <= float(v) <= hi:
            raise ParameterError(f"{codec} {name} must be in [{lo:g}, {hi:g}], got {v!r}")
    clf = as_classifier(model).fork()
    res = make_attack(method, clf, **(attack_kw or {}))(video, label)
    adv = res.adv_video
    rows = []
    for v in levels:
        cv, av = apply(video, codec, float(v)), apply(adv, codec, float(v))
        clean_ok = clf.predict(cv)[0] == label
        adv_pred = clf.predict(av)[0]
        rows.append({"level": float(v), "clean_ok": bool(clean_ok), "adv_fooled": bool(adv_pred != label),
                     "adv_label": int(adv_pred), "survives": bool(res.success and clean_ok and adv_pred != label),
                     "clean_broken": not clean_ok,
                     "ssim_adv_vs_clean_compressed": float(ssim(cv, av).mean())})
    return {"codec": codec, "level_name": name, "method": method,
            "attack": {"success": bool(res.success), "ssim": float(res.distances["ssim"]),
                       "adv_label": int(res.adv_label), "perturbed_frames": res.perturbed_frames},
            "levels": rows, "params": dict(attack_kw or {})}
