"""The ResMLP decoder: causal token mixing, encoder-decoder attention, FFN; with a real incremental cache."""
from __future__ import annotations

from typing import Any, Optional

from fairseq.incremental_decoding_utils import with_incremental_state
from fairseq.models import FairseqIncrementalDecoder
from fairseq.modules import MultiheadAttention
from torch import Tensor, nn

from ..affine import LayerScale
from ..block import ResMLPBlock, create_norm
from .config import block_options, check_length
from .embedding import TokenEmbedding

IncrementalState = dict[str, dict[str, Optional[Tensor]]]


@with_incremental_state
class ResMLPDecoderLayer(ResMLPBlock):
    """A causal ResMLP block with a cross-attention sublayer between token and channel mixing.

    Each sublayer is ``x + LayerScale(dropout(f(norm(x))))``. In incremental decoding the token mixer
    keeps its own state (:meth:`~resmlp_suite.token_mixers.TokenMixer.step`): a step applies row ``t``
    of the lower-triangular ``A`` to the normalised inputs seen so far, never recomputing the prefix.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(**block_options(cfg, "decoder"), causal=True)
        dim = cfg.decoder_embed_dim
        self.encoder_attn_norm = create_norm(str(cfg.normalization), dim)
        self.encoder_attn = MultiheadAttention(
            dim,
            cfg.decoder_attention_heads,
            kdim=cfg.encoder_embed_dim,
            vdim=cfg.encoder_embed_dim,
            dropout=cfg.attention_dropout,
            encoder_decoder_attention=True,
        )
        self.drop_encoder_attn = nn.Dropout(cfg.dropout)
        self.ls_encoder_attn = LayerScale(dim, cfg.layerscale_init)

    def forward(
        self,
        x: Tensor,
        encoder_out: Tensor,
        encoder_padding_mask: Optional[Tensor],
        incremental_state: Optional[IncrementalState] = None,
        position: int = 0,
    ) -> Tensor:
        """``x`` (B, T, C) -> (B, T, C); with ``incremental_state``, ``x`` is the newest position only
        and ``position`` its index in the target."""
        if incremental_state is None:
            x = self.token_mixing(x)
        else:
            x = self.token_mixing_step(x, incremental_state, position)
        x = self.encoder_attention(x, encoder_out, encoder_padding_mask, incremental_state)
        return self.channel_mixing(x)

    def token_mixing_step(self, x: Tensor, incremental_state: IncrementalState, position: int) -> Tensor:
        """Causal token mixing of the newest position ``x`` (B, 1, C) from the mixer's cached state."""
        state = self.get_incremental_state(incremental_state, "token_mixing") if position > 0 else None
        mixed, state = self.linear_tokens.step(self.norm1(x), state, position)
        self.set_incremental_state(incremental_state, "token_mixing", state)
        return self._residual(x, self.drop_tokens(mixed), self.ls1)

    def encoder_attention(
        self,
        x: Tensor,
        encoder_out: Tensor,
        encoder_padding_mask: Optional[Tensor],
        incremental_state: Optional[IncrementalState],
    ) -> Tensor:
        query = self.encoder_attn_norm(x).transpose(0, 1)  # fairseq's attention is time-first
        attended, _ = self.encoder_attn(
            query=query,
            key=encoder_out,
            value=encoder_out,
            key_padding_mask=encoder_padding_mask,
            incremental_state=incremental_state,
            static_kv=True,
            need_weights=False,
        )
        return self._residual(x, self.drop_encoder_attn(attended.transpose(0, 1)), self.ls_encoder_attn)

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor) -> None:
        """Beam search reorders (and drops finished) hypotheses: follow it along the batch axis."""
        state = self.get_incremental_state(incremental_state, "token_mixing")
        if state is not None:
            self.set_incremental_state(incremental_state, "token_mixing", self.linear_tokens.reorder_state(state, new_order))


