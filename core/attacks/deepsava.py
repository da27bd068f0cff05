"""DeepSAVA (Mu et al.): sparse key-frame attack with spatial transform + additive noise under SSIM.

Combined perturbation (Eq. 2): ``X̂ = N·M + S(U, X, M)`` — on the frames selected by the binary
mask M, the frame is backward-warped by a per-frame flow field U (``core.flow.warp``, bilinear,
border padding) and additive noise N is added; other frames are untouched. Problem (3) /
Algorithm 2, line 4:

    min_{N, U}  λ·(1 − SSIM(X̂_M, X_M)) − ℓ_adv,     ℓ_adv = log(1 − p_y)   (untargeted),

i.e. −log(1 − p_y) is minimised (computed stably in log space). The SSIM term is the mean over the
**perturbed frames only** — the others are identical, and averaging them in would dilute λ to λ·K/T.

Defaults (paper §4.1: Adam, lr 0.01, ≤ 100 iterations, early stop on success; λ = 1.0, 1.5 for
CNN+LSTM; Tab. 9 studies λ ∈ {0.8, 1.0, 1.5} = :data:`PAPER_LAMBDAS`): the flow variable U is in
**pixels** and its Adam step is ``flow_lr`` px (default 0.05 px per step — the spatial-transformer
convention of normalised coordinates made a 0.01 step 0.3 px at 64 px, visible after a few steps);
the noise step ``lr`` is 0.004 per value (≈ 1/255). Unconstrained, such steps still reach key-frame
SSIM 0.72–0.91 on c3d (measured), so by default the attack is **constrained** to keep every
perturbed frame at SSIM ≥ 0.98 (``ssim_budget=0.98, ssim_scope="frame"``): imperceptible by
construction. ``ssim_scope="video"`` is DeepSAVA's own definition (SSIM of the whole clip, where
the untouched frames score 1); ``ssim_budget=None`` removes the constraint. Budgets are constraints
(see :mod:`core.attacks.base`); ``l21_budget`` bounds the normalised ℓ2,1.

Key frames (Algorithm 1): ``select='bo'`` — Bayesian optimisation with expected improvement
(optuna's Gaussian-process sampler, log-EI) over the mask; each mask is scored by a short probe of
Algorithm 2 (``probe_iters`` steps) and the score is *graded*: the lowest logit margin the probe
reached (negative = it already fooled the model; more negative = better). A suggestion that repeats
a frame or an already probed mask is replaced by a random unseen mask (told to the GP), so every
trial is a new probe. ``'random'`` probes ``bo_trials`` random distinct masks; ``'brute'`` probes
every mask (all C(T, K) when at most ``brute_limit``, else greedily frame by frame); ``'first'``
takes frames 0 … K−1. ``stop_on_success`` ends the search at the first probe that fools the model.
Ablations: ``mode='additive'`` (D), ``'spatial'`` (S), ``'both'`` (D+S).
"""

from __future__ import annotations

import itertools
import math
import random

import torch

from core.attacks.base import MaskedAttack, check_frames, check_mask
from core.checks import check_range
from core.flow import warp
from core.types import Mode, Select, parse

PAPER_LAMBDAS = (0.8, 1.0, 1.5)


def log_not(logits: torch.Tensor, label: int) -> torch.Tensor:
    """``log(1 − p_y)`` computed stably as ``logsumexp(z_{c≠y}) − logsumexp(z)`` (the naive form
    has a zero gradient once p_y rounds to 1 in float32)."""
    others = torch.cat([logits[:label], logits[label + 1:]])
    return torch.logsumexp(others, 0) - torch.logsumexp(logits, 0)


def default_lambda(model) -> float:
    """1.5 for CNN+LSTM models, 1.0 otherwise (DeepSAVA §4.1)."""
    m = getattr(model, "model", model)
    return 1.5 if getattr(m, "head_type", None) == "lstm" else 1.0


