"""Certified training of ``cnn_lstm`` against flow manipulations (IBP, Gowal et al. 2018).

``python -m core train --model cnn_lstm --certified`` fine-tunes the shipped regular model and
writes ``cnn_lstm_certified`` (weights + model card). **Threat during training**: the flow
manipulation of Wu & Kwiatkowska on *every* imposed frame — frame ``t ≥ 1`` re-sampled at a shift of
at most ``κ`` ≤ 1 px in x and y (the page defaults move every flow). A bilinear, border-padded sample
at such a shift is a convex combination of the 3 × 3 window around the pixel (replicate padding) in
which the pixel itself keeps weight ``(1 − |s_x|)(1 − |s_y|) ≥ (1 − κ)²``, so with
``w = 1 − (1 − κ)²``

    x_t ∈ [x_t − w (x_t − minpool₃(x_t)),  x_t + w (maxpool₃(x_t) − x_t)]            (window box)

holds every frame imposed at shifts ``|s_x|, |s_y| ≤ κ`` (tested by sampling; the exact range that
:mod:`core.verify.certify` uses is tighter). Interval bounds go through the frame-difference snippet,
the per-frame CNN (BatchNorm statistics frozen: an affine map) and the LSTM
(:func:`core.verify.bounds.recurrent_ibp`); the worst-case logits ``ẑ_j = −lower(z_y − z_j)`` give the
robust loss.

**Why width regularisers.** Measured on the regular model at κ = 0.001 px: the interval of the CNN
features is 7 000× wider than the input box and the LSTM's last hidden state is ``[−1, 1]`` in every
unit — the gates saturate, so the gradient of the IBP loss through them vanishes and plain IBP
training (tried first: Gowal et al.'s loss alone) never starts. We therefore also penalise the two
widths that do not saturate — the features entering the LSTM and the LSTM's gate pre-activations —
in the spirit of the tightness regulariser of Shi et al. (NeurIPS 2021, "Fast certified robust
training"). Objective, with ``w_f`` the mean feature width and ``w_g`` the mean gate pre-activation
width over the steps:

    L = CE(z(x), y) + λ [log(1 + w_f / (10 κ)) + log(1 + w_g)] + β·ρ · CE(ẑ(box), y),

κ and the ramp ``ρ`` grow linearly from 0 over the first half of the steps (Gowal et al.'s ε
schedule); BatchNorm statistics frozen; fine-tuned from the regular weights (cost-saving choice).
The card reports clean test accuracy and the **sound certified flow radius** (CROWN + branch and
bound, :class:`core.verify.CertifiedRadius`) of this and the regular model on the same test clips.
A checkpoint is written every 100 steps (``ckpt_every``); an interrupted run resumes from it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.data import CLASSES
from core.device import DeviceLike
from core.errors import ParameterError
from core.models.registry import ARCHITECTURES, ASSETS

CERTIFIABLE = ("cnn_lstm",)


def window_box(x: torch.Tensor, kappa: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, C, H, W)`` → ``(lo, hi)``: a box holding every clip whose frames ``t ≥ 1`` are re-imposed
    (bilinear, border padding) at shifts of at most ``kappa`` ≤ 1 px per axis; frame 0 stays a point."""
    if x.dim() != 5:
        raise ParameterError(f"expected (B, T, C, H, W), got {tuple(x.shape)}")
    if not 0 <= kappa <= 1:
        raise ParameterError(f"kappa must be in [0, 1] px, got {kappa!r}")
    b, t, c, h, w = x.shape
    wgt = 1.0 - (1.0 - kappa) ** 2
    f = F.pad(x[:, 1:].reshape(-1, c, h, w), (1, 1, 1, 1), mode="replicate")
    hi = F.max_pool2d(f, 3, 1).view(b, t - 1, c, h, w)
    lo = -F.max_pool2d(-f, 3, 1).view(b, t - 1, c, h, w)
    cur = x[:, 1:]
    lo = torch.cat([x[:, :1], cur - wgt * (cur - lo)], 1)
    hi = torch.cat([x[:, :1], cur + wgt * (hi - cur)], 1)
    return lo, hi


