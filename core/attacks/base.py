"""Common machinery of the video attacks: the callable base class, the shared masked-perturbation
loop, and the flat result record.

Every attack is a callable object (torchattacks style) with the paper's defaults in the
constructor, ``result = attack(video, label)``, working on one ``(T, 3, H, W)`` clip in [0, 1]
(already fitted to the model's input). Untargeted: the attacked label is ``label`` if given,
else the model's own prediction. Pixel values always stay in [0, 1]. The model is a
:class:`~core.classifier.VideoClassifier` (a bare ``nn.Module`` is wrapped): gradients are taken
with ``torch.autograd.grad`` on the *input* only, so the model's parameters and their ``.grad``
are never touched, whoever else shares the model.

:class:`MaskedAttack` is the one optimisation loop of DeepSAVA, Sparse and Flicker: parameters
θ live on the masked frames only, ``x̂_M = render(θ, x_M)``, the other frames are bit-identical,
and Adam minimises ``s·penalty(θ, x̂_M, x_M) + adversarial(logits)``. **Budgets are constraints**
(SSIM ≥ b — of the video, DeepSAVA's definition, or of every perturbed frame with
``ssim_scope="frame"`` —, normalised ℓ2,1 ≤ b): a step that would leave the feasible set is
backtracked — θ moves only a fraction 2^-j of the way (j = 1 … 8) to the Adam proposal, and stays
where it was if none is feasible — so every iterate is inside the budget. To keep optimising *along*
the boundary instead of sticking to it, the penalty weight s is searched: doubled after a step that
needed two or more halvings, decayed back towards 1 otherwise (a simple λ search).

The :class:`AttackResult` record (``to_dict()`` is strict JSON, without the video) holds:
success, original/adversarial labels and confidences, the perturbed frame indices in the order
they were perturbed, iterations, model queries (clips through the model), gradient computations,
seconds, and :func:`core.metrics.distances` (ℓ1, ℓ2, ℓ∞, ℓ2,1 raw and normalised, mean and per-frame
SSIM). Flows of the original and adversarial clips and the flow distance ‖P(x̂) − P(x)‖₂ are
computed lazily, once, on first use (:meth:`AttackResult.flows`), and shared with the page.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from core.checks import check_range, check_video
from core.classifier import VideoClassifier, as_classifier
from core.errors import ParameterError
from core.metrics import l21, ssim


@dataclass
class AttackResult:
    """One attack on one clip: a flat record plus the adversarial clip (not serialised)."""

    method: str
    success: bool
    orig_label: int
    orig_confidence: float
    adv_label: int
    adv_confidence: float
    perturbed_frames: list[int]
    iterations: int
    queries: int
    gradients: int
    seconds: float
    distances: dict
    l2_per_frame: list[float]
    params: dict
    classes: list[str] | None = None
    extra: dict = field(default_factory=dict)  # attack-specific: saliency history, BO trials, …
    adv_video: torch.Tensor | None = field(default=None, repr=False)
    orig_video: torch.Tensor | None = field(default=None, repr=False)
    orig_probs: list[float] | None = None
    adv_probs: list[float] | None = None
    _flows: tuple | None = field(default=None, repr=False)

    def flows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Horn–Schunck flows ``(T-1, 2, H, W)`` of the original and adversarial clips (computed
        once, on first call)."""
        if self._flows is None:
            from core.flow import compute_flow

            with torch.no_grad():
                self._flows = (compute_flow(self.orig_video), compute_flow(self.adv_video))
        return self._flows

    @property
    def flow_distance(self) -> float:
        """‖P(x̂) − P(x)‖₂ of the Horn–Schunck flows (lazy; 0 when no frame changed)."""
        if not self.perturbed_frames:
            return 0.0
        fo, fa = self.flows()
        return float((fa - fo).norm())

    def to_dict(self, flow: bool = False) -> dict:
        """Flat record (strict JSON once passed through :func:`core.jsonutil.clean`); with
        ``flow=True`` the (lazily computed) flow distance is included."""
        d = {k: getattr(self, k) for k in ("method", "success", "orig_label", "orig_confidence", "adv_label",
                                            "adv_confidence", "perturbed_frames", "iterations", "queries",
                                            "gradients", "seconds", "distances", "l2_per_frame", "params",
                                            "extra", "orig_probs", "adv_probs")}
        if self.classes:
            d["orig_class"] = self.classes[self.orig_label]
            d["adv_class"] = self.classes[self.adv_label]
        if flow:
            d["flow_distance"] = self.flow_distance
        return d