class DeepSAVA(MaskedAttack):
    """DeepSAVA: ``DeepSAVA(model, frames=1, select="bo")(video, label)``.

    Args:
        model: classifier (white-box).
        frames: K key frames (1 ≤ K ≤ T).
        select: ``bo`` | ``random`` | ``brute`` | ``first`` (Alg. 1).
        mode: ``both`` (D+S) | ``additive`` (D) | ``spatial`` (S).
        lam: λ of Eq. 3 (default 1.5 for CNN+LSTM, else 1.0).
        lr: Adam step of the noise N (per value); flow_lr: Adam step of U in pixels.
        max_iters: iterations of Alg. 2 on the chosen mask (100).
        ssim_budget / ssim_scope / l21_budget: constraints (module docstring); default: every
            perturbed frame keeps SSIM ≥ 0.98.
        bo_trials: probes of the key-frame search (distinct masks); probe_iters: steps per probe.
        stop_on_success: stop the key-frame search at the first probe that fools the model.
        mask: fixed key frames (skips the search).
    """

    name = "deepsava"
    uses_ssim = True

    def __init__(self, model, frames: int = 1, select: str = "bo", mode: str = "both", lam: float | None = None,
                 lr: float = 0.004, flow_lr: float = 0.05, max_iters: int = 100, ssim_budget: float | None = 0.98,
                 l21_budget: float | None = None, ssim_scope: str = "frame", bo_trials: int = 8, probe_iters: int = 10, seed: int = 0,
                 mask: list[int] | None = None, stop_on_success: bool = False, brute_limit: int = 5000,
                 **kw) -> None:
        super().__init__(model, frames=frames, lr=lr, max_iters=max_iters, ssim_budget=ssim_budget,
                         l21_budget=l21_budget, mask=mask, ssim_scope=ssim_scope, **kw)
        self.select = parse(Select, select, "select")
        self.mode = parse(Mode, mode, "mode")
        self.lam = default_lambda(self.clf) if lam is None else check_range("lam", lam, 0.0, 1e4)
        self.flow_lr = check_range("flow_lr", flow_lr, 1e-6, 10.0)
        self.bo_trials = int(check_range("bo_trials", bo_trials, 1, 100_000))
        self.probe_iters = int(check_range("probe_iters", probe_iters, 1, 10_000))
        self.seed = int(seed)
        self.stop_on_success = bool(stop_on_success)
        self.brute_limit = int(brute_limit)

    def params(self) -> dict:
        return {"frames": self.k, "select": self.select, "mode": self.mode, "lam": self.lam, "lr": self.lr,
                "flow_lr": self.flow_lr, "max_iters": self.max_iters, **self.budget_params(),
                "bo_trials": self.bo_trials, "probe_iters": self.probe_iters, "seed": self.seed,
                "stop_on_success": self.stop_on_success}

    # -- Algorithm 2 pieces ----------------------------------------------------------------------
    def init_params(self, xs: torch.Tensor) -> list[torch.Tensor]:
        k, _, h, w = xs.shape
        ps = []
        if self.mode != Mode.ADDITIVE:
            ps.append(torch.zeros(k, 2, h, w, device=xs.device, requires_grad=True))  # U, pixels
        if self.mode != Mode.SPATIAL:
            ps.append(torch.zeros(k, 3, h, w, device=xs.device, requires_grad=True))  # N
        return ps

    def lrs(self, params: list[torch.Tensor]) -> list[float]:
        return [self.flow_lr if p.shape[1] == 2 else self.lr for p in params]

    def render(self, params: list[torch.Tensor], xs: torch.Tensor) -> torch.Tensor:
        out = xs
        for p in params:
            out = warp(out, p) if p.shape[1] == 2 else out + p
        return out

    def penalty(self, params, adv_s, xs, frame_ssim) -> torch.Tensor:
        return self.lam * (1.0 - frame_ssim).mean()

    def adversarial(self, logits: torch.Tensor, label: int) -> torch.Tensor:
        return -log_not(logits[0], label)

    # -- Algorithm 1: key-frame selection -------------------------------------------------------
    def _n_probes(self, t: int) -> int:
        if self.select == Select.BRUTE:
            n = math.comb(t, self.k)
            return n if n <= self.brute_limit else sum(t - i for i in range(self.k))
        return min(self.bo_trials, math.comb(t, self.k))

    def select_mask(self, video: torch.Tensor, label: int) -> tuple[list[int], list[dict]]:
        t = video.shape[0]
        check_frames(self.k, t)
        if self.mask is not None:
            return check_mask(self.mask, t, self.k), []
        if self.select == Select.FIRST:
            return list(range(self.k)), []
        n_probes = self._n_probes(t)
        trials: list[dict] = []

        def probe(mask: list[int]) -> float:
            i = len(trials)
            r = self.optimise(video, label, mask, self.probe_iters,
                              (0.6 * i / n_probes, 0.6 / n_probes,
                               f"{self.select} probe {i + 1}/{n_probes}, frames {mask}"))
            trials.append({"frames": list(mask), "score": r["best_margin"], "success": r["success"]})
            return r["best_margin"]  # graded: the lowest margin reached

        def done() -> bool:
            return self.stop_on_success and any(tr["success"] for tr in trials)

        rng = random.Random(self.seed)
        if self.select == Select.BRUTE:
            if math.comb(t, self.k) <= self.brute_limit:
                for m in itertools.combinations(range(t), self.k):
                    probe(list(m))
                    if done():
                        break
            else:  # greedy, frame by frame
                mask: list[int] = []
                for _ in range(self.k):
                    scores = {f: probe(sorted(mask + [f])) for f in range(t) if f not in mask}
                    mask = sorted(mask + [min(scores, key=scores.get)])
                    if done():
                        break
        elif self.select == Select.RANDOM:
            seen: set[tuple] = set()
            while len(trials) < n_probes and not done():
                m = tuple(sorted(rng.sample(range(t), self.k)))
                if m not in seen:
                    seen.add(m)
                    probe(list(m))
        else:
            self._bo(t, n_probes, probe, done, rng)
        best = min(trials, key=lambda r: r["score"])
        return best["frames"], trials

    def _bo(self, t: int, n_probes: int, probe, done, rng: random.Random) -> None:
        """GP + log-EI over masks (optuna ask/tell); duplicates re-sampled as random unseen masks."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=min(4, max(1, n_probes // 2)))
        study = optuna.create_study(direction="minimize", sampler=sampler)
        dist = {f"f{i}": optuna.distributions.IntDistribution(0, t - 1) for i in range(self.k)}
        seen: set[tuple] = set()
        while len(seen) < n_probes and not done():
            trial = study.ask(dist)
            m = tuple(sorted(trial.params[f"f{i}"] for i in range(self.k)))
            if len(set(m)) == self.k and m not in seen:
                seen.add(m)
                study.tell(trial, probe(list(m)))
                continue
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # a repeat: try an unseen mask
            while m in seen or len(set(m)) < self.k:
                m = tuple(sorted(rng.sample(range(t), self.k)))
            seen.add(m)
            score = probe(list(m))
            study.add_trial(optuna.trial.create_trial(params={f"f{i}": f for i, f in enumerate(m)},
                                                      distributions=dist, value=score))

    def run(self, video: torch.Tensor, label: int):
        mask, trials = self.select_mask(video, label)
        start = 0.6 if trials else 0.0
        r = self.optimise(video, label, mask, self.max_iters, (start, 1.0 - start, f"attack on frames {mask}"))
        extra = {"mask": mask, "selection": self.select, "trials": trials, "lam": self.lam,
                 "final_loss": r["loss"], "best_margin": r["best_margin"], "backtracks": r["backtracks"],
                 "probes": len(trials)}
        return r["adv"], mask, r["iters"], extra
