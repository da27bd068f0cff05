"""Adversarial training (DeepSAVA Alg. 3–4, the PGD-AT baseline of Madry et al. 2018).

``method="pgd"`` (Alg. 3): ``adversarial_train("cnn_lstm", method="pgd")`` fine-tunes the shipped regular model on PGD
examples in pixel ℓ∞ (ε = 0.01 of the [0, 1] range, the thesis' one-shot ε; 3 steps of 0.004 from
a random start) — min_θ E max_{‖δ‖∞ ≤ ε} CE(f_θ(x + δ), y) — and writes ``cnn_lstm_pgd_at``
(weights + model card with clean and robust accuracy). Cost-saving choices, documented in the card:
fine-tuning from the regular weights instead of training from scratch, 3 PGD steps during
training (10 for evaluation), 4 epochs. A checkpoint is written after every epoch; an interrupted
run resumes from it. Adversarial examples are made with ``torch.autograd.grad`` in eval mode.

``method="deepsava"`` (Alg. 4, PGD adversarial training with DeepSAVA's combined perturbation)
writes ``{base}_sava_at``: the inner maximisation perturbs one key frame per clip as in Eq. 2,
``X̂_m = S(U, X_m) + N`` (backward warp by a pixel flow U, then additive noise N), by sign-gradient
steps on U and N from a random start, projected to ``‖N‖∞ ≤ eps`` and ``‖U‖∞ ≤ flow_eps`` px
(default ε = 0.03, 1 px). Cost-saving choice: the key frame of each clip is its most salient frame
(largest input-gradient ℓ1, one backward pass) instead of a BO search (~100× the cost per clip).
The robust accuracy in the card is measured against the same perturbation with 10 steps on the
most salient, the first and the last frame (a clip must survive all three; the first frame is the
one Mu et al. attack in §4.3, the last is where the recurrent models are weakest), and
``python -m core robust`` measures the real DeepSAVA attack.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from core.data import CLASSES
from core.device import DeviceLike, get_device
from core.errors import ParameterError
from core.models.registry import ARCHITECTURES, ASSETS, build, load_model, sha256_file

METHODS = ("pgd", "deepsava")
SUFFIX = {"pgd": "pgd_at", "deepsava": "sava_at"}


def pgd(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """ℓ∞ PGD with a random start (Madry et al. Eq. 2): maximise the cross-entropy within ε of x."""
    if eps <= 0 or steps < 1:
        return x.detach()
    noise = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device) * eps
    adv = (x + noise).clamp(0, 1).detach()
    for _ in range(steps):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(net(adv), y), adv)
        adv = torch.min(torch.max(adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1).detach()
    return adv


def salient_frame(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(B,)`` key frame per clip: ``argmax_t ‖∇_{X_t} CE‖₁`` (frame saliency, Inkawhich Eq. 3.2)
    — one backward pass, the cheap stand-in for DeepSAVA's BO key-frame search in training."""
    xx = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net(xx), y), xx)
    return g.abs().flatten(2).sum(2).argmax(1)


def combined_pgd(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, flow_eps: float,
                 steps: int, generator: torch.Generator | None = None, key: torch.Tensor | None = None) -> torch.Tensor:
    """DeepSAVA Alg. 4, lines 4–6: sign-gradient ascent of the cross-entropy over the combined
    perturbation of one key frame per clip, ``X̂_m = S(U, X_m) + N`` (Eq. 2), from a random start,
    projected to ``‖N‖∞ ≤ eps`` and ``‖U‖∞ ≤ flow_eps`` pixels (steps of 2.5·bound/steps).

    Args:
        x: ``(B, T, 3, H, W)`` in [0, 1]; y: ``(B,)`` labels.
        key: ``(B,)`` key frame per clip (default: the most salient frame, :func:`salient_frame`).

    Returns:
        ``(B, T, 3, H, W)``: x with each key frame replaced by its perturbed version.
    """
    from core.flow import warp

    b, t, _, h, w = x.shape
    if steps < 1 or (eps <= 0 and flow_eps <= 0):
        return x.detach()
    if key is None:
        key = salient_frame(net, x, y)
    rows, key = torch.arange(b, device=x.device), key.to(x.device)
    xs = x[rows, key]

    def start(shape: tuple, bound: float) -> torch.Tensor:
        return ((torch.rand(shape, generator=generator) * 2 - 1) * bound).to(x.device)

    u, n = start((b, 2, h, w), flow_eps), start((b, 3, h, w), eps)
    for _ in range(steps):
        u.requires_grad_(True)
        n.requires_grad_(True)
        adv = x.index_put((rows, key), (warp(xs, u) + n).clamp(0, 1))
        gu, gn = torch.autograd.grad(F.cross_entropy(net(adv), y), (u, n))
        u = (u.detach() + 2.5 * flow_eps / steps * gu.sign()).clamp(-flow_eps, flow_eps)
        n = (n.detach() + 2.5 * eps / steps * gn.sign()).clamp(-eps, eps)
    with torch.no_grad():
        return x.index_put((rows, key), (warp(xs, u) + n).clamp(0, 1)).detach()


