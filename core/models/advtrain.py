"""Adversarial training (DeepSAVA Alg. 3–4, the PGD-AT baseline of Madry et al. 2018).

``adversarial_train("cnn_lstm", method="pgd")`` fine-tunes the shipped regular model on PGD
examples in pixel ℓ∞ (ε = 0.01 of the [0, 1] range, the thesis' one-shot ε; 3 steps of 0.004 from
a random start) — min_θ E max_{‖δ‖∞ ≤ ε} CE(f_θ(x + δ), y) — and writes ``cnn_lstm_pgd_at``
(weights + model card with clean and robust accuracy). Cost-saving choices, documented in the card:
fine-tuning from the regular weights instead of training from scratch, 3 PGD steps during
training (10 for evaluation), 4 epochs. A checkpoint is written after every epoch; an interrupted
run resumes from it. Adversarial examples are made with ``torch.autograd.grad`` in eval mode.
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

METHODS = ("pgd",)


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


def robust_accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
                    batch: int = 32, seed: int = 0) -> float:
    """Share of clips still classified correctly under ℓ∞ PGD (``steps`` steps of 2.5·ε/steps)."""
    net.eval()
    g = torch.Generator().manual_seed(seed)
    dev = next(net.parameters()).device
    ok = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].to(dev), y[i:i + batch].to(dev)
        adv = pgd(net, xb, yb, eps, 2.5 * eps / steps, steps, g)
        with torch.no_grad():
            ok += int((net(adv).argmax(1) == yb).sum())
    return ok / len(x)


def adversarial_train(base: str = "cnn_lstm", method: str = "pgd", eps: float = 0.01, steps: int = 3,
                      epochs: int = 4, n_train: int = 1600, n_val: int = 200, n_test: int = 400, lr: float = 5e-4,
                      batch_size: int = 32, seed: int = 0, out_dir: Path = ASSETS, device: DeviceLike = None,
                      progress: Callable[[str], None] | None = print, resume: bool = True) -> dict:
    """Fine-tune ``base`` adversarially; write ``{base}_{method}_at`` and return its card."""
    from core.models.train import _splits, accuracy

    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS}, got {method!r} (DeepSAVA-AT is not implemented)")
    if base not in ("cnn_lstm", "cnn_gru", "cnn_rnn", "c3d", "frame_cnn"):
        raise ParameterError(f"adversarial training needs a differentiable shipped model, got {base!r}")
    if not 0 < eps <= 0.1:
        raise ParameterError(f"eps must be in (0, 0.1], got {eps!r}")
    name = f"{base}_{method}_at"
    log = progress or (lambda s: None)
    dev = get_device(device)
    torch.manual_seed(seed)
    t0 = time.time()
    data = _splits(n_train, n_val, n_test, 16, 64)
    (xtr, ytr), (xva, yva), (xte, yte) = data["train"], data["val"], data["test"]
    regular, _ = load_model(base, dev)
    net = build(base).to(dev)
    net.load_state_dict(regular.state_dict())
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
            adv = pgd(net, xb, yb, eps, alpha, steps, gen)
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
    card_eval = {
        "test_accuracy": round(accuracy(net, xte, yte, dev), 4),
        "robust_accuracy_pgd10": round(robust_accuracy(net, xte[:n_rob], yte[:n_rob], eps), 4),
        "regular_test_accuracy": round(accuracy(regular, xte, yte, dev), 4),
        "regular_robust_accuracy_pgd10": round(robust_accuracy(regular, xte[:n_rob], yte[:n_rob], eps), 4),
    }
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
            "method": method, "threat": "pixel ℓ∞", "eps": eps, "train_steps": steps, "alpha": alpha,
            "random_start": True, "epochs": epochs, "lr": lr, "init": f"fine-tuned from {base}",
            "robust_eval": f"PGD-10, ε = {eps}, random start, first {n_rob} test clips",
            "cost_saving": "fine-tuned from the regular weights; 3 PGD steps in training"},
        **card_eval,
        "dataset": {"generator": "core.data.synthetic", "n_train": n_train, "n_val": n_val, "n_test": n_test},
        "seed": seed,
        "train_seconds": round(time.time() - t0 + spent, 1),
        "trained_on": f"{dev.type} ({platform.machine()}, torch {torch.__version__})",
        "parameters": sum(p.numel() for p in net.parameters()),
        "sha256": sha256_file(wp),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    ckpt.unlink(missing_ok=True)
    log(f"{name}: clean {card['test_accuracy']:.3f}, robust {card['robust_accuracy_pgd10']:.3f} "
        f"(regular: {card['regular_test_accuracy']:.3f} / {card['regular_robust_accuracy_pgd10']:.3f})")
    return card
