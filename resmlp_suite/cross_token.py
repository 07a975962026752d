"""The cross-token linear layer: ResMLP's token-mixing matrix ``A``."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


class CrossTokenLinear(nn.Module):
    """One ``max_tokens x max_tokens`` matrix shared by all channels, applied along the token axis.

    ``out[b, i, c] = sum_j weight[i, j] * x[b, j, c] + bias[i]`` for an input of shape ``(B, T, C)``.
    A shorter sequence (``T < max_tokens``) uses the ``T x T`` top-left sub-matrix of ``weight``:
    the paper's "pad with zeros and extract the sub-matrix" without materialising the padding.

    ``causal=True`` makes ``A`` lower-triangular: token ``t`` only sees tokens ``<= t``. The mask is
    applied inside the forward pass, so the weights above the diagonal never act and get zero gradient.
    ``key_padding_mask`` (``(B, T)``, True at padding) removes padded tokens from every mixture.
    """

    def __init__(self, max_tokens: int, causal: bool = False, bias: bool = True) -> None:
        super().__init__()
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens = max_tokens
        self.causal = causal
        self.weight = nn.Parameter(torch.empty(max_tokens, max_tokens))
        self.bias = nn.Parameter(torch.empty(max_tokens)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same default as nn.Linear(max_tokens, max_tokens); model builders re-initialise as they need.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.max_tokens)
            nn.init.uniform_(self.bias, -bound, bound)

    def check_length(self, num_tokens: int) -> None:
        if num_tokens > self.max_tokens:
            raise ValueError(
                f"CrossTokenLinear holds a {self.max_tokens}x{self.max_tokens} token-mixing matrix, "
                f"so it takes at most {self.max_tokens} tokens; got a sequence of {num_tokens}"
            )

    def mixing_matrix(self, num_tokens: int) -> torch.Tensor:
        """The ``T x T`` matrix actually applied (sub-matrix, lower-triangular if causal)."""
        self.check_length(num_tokens)
        weight = self.weight[:num_tokens, :num_tokens]
        return weight.tril() if self.causal else weight

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"CrossTokenLinear expects (batch, tokens, channels), got shape {tuple(x.shape)}")
        num_tokens = x.shape[1]
        if key_padding_mask is not None:
            if key_padding_mask.shape != x.shape[:2]:
                raise ValueError(
                    f"key_padding_mask must have shape (batch, tokens) = {tuple(x.shape[:2])}, "
                    f"got {tuple(key_padding_mask.shape)}"
                )
            x = x.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        weight = self.mixing_matrix(num_tokens).to(x.dtype).expand(x.shape[0], -1, -1)
        # A batched (T x T) @ (T x C) over the batch: no transposed copy of the activations, and the
        # bias is summed inside the GEMM rather than by a separate pass.
        if self.bias is None:
            return torch.bmm(weight, x)
        return torch.baddbmm(self.bias[:num_tokens].to(x.dtype).unsqueeze(-1), weight, x)

    def step(self, history: torch.Tensor) -> torch.Tensor:
        """Causal output ``(B, 1, C)`` for the last position of ``history`` (``(B, t+1, C)``).

        Incremental decoding: row ``t`` of ``A`` applied to the cached inputs, so a step costs
        ``O(t * C)`` like attention and never recomputes the prefix.
        """
        if not self.causal:
            raise RuntimeError("step() is only defined for a causal CrossTokenLinear")
        t = history.shape[1] - 1
        self.check_length(t + 1)
        row = self.weight[t, : t + 1].to(history.dtype)
        out = torch.einsum("j,bjc->bc", row, history).unsqueeze(1)
        if self.bias is not None:
            out = out + self.bias[t].to(history.dtype)
        return out

    def extra_repr(self) -> str:
        return f"max_tokens={self.max_tokens}, causal={self.causal}, bias={self.bias is not None}"
