"""fairseq model ``resmlp_seq2seq``: the paper's sequence-to-sequence ResMLP (§2, §3.6).

A Vaswani encoder-decoder whose self-attention sublayers are ResMLP's token-mixing matrix (the
image model's :class:`~resmlp_suite.cross_token.CrossTokenLinear`): full in the encoder,
lower-triangular in the decoder, which keeps its encoder-decoder attention. Importing this module
registers the model and its architectures::

    fairseq-train data-bin --user-dir translation/resmlp_mt --arch resmlp_seq2seq_tiny ...
"""
from __future__ import annotations

from typing import Any

from fairseq.models import FairseqEncoderDecoderModel, register_model, register_model_architecture
from fairseq.models.transformer import Embedding

from ..block import init_resmlp_weights
from .config import ResMLPSeq2SeqConfig, fill_defaults
from .decoder import ResMLPDecoder
from .encoder import ResMLPEncoder


@register_model("resmlp_seq2seq", dataclass=ResMLPSeq2SeqConfig)
class ResMLPSeq2SeqModel(FairseqEncoderDecoderModel):
    """ResMLP encoder-decoder for translation; see :class:`ResMLPSeq2SeqConfig` for its options."""

    @classmethod
    def build_model(cls, cfg: Any, task: Any) -> "ResMLPSeq2SeqModel":
        fill_defaults(cfg)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        if cfg.share_all_embeddings:
            if src_dict != tgt_dict:
                raise ValueError(
                    "--share-all-embeddings requires a joined dictionary (fairseq-preprocess --joined-dictionary)"
                )
            if cfg.encoder_embed_dim != cfg.decoder_embed_dim:
                raise ValueError(
                    "--share-all-embeddings requires --encoder-embed-dim to match --decoder-embed-dim, got "
                    f"{cfg.encoder_embed_dim} and {cfg.decoder_embed_dim}"
                )
            encoder_embed = Embedding(len(src_dict), cfg.encoder_embed_dim, src_dict.pad())
            decoder_embed = encoder_embed
            cfg.share_decoder_input_output_embed = True
        else:
            encoder_embed = Embedding(len(src_dict), cfg.encoder_embed_dim, src_dict.pad())
            decoder_embed = Embedding(len(tgt_dict), cfg.decoder_embed_dim, tgt_dict.pad())
        encoder = ResMLPEncoder(cfg, src_dict, encoder_embed)
        decoder = ResMLPDecoder(cfg, tgt_dict, decoder_embed)
        # The ResMLP init on the token-mixing and FFN maps; embeddings and cross-attention keep fairseq's.
        for block in [*encoder.layers, *decoder.layers]:
            block.linear_tokens.apply(init_resmlp_weights)
            block.mlp_channels.apply(init_resmlp_weights)
        return cls(encoder, decoder)


@register_model_architecture("resmlp_seq2seq", "resmlp_seq2seq_12")
def resmlp_seq2seq_12(args: Any) -> None:
    """ResMLP-12: 12 + 12 layers, otherwise ResMLP-6."""
    fill_defaults(args, encoder_layers=12, decoder_layers=12)


@register_model_architecture("resmlp_seq2seq", "resmlp_seq2seq_tiny")
def resmlp_seq2seq_tiny(args: Any) -> None:
    """A CPU-sized model for tests and demos: 2 + 2 layers, d 128, FFN 512, 4 heads."""
    fill_defaults(
        args,
        encoder_embed_dim=128,
        encoder_ffn_embed_dim=512,
        encoder_layers=2,
        decoder_layers=2,
        decoder_attention_heads=4,
    )
