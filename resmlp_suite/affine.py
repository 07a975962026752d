"""Per-channel affine maps: ResMLP's normalisation replacement and LayerScale."""
from __future__ import annotations

import torch
from torch import nn


class Affine(nn.Module):
    """``alpha * x + beta`` over the last (channel) axis; identity at init.

    Replaces LayerNorm in ResMLP: no statistics are computed, so it can be folded into the
    adjacent linear layer at inference (see :func:`resmlp_suite.vision.fold_for_inference`).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)

    def extra_repr(self) -> str:
        return f"{self.alpha.numel()}"


class LayerScale(nn.Module):
    """Per-channel scale ``gamma * x`` on a residual branch, ``gamma`` initialised to ``init_values``."""

    def __init__(self, dim: int, init_values: float = 1e-4) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"{self.gamma.numel()}, init_values={self.init_values}"