class ResMLPDecoder(FairseqIncrementalDecoder):
    """Embeddings, ``decoder_layers`` :class:`ResMLPDecoderLayer`, a final norm, the output projection."""

    def __init__(self, cfg: Any, dictionary: Any, embed_tokens: nn.Embedding) -> None:
        super().__init__(dictionary)
        self.padding_idx = embed_tokens.padding_idx
        self.max_target_positions = cfg.max_target_positions
        self.embed = TokenEmbedding(cfg, embed_tokens, cfg.max_target_positions)
        self.layers = nn.ModuleList([ResMLPDecoderLayer(cfg) for _ in range(cfg.decoder_layers)])
        dim = cfg.decoder_embed_dim
        output_norm = str(cfg.output_normalization)
        self.layer_norm = create_norm(str(cfg.normalization) if output_norm == "same" else output_norm, dim)
        self.output_projection = nn.Linear(dim, len(dictionary), bias=False)
        if cfg.share_decoder_input_output_embed:
            self.output_projection.weight = embed_tokens.weight
        else:
            nn.init.normal_(self.output_projection.weight, mean=0, std=dim**-0.5)

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.embed.embed_tokens

    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[dict[str, list[Tensor]]] = None,
        incremental_state: Optional[IncrementalState] = None,
        features_only: bool = False,
        **kwargs: Any,
    ) -> tuple[Tensor, dict[str, Any]]:
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[dict[str, list[Tensor]]] = None,
        incremental_state: Optional[IncrementalState] = None,
        **kwargs: Any,
    ) -> tuple[Tensor, dict[str, Any]]:
        """``prev_output_tokens`` (B, T) right-padded -> features (B, T, C) (B, 1, C incrementally)."""
        if encoder_out is None:
            raise ValueError("the ResMLP decoder needs the encoder output (it has no language-model mode)")
        check_length(prev_output_tokens.size(1), self.max_target_positions, "max_target_positions")
        # Causal mixing by absolute position: a left pad would shift the whole sentence. Checked once per
        # batch, not at every decoding step (the generator's prefixes start with EOS).
        if incremental_state is None and prev_output_tokens[:, 0].eq(self.padding_idx).any():
            raise ValueError("the ResMLP decoder expects right-padded targets; do not pass --left-pad-target True")
        enc = encoder_out["encoder_out"][0]
        enc_mask = encoder_out["encoder_padding_mask"][0] if encoder_out["encoder_padding_mask"] else None
        x = self.embed(prev_output_tokens, incremental_state)
        inner_states = [x]
        position = prev_output_tokens.size(1) - 1  # of the newest token, in incremental decoding
        for layer in self.layers:
            x = layer(x, enc, enc_mask, incremental_state, position)
            inner_states.append(x)
        # Cross-attention runs over the encoder's right-padded layout, not the caller's source
        # layout, so its weights are not returned as alignments.
        return self.layer_norm(x), {"attn": [None], "inner_states": inner_states}

    def output_layer(self, features: Tensor) -> Tensor:
        return self.output_projection(features)

    def upgrade_state_dict_named(self, state_dict: dict[str, Tensor], name: str) -> dict[str, Tensor]:
        # Before --output-normalization the final norm followed --normalization: a LayerNorm checkpoint
        # from then has a LayerNorm where today's default has an Affine. Name the option, not the keys.
        prefix = f"{name}.layer_norm." if name else "layer_norm."
        saved = {key[len(prefix):] for key in state_dict if key.startswith(prefix)}
        expected = set(self.layer_norm.state_dict())
        if saved and saved != expected:
            raise ValueError(
                f"the checkpoint's {prefix[:-1]} holds {sorted(saved)} where this model's "
                f"{type(self.layer_norm).__name__} has {sorted(expected)}: load it with the --output-normalization "
                "it was trained with; one saved before that option existed had --output-normalization same "
                "(fairseq-generate: --model-overrides \"{'output_normalization': 'same'}\")")
        return state_dict

    def max_positions(self) -> int:
        return self.max_target_positions
