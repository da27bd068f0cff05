"""DeepSAVA (Mu et al.): sparse key-frame attack with spatial transform + additive noise under SSIM.

Combined perturbation (Eq. 2): ``X̂ = N·M + S(U, X, M)`` — on the frames selected by the binary
mask M, the frame is backward-warped by a per-frame flow field U (``core.flow.warp``, bilinear,
border padding) and additive noise N is added; other frames are untouched. Problem (3):

    min_{N, U}  λ·(1 − SSIM(X̂, X)) − ℓ_adv,     ℓ_adv = log(1 − p_y)   (untargeted),

i.e. the term −log(1 − p_y) is minimised (computed stably in log space)

with Adam (lr 0.01; U is parametrised in normalised image coordinates, so its step is
0.01 · (W−1)/2 pixels, the spatial-transformer convention), at most 100 iterations, early stop on
success. λ = 1.0 (1.5 for CNN+LSTM, as the paper). SSIM is the project's one SSIM, averaged over
all frames of the clip (DeepSAVA App. A). Budgets: an SSIM budget (SSIM ≥ b) and an ℓ2,1 budget
(normalised ℓ2,1 ≤ b) are checked on every iterate; the first iterate that would exceed one is
discarded and the attack stops with the last one inside (so a budget is never exceeded).

Key frames (Algorithm 1): ``select='bo'`` runs Bayesian optimisation with expected improvement
over the mask (optuna's Gaussian-process sampler, whose acquisition is log-EI), scoring a mask by
the lowest loss of a short Adam probe (Algorithm 2 with ``probe_iters`` steps); the best mask is
the one then attacked. ``'brute'`` probes every frame (greedily for K > 1); ``'first'`` takes
frames 0 … K−1. Ablations: ``mode='additive'`` (D), ``'spatial'`` (S), ``'both'`` (D+S).
"""

from __future__ import annotations

import math

import torch

from core.attacks.base import Attack
from core.checks import check_range
from core.errors import ParameterError
from core.flow import warp
from core.metrics import l21, ssim

SELECT = ("bo", "brute", "first")
MODES = ("both", "additive", "spatial")


def log_not(logits: torch.Tensor, label: int) -> torch.Tensor:
    """``log(1 − p_y)`` computed stably as ``logsumexp(z_{c≠y}) − logsumexp(z)`` (the naive form
    has a zero gradient once p_y rounds to 1 in float32)."""
    others = torch.cat([logits[:label], logits[label + 1:]])
    return torch.logsumexp(others, 0) - torch.logsumexp(logits, 0)


def default_lambda(model) -> float:
    """1.5 for CNN+LSTM models, 1.0 otherwise (DeepSAVA §4.1)."""
    return 1.5 if getattr(model, "head_type", None) == "lstm" else 1.0


