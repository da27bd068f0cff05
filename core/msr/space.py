"""Manipulation spaces of the MSR game and a batched evaluator of the classifier's margin.

A manipulation is a real vector ``z`` of ``D`` *manipulable dimensions*; a space maps it to a
perturbed video. Distances are measured on the perturbation itself, in the paper's units
(Wu & Kwiatkowska Def. 5–6: ‖P(v) − M(P(v))‖_p):

* :class:`FlowSpace` — Player I picks the frame pairs ``flows``; Player II moves square blocks of
  ``block × block`` pixels of their flow, in x or y (``D = |flows| · 2 · (H/b) · (W/b)``; block 1
  is per-pixel). ``z`` is the flow perturbation δ in pixels of displacement, and
  ``‖δ‖_p = b^{2/p} ‖z‖_p`` (every block holds b² pixels; ``p = ∞`` gives ``‖z‖_∞``). The
  perturbed video is ``impose_flow(v, δ)`` (frame t+1 backward-warped by −δ_t).
* :class:`BrightnessSpace` — one dimension per chosen frame, a uniform brightness offset
  (Fig. 8); ``‖Δv‖_p = (3HW)^{1/p} ‖z‖_p`` (nominal, before clipping to [0, 1]).

Both are *weighted* ℓp norms ``w_p ‖z‖_p``, which is all the A* and the gradient search need.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from core.checks import check_video
from core.classifier import VideoClassifier, as_classifier
from core.errors import ParameterError
from core.flow import impose_flow_batch
from core.types import Metric, parse

METRICS: tuple[str, ...] = tuple(m.value for m in Metric)
P_OF: dict[str, float] = {"l1": 1.0, "l2": 2.0, "linf": math.inf}


def check_metric(metric: str) -> float:
    """The exponent p of a metric name (``l1``/``l2``/``linf``); a clear error otherwise."""
    return P_OF[parse(Metric, metric, "metric").value]


class ManipulationSpace:
    """Base: ``dims`` manipulable dimensions, each moving ``per_dim`` values of the perturbation."""

    dims: int
    per_dim: int
    changed_frames: list[int]
    video: torch.Tensor

    def weight(self, metric: str) -> float:
        """``w_p`` with ``distance = w_p ‖z‖_p``."""
        p = check_metric(metric)
        return 1.0 if math.isinf(p) else float(self.per_dim) ** (1.0 / p)

    def norm(self, z: torch.Tensor, metric: str) -> torch.Tensor:
        """Distance of each manipulation ``(K, D) -> (K,)`` (or ``(D,) -> ()``)."""
        p = check_metric(metric)
        return self.weight(metric) * torch.linalg.vector_norm(z.double(), ord=p, dim=-1)

    def grid_width(self, tau: float, metric: str) -> float:
        """``d̃(L^p, τ)`` of Theorem 1 in distance units: ``|D|τ``, ``√|D| τ``, ``τ`` (× ``w_p``)."""
        p = check_metric(metric)
        base = {1.0: self.dims * tau, 2.0: math.sqrt(self.dims) * tau}.get(p, tau)
        return self.weight(metric) * base

    def apply(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class FlowSpace(ManipulationSpace):
    """Block-wise flow manipulations of the chosen frame pairs (see module docstring)."""

    def __init__(self, video: torch.Tensor, flows: list[int], block: int = 8) -> None:
        check_video(video, min_frames=2)
        t, _, h, w = video.shape
        flows = sorted(set(int(f) for f in flows))
        if not flows or flows[0] < 0 or flows[-1] > t - 2:
            raise ParameterError(f"flows must be frame-pair indices in [0, {t - 2}], got {flows}")
        if block < 1 or h % block or w % block:
            raise ParameterError(f"block must divide the frame size {h}×{w}, got {block}")
        self.video, self.flows, self.block = video, flows, int(block)
        self.gh, self.gw = h // block, w // block
        self.per_flow = 2 * self.gh * self.gw
        self.dims = len(flows) * self.per_flow
        self.per_dim = block * block
        self.changed_frames = [f + 1 for f in flows]

    def to_delta(self, z: torch.Tensor) -> torch.Tensor:
        """``z (K, D)`` → full flow perturbation δ ``(K, T-1, 2, H, W)`` in pixels."""
        k = z.shape[0]
        t, _, h, w = self.video.shape
        delta = torch.zeros(k, t - 1, 2, h, w, dtype=self.video.dtype, device=self.video.device)
        zz = z.to(self.video.dtype).view(k, len(self.flows), 2, self.gh, self.gw)
        up = zz.repeat_interleave(self.block, dim=-2).repeat_interleave(self.block, dim=-1)
        delta[:, self.flows] = up
        return delta

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        return impose_flow_batch(self.video, self.to_delta(z), self.flows)

    def dim_info(self, i: int) -> dict:
        f, r = divmod(i, self.per_flow)
        c, r = divmod(r, self.gh * self.gw)
        by, bx = divmod(r, self.gw)
        return {"flow": self.flows[f], "channel": "xy"[c], "block_row": by, "block_col": bx}

    def describe(self) -> str:
        return (f"flows {self.flows}, {self.block}×{self.block}-pixel blocks, x and y: "
                f"{self.dims} manipulable dimensions")


class BrightnessSpace(ManipulationSpace):
    """Per-frame uniform brightness offsets of the chosen frames (Wu & Kwiatkowska Fig. 8)."""

    def __init__(self, video: torch.Tensor, frames: list[int]) -> None:
        check_video(video, min_frames=1)
        frames = sorted(set(int(f) for f in frames))
        if not frames or frames[0] < 0 or frames[-1] >= video.shape[0]:
            raise ParameterError(f"frames must be in [0, {video.shape[0] - 1}], got {frames}")
        self.video, self.frames = video, frames
        self.dims = len(frames)
        self.per_dim = int(video[0].numel())
        self.changed_frames = frames

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        k = z.shape[0]
        out = self.video.unsqueeze(0).expand(k, *self.video.shape).clone()
        out[:, self.frames] = (out[:, self.frames] + z.to(out.dtype).view(k, -1, 1, 1, 1)).clamp(0.0, 1.0)
        return out

    def describe(self) -> str:
        return f"uniform brightness of frames {self.frames}: {self.dims} manipulable dimensions"


class Evaluator:
    """Margin ``m(z) = logit_y − max_{c≠y} logit_c`` of the perturbed video, y = original decision.

    ``m(z) < 0`` ⇔ the decision changed (an adversarial example). Batched and gradient-free by
    default; for classifiers that *declare* the N_C / N_R split (:class:`core.classifier.FeatureSplit`,
    e.g. ``cnn_lstm``) only the steps that see a changed frame go through N_C again — the same
    numbers, far fewer convolutions when few frames change. :meth:`verify` always runs the plain
    full model on the imposed video.
    """

    def __init__(self, model: VideoClassifier | nn.Module, space: ManipulationSpace, batch: int = 64,
                 fast: bool = True) -> None:
        self.clf = as_classifier(model).fork()
        self.model = self.clf.model
        self.space, self.batch = space, batch
        self.device = space.video.device
        self.evaluations = 0
        with torch.no_grad():
            logits = self.clf.logits(space.video)[0]
        self.label = int(logits.argmax())
        self.base_logits = logits
        self.fast = fast and self.clf.split is not None
        # N_C only on the steps the manipulated frames affect (Eq. 8); the full model otherwise
        self._forward = (self.clf.partial_logits(space.video, space.changed_frames) if self.fast
                         else self.clf.logits)

    margin_of = staticmethod(VideoClassifier.margin_of)

    def _logits(self, z: torch.Tensor) -> torch.Tensor:
        return self._forward(self.space.apply(z))

    @torch.no_grad()
    def margins(self, z: torch.Tensor) -> torch.Tensor:
        """``z (K, D)`` → margins ``(K,)`` (float64, on the CPU)."""
        out = []
        for i in range(0, z.shape[0], self.batch):
            zb = z[i:i + self.batch].to(self.device)
            out.append(self.margin_of(self._logits(zb), self.label).double().cpu())
            self.evaluations += zb.shape[0]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)

    def margin_and_grad(self, z: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Margin and ``∂m/∂z`` at one point ``z (D,)`` by autograd through the imposing and the model."""
        zz = z.detach().to(self.device, torch.float32).clone().requires_grad_(True)
        videos = self.space.apply(zz.unsqueeze(0))
        m = self.margin_of(self.clf.logits(videos), self.label)[0]
        (g,) = torch.autograd.grad(m, zz)
        self.evaluations += 1
        return float(m.detach()), g.detach().double().cpu()

    @torch.no_grad()
    def verify(self, z: torch.Tensor) -> dict:
        """Fresh full forward pass of the model on the imposed video (no shortcuts)."""
        video = self.space.apply(z.view(1, -1).to(self.device))
        logits = self.clf.logits(video)[0]
        probs = torch.softmax(logits, 0)
        k = int(logits.argmax())
        self.evaluations += 1
        return {"label": k, "confidence": float(probs[k]), "margin": float(self.margin_of(logits, self.label)),
                "adversarial": k != self.label, "orig_confidence": float(probs[self.label])}
