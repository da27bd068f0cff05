"""Lower bound of FMSR by admissible A* over the game tree (Wu & Kwiatkowska §5.2, Algorithm 1).

**Game tree.** Nodes are τ-grid points ``z = τ k`` (``k ∈ ℤ^D``) reached from the root ``0`` by
atomic manipulations ``±τ`` of one dimension (Def. 5). A move only pushes a dimension *further
from 0*, and dimensions are touched in increasing index order (a node whose last move was on
dimension ``j`` may push ``j`` again, in its sign, or set any ``i > j`` to ``±τ``). Every grid
point therefore has exactly one path from the root (no duplicates), along which the distance
never decreases, and every descendant ``z'`` of ``z`` is *orthant-aligned*: ``z'_i − z_i`` has the
sign of ``z_i`` wherever ``z_i ≠ 0``. Player I's choice of flows and Player II's choice of
dimensions are both folded into the choice of the dimension index.

**Cost.** ``g(z) = ‖δ(z)‖_p`` (the distance so far); the goal is any adversarial grid point
(margin < 0) inside the budget ball ``‖δ‖_p ≤ d``; nodes outside the ball are never generated.

**Heuristics and admissibility** (``f`` must never exceed the distance of the nearest adversarial
descendant ``z'``):

* ``zero``: ``f(z) = g(z)``. Since ``‖z'‖ ≥ ‖z‖`` for every descendant, ``f`` is admissible
  with no assumption at all: the lower bound is valid for FMSR on the grid outright.
* ``lipschitz`` with ``L`` such that ``|m(a) − m(b)| ≤ L ‖δ(a) − δ(b)‖_p`` (m = the logit margin of
  the original decision): an adversarial ``z'`` has ``m(z') ≤ 0``, so ``‖δ(z') − δ(z)‖ ≥ h(z) =
  m(z)/L``. Orthant alignment then gives, per norm, the admissible combination
    - ℓ1: ``‖z'‖₁ = ‖z‖₁ + ‖z' − z‖₁``             → ``f = g + h``
    - ℓ2: ``‖z'‖₂² ≥ ‖z‖₂² + ‖z' − z‖₂²``           → ``f = √(g² + h²)``
    - ℓ∞: ``‖z'‖∞ ≥ max(‖z‖∞, ‖z' − z‖∞)``        → ``f = max(g, h)``
  (for ℓ2 and ℓ∞, ``g + h`` would *not* be admissible). Valid when ``L`` is a true Lipschitz
  constant; an estimated ``L`` gives an estimate, not a guarantee.
* ``certified`` (no assumption): ``h(z) = r(z)``, a radius *proved* by bound propagation
  (:meth:`core.verify.CertifiedRadius.around`: no point within ``r(z)`` of ``z`` is adversarial),
  combined with ``g`` by the same per-norm rules — the only fact they use is ``‖δ(z') − δ(z)‖ ≥ h(z)``
  for every adversarial ``z'``, which the certificate gives outright. Also ``f ≥ r0``, the certified
  radius of the ball around the clip, since every adversarial point lies outside it. A child
  inherits ``h(parent) − τ w_p`` (its ball lies inside the parent's); the ``probes`` best nodes of
  each batch get their own certificate (one bound-propagation probe each, at the parent's radius,
  halved after a failure) and are pushed back when their ``f`` grows.

All children of a node that set a *new* dimension have the same distance and the same
heuristic estimate, so they share one ``f``: a single heap entry stands for the whole group and
yields one child each time it is popped (memory grows with the pops, not with pops × D).

Children are not evaluated when generated: a child's ``h`` starts from the parent's bound
``h(parent) − τ w_p`` (still admissible, by the Lipschitz property) and the model is run when the
node is popped — in batches of the ``batch`` best nodes. An evaluated node whose true ``f`` is
larger is pushed back (lazy re-evaluation); ``f`` only grows, so admissibility is kept.

**Bounds.** The lower bound is ``min(min f over the open set, best goal found)``, kept monotone
non-decreasing. It becomes exact (= FMSR) when it reaches the distance of a verified adversarial
node; when the open set empties inside the budget, the clip is robust within ``d``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field

import torch

from core.errors import ParameterError
from core.msr.space import Evaluator, check_metric


@dataclass(order=True)
class Node:
    f: float
    tie: int
    key: tuple = field(compare=False)  # ((dim, k), ...) sorted by dim, k ≠ 0
    last: int = field(compare=False, default=-1)
    s: float = field(compare=False, default=0.0)  # Σ|k|^p (p = 1, 2) or max|k| (∞)
    norm: float = field(compare=False, default=0.0)
    h: float = field(compare=False, default=0.0)
    margin: float | None = field(compare=False, default=None)
    group: tuple | None = field(compare=False, default=None)  # lazy (parent, next dim, sign)
    probed: bool = field(compare=False, default=False)  # certified heuristic: own radius probed
    try_r: float = field(compare=False, default=0.0)  # certified heuristic: radius to probe


class AdmissibleAStar:
    """Anytime A*: call :meth:`step` repeatedly; read ``lower``, ``exact``, ``robust``."""

    def __init__(self, ev: Evaluator, metric: str, tau: float, budget: float, heuristic: str = "zero",
                 lipschitz: float | None = None, batch: int = 16, certified=None, node_certifier=None,
                 probes: int = 2) -> None:
        self.p = check_metric(metric)
        if not tau > 0:
            raise ParameterError(f"tau must be > 0, got {tau}")
        if not budget > 0:
            raise ParameterError(f"budget must be > 0, got {budget}")
        if heuristic not in ("zero", "lipschitz", "certified"):
            raise ParameterError(f"heuristic must be zero, lipschitz or certified, got {heuristic!r}")
        if heuristic == "certified" and certified is None:
            raise ParameterError("the certified heuristic needs a certified radius (a certifiable model)")
        self.certified = certified  # () -> sound certified radius r0 of the ball around the clip
        self.node_certifier = node_certifier  # (z, rho) -> is the ball of radius rho around z certified?
        self.probes = int(probes)
        self.node_probes = 0
        if heuristic == "lipschitz" and not (lipschitz and lipschitz > 0):
            raise ParameterError("the lipschitz heuristic needs a Lipschitz constant L > 0")
        self.ev, self.metric, self.tau, self.budget = ev, metric, float(tau), float(budget)
        self.heuristic, self.L, self.batch = heuristic, lipschitz, int(batch)
        self.D = ev.space.dims
        self.w = ev.space.weight(metric)
        self.step_dist = self.w * self.tau  # distance of one atomic move, in any ℓp
        self._tie = itertools.count()
        m0 = float(ev.margins(torch.zeros(1, self.D))[0])
        root = Node(0.0, next(self._tie), (), -1, 0.0, 0.0, 0.0, m0)
        root.h = self._h(m0)
        root.f = self._combine(0.0, root.h)
        self.open: list[Node] = [root]
        self.lower = 0.0
        self.best_goal: Node | None = None
        self.best_goal_check: dict | None = None
        self.best_safe: Node = root
        self.expanded = 0
        self.generated = 1
        self.iterations = 0
        self.exact = False
        self.robust = False

    # -- helpers -----------------------------------------------------------------------------
    def _h(self, margin: float) -> float:
        return max(margin, 0.0) / self.L if self.heuristic == "lipschitz" else 0.0

    def _combine(self, g: float, h: float) -> float:
        if self.p == 1.0:
            f = g + h
        elif self.p == 2.0:
            f = math.hypot(g, h)
        else:
            f = max(g, h)
        if self.heuristic == "certified":
            # every adversarial point z' has ‖z'‖ > r0 (certified ball around the clip)
            f = max(f, self.certified())
        return f

    def _norm_from_s(self, s: float) -> float:
        if self.p == 1.0:
            return self.w * self.tau * s
        if self.p == 2.0:
            return self.w * self.tau * math.sqrt(s)
        return self.tau * s

    def z_of(self, node: Node) -> torch.Tensor:
        z = torch.zeros(self.D, dtype=torch.float64)
        for i, k in node.key:
            z[i] = self.tau * k
        return z

    @property
    def done(self) -> bool:
        return self.exact or self.robust

    # -- search --------------------------------------------------------------------------------
    def _child(self, n: Node, i: int, k: int) -> Node | None:
        """The child of ``n`` with dimension ``i`` set to ``k`` (None outside the budget)."""
        keyd = dict(n.key)
        old = abs(keyd.get(i, 0))
        if self.p == 1.0:
            s = n.s - old + abs(k)
        elif self.p == 2.0:
            s = n.s - old * old + k * k
        else:
            s = max(n.s, abs(k))
        norm = self._norm_from_s(s)
        if norm > self.budget + 1e-9:
            return None
        h = max(n.h - self.step_dist, 0.0) if self.heuristic in ("lipschitz", "certified") else 0.0
        keyd[i] = k
        return Node(self._combine(norm, h), next(self._tie), tuple(sorted(keyd.items())), i, s, norm, h,
                    try_r=n.h if n.h > 0 else n.try_r)

    def _expand(self, n: Node) -> None:
        self.expanded += 1
        if n.last >= 0:
            k = dict(n.key)[n.last]
            c = self._child(n, n.last, k + (1 if k > 0 else -1))
            if c is not None:
                heapq.heappush(self.open, c)
                self.generated += 1
        if n.last + 1 < self.D:
            first = self._child(n, n.last + 1, 1)
            if first is not None:  # the lazy group of every "new dimension" child
                heapq.heappush(self.open, Node(first.f, next(self._tie), (), group=(n, n.last + 1, 1)))

    def _pop(self) -> Node:
        item = heapq.heappop(self.open)
        if item.group is None:
            return item
        parent, i, sgn = item.group
        nxt = (i, -1) if sgn == 1 else (i + 1, 1)
        if nxt[0] < self.D:
            heapq.heappush(self.open, Node(item.f, next(self._tie), (), group=(parent, *nxt)))
        self.generated += 1
        return self._child(parent, i, sgn)

    def _probe(self, nodes: list[Node]) -> None:
        """Certify a radius around each node (heuristic ``certified``): ``h`` only grows."""
        for n in nodes:
            n.probed = True
            rho = n.try_r if n.try_r > 0 else max(self.certified(), self.step_dist)
            self.node_probes += 1
            if self.node_certifier(self.z_of(n), rho):
                n.h = max(n.h, rho)
            else:
                n.try_r = rho / 2  # what its children try

    def step(self) -> None:
        """Pop and evaluate the ``batch`` best open nodes, expand the safe ones, update the bound."""
        if self.done:
            return
        self.iterations += 1
        goal_norm = self.best_goal.norm if self.best_goal else math.inf
        popped: list[Node] = []
        while self.open and len(popped) < self.batch and self.open[0].f < goal_norm:
            popped.append(self._pop())
        todo = [n for n in popped if n.margin is None]
        if todo:
            ms = self.ev.margins(torch.stack([self.z_of(n) for n in todo]))
            for n, m in zip(todo, ms.tolist()):
                n.margin = m
                if self.heuristic == "lipschitz":
                    n.h = max(n.h, self._h(m))
        if self.heuristic == "certified" and self.node_certifier is not None:
            self._probe([n for n in popped if not n.probed and n.margin >= 0][:self.probes])
        for n in popped:
            if n.margin < 0:  # a goal: verify with a fresh, full forward pass
                chk = self.ev.verify(self.z_of(n).float())
                if chk["adversarial"]:
                    if self.best_goal is None or n.norm < self.best_goal.norm:
                        self.best_goal, self.best_goal_check = n, chk
                    continue
                n.margin = max(chk["margin"], 0.0)
            f_true = self._combine(n.norm, n.h)
            if f_true > n.f + 1e-12:  # lazy re-evaluation: push back with its true estimate
                n.f = f_true
                heapq.heappush(self.open, n)
                continue
            if n.norm >= self.best_safe.norm:
                self.best_safe = n
            self._expand(n)
        frontier = self.open[0].f if self.open else math.inf
        if self.heuristic == "certified" and self.open:
            frontier = max(frontier, self.certified())  # every open node's f is at least r0
        goal = self.best_goal.norm if self.best_goal else math.inf
        self.lower = max(self.lower, min(frontier, goal, self.budget))
        if self.best_goal is not None and self.lower >= goal - 1e-12:
            self.exact, self.lower = True, goal
        elif not self.open and self.best_goal is None:
            self.robust, self.lower = True, self.budget
