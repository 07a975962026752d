"""The ResMLP encoder: a stack of non-causal :class:`~resmlp_suite.block.ResMLPBlock`."""
from __future__ import annotations

from typing import Any, Optional

from fairseq import utils
from fairseq.models import FairseqEncoder
from fairseq.models.transformer import TransformerEncoderBase
from torch import Tensor, nn

from ..block import ResMLPBlock, create_norm
from .config import block_options, check_length
from .embedding import TokenEmbedding


class ResMLPEncoder(FairseqEncoder):
    """Embeddings, ``encoder_layers`` ResMLP blocks, a final norm (Affine by default).

    The token-mixing matrix indexes absolute positions, so every sentence must start at position 0:
    fairseq's left-padded batches (its default ``--left-pad-source``) are turned into right-padded
    ones first, and the output (and its padding mask) stays in that layout. A sentence then gets the
    same encoding whatever its batch companions.
    """

    def __init__(self, cfg: Any, dictionary: Any, embed_tokens: nn.Embedding) -> None:
        super().__init__(dictionary)
        self.padding_idx = embed_tokens.padding_idx
        self.max_source_positions = cfg.max_source_positions
        self.embed = TokenEmbedding(cfg, embed_tokens, cfg.max_source_positions)
        self.layers = nn.ModuleList(
            [ResMLPBlock(**block_options(cfg, "encoder"), causal=False) for _ in range(cfg.encoder_layers)]
        )
        self.layer_norm = create_norm(str(cfg.normalization), embed_tokens.embedding_dim)

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.embed.embed_tokens

    def forward(
        self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, return_all_hiddens: bool = False
    ) -> dict[str, list[Tensor]]:
        """Returns the transformer's encoder-output dict: ``encoder_out`` is (T, B, C), right-padded."""
        check_length(src_tokens.size(1), self.max_source_positions, "max_source_positions")
        tokens = utils.convert_padding_direction(src_tokens, self.padding_idx, left_to_right=True)
        padding_mask = tokens.eq(self.padding_idx)
        mixing_mask = padding_mask if padding_mask.any() else None
        x = self.embed(tokens)
        states = []
        for layer in self.layers:
            x = layer(x, mixing_mask)
            if return_all_hiddens:
                states.append(x.transpose(0, 1))
        x = self.layer_norm(x)
        return {
            "encoder_out": [x.transpose(0, 1)],  # T x B x C
            "encoder_padding_mask": [padding_mask],  # B x T
            "encoder_embedding": [],
            "encoder_states": states,  # List[T x B x C]
            "src_tokens": [],
            "src_lengths": [] if src_lengths is None else [src_lengths],
        }

    # The output dict has the transformer's layout, so the transformer's reordering applies as is.
    reorder_encoder_out = TransformerEncoderBase.reorder_encoder_out

    def max_positions(self) -> int:
        return self.max_source_positions
