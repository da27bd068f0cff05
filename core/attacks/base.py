"""Common machinery of the video attacks: the callable base class and the flat result record.

Every attack is a callable object (torchattacks style) with the paper's defaults in the
constructor, ``result = attack(video, label)``, working on one ``(T, 3, H, W)`` clip in [0, 1]
(already fitted to the model's input). Untargeted: the attacked label is ``label`` if given,
else the model's own prediction. Pixel values always stay in [0, 1].

The :class:`AttackResult` record (``to_dict()`` is JSON-serialisable, without the video) holds:
success, original/adversarial labels and confidences, the perturbed frame indices in the order
they were perturbed, iterations, model queries (forward passes, counting each clip of a batch),
gradient computations, seconds, and the distances of :func:`core.metrics.distances` — ℓ1, ℓ2, ℓ∞,
ℓ2,1 (raw and normalised by √(C·H·W) per frame), mean and per-frame SSIM (the project's one SSIM)
— plus per-frame ℓ2 and the flow distance ‖P(x̂) − P(x)‖₂ between the Horn–Schunck flows of the
original and adversarial clips.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from core.checks import check_video
from core.errors import ParameterError


@dataclass
class AttackResult:
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
    flow_distance: float | None
    params: dict
    classes: list[str] | None = None
    extra: dict = field(default_factory=dict)  # attack-specific: saliency history, BO trials, …
    adv_video: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("adv_video")
        if self.classes:
            d["orig_class"] = self.classes[self.orig_label]
            d["adv_class"] = self.classes[self.adv_label]
        d.pop("classes")
        return d


class Attack:
    """Base class: counts queries and gradients, and builds the result record."""

    name = "attack"

    def __init__(self, model: nn.Module, classes: list[str] | None = None,
                 success_model: nn.Module | None = None) -> None:
        self.model = model
        self.classes = classes
        self.success_model = success_model  # black-box transfer: success is judged on this model
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        self.queries = 0
        self.gradients = 0
        self.callback = None  # optional progress(fraction, message); may raise to stop the attack

    def report(self, fraction: float, message: str) -> None:
        if self.callback is not None:
            self.callback(min(max(fraction, 0.0), 1.0), message)

    # -- model access ------------------------------------------------------------------------
    def logits(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """Logits of clips ``(T, 3, H, W)`` or ``(B, T, 3, H, W)``, counted as queries."""
        xb = x.unsqueeze(0) if x.dim() == 4 else x
        self.queries += xb.shape[0]
        return (model or self.model)(xb.to(self.device)).float()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, model: nn.Module | None = None) -> tuple[int, float, torch.Tensor]:
        p = torch.softmax(self.logits(x, model)[0], 0)
        k = int(p.argmax())
        return k, float(p[k]), p

    def judge(self, x: torch.Tensor, label: int) -> tuple[bool, int, float]:
        """Is ``x`` adversarial (untargeted) for the success model (white- or black-box)?"""
        k, conf, _ = self.predict(x, self.success_model)
        return k != label, k, conf

    def input_grad(self, x: torch.Tensor, label: int) -> torch.Tensor:
        """∇_x of the cross-entropy loss C(θ, x, y) (Eq. 3.1–3.2), shape of ``x``."""
        xx = x.detach().clone().to(self.device).requires_grad_(True)
        loss = F.cross_entropy(self.logits(xx), torch.tensor([label], device=self.device))
        (g,) = torch.autograd.grad(loss, xx)
        self.gradients += 1
        return g.detach()

    def descend(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss`` (counted as a gradient computation)."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.gradients += 1
        opt.step()

    # -- running -------------------------------------------------------------------------------
    def params(self) -> dict:  # pragma: no cover - overridden
        return {}

    def run(self, video: torch.Tensor, label: int) -> tuple[torch.Tensor, list[int], int, dict]:
        """Return ``(adversarial video, perturbed frames in order, iterations, extra)``."""
        raise NotImplementedError

    def __call__(self, video: torch.Tensor, label: int | None = None) -> AttackResult:
        check_video(video, min_frames=2)
        video = video.detach().to(self.device)
        self.queries = self.gradients = 0
        t0 = time.perf_counter()
        k0, _, probs = self.predict(video)
        label = k0 if label is None else int(label)
        if not 0 <= label < probs.numel():
            raise ParameterError(f"label must be in [0, {probs.numel() - 1}], got {label}")
        c_label = float(probs[label])
        adv, frames, iters, extra = self.run(video, label)
        adv = adv.detach().clamp(0.0, 1.0)
        success, k1, c1 = self.judge(adv, label)
        seconds = time.perf_counter() - t0
        return build_result(self.name, video, adv, label, c_label, k1, c1, success, frames, iters,
                            self.queries, self.gradients, seconds, self.params(), self.classes, extra)


def logprob_hinge(logits: torch.Tensor, label: int, kappa: float = 0.0) -> tuple[torch.Tensor, bool]:
    """``max(log p_y − max_{c≠y} log p_c, −κ)`` of one clip's logits, and whether it is already
    misclassified (the adversarial term of the Sparse and flickering baselines)."""
    logp = torch.log_softmax(logits, 1)[0]
    other = logp.clone()
    other[label] = -torch.inf
    return torch.clamp(logp[label] - other.max(), min=-kappa), int(logp.argmax()) != label


def changed_frames(video: torch.Tensor, adv: torch.Tensor) -> list[int]:
    """Indices of frames that differ (bit-exact comparison)."""
    return [t for t in range(video.shape[0]) if not torch.equal(video[t], adv[t])]


def build_result(method: str, video: torch.Tensor, adv: torch.Tensor, label: int, c_label: float,
                 adv_label: int, adv_conf: float, success: bool, frames: list[int], iters: int,
                 queries: int, gradients: int, seconds: float, params: dict, classes: list[str] | None,
                 extra: dict) -> AttackResult:
    from core.flow import compute_flow
    from core.metrics import distances

    v, a = video.detach().cpu(), adv.detach().cpu()
    d = distances(v, a)
    l2pf = [float(x) for x in (a - v).flatten(1).norm(dim=1)]
    with torch.no_grad():
        flow_d = float((compute_flow(a) - compute_flow(v)).norm()) if frames else 0.0
    # frames in perturbation order, then any other frame that changed (should be none)
    order = [f for f in frames if f in set(changed_frames(v, a))]
    order += [f for f in changed_frames(v, a) if f not in order]
    return AttackResult(method, bool(success), label, c_label, adv_label, adv_conf, order, iters, queries, gradients,
                        seconds, d, l2pf, flow_d, params, classes, extra, adv_video=a)
