"""Token embeddings of the translation model: scaled lookup, sinusoidal positions, dropout."""
from __future__ import annotations

import math
from typing import Any, Optional

from fairseq.modules import FairseqDropout, PositionalEmbedding
from torch import Tensor, nn


class TokenEmbedding(nn.Module):
    """``sqrt(d)``-scaled token embeddings plus optional sinusoidal positions, then dropout (as the transformer)."""

    def __init__(self, cfg: Any, embed_tokens: nn.Embedding, max_positions: int) -> None:
        super().__init__()
        dim = embed_tokens.embedding_dim
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(dim)
        self.embed_positions = (
            None
            if cfg.no_token_positional_embeddings
            else PositionalEmbedding(max_positions, dim, embed_tokens.padding_idx, learned=False)
        )
        self.dropout_module = FairseqDropout(cfg.dropout, module_name=type(self).__name__)

    def forward(self, tokens: Tensor, incremental_state: Optional[dict] = None) -> Tensor:
        """``tokens`` (B, T) -> (B, T, C); in incremental decoding only the last position is embedded."""
        positions = None
        if self.embed_positions is not None:
            positions = self.embed_positions(tokens, incremental_state=incremental_state)
        if incremental_state is not None:
            tokens = tokens[:, -1:]
            positions = positions[:, -1:] if positions is not None else None
        x = self.embed_scale * self.embed_tokens(tokens)
        if positions is not None:
            x = x + positions
        return self.dropout_module(x)