def ibp_train_bounds(net: nn.Module, lo: torch.Tensor, hi: torch.Tensor, y: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interval propagation of a ``CNNRecurrent`` over the input box (differentiable).

    Returns:
        ``(margins (B, K), feature width, gate width)``: lower bounds of ``z_y − z_j`` (0 at ``j = y``),
        the mean width of the features entering the recurrent head and the mean width of its gate
        pre-activations.
    """
    from core.models.nets import CNNRecurrent
    from core.verify.bounds import flatten_chain, ibp, margin_lower_rows, recurrent_ibp

    if not isinstance(net, CNNRecurrent):
        raise ParameterError(f"certified training supports the CNN + recurrent models, got {type(net).__name__}")
    b, t = lo.shape[:2]
    prev = [0, *range(t - 1)]
    zero = torch.zeros_like(lo[:, :1])
    d_lo = torch.cat([zero, (lo - hi[:, prev])[:, 1:]], 1)  # step 0: frame 0 minus itself = 0
    d_hi = torch.cat([zero, (hi - lo[:, prev])[:, 1:]], 1)
    s_lo = torch.cat([lo, d_lo], 2).flatten(0, 1)
    s_hi = torch.cat([hi, d_hi], 2).flatten(0, 1)
    chain = flatten_chain(net.encoder.body) + flatten_chain(net.encoder.proj)
    (fl, fh), _ = ibp(chain, s_lo, s_hi)
    fl, fh = fl.view(b, t, -1), fh.view(b, t, -1)
    widths: list[torch.Tensor] = []
    h = recurrent_ibp(net.rnn, [(fl[:, s], fh[:, s]) for s in range(t)], pre_widths=widths)
    marg = margin_lower_rows(h, net.fc, y)
    gate = torch.stack(widths).mean() if widths else torch.zeros((), dtype=lo.dtype)
    return marg, (fh - fl).mean(), gate


def _frozen_bn(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
        if isinstance(m, nn.ReLU):
            m.inplace = False  # the interval pass needs both ends


def certified_radius_stats(models: dict[str, nn.Module], videos: torch.Tensor, labels: torch.Tensor,
                           flows: list[int], time_limit: float, block: int = 16, metric: str = "l2",
                           log: Callable[[str], None] | None = None) -> dict:
    """Sound certified radius (:class:`core.verify.CertifiedRadius`) of each model on the clips that
    every model classifies correctly: ``{name: {median, mean, min, max, radii}}`` plus the space."""
    from core.classifier import as_classifier
    from core.msr.space import FlowSpace
    from core.verify import CertifiedRadius

    clfs = {n: as_classifier(m.eval()) for n, m in models.items()}
    radii: dict[str, list[float]] = {n: [] for n in models}
    used = 0
    for v, y in zip(videos, labels):
        if any(c.predict(v)[0] != int(y) for c in clfs.values()):
            continue
        used += 1
        for n, c in clfs.items():
            r = CertifiedRadius(c, FlowSpace(v, flows=flows, block=block), metric).run(time_limit)["certified_lower"]
            radii[n].append(round(r, 5))
            if log:
                log(f"certified radius, clip {used}, {n}: {r:.4g}")
    out: dict = {"space": {"flows": flows, "block": block, "metric": metric}, "time_limit_s": time_limit,
                 "clips": used, "guarantee": "sound"}
    for n, rs in radii.items():
        out[n] = ({"median": statistics.median(rs), "mean": round(statistics.fmean(rs), 5), "min": min(rs),
                   "max": max(rs), "radii": rs} if rs else {"radii": []})
    return out


def certified_train(base: str = "cnn_lstm", flow_px: float = 0.05, steps: int = 3000, lam: float = 0.5,
                    beta: float = 0.5, n_train: int = 1600, n_val: int = 200, n_test: int = 400, lr: float = 5e-4,
                    batch_size: int = 16, seed: int = 0, out_dir: Path = ASSETS, device: DeviceLike = None,
                    cert_clips: int = 8, cert_time: float = 20.0, resume: bool = True, ckpt_every: int = 100,
                    progress: Callable[[str], None] | None = print) -> dict:
    """IBP-train ``base`` against flows of ``flow_px`` px on every frame; write ``{base}_certified``
    and return its card (module docstring: objective, schedule, cost-saving choices)."""
    from core.models.advtrain import fine_tune_start, finish_card
    from core.models.train import accuracy

    if base not in CERTIFIABLE:
        raise ParameterError(f"certified training supports {', '.join(CERTIFIABLE)}, got {base!r}")
    if not 0 < flow_px <= 1:
        raise ParameterError(f"flow_px must be in (0, 1] px, got {flow_px!r}")
    if steps < 1 or batch_size < 1:
        raise ParameterError(f"steps and batch_size must be >= 1, got {steps!r}, {batch_size!r}")
    if lam < 0 or beta < 0:
        raise ParameterError(f"lam and beta must be >= 0, got {lam!r}, {beta!r}")
    name = f"{base}_certified"
    log = progress or (lambda s: None)
    t0 = time.time()
    dev, data, regular, net = fine_tune_start(base, n_train, n_val, n_test, seed, device)
    (xtr, ytr), (xva, yva), (xte, yte) = data["train"], data["val"], data["test"]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    ckpt = out_dir / f"{name}.ckpt"
    start, spent, best = 0, 0.0, (-1.0, None)
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, spent = int(state["step"]), float(state["seconds"])
        best = (float(state["best_val"]), state.get("best_model"))
        log(f"resuming {name} after step {start}")
    ramp = max(1, steps // 2)
    every = max(1, min(250, steps // 4))
    for step in range(start, steps):
        net.train()
        _frozen_bn(net)
        idx = torch.randint(0, len(xtr), (batch_size,), generator=gen)
        xb, yb = xtr[idx].to(dev), ytr[idx].to(dev)
        rho = min(1.0, step / ramp)
        kappa = max(flow_px * rho, 1e-4)
        clean = F.cross_entropy(net(xb), yb)
        marg, wf, wg = ibp_train_bounds(net, *window_box(xb, kappa), yb)
        robust = F.cross_entropy(-marg, yb)  # worst-case logits ẑ_j = −lower(z_y − z_j), ẑ_y = 0
        loss = clean + lam * (torch.log1p(wf / (10 * kappa)) + torch.log1p(wg)) + beta * rho * robust
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        last = step + 1 == steps
        if (step + 1) % every == 0 or last:
            net.eval()
            val = accuracy(net, xva, yva, dev)
            log(f"{name} step {step + 1}/{steps} κ {kappa:.4f} clean {clean.item():.3f} robust {robust.item():.3f} "
                f"feature width {wf.item():.4f} gate width {wg.item():.3f} val_acc {val:.3f} "
                f"({time.time() - t0 + spent:.0f} s)")
            if rho >= 1.0 and val >= best[0]:  # select among the states trained at the full κ
                best = (val, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        if (step + 1) % ckpt_every == 0 and not last:
            out_dir.mkdir(parents=True, exist_ok=True)
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step + 1,
                        "seconds": time.time() - t0 + spent, "best_val": best[0],
                        **({"best_model": best[1]} if best[1] is not None else {})}, ckpt)
    if best[1] is not None:
        net.load_state_dict(best[1])
    net.eval()
    regular.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    wp = out_dir / f"{name}.pt"
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, wp)
    card = {
        "name": name,
        "architecture": ARCHITECTURES[base] + " — IBP certified training against flow manipulations",
        "base_model": base,
        "classes": list(CLASSES),
        "input": {"frames": 16, "size": 64, "channels": 3, "layout": "(B, T, 3, H, W)", "range": [0.0, 1.0],
                  "dtype": "float32"},
        "output": "logits (B, 8)",
        "certified_training": {
            "method": "IBP (Gowal et al. 2018) + width regularisers on the LSTM's input and gate pre-activations "
                      "(Shi et al. 2021); L = CE + λ[log(1 + w_f/10κ) + log(1 + w_g)] + β·ρ·CE(worst case)",
            "threat": f"every frame t ≥ 1 re-imposed at a shift ≤ {flow_px} px per axis (3×3 window box)",
            "flow_px": flow_px, "lambda": lam, "beta": beta, "steps": steps, "batch_size": batch_size, "lr": lr,
            "ramp": "κ and ρ linear from 0 over the first half of the steps; the best validation state "
                    "after the ramp is kept",
            "init": f"fine-tuned from {base}", "batchnorm": "statistics frozen (affine)",
            "cost_saving": "fine-tuned from the regular weights; IBP rather than CROWN-IBP in training"},
        "val_accuracy": round(best[0], 4) if best[1] is not None else None,
        "test_accuracy": round(accuracy(net, xte, yte, dev), 4),
        "regular_test_accuracy": round(accuracy(regular, xte, yte, dev), 4),
    }
    if cert_clips:
        n = min(cert_clips, len(xte))
        card["certified_radius"] = certified_radius_stats({name: net, base: regular}, xte[:n], yte[:n], [7],
                                                          cert_time, log=log)
    finish_card(card, net, wp, dev, (n_train, n_val, n_test), seed, time.time() - t0 + spent)
    log(f"{name}: clean test accuracy {card['test_accuracy']:.3f} (regular {card['regular_test_accuracy']:.3f})")
    return card
