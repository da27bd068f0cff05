"""Small video classifiers written from scratch (no torchvision).

Every model maps ``(B, T, 3, H, W)`` float in [0, 1] to logits ``(B, K)``.

* ``CNNRecurrent`` (``cnn_lstm`` / ``cnn_gru`` / ``cnn_rnn``): a per-step CNN ``N_C`` gives the
  feature sequence ``η = (η_1 … η_T)``; a recurrent head ``N_R`` maps it to logits — the split of
  Wu & Kwiatkowska Eq. (8), exposed as :meth:`CNNRecurrent.features` and :meth:`CNNRecurrent.head`.
  Step t sees frame t and its difference to frame t−1 (zero at t = 0): with single frames the
  LSTM never learnt the *sense* of a rotation (chance level on rotate_cw vs rotate_ccw, measured),
  because a still frame carries no motion by construction of our dataset.
* ``C3D``: 3D convolutions over (T, H, W) (stand-in for DeepSAVA's I3D).
* ``FrameCNN``: one 2D CNN applied at every time step, logits averaged over time (stand-in for
  Inception-v3). Our classes are defined by motion, so a single still frame carries no class
  information by construction; each time step therefore sees frame ``t`` stacked with frame
  ``t+1`` (6 channels, early fusion) — still a per-frame 2D CNN with temporal logit averaging.
* ``MotionStream``: optical flow computed *inside* the model (differentiable Horn–Schunck by
  default; Farneback / TV-L1 variants are non-differentiable black boxes), the ``T-1`` flow fields
  stacked as ``2(T-1)`` channels and classified by a 2D CNN — the motion stream of Inkawhich et al.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from core.flow import DIFFERENTIABLE, pair_flow

Head = Literal["lstm", "gru", "rnn"]


def _conv(cin: int, cout: int, k: int = 3, s: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FrameEncoder(nn.Module):
    """Per-frame CNN: ``(N, C, H, W) -> (N, feat_dim)``; keeps a 4×4 spatial layout so position,
    size and orientation of the object survive into the features."""

    def __init__(self, in_ch: int = 3, feat_dim: int = 128, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(in_ch, width, 5), _conv(width, 2 * width),
                                  _conv(2 * width, 2 * width), nn.AdaptiveAvgPool2d(4))
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, feat_dim), nn.ReLU(inplace=True))
        self.feat_dim = feat_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(x))


class CNNRecurrent(nn.Module):
    """Per-frame CNN features (N_C) followed by an LSTM / GRU / RNN head (N_R)."""

    def __init__(self, num_classes: int, head: Head = "lstm", feat_dim: int = 128, hidden: int = 96) -> None:
        super().__init__()
        self.encoder = FrameEncoder(6, feat_dim)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[head]
        self.rnn = rnn(feat_dim, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)
        self.head_type = head

    def feature_split(self):
        """Declare the N_C / N_R split (Eq. 8) to :class:`core.classifier.VideoClassifier`."""
        from core.classifier import FeatureSplit

        return FeatureSplit(self.features, self.head, self.affected_steps)

    @staticmethod
    def affected_steps(frames: list[int], t: int) -> list[int]:
        """Steps whose features change when ``frames`` change (step s sees frames s−1 and s)."""
        return sorted({f for f in frames} | {f + 1 for f in frames if f + 1 < t})

    def features(self, x: torch.Tensor, steps: list[int] | None = None) -> torch.Tensor:
        """N_C: ``(B, T, 3, H, W) -> η (B, T, feat_dim)`` (Wu & Kwiatkowska Eq. 8); with ``steps``,
        only those steps ``(B, len(steps), feat_dim)``."""
        b, t = x.shape[:2]
        steps = list(range(t)) if steps is None else list(steps)
        prev = [max(s - 1, 0) for s in steps]
        cur = x[:, steps]
        snip = torch.cat([cur, cur - x[:, prev]], dim=2)  # (B, S, 6, H, W)
        return self.encoder(snip.flatten(0, 1)).view(b, len(steps), -1)

    def head(self, eta: torch.Tensor) -> torch.Tensor:
        """N_R: ``η (B, T, feat_dim) -> logits (B, K)`` from the last hidden state."""
        out, _ = self.rnn(eta)
        return self.fc(out[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class C3D(nn.Module):
    """Small 3D CNN over (T, H, W)."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))

        self.body = nn.Sequential(block(3, width, (1, 2, 2)), block(width, 2 * width, (2, 2, 2)),
                                  block(2 * width, 4 * width, (2, 2, 2)), block(4 * width, 4 * width, (2, 2, 2)),
                                  nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x.transpose(1, 2)))  # (B, 3, T, H, W)


class FrameCNN(nn.Module):
    """2D CNN per time step (frame t with frame t+1), logits averaged over time."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.encoder = FrameEncoder(6, 128)
        self.fc = nn.Linear(128, num_classes)

    def feature_split(self):
        """N_C = per-pair logits, N_R = their mean (Eq. 8 applied to a temporal average)."""
        from core.classifier import FeatureSplit

        return FeatureSplit(self.features, self.head, self.affected_steps)

    @staticmethod
    def affected_steps(frames: list[int], t: int) -> list[int]:
        """Pairs (s, s+1) that contain a changed frame."""
        return sorted({s for f in frames for s in (f - 1, f) if 0 <= s < t - 1})

    def features(self, x: torch.Tensor, steps: list[int] | None = None) -> torch.Tensor:
        """``(B, T, 3, H, W) -> (B, S, K)`` logits of the frame pairs ``steps`` (all T − 1 if None)."""
        b, t = x.shape[:2]
        steps = list(range(t - 1)) if steps is None else list(steps)
        nxt = [s + 1 for s in steps]
        pairs = torch.cat([x[:, steps], x[:, nxt]], dim=2).flatten(0, 1)  # (B·S, 6, H, W)
        return self.fc(self.encoder(pairs)).view(b, len(steps), -1)

    def head(self, eta: torch.Tensor) -> torch.Tensor:
        """Mean of the per-pair logits over time."""
        return eta.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FlowCNN(nn.Module):
    """2D CNN on stacked flows ``(B, T-1, 2, H, W)`` (pixels) -> logits."""

    def __init__(self, num_classes: int, frames: int, width: int = 32, flow_scale: float = 2.0) -> None:
        super().__init__()
        self.flow_scale = flow_scale
        self.body = nn.Sequential(_conv(2 * (frames - 1), width, 3, 1), _conv(width, width),
                                  _conv(width, 2 * width), _conv(2 * width, 2 * width),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(2 * width * 4, num_classes)

    def forward(self, flows: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(flows.flatten(1, 2) / self.flow_scale))


class MotionStream(nn.Module):
    """Pixels → optical flow (inside the model) → stacked flow CNN → logits."""

    def __init__(self, num_classes: int, frames: int, flow_method: str = "horn_schunck") -> None:
        super().__init__()
        self.flow_method = flow_method
        self.classifier = FlowCNN(num_classes, frames)

    @property
    def differentiable(self) -> bool:
        return self.flow_method in DIFFERENTIABLE

    def flow(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W) -> (B, T-1, 2, H, W)`` flows in pixels."""
        b, t = x.shape[:2]
        f = pair_flow(x[:, :-1].flatten(0, 1), x[:, 1:].flatten(0, 1), self.flow_method)
        return f.to(x.dtype).view(b, t - 1, 2, *x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flow(x))