class DeepSAVA(Attack):
    name = "deepsava"

    def __init__(self, model, frames: int = 1, select: str = "bo", mode: str = "both", lam: float | None = None,
                 lr: float = 0.01, max_iters: int = 100, ssim_budget: float | None = None,
                 l21_budget: float | None = None, bo_trials: int = 8, probe_iters: int = 15, seed: int = 0,
                 mask: list[int] | None = None, **kw) -> None:
        super().__init__(model, **kw)
        if select not in SELECT:
            raise ParameterError(f"select must be one of {SELECT}, got {select!r}")
        if mode not in MODES:
            raise ParameterError(f"mode must be one of {MODES}, got {mode!r}")
        self.k = int(check_range("frames", frames, 1, 256))
        self.select, self.mode = select, mode
        self.lam = default_lambda(model) if lam is None else check_range("lam", lam, 0.0, 1e4)
        self.lr = check_range("lr", lr, 1e-6, 10.0)
        self.max_iters = int(check_range("max_iters", max_iters, 1, 100_000))
        self.ssim_budget = None if ssim_budget is None else check_range("ssim_budget", ssim_budget, 0.0, 1.0)
        self.l21_budget = None if l21_budget is None else check_range("l21_budget", l21_budget, 0.0, 1e6)
        self.bo_trials = int(check_range("bo_trials", bo_trials, 1, 1000))
        self.probe_iters = int(check_range("probe_iters", probe_iters, 1, 10_000))
        self.seed = seed
        self.mask = mask

    def params(self) -> dict:
        return {"frames": self.k, "select": self.select, "mode": self.mode, "lam": self.lam, "lr": self.lr,
                "max_iters": self.max_iters, "ssim_budget": self.ssim_budget, "l21_budget": self.l21_budget,
                "bo_trials": self.bo_trials, "probe_iters": self.probe_iters, "seed": self.seed}

    # -- Algorithm 2: the adversarial generator G(X, y, M, λ) -----------------------------------
    def within_budget(self, adv: torch.Tensor, video: torch.Tensor, mean_ssim: float | None = None) -> bool:
        if mean_ssim is None and self.ssim_budget is not None:
            mean_ssim = float(ssim(adv, video).mean())
        if self.ssim_budget is not None and mean_ssim < self.ssim_budget:
            return False
        if self.l21_budget is not None and float(l21(adv, video)) > self.l21_budget:
            return False
        return True

    def generate(self, video: torch.Tensor, label: int, mask: list[int], iters: int,
                 stage: tuple[float, float, str] = (0.0, 1.0, "attack")) -> dict:
        sel = sorted(mask)
        k, _, h, w = video[sel].shape
        scale = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], device=video.device).view(1, 2, 1, 1)
        u = torch.zeros(k, 2, h, w, device=video.device, requires_grad=self.mode != "additive")
        n = torch.zeros(k, 3, h, w, device=video.device, requires_grad=self.mode != "spatial")
        params = [p for p in (u, n) if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr)
        xs0 = video[sel]
        best = {"adv": video.clone(), "loss": math.inf, "iters": 0, "success": False}
        y = torch.tensor([label], device=video.device)
        for it in range(1, iters + 1):
            xs = xs0
            if self.mode != "additive":
                xs = warp(xs, u * scale)
            if self.mode != "spatial":
                xs = xs + n
            adv = video.clone()
            adv[sel] = xs.clamp(0.0, 1.0)
            s = ssim(adv, video).mean()  # once: for the budget and for the loss
            if not self.within_budget(adv.detach(), video, float(s.detach())):
                break  # keep the last iterate inside the budget
            logits = self.logits(adv)
            l_adv = log_not(logits[0], label)  # log(1 − p_y): maximised
            loss = self.lam * (1.0 - s) - l_adv
            success = int(logits.argmax(1)) != int(y)
            self.report(stage[0] + stage[1] * it / iters, f"{stage[2]}: iteration {it}/{iters}, loss {float(loss.detach()):.3f}")
            best = {"adv": adv.detach(), "loss": min(best["loss"], float(loss.detach())), "iters": it,
                    "success": success}
            if success:
                break
            self.descend(opt, loss)
        return best

    # -- Algorithm 1: key-frame selection -------------------------------------------------------
    def select_mask(self, video: torch.Tensor, label: int) -> tuple[list[int], list[dict]]:
        t = video.shape[0]
        if self.k > t:
            raise ParameterError(f"frames must be <= the clip's {t} frames, got {self.k}")
        if self.mask is not None:
            return sorted(self.mask), []
        if self.select == "first":
            return list(range(self.k)), []

        n_probes = self.bo_trials if self.select == "bo" else t * self.k

        def probe(mask: list[int]) -> float:
            i = len(trials)
            r = self.generate(video, label, mask, self.probe_iters,
                              (0.6 * i / n_probes, 0.6 / n_probes, f"{self.select} probe {i + 1}/{n_probes} frames {mask}"))
            return r["loss"] - (10.0 if r["success"] else 0.0)  # a successful mask is always better

        trials: list[dict] = []
        if self.select == "brute":
            mask: list[int] = []
            for _ in range(self.k):  # greedy for K > 1, exhaustive for K = 1
                scores = {}
                for f in range(t):
                    if f in mask:
                        continue
                    cand = sorted(mask + [f])
                    scores[f] = probe(cand)
                    trials.append({"frames": cand, "loss": scores[f]})
                mask = sorted(mask + [min(scores, key=scores.get)])
            return mask, trials
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=min(4, max(1, self.bo_trials // 2)))
        study = optuna.create_study(direction="minimize", sampler=sampler)
        seen: dict[tuple, float] = {}

        def objective(trial: optuna.Trial) -> float:
            fs = sorted({trial.suggest_int(f"f{i}", 0, t - 1) for i in range(self.k)})
            if len(fs) < self.k:  # duplicates: complete with the nearest unused frames
                for f in range(t):
                    if len(fs) == self.k:
                        break
                    if f not in fs:
                        fs.append(f)
                fs = sorted(fs)
            key = tuple(fs)
            if key not in seen:
                seen[key] = probe(fs)
                trials.append({"frames": fs, "loss": seen[key]})
            return seen[key]

        study.optimize(objective, n_trials=self.bo_trials)
        best = min(trials, key=lambda r: r["loss"])
        return best["frames"], trials

    def run(self, video: torch.Tensor, label: int):
        mask, trials = self.select_mask(video, label)
        start = 0.6 if trials else 0.0
        r = self.generate(video, label, mask, self.max_iters, (start, 1.0 - start, f"attack on frames {mask}"))
        extra = {"mask": mask, "selection": self.select, "trials": trials, "lam": self.lam,
                 "final_loss": r["loss"]}
        return r["adv"], mask, r["iters"], extra