class Attack:
    """Base class: holds the classifier, counts queries and gradients, builds the result record.

    Args:
        model: the attacked (white-box) classifier, a :class:`VideoClassifier` or an ``nn.Module``.
        classes: class names for the record (default: the classifier's spec).
        success_model: black-box transfer — success is judged on this model instead.
    """

    name = "attack"

    def __init__(self, model: VideoClassifier | torch.nn.Module, classes: list[str] | None = None,
                 success_model: VideoClassifier | torch.nn.Module | None = None) -> None:
        self.clf = as_classifier(model).fork()
        self.classes = classes if classes is not None else self.clf.classes
        self.judge_clf = as_classifier(success_model).fork() if success_model is not None else None
        self.device = self.clf.device
        self.callback = None  # optional progress(fraction, message); may raise to stop the attack

    @property
    def model(self) -> torch.nn.Module:
        return self.clf.model

    @property
    def queries(self) -> int:
        return self.clf.queries + (self.judge_clf.queries if self.judge_clf else 0)

    @property
    def gradients(self) -> int:
        return self.clf.gradients

    def report(self, fraction: float, message: str) -> None:
        if self.callback is not None:
            self.callback(min(max(fraction, 0.0), 1.0), message)

    # -- model access ------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.clf.logits(x)

    def judge(self, x: torch.Tensor, label: int) -> tuple[bool, int, float, torch.Tensor]:
        """Is ``x`` adversarial (untargeted) for the success model (white- or black-box)?"""
        k, conf, p = (self.judge_clf or self.clf).predict(x)
        return k != label, k, conf, p

    def input_grad(self, x: torch.Tensor, label: int) -> torch.Tensor:
        """∇_x of the cross-entropy loss C(θ, x, y) (Eq. 3.1–3.2), shape of ``x``."""
        return self.clf.loss_gradient(x, label)

    # -- running -------------------------------------------------------------------------------
    def params(self) -> dict:  # pragma: no cover - overridden
        return {}

    def run(self, video: torch.Tensor, label: int) -> tuple[torch.Tensor, list[int], int, dict]:
        """Return ``(adversarial video, perturbed frames in order, iterations, extra)``."""
        raise NotImplementedError

    def __call__(self, video: torch.Tensor, label: int | None = None) -> AttackResult:
        check_video(video, min_frames=2)
        video = video.detach().to(self.device)
        self.clf.reset_counts()
        if self.judge_clf is not None:
            self.judge_clf.reset_counts()
        t0 = time.perf_counter()
        k0, _, probs = self.clf.predict(video)
        label = k0 if label is None else int(label)
        if not 0 <= label < probs.numel():
            raise ParameterError(f"label must be in [0, {probs.numel() - 1}], got {label}")
        adv, frames, iters, extra = self.run(video, label)
        adv = adv.detach().clamp(0.0, 1.0)
        success, k1, c1, p1 = self.judge(adv, label)
        p0 = probs if self.judge_clf is None else self.judge_clf.predict(video)[2]
        seconds = time.perf_counter() - t0
        return build_result(method=self.name, video=video, adv=adv, label=label, orig_probs=p0, adv_label=k1,
                            adv_conf=c1, adv_probs=p1, success=success, frames=frames, iters=iters,
                            queries=self.queries, gradients=self.gradients, seconds=seconds,
                            params=self.params(), classes=self.classes, extra=extra)


def check_mask(mask: list[int] | None, t: int, k: int | None = None) -> list[int] | None:
    """Validate a user mask of frame indices: integers, unique, in ``[0, t-1]`` (and ``k`` of them
    when ``k`` is given). Returns it sorted."""
    if mask is None:
        return None
    try:
        m = [int(f) for f in mask]
    except (TypeError, ValueError):
        raise ParameterError(f"mask must be a list of frame indices, got {mask!r}") from None
    if not m:
        raise ParameterError("mask must name at least one frame")
    if len(set(m)) != len(m):
        raise ParameterError(f"mask frames must be unique, got {m}")
    bad = [f for f in m if not 0 <= f < t]
    if bad:
        raise ParameterError(f"mask frames must be in [0, {t - 1}] for a {t}-frame clip, got {bad}")
    if k is not None and len(m) != k:
        raise ParameterError(f"mask must name exactly frames={k} frame(s), got {len(m)}: {m}")
    return sorted(m)


def check_frames(k: int, t: int) -> int:
    """K key frames must fit the clip: ``1 ≤ K ≤ T`` (never silently clamped)."""
    if not 1 <= k <= t:
        raise ParameterError(f"frames (K) must be in [1, {t}] for a {t}-frame clip, got {k}")
    return k


