"""The watermark's parameters: context width h, green fraction gamma, logit bias delta."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WatermarkParams:
    context_width: int = 1  # h: how many previous token ids seed the green list
    gamma: float = 0.25  # expected fraction of the vocabulary that is green at each position
    delta: float = 2.0  # added to green logits before sampling

    def __post_init__(self) -> None:
        if self.context_width < 1:
            raise ValueError(f"context_width must be >= 1, got {self.context_width}")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma}")
        if not self.delta >= 0.0:  # also refuses NaN
            raise ValueError(f"delta must be >= 0, got {self.delta}")
