"""Upper bound of MSR / FMSR by gradient-based search (Wu & Kwiatkowska §5.1).

The paper moves the flow along the loss gradient (Eq. 8), estimating ∂η/∂p_t and ∂l/∂η by
per-pixel finite differences (Eq. 9–10, ≈30 minutes per frame). We take the **end-to-end
gradient** of the logit margin ``m(z)`` w.r.t. the flow manipulation ``z`` by autograd through
``impose_flow`` (a differentiable bilinear warp) and the whole model; :func:`finite_difference_grad`
keeps the paper's finite-difference estimate as a reference for the benchmark and a test.

Search (per iteration):

1. *Reach the boundary*: a DeepFool step for the chosen norm on the linearised margin,
   ``m(z) + ∇m·s = −κ``: ℓ2 ``s = −(m+κ) ∇m/‖∇m‖₂²``; ℓ∞ ``s = −(m+κ) sign(∇m)/‖∇m‖₁``;
   ℓ1 moves the single coordinate of largest ``|∇m|``.
2. Once adversarial: *shrink* the best witness towards 0 by a factor and step back to the
   boundary; a ray search ``α z`` (α ∈ (0, 1]) trims every adversarial candidate.
2b. When that stops improving: a **minimum-norm search with restarts** (:class:`MinNormSearch`,
   FMN of Pintor et al. 2021) from the best witness and from random points at its distance.
3. Every candidate is **re-verified** by a fresh full forward pass; the best continuous witness
   bounds MSR from above. For FMSR it is snapped to the τ-grid (nearest and away-from-zero
   rounding) and verified again. Both bests only ever improve (monotone non-increasing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core.msr.space import Evaluator, check_metric


@dataclass
class Witness:
    z: torch.Tensor  # (D,) manipulation
    distance: float  # ‖δ‖_p
    check: dict  # verify() of a fresh forward pass


def finite_difference_grad(ev: Evaluator, z: torch.Tensor, h: float = 0.05) -> torch.Tensor:
    """Central finite differences of the margin, one manipulable dimension at a time — the
    per-pixel manipulation estimate of Eq. (9–10), here on the end-to-end margin."""
    d = z.numel()
    eye = torch.eye(d, dtype=torch.float64) * h
    zs = torch.cat([z.double().unsqueeze(0) + eye, z.double().unsqueeze(0) - eye])
    m = ev.margins(zs)
    return (m[:d] - m[d:]) / (2 * h)


class GradientSearch:
    """Anytime gradient search; call :meth:`step` repeatedly."""

    def __init__(self, ev: Evaluator, metric: str, tau: float, overshoot: float = 0.05,
                 shrink: float = 0.3, max_step: float = 1.0, max_disp: float = 8.0,
                 steps_until_found: int = 4, restarts: int = 10, fmn_steps: int = 150, seed: int = 0) -> None:
        self.p = check_metric(metric)
        self.ev, self.metric, self.tau = ev, metric, float(tau)
        self.D = ev.space.dims
        self.z = torch.zeros(self.D, dtype=torch.float64)
        self.m0 = float(ev.margins(self.z.unsqueeze(0))[0])
        self.kappa = overshoot * max(abs(self.m0), 1e-3)
        self.shrink = shrink
        self.max_step, self.max_disp = max_step, max_disp
        self.steps_until_found = steps_until_found
        self.best: Witness | None = None
        self.best_grid: Witness | None = None
        self.iterations = 0
        self.stale = 0
        self.descent_done = False
        self.restarts = restarts
        self.fmn = MinNormSearch(ev, metric, steps=fmn_steps, max_disp=max_disp, seed=seed)

    @property
    def converged(self) -> bool:
        """The DeepFool/shrink descent has stopped improving and every FMN restart has run."""
        return self.descent_done and self.fmn.runs >= self.restarts

    def refine(self, chunk: int = 25) -> bool:
        """Up to ``chunk`` FMN iterations (:class:`MinNormSearch`) of the current run — from the best
        witness (run 0) or a random restart; when a run ends, its smallest adversarial iterate is
        trimmed along its ray and re-verified."""
        if self.best is None and self.fmn.runs > 0:
            self.fmn.runs = self.restarts  # no witness to restart around
            return False
        if self.fmn.state is None:
            self.fmn.begin(self.best.z if self.best is not None else None)
            self._cands: list[torch.Tensor] = []
        if not self.fmn.advance(chunk, self._cands.append) or not self._cands:
            return False
        z = min(self._cands, key=self.dist)
        self._cands = []
        return self._consider(self._trim(z))

    def dist(self, z: torch.Tensor) -> float:
        return float(self.ev.space.norm(z, self.metric))

    def _deepfool(self, z: torch.Tensor) -> torch.Tensor:
        """One DeepFool step for the norm, inside a trust region: no dimension moves by more than
        ``max_step`` px per step (a linearisation far from ``z`` means little: where the gradient is
        tiny, a full step would leave the frame) and none exceeds ``max_disp`` px in total."""
        m, g = self.ev.margin_and_grad(z)
        target = m + self.kappa
        if self.p == 2.0:
            nn = float(g.pow(2).sum())
            step = torch.zeros_like(z) if nn == 0 else -target * g / nn
        elif math.isinf(self.p):
            n1 = float(g.abs().sum())
            step = torch.zeros_like(z) if n1 == 0 else -target * torch.sign(g) / n1
        else:
            step = torch.zeros_like(z)
            i = int(g.abs().argmax())
            if g[i] != 0:
                step[i] = -target / float(g[i])
        big = float(step.abs().max()) if step.numel() else 0.0
        if big > self.max_step:
            step = step * (self.max_step / big)
        return (z + step).clamp(-self.max_disp, self.max_disp)

    def _trim(self, z: torch.Tensor) -> torch.Tensor:
        """Smallest α·z (α on a grid in (0, 1]) that is still adversarial by the batched margin."""
        alphas = torch.linspace(0.1, 1.0, 10, dtype=torch.float64)
        m = self.ev.margins(alphas.view(-1, 1) * z.view(1, -1))
        idx = torch.nonzero(m < 0).flatten()
        if len(idx) == 0:
            return z
        a = float(alphas[idx[0]])
        lo = a - 0.1
        fine = torch.linspace(max(lo, 0.0) + 0.01, a, 10, dtype=torch.float64)
        m2 = self.ev.margins(fine.view(-1, 1) * z.view(1, -1))
        idx2 = torch.nonzero(m2 < 0).flatten()
        return (float(fine[idx2[0]]) if len(idx2) else a) * z

    def _consider(self, z: torch.Tensor) -> bool:
        improved = False
        chk = self.ev.verify(z.float())
        if chk["adversarial"]:
            d = self.dist(z)
            if self.best is None or d < self.best.distance:
                self.best = Witness(z.clone(), d, chk)
                improved = True
        if chk["adversarial"]:  # snap to the τ-grid for the FMSR upper bound
            improved |= self._snap(z)
        return improved

    def _snap(self, z: torch.Tensor) -> bool:
        """Grid points near ``α z`` (α ≥ 1 pushes past the boundary first), rounded to nearest and
        away from zero; the smallest one verified adversarial becomes the FMSR witness."""
        cands = []
        for a in (1.0, 1.05, 1.1, 1.2, 1.35, 1.5):
            k = a * z / self.tau
            for snapped in (torch.round(k), torch.sign(k) * torch.ceil(k.abs() - 1e-9)):
                zg = snapped * self.tau
                cands.append((self.dist(zg), zg))
        cands.sort(key=lambda c: c[0])
        margins = self.ev.margins(torch.stack([c[1] for c in cands]))
        for (d, zg), m in zip(cands, margins.tolist()):
            if m >= 0 or (self.best_grid is not None and d >= self.best_grid.distance):
                continue
            c = self.ev.verify(zg.float())
            if c["adversarial"]:
                self.best_grid = Witness(zg, d, c)
                return True
        return self._grid_descent(torch.round(z / self.tau) * self.tau)

    def _grid_descent(self, zg: torch.Tensor, steps: int = 12, k: int | None = None) -> bool:
        """Greedy search on the τ-grid from a rounded point: move the ``k`` coordinates with the
        largest ``|∂m/∂z|`` by one atomic manipulation ``∓τ`` against the gradient, until the margin
        is negative (then verified) — rounding alone often lands just on the safe side."""
        k = k or max(1, self.D // 32)
        for _ in range(steps):
            d = self.dist(zg)
            if self.best_grid is not None and d >= self.best_grid.distance:
                return False
            m, g = self.ev.margin_and_grad(zg)
            if m < 0:
                c = self.ev.verify(zg.float())
                if c["adversarial"]:
                    self.best_grid = Witness(zg.clone(), d, c)
                    return True
            idx = torch.topk(g.abs(), min(k, self.D)).indices
            zg = zg.clone()
            zg[idx] -= self.tau * torch.sign(g[idx])
        return False

    def quick(self, steps: int = 12) -> bool:
        """A first bound fast: DeepFool steps from 0 with a wider trust region (4 px per step) until
        the margin is negative (at most ``steps`` gradients), then trimmed along its ray and
        re-verified like any candidate."""
        saved = self.max_step
        self.max_step = 4.0
        try:
            z = self.z
            for _ in range(steps):
                z = self._deepfool(z)
                if float(self.ev.margins(z.unsqueeze(0))[0]) < 0:
                    return self._consider(self._trim(z))
            return False
        finally:
            self.max_step = saved

    def step(self, quick: bool = False) -> bool:
        """One search iteration; returns whether a bound improved. ``quick``: :meth:`quick` first.
        Once the descent stops improving, each call is one FMN run (:meth:`refine`)."""
        if self.converged:
            return False
        self.iterations += 1
        if self.descent_done:
            return self.refine()
        if quick and self.best is None and self.quick():
            return True
        if self.best is None:
            for _ in range(self.steps_until_found):
                self.z = self._deepfool(self.z)
                if float(self.ev.margins(self.z.unsqueeze(0))[0]) < 0:
                    break
            else:
                if self.iterations * self.steps_until_found >= 400:
                    self.descent_done = True  # no witness within the trust region: FMN tries next
                return False
            cand = self.z
        else:
            start = self.best.z * (1.0 - self.shrink)
            cand = self._deepfool(start)
            if float(self.ev.margins(cand.unsqueeze(0))[0]) >= 0:
                cand = self._deepfool(cand)
        cand = self._trim(cand)
        improved = self._consider(cand)
        if improved:
            self.stale = 0
        else:
            self.stale += 1
            if self.best is not None:
                self.shrink *= 0.5
        if self.best is not None and (self.shrink < 1e-3 or self.stale >= 8):
            self.descent_done = True
        return improved


def project(z: torch.Tensor, radius: float, p: float) -> torch.Tensor:
    """Euclidean projection of ``z`` onto the ℓp ball ``‖z‖_p ≤ radius`` (p ∈ {1, 2, ∞}; ℓ1 by the
    sort-and-threshold algorithm of Duchi et al. 2008)."""
    if radius <= 0:
        return torch.zeros_like(z)
    if math.isinf(p):
        return z.clamp(-radius, radius)
    if p == 2.0:
        n = float(z.norm())
        return z if n <= radius else z * (radius / n)
    a = z.abs()
    if float(a.sum()) <= radius:
        return z
    u = torch.sort(a, descending=True).values
    css = torch.cumsum(u, 0)
    k = torch.arange(1, len(u) + 1, dtype=z.dtype)
    rho = int(torch.nonzero(u * k > (css - radius)).max())
    theta = (css[rho] - radius) / (rho + 1)
    return torch.sign(z) * (a - theta).clamp_min(0)


class MinNormSearch:
    """Fast minimum-norm search (FMN, Pintor et al. NeurIPS 2021, Alg. 1) in the block space, with
    restarts — the refinement that runs once :class:`GradientSearch` stops improving.

    One run of ``steps`` iterations: with the margin ``m(z)`` (< 0 = adversarial) and its gradient,

    * the norm constraint ε adapts: adversarial → ``ε = min(ε, ‖z‖)(1 − γ)``; not adversarial →
      ``ε = ‖z‖ + |m| / ‖∇m‖_q`` (the linearised distance to the boundary) before a witness exists,
      else ``ε (1 + γ)``;
    * ``z`` takes a normalised steepest-descent step on ``m`` of length α (ℓ2: ``∇m/‖∇m‖₂``, ℓ∞:
      ``sign ∇m``, ℓ1: the largest-|∇m| coordinates) and is projected onto ``‖z‖_p ≤ ε`` and the
      displacement box;
    * γ and α follow cosine schedules (γ₀ = 0.05, α₀ = ε/2 → 1 % of that).

    Run 0 starts from the gradient search's best witness; later runs from random points on the
    sphere of the best distance (restarts). Every adversarial iterate is handed to the caller, which
    re-verifies it with a fresh forward pass before it may bound anything.
    """

    def __init__(self, ev: Evaluator, metric: str, steps: int = 150, gamma: float = 0.05,
                 max_disp: float = 8.0, seed: int = 0) -> None:
        self.ev, self.metric, self.p = ev, metric, check_metric(metric)
        self.q = {1.0: math.inf, 2.0: 2.0}.get(self.p, 1.0)  # dual norm
        self.w = ev.space.weight(metric)
        self.steps, self.gamma0, self.max_disp = steps, gamma, max_disp
        self.gen = torch.Generator().manual_seed(seed)
        self.runs = 0
        self.state: dict | None = None

    def _znorm(self, z: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm(z, ord=self.p))

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        if self.p == 2.0:
            n = float(g.norm())
            return g / n if n > 0 else g
        if math.isinf(self.p):
            return torch.sign(g)
        k = max(1, g.numel() // 100)  # ℓ1: the k coordinates of largest |∇m|
        d = torch.zeros_like(g)
        idx = torch.topk(g.abs(), k).indices
        d[idx] = torch.sign(g[idx]) / k
        return d

    def start(self, best: torch.Tensor | None) -> torch.Tensor:
        if best is None or self.runs == 0:
            return torch.zeros(self.ev.space.dims, dtype=torch.float64) if best is None else best.clone()
        r = self._znorm(best)
        d = torch.randn(best.numel(), generator=self.gen, dtype=torch.float64)
        d = d / max(float(torch.linalg.vector_norm(d, ord=self.p)), 1e-12)
        return (d * r).clamp(-self.max_disp, self.max_disp)

    def begin(self, best: torch.Tensor | None) -> None:
        """Start a run (from ``best`` on the first run, else a random restart at its distance)."""
        self.state = {"z": self.start(best), "eps": self._znorm(best) if best is not None else math.inf,
                      "found": best is not None, "alpha0": None, "k": 0}

    def advance(self, steps: int, on_adversarial) -> bool:
        """Up to ``steps`` iterations of the current run (resumable, so a live view stays live);
        ``on_adversarial(z)`` receives every iterate whose margin is negative. True when it ended."""
        st = self.state
        z, eps = st["z"], st["eps"]
        for _ in range(steps):
            if st["k"] >= self.steps:
                break
            cos = 0.5 * (1 + math.cos(math.pi * st["k"] / self.steps))
            gamma = 0.001 + (self.gamma0 - 0.001) * cos
            m, g = self.ev.margin_and_grad(z)
            zn = self._znorm(z)
            if m < 0:
                on_adversarial(z.clone())
                st["found"] = True
                eps = min(eps, zn) * (1 - gamma)
            elif st["found"]:
                eps = eps * (1 + gamma)
            else:
                gq = float(torch.linalg.vector_norm(g, ord=self.q))
                eps = zn + (m / gq if gq > 0 else 1.0)
            if st["alpha0"] is None:
                st["alpha0"] = max(0.5 * (eps if math.isfinite(eps) else 1.0), 0.05)
            alpha = st["alpha0"] * (0.01 + 0.99 * cos)
            z = z - alpha * self._direction(g)
            z = project(z, eps, self.p).clamp(-self.max_disp, self.max_disp)
            st["k"] += 1
        st["z"], st["eps"] = z, eps
        if st["k"] < self.steps:
            return False
        if float(self.ev.margins(z.unsqueeze(0))[0]) < 0:
            on_adversarial(z.clone())
        self.runs += 1
        self.state = None
        return True

    def run(self, best: torch.Tensor | None, on_adversarial) -> None:
        """One whole FMN run (:meth:`begin` + :meth:`advance`)."""
        self.begin(best)
        self.advance(self.steps, on_adversarial)