def robust_accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
                    batch: int = 32, seed: int = 0, flow_eps: float | None = None) -> float:
    """Share of clips still classified correctly under ℓ∞ PGD (``steps`` steps of 2.5·ε/steps), or,
    with ``flow_eps``, under :func:`combined_pgd` on each of three key frames — the most salient, the
    first and the last (a clip counts as robust only if it survives all three)."""
    net.eval()
    g = torch.Generator().manual_seed(seed)
    dev = next(net.parameters()).device
    ok = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].to(dev), y[i:i + batch].to(dev)
        if flow_eps is not None:
            alive = torch.ones(len(xb), dtype=torch.bool, device=dev)
            t = xb.shape[1]
            for key in (None, torch.zeros(len(xb), dtype=torch.long), torch.full((len(xb),), t - 1)):
                adv = combined_pgd(net, xb, yb, eps, flow_eps, steps, g, key=key)
                with torch.no_grad():
                    alive &= net(adv).argmax(1) == yb
            ok += int(alive.sum())
            continue
        adv = pgd(net, xb, yb, eps, 2.5 * eps / steps, steps, g)
        with torch.no_grad():
            ok += int((net(adv).argmax(1) == yb).sum())
    return ok / len(x)


def fine_tune_start(base: str, n_train: int, n_val: int, n_test: int, seed: int, device: DeviceLike
                    ) -> tuple[torch.device, dict, torch.nn.Module, torch.nn.Module]:
    """Common start of every fine-tuning run (adversarial or certified training): the device, the
    seeded dataset splits, the shipped regular model and a trainable copy of it."""
    from core.models.train import _splits

    dev = get_device(device)
    torch.manual_seed(seed)
    data = _splits(n_train, n_val, n_test, 16, 64)
    regular, _ = load_model(base, dev)
    net = build(base).to(dev)
    net.load_state_dict(regular.state_dict())
    return dev, data, regular, net


def finish_card(card: dict, net: torch.nn.Module, weights: Path, dev: torch.device, sizes: tuple[int, int, int],
                seed: int, seconds: float) -> dict:
    """Complete a fine-tuned model's card (dataset, seed, time, machine, parameters, sha256 of the
    saved ``weights``), write it beside the weights and remove the run's checkpoint."""
    card.update({
        "dataset": {"generator": "core.data.synthetic", **dict(zip(("n_train", "n_val", "n_test"), sizes))},
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "trained_on": f"{dev.type} ({platform.machine()}, torch {torch.__version__})",
        "parameters": sum(p.numel() for p in net.parameters()),
        "sha256": sha256_file(weights),
    })
    weights.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    weights.with_suffix(".ckpt").unlink(missing_ok=True)
    return card


