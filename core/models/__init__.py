"""Video models: one interface ``(B, T, 3, H, W)`` in [0, 1] -> logits ``(B, K)``."""

from core.models.nets import C3D, CNNRecurrent, FrameCNN, FrameEncoder, MotionStream
from core.models.registry import (ARCHITECTURES, ASSETS, DEFAULT_MODEL, MODEL_NAMES, ModelSpec,
                                  ScriptedVideoModel, available_models, build, load_classifier, load_model,
                                  load_torchscript, parse_spec, read_card, sha256_file)

__all__ = ["ARCHITECTURES", "ASSETS", "C3D", "CNNRecurrent", "DEFAULT_MODEL", "FrameCNN",
           "FrameEncoder", "MODEL_NAMES", "ModelSpec", "MotionStream", "ScriptedVideoModel",
           "available_models", "build", "load_classifier", "load_model", "load_torchscript", "parse_spec",
           "read_card", "sha256_file"]