class MaskedAttack(Attack):
    """The shared loop of the sparse attacks (module docstring). Subclasses define
    :meth:`init_params`, :meth:`render`, :meth:`penalty` and :meth:`adversarial`."""

    def __init__(self, model, frames: int = 1, lr: float = 0.01, max_iters: int = 100,
                 ssim_budget: float | None = None, l21_budget: float | None = None,
                 mask: list[int] | None = None, early_stop: bool = True, ssim_scope: str = "video",
                 **kw) -> None:
        super().__init__(model, **kw)
        if ssim_scope not in ("video", "frame"):
            raise ParameterError(f"ssim_scope must be 'video' or 'frame', got {ssim_scope!r}")
        self.ssim_scope = ssim_scope
        self.k = int(check_range("frames", frames, 1, 4096))
        self.lr = check_range("lr", lr, 1e-6, 10.0)
        self.max_iters = int(check_range("max_iters", max_iters, 1, 100_000))
        self.ssim_budget = None if ssim_budget is None else check_range("ssim_budget", ssim_budget, 0.0, 1.0)
        self.l21_budget = None if l21_budget is None else check_range("l21_budget", l21_budget, 0.0, 1e6)
        if mask is not None:
            check_mask(mask, 1 << 30)  # unique, non-negative integers; range checked on the clip
        self.mask = mask
        self.early_stop = bool(early_stop)

    # -- to be defined by each attack ----------------------------------------------------------
    def init_params(self, xs: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def lrs(self, params: list[torch.Tensor]) -> list[float]:
        """Adam learning rate of each parameter (default: ``lr`` for all)."""
        return [self.lr] * len(params)

    def render(self, params: list[torch.Tensor], xs: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def penalty(self, params: list[torch.Tensor], adv_s: torch.Tensor, xs: torch.Tensor,
                frame_ssim: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adversarial(self, logits: torch.Tensor, label: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    uses_ssim = False  # whether the penalty needs the per-frame SSIM of the perturbed frames

    # -- the loop ------------------------------------------------------------------------------
    def budget_params(self) -> dict:
        return {"ssim_budget": self.ssim_budget, "ssim_scope": self.ssim_scope, "l21_budget": self.l21_budget}

    def video_ssim(self, frame_ssim: torch.Tensor) -> float:
        """Mean SSIM over all T frames from the perturbed frames' scores (the others score 1)."""
        k = frame_ssim.numel()
        return float((self._t - k + frame_ssim.double().sum()) / self._t)

    def feasible(self, adv_s: torch.Tensor, xs: torch.Tensor, frame_ssim: torch.Tensor | None = None) -> bool:
        """Budgets on the perturbed frames: SSIM ≥ b (of the video — the other frames are identical
        and score 1 — or of every perturbed frame); normalised ℓ2,1 ≤ b (others add 0)."""
        if self.ssim_budget is not None:
            s = ssim(adv_s, xs) if frame_ssim is None else frame_ssim
            v = float(s.min()) if self.ssim_scope == "frame" else self.video_ssim(s)
            if v < self.ssim_budget:
                return False
        if self.l21_budget is not None and float(l21(adv_s, xs)) > self.l21_budget:
            return False
        return True

    def _frames_out(self, params: list[torch.Tensor], xs: torch.Tensor) -> torch.Tensor:
        return self.render(params, xs).clamp(0.0, 1.0)

    def optimise(self, video: torch.Tensor, label: int, mask: list[int], iters: int,
                 stage: tuple[float, float, str] = (0.0, 1.0, "attack")) -> dict:
        """Algorithm 2 (DeepSAVA's generator G) for any masked attack.

        Returns ``{adv, iters, success, loss, margin, best_margin}``: ``adv`` is the first
        successful iterate when ``early_stop`` (else the successful one with the smallest penalty,
        else the last); ``best_margin`` is the lowest logit margin reached (graded: < 0 = success).
        """
        sel = sorted(mask)
        self._t = video.shape[0]
        idx = torch.tensor(sel, device=video.device)
        xs = video[sel]
        if getattr(self, "_clean", None) is None or self._clean[0] is not video:  # once per clip, not per probe
            self._clean = (video, self.clf.clean_features(video))
        forward = self.clf.partial_logits(video, sel, self._clean[1])  # N_C on the key frames' steps only (Eq. 8)
        params = self.init_params(xs)
        opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(params, self.lrs(params))])
        best: dict = {"adv": video.clone(), "iters": 0, "success": False, "loss": math.inf, "margin": math.inf,
                      "best_margin": math.inf, "backtracks": 0, "penalty": math.inf}
        backtracks = 0
        lam_scale = 1.0  # λ search: grows while the budget blocks the steps, decays back to 1
        for it in range(1, iters + 1):
            adv_s = self._frames_out(params, xs)
            s = ssim(adv_s, xs) if (self.uses_ssim or self.ssim_budget is not None) else None
            adv = video.index_copy(0, idx, adv_s)
            logits = forward(adv)
            pen = self.penalty(params, adv_s, xs, s)
            loss = lam_scale * pen + self.adversarial(logits, label)
            margin = float(VideoClassifier.margin_of(logits.detach()[0], label))
            success = margin < 0
            self.report(stage[0] + stage[1] * it / iters,
                        f"{stage[2]}: iteration {it}/{iters}, margin {margin:.3f}")
            best["best_margin"] = min(best["best_margin"], margin)
            best["loss"] = min(best["loss"], float(loss.detach()))
            keep = (success and (not best["success"] or float(pen) < best["penalty"])) or not best["success"]
            if keep:
                best.update(adv=adv.detach(), iters=it, success=success, margin=margin, penalty=float(pen.detach()))
            if success and self.early_stop:
                break
            grads = torch.autograd.grad(loss, params)
            self.clf.gradients += 1
            old = [p.detach().clone() for p in params]
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            if self.ssim_budget is not None or self.l21_budget is not None:
                j = self._backtrack(params, old, xs)
                backtracks += j
                lam_scale = min(lam_scale * 2.0, 1e4) if j >= 2 else max(1.0, lam_scale * 0.8)
        best["backtracks"] = backtracks
        best["lam_scale"] = lam_scale
        return best

    @torch.no_grad()
    def _backtrack(self, params: list[torch.Tensor], old: list[torch.Tensor], xs: torch.Tensor) -> int:
        """Pull the Adam proposal back towards the last feasible θ until it is feasible."""
        new = [p.detach().clone() for p in params]
        for j in range(0, 9):
            a = 0.5 ** j
            for p, o, n in zip(params, old, new):
                p.copy_(o + a * (n - o))
            if self.feasible(self._frames_out(params, xs), xs):
                return j
        for p, o in zip(params, old):
            p.copy_(o)
        return 9


def logprob_hinge(logits: torch.Tensor, label: int, kappa: float = 0.0) -> torch.Tensor:
    """``max(log p_y − max_{c≠y} log p_c, −κ)`` of one clip's logits (the adversarial term of the
    Sparse and flickering baselines)."""
    logp = torch.log_softmax(logits, 1)[0]
    return torch.clamp(VideoClassifier.margin_of(logp, label), min=-kappa)


def changed_frames(video: torch.Tensor, adv: torch.Tensor) -> list[int]:
    """Indices of frames that differ (bit-exact comparison)."""
    return [t for t in range(video.shape[0]) if not torch.equal(video[t], adv[t])]


def build_result(*, method: str, video: torch.Tensor, adv: torch.Tensor, label: int, orig_probs: torch.Tensor,
                 adv_label: int, adv_conf: float, adv_probs: torch.Tensor, success: bool, frames: list[int],
                 iters: int, queries: int, gradients: int, seconds: float, params: dict,
                 classes: list[str] | None, extra: dict) -> AttackResult:
    """The record of one attack (keyword arguments only). Cheap: SSIM only on changed frames,
    no flows (those are lazy, see :meth:`AttackResult.flows`)."""
    from core.metrics import distances

    v, a = video.detach().cpu(), adv.detach().cpu()
    changed = changed_frames(v, a)
    d = distances(v, a, changed=changed)
    l2pf = [float(x) for x in (a - v).flatten(1).norm(dim=1)]
    # frames in perturbation order, then any other frame that changed (should be none)
    order = [f for f in frames if f in set(changed)]
    order += [f for f in changed if f not in order]
    p0 = orig_probs.detach().cpu()
    return AttackResult(method=method, success=bool(success), orig_label=label,
                        orig_confidence=float(p0[label]), adv_label=adv_label, adv_confidence=adv_conf,
                        perturbed_frames=order, iterations=iters, queries=queries, gradients=gradients,
                        seconds=seconds, distances=d, l2_per_frame=l2pf, params=params, classes=classes,
                        extra=extra, adv_video=a, orig_video=v, orig_probs=[float(x) for x in p0],
                        adv_probs=[float(x) for x in adv_probs.detach().cpu()])