def adversarial_train(base: str = "cnn_lstm", method: str = "pgd", eps: float | None = None, steps: int = 3,
                      epochs: int = 4, flow_eps: float = 1.0, n_train: int = 1600, n_val: int = 200, n_test: int = 400, lr: float = 5e-4,
                      batch_size: int = 32, seed: int = 0, out_dir: Path = ASSETS, device: DeviceLike = None,
                      progress: Callable[[str], None] | None = print, resume: bool = True) -> dict:
    """Fine-tune ``base`` adversarially; write ``{base}_pgd_at`` / ``{base}_sava_at`` and return its card.

    ``eps``: pixel ℓ∞ bound (default 0.01 for ``pgd``, 0.03 for the noise of ``deepsava``);
    ``flow_eps``: ``deepsava`` only, the flow bound in pixels."""
    from core.models.train import accuracy

    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS}, got {method!r}")
    eps = (0.01 if method == "pgd" else 0.03) if eps is None else eps
    sava = method == "deepsava"
    if sava and not 0 < flow_eps <= 8:
        raise ParameterError(f"flow_eps must be in (0, 8] pixels, got {flow_eps!r}")
    if base not in ("cnn_lstm", "cnn_gru", "cnn_rnn", "c3d", "frame_cnn"):
        raise ParameterError(f"adversarial training needs a differentiable shipped model, got {base!r}")
    if not 0 < eps <= 0.1:
        raise ParameterError(f"eps must be in (0, 0.1], got {eps!r}")
    name = f"{base}_{SUFFIX[method]}"
    log = progress or (lambda s: None)
    t0 = time.time()
    dev, data, regular, net = fine_tune_start(base, n_train, n_val, n_test, seed, device)
    (xtr, ytr), (xva, yva), (xte, yte) = data["train"], data["val"], data["test"]
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    ckpt = out_dir / f"{name}.ckpt"
    start, spent = 0, 0.0
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, spent = int(state["epoch"]), float(state["seconds"])
        log(f"resuming {name} after epoch {start}")
    gen = torch.Generator().manual_seed(seed + start)
    alpha = 2.5 * eps / steps
    for ep in range(start, epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = xtr[idx].to(dev), ytr[idx].to(dev)
            net.eval()  # attack the current weights with frozen statistics
            adv = (combined_pgd(net, xb, yb, eps, flow_eps, steps, gen) if sava
                   else pgd(net, xb, yb, eps, alpha, steps, gen))
            net.train()
            loss = F.cross_entropy(net(adv), yb, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        net.eval()
        val = accuracy(net, xva, yva, dev)
        log(f"{name} epoch {ep + 1}/{epochs} adversarial loss {total / len(xtr):.4f} clean val_acc {val:.3f} "
            f"({time.time() - t0 + spent:.0f} s)")
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "epoch": ep + 1,
                    "seconds": time.time() - t0 + spent}, ckpt)
    net.eval()
    regular.eval()
    n_rob = min(len(xte), 128)
    rob = "robust_accuracy_sava10" if sava else "robust_accuracy_pgd10"
    fe = flow_eps if sava else None
    card_eval = {
        "test_accuracy": round(accuracy(net, xte, yte, dev), 4),
        rob: round(robust_accuracy(net, xte[:n_rob], yte[:n_rob], eps, flow_eps=fe), 4),
        "regular_test_accuracy": round(accuracy(regular, xte, yte, dev), 4),
        f"regular_{rob}": round(robust_accuracy(regular, xte[:n_rob], yte[:n_rob], eps, flow_eps=fe), 4),
    }
    card_eval["robust_accuracy"] = card_eval[rob]  # under the model's own training attack
    card_eval["regular_robust_accuracy"] = card_eval[f"regular_{rob}"]
    wp = out_dir / f"{name}.pt"
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, wp)
    card = {
        "name": name,
        "architecture": ARCHITECTURES[base] + f" — {method.upper()} adversarial training",
        "base_model": base,
        "classes": list(CLASSES),
        "input": {"frames": 16, "size": 64, "channels": 3, "layout": "(B, T, 3, H, W)", "range": [0.0, 1.0],
                  "dtype": "float32"},
        "output": "logits (B, 8)",
        "adversarial_training": {
            "method": method,
            "threat": (f"one key frame: flow ‖U‖∞ ≤ {flow_eps} px + noise ‖N‖∞ ≤ {eps} (DeepSAVA Eq. 2, Alg. 4)"
                       if sava else "pixel ℓ∞"),
            "eps": eps, **({"flow_eps": flow_eps} if sava else {}), "train_steps": steps, "alpha": alpha,
            "random_start": True, "epochs": epochs, "lr": lr, "init": f"fine-tuned from {base}",
            "robust_eval": (f"combined PGD-10 (ε = {eps}, {flow_eps} px) on the most salient, the first and the "
                            f"last frame (must survive all three), random start, first {n_rob} test clips" if sava else f"PGD-10, ε = {eps}, random start, first {n_rob} test clips"),
            "cost_saving": "fine-tuned from the regular weights; " + (
                f"{steps} PGD steps in training; the most salient key frame per clip instead of a BO search" if sava
                else f"{steps} PGD steps in training")},
        **card_eval,
    }
    finish_card(card, net, wp, dev, (n_train, n_val, n_test), seed, time.time() - t0 + spent)
    log(f"{name}: clean {card['test_accuracy']:.3f}, robust {card['robust_accuracy']:.3f} "
        f"(regular: {card['regular_test_accuracy']:.3f} / {card['regular_robust_accuracy']:.3f})")
    return card
