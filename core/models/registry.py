"""Shipped models (weights + model cards in ``assets/models``) and user TorchScript models.

A model card is the JSON beside the weights: name, architecture, classes, input spec, test
accuracy, seed, training time and the sha256 of the weights file. Loading checks the sha256 and
uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.data import CLASSES
from core.device import DeviceLike, get_device
from core.errors import ModelError
from core.models.nets import C3D, CNNRecurrent, FrameCNN, MotionStream

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "models"

#: Architecture of each shipped model name.
ARCHITECTURES: dict[str, str] = {
    "cnn_lstm": "per-frame CNN (N_C) + LSTM (N_R)",
    "cnn_gru": "per-frame CNN + GRU",
    "cnn_rnn": "per-frame CNN + vanilla RNN",
    "c3d": "3D CNN",
    "frame_cnn": "per-frame 2D CNN (frame t with t+1), logits averaged over time",
    "motion_stream": "differentiable Horn–Schunck flow inside the model + stacked-flow 2D CNN",
    "motion_stream_farneback": "OpenCV Farneback flow (non-differentiable) + stacked-flow 2D CNN",
    "motion_stream_tvl1": "scikit-image TV-L1 flow (non-differentiable) + stacked-flow 2D CNN",
    "cnn_lstm_pgd_at": "per-frame CNN + LSTM, PGD adversarial training (pixel ℓ∞ 0.01; core.models.advtrain)",
    "cnn_lstm_sava_at": "per-frame CNN + LSTM, DeepSAVA adversarial training (Alg. 4: flow 1 px + noise 0.03 on "
                        "the most salient frame; core.models.advtrain)",
    "cnn_lstm_certified": "per-frame CNN + LSTM, certified training against an ℓ2 ball of flow manipulations of "
                          "every frame (core.models.certtrain)",
}
MODEL_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)
DEFAULT_MODEL = "cnn_lstm"


def build(name: str, num_classes: int = len(CLASSES), frames: int = 16) -> nn.Module:
    """A fresh (untrained) model of a shipped architecture."""
    # adversarially / certifiably trained twins share their base's architecture
    for suffix in ("_pgd_at", "_sava_at", "_certified"):
        if name.endswith(suffix):
            return build(name[: -len(suffix)], num_classes, frames)
    if name in ("cnn_lstm", "cnn_gru", "cnn_rnn"):
        return CNNRecurrent(num_classes, head=name.split("_")[1])  # type: ignore[arg-type]
    if name == "c3d":
        return C3D(num_classes)
    if name == "frame_cnn":
        return FrameCNN(num_classes)
    if name == "motion_stream":
        return MotionStream(num_classes, frames, "horn_schunck")
    if name == "motion_stream_farneback":
        return MotionStream(num_classes, frames, "farneback")
    if name == "motion_stream_tvl1":
        return MotionStream(num_classes, frames, "tvl1")
    raise ModelError(f"unknown model {name!r}; shipped models are {', '.join(MODEL_NAMES)}")


@dataclass
class ModelSpec:
    """What a video model expects and says: input frames T, square size, class names."""

    name: str
    frames: int
    size: int
    classes: list[str]
    card: dict

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(name: str, root: Path = ASSETS) -> Path:
    return root / f"{name}.json"


def weights_path(name: str, root: Path = ASSETS) -> Path:
    return root / f"{name}.pt"


def read_card(name: str, root: Path = ASSETS) -> dict:
    p = card_path(name, root)
    if not p.exists():
        raise ModelError(f"no model card for {name!r} at {p}; train it with "
                         f"`python -m core train --model {name}`")
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"model card {p} is not valid JSON: {e}") from None


def available_models(root: Path = ASSETS) -> list[dict]:
    """Cards of every shipped model present in ``assets/models``, in registry order."""
    return [read_card(n, root) for n in MODEL_NAMES if card_path(n, root).exists()]


def load_model(name: str, device: DeviceLike = None, root: Path = ASSETS) -> tuple[nn.Module, ModelSpec]:
    """Load a shipped model in eval mode, after checking its weights' sha256.

    Raises:
        ModelError: unknown name, missing files, sha256 mismatch or weights that do not fit.
    """
    card = read_card(name, root)
    wp = weights_path(name, root)
    if not wp.exists():
        raise ModelError(f"weights for {name!r} are missing at {wp}")
    digest = sha256_file(wp)
    if digest != card.get("sha256"):
        raise ModelError(f"sha256 mismatch for {wp.name}: the card says {card.get('sha256')}, the "
                         f"file has {digest}; the weights were changed or corrupted")
    model = build(name, len(card["classes"]), card["input"]["frames"])
    try:
        state = torch.load(wp, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - any unpickling/shape error is a model error
        raise ModelError(f"cannot load weights {wp.name} into {name}: {e}") from None
    dev = get_device(device)
    model.to(dev).eval()
    spec = ModelSpec(name, card["input"]["frames"], card["input"]["size"], list(card["classes"]), card)
    return model, spec


def load_classifier(name: str, device: DeviceLike = None, root: Path = ASSETS):
    """A shipped model as a frozen :class:`core.classifier.VideoClassifier` (spec attached)."""
    from core.classifier import VideoClassifier

    model, spec = load_model(name, device, root)
    return VideoClassifier(model, spec)


class ScriptedVideoModel(nn.Module):
    """A user TorchScript model wrapped with its spec; output checked on every call."""

    def __init__(self, module: torch.jit.ScriptModule, spec: ModelSpec) -> None:
        super().__init__()
        self.module = module
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0], self.spec.num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"model {self.spec.name!r} must return logits (B, "
                             f"{self.spec.num_classes}) for input {tuple(x.shape)}, got {shape}")
        if not bool(torch.isfinite(out).all()):
            raise ModelError(f"model {self.spec.name!r} returned non-finite logits (NaN or inf)")
        return out


def parse_spec(text: str | bytes, name: str = "user model") -> ModelSpec:
    """Parse a user model spec (JSON or YAML): ``frames``, ``size``, ``classes`` (list of names)."""
    import yaml

    try:
        d = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise ModelError(f"model spec is neither JSON nor YAML: {e}") from None
    if not isinstance(d, dict):
        raise ModelError("model spec must be a mapping with keys frames, size, classes")
    try:
        frames, size, classes = int(d["frames"]), int(d["size"]), [str(c) for c in d["classes"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"model spec needs integer 'frames', integer 'size' and a list 'classes' "
                         f"({e!s} is missing or wrong)") from None
    if not (2 <= frames <= 256 and 16 <= size <= 512 and len(classes) >= 2):
        raise ModelError(f"model spec out of range: frames {frames} (2..256), size {size} "
                         f"(16..512), {len(classes)} classes (>= 2)")
    return ModelSpec(str(d.get("name", name)), frames, size, classes,
                     {"name": str(d.get("name", name)), "classes": classes,
                      "input": {"frames": frames, "size": size}, "source": "torchscript"})


def load_torchscript(model_file: str | os.PathLike | bytes, spec: ModelSpec,
                     device: DeviceLike = None) -> tuple[nn.Module, ModelSpec]:
    """Load a user TorchScript model and check it on a zero clip of its spec's shape."""
    import io

    dev = get_device(device)
    src = io.BytesIO(model_file) if isinstance(model_file, (bytes, bytearray)) else model_file
    try:
        module = torch.jit.load(src, map_location=dev)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"not a TorchScript model file (torch.jit.load failed: "
                         f"{str(e).splitlines()[0][:200]})") from None
    model = ScriptedVideoModel(module, spec).to(dev).eval()
    probe = torch.full((1, spec.frames, 3, spec.size, spec.size), 0.5, device=dev)
    try:
        with torch.no_grad():
            model(probe)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model failed on a (1, {spec.frames}, 3, {spec.size}, {spec.size}) "
                         f"input: {str(e).splitlines()[0][:200]}") from None
    return model, spec
