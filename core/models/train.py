"""Train a shipped model from scratch on the synthetic motion-action dataset (CPU, minutes).

``python -m core train --model NAME`` writes ``assets/models/NAME.pt`` (state dict) and
``NAME.json`` (model card). Motion-stream models compute their (parameter-free) flow once for the
whole training set and then train only the flow classifier — the same function, far cheaper.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from core.data import CLASSES, make_split
from core.data.synthetic import GENERATOR_VERSION
from core.device import DeviceLike, get_device
from core.models.nets import MotionStream
from core.models.registry import ARCHITECTURES, ASSETS, build, sha256_file

DEFAULT_EPOCHS = {"cnn_lstm": 14, "cnn_gru": 14, "cnn_rnn": 16, "c3d": 12, "frame_cnn": 10,
                  "motion_stream": 12, "motion_stream_farneback": 12,
                  "motion_stream_tvl1": 12}


def _splits(n_train: int, n_val: int, n_test: int, frames: int, size: int):
    from core.cache import DiskCache

    cache = DiskCache()
    key = cache.key("dataset", generator=GENERATOR_VERSION, n_train=n_train, n_val=n_val, n_test=n_test, frames=frames, size=size)

    def gen() -> dict:
        out = {}
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            v, y, _ = make_split(split, n, frames, size)
            out[split] = (v, y)
        return out

    return cache.get_or_compute(key, gen)


@torch.no_grad()
def _flows(model: MotionStream, videos: torch.Tensor, dev: torch.device, bs: int = 32) -> torch.Tensor:
    return torch.cat([model.flow(videos[i:i + bs].to(dev)).cpu() for i in range(0, len(videos), bs)])


@torch.no_grad()
def accuracy(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             dev: torch.device, bs: int = 64) -> float:
    """Top-1 accuracy of ``fn`` (inputs → logits) on ``x`` in batches."""
    correct = 0
    for i in range(0, len(x), bs):
        correct += int((fn(x[i:i + bs].to(dev)).argmax(1).cpu() == y[i:i + bs]).sum())
    return correct / len(x)


def train_model(name: str, epochs: int | None = None, n_train: int = 1600, n_val: int = 200,
                n_test: int = 400, frames: int = 16, size: int = 64, seed: int = 0,
                lr: float = 2e-3, batch_size: int = 32, out_dir: Path = ASSETS,
                device: DeviceLike = None, progress: Callable[[str], None] | None = print) -> dict:
    """Train ``name`` and write its weights and model card; return the card."""
    dev = get_device(device)
    torch.manual_seed(seed)
    log = progress or (lambda s: None)
    epochs = epochs or DEFAULT_EPOCHS.get(name, 10)
    t0 = time.time()
    data = _splits(n_train, n_val, n_test, frames, size)
    (xtr, ytr), (xva, yva), (xte, yte) = data["train"], data["val"], data["test"]
    model = build(name, len(CLASSES), frames).to(dev)
    is_motion = isinstance(model, MotionStream)
    if is_motion:  # flow is parameter-free: compute it once, train the flow classifier
        log(f"computing {model.flow_method} flows for {len(xtr) + len(xva) + len(xte)} clips")
        xtr, xva, xte = (_flows(model, v, dev) for v in (xtr, xva, xte))
        net = model.classifier
    else:
        net = model
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(xtr) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    best_val, best_state = -1.0, None
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = xtr[idx].to(dev), ytr[idx].to(dev)
            if not is_motion and torch.rand(1, generator=gen).item() < 0.5:
                # photometric jitter (brightness/contrast) so models key on motion, not colour
                a = 0.8 + 0.4 * torch.rand(len(xb), 1, 1, 1, 1, generator=gen).to(dev)
                b = 0.1 * (torch.rand(len(xb), 1, 1, 1, 1, generator=gen).to(dev) - 0.5)
                xb = (xb * a + b).clamp(0, 1)
            loss = F.cross_entropy(net(xb), yb, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        net.eval()
        val = accuracy(net, xva, yva, dev)
        log(f"{name} epoch {ep + 1}/{epochs} loss {total / len(xtr):.4f} val_acc {val:.3f} "
            f"({time.time() - t0:.0f} s)")
        if val >= best_val:
            best_val = val
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    test_acc = accuracy(model.classifier if is_motion else model, xte, yte, dev)
    seconds = time.time() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    wp = out_dir / f"{name}.pt"
    torch.save(best_state, wp)
    card = {
        "name": name,
        "architecture": ARCHITECTURES[name],
        "classes": list(CLASSES),
        "input": {"frames": frames, "size": size, "channels": 3, "layout": "(B, T, 3, H, W)",
                  "range": [0.0, 1.0], "dtype": "float32"},
        "output": "logits (B, 8)",
        "dataset": {"generator": "core.data.synthetic", "generator_version": GENERATOR_VERSION, "n_train": n_train, "n_val": n_val,
                    "n_test": n_test, "split_offsets": {"train": 0, "val": 1_000_000,
                                                        "test": 2_000_000}},
        "val_accuracy": round(best_val, 4),
        "test_accuracy": round(test_acc, 4),
        "epochs": epochs,
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "trained_on": f"{dev.type} ({platform.machine()}, torch {torch.__version__})",
        "parameters": sum(p.numel() for p in model.parameters()),
        "sha256": sha256_file(wp),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    log(f"{name}: test accuracy {test_acc:.3f} in {seconds:.0f} s -> {wp}")
    return card
