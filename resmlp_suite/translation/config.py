"""Options of the ResMLP sequence-to-sequence model (``--arch resmlp_seq2seq*``)."""
# No ``from __future__ import annotations``: fairseq reads the dataclass's field types at run time.
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models.transformer import DEFAULT_MAX_SOURCE_POSITIONS, DEFAULT_MAX_TARGET_POSITIONS
from fairseq.utils import safe_getattr
from torch import nn

from ..block import NORM_LAYERS
from ..token_mixers import INIT_SCHEMES, TOKEN_MIXERS

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}
ACTIVATION_CHOICES = ChoiceEnum(list(ACTIVATIONS))
TOKEN_MIXER_CHOICES = ChoiceEnum(list(TOKEN_MIXERS))
TOKEN_MIXER_INIT_CHOICES = ChoiceEnum(list(INIT_SCHEMES))
NORM_CHOICES = ChoiceEnum(list(NORM_LAYERS))
OUTPUT_NORM_CHOICES = ChoiceEnum(["same", *NORM_LAYERS])


@dataclass
class ResMLPSeq2SeqConfig(FairseqDataclass):
    """Defaults are ResMLP-6 (paper §3.6: d 512, FFN 2048, 6+6 layers, LayerScale init 0.2)."""

    activation_fn: ACTIVATION_CHOICES = field(
        default="relu", metadata={"help": "FFN activation (the paper's MT model keeps the transformer's)"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings and every residual branch"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on cross-attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    encoder_embed_dim: int = field(default=512, metadata={"help": "encoder width"})
    encoder_ffn_embed_dim: int = field(default=2048, metadata={"help": "encoder FFN hidden width"})
    encoder_layers: int = field(default=6, metadata={"help": "number of encoder blocks"})
    decoder_embed_dim: Optional[int] = field(default=None, metadata={"help": "decoder width (default: the encoder's)"})
    decoder_ffn_embed_dim: Optional[int] = field(
        default=None, metadata={"help": "decoder FFN hidden width (default: the encoder's)"}
    )
    decoder_layers: int = field(default=6, metadata={"help": "number of decoder blocks"})
    decoder_attention_heads: int = field(default=8, metadata={"help": "heads of the encoder-decoder attention"})
    layerscale_init: float = field(default=0.2, metadata={"help": "initial LayerScale of every residual branch"})
    token_mixer: TOKEN_MIXER_CHOICES = field(
        default="dense",
        metadata={"help": "token mixing of the self-attention sublayers: dense (the paper's T x T matrix), "
                          "toeplitz (one weight per relative offset), multihead (a matrix per channel group)"},
    )
    token_mixer_init: TOKEN_MIXER_INIT_CHOICES = field(
        default="trunc_normal",
        metadata={"help": "init of the token-mixing matrices: trunc_normal (std 0.02, the vision code's), "
                          "average (each row a uniform average of the tokens it sees), identity (plus noise)"},
    )
    token_mixer_heads: int = field(default=4, metadata={"help": "matrices per sublayer of --token-mixer multihead"})
    # Defaults measured on the Bible (docs/translation_study.md): LayerNorm ahead of the vision ResMLP's
    # Affine by 1.5-1.8 BLEU at d 128; the paper leaves the MT model's norm unstated.
    normalization: NORM_CHOICES = field(
        default="layernorm",
        metadata={"help": "pre-norm of every sublayer and the encoder's final norm: layernorm (the transformer's; "
                          "ahead on the Bible, see docs/translation_study.md) or affine (the vision ResMLP's)"},
    )
    # The norm that feeds the output projection decides alone whether a LayerNorm model learns the tests'
    # toy reversal (docs/translation_study_notes.md, "Eighth CPU sitting"), hence its own option and Affine.
    output_normalization: OUTPUT_NORM_CHOICES = field(
        default="affine",
        metadata={"help": "the decoder's final norm, before the output projection: affine (with a LayerNorm there "
                          "ResMLP does not learn the tests' toy reversal), layernorm, or same (as --normalization)"},
    )
    # On fairseq's command line these flags are shared with the translation task's length filter,
    # so the token-mixing matrices are exactly as large as the longest sentence training admits.
    max_source_positions: int = field(
        default=DEFAULT_MAX_SOURCE_POSITIONS,
        metadata={"help": "size of the encoder's token-mixing matrices (longest source)"},
    )
    max_target_positions: int = field(
        default=DEFAULT_MAX_TARGET_POSITIONS,
        metadata={"help": "size of the decoder's causal token-mixing matrices (longest target)"},
    )
    no_token_positional_embeddings: bool = field(
        default=False,
        metadata={"help": "no sinusoidal position embeddings (sinusoidal ones measured better, see README)"},
    )
    share_decoder_input_output_embed: bool = field(
        default=False, metadata={"help": "tie the decoder's input embedding and output projection"}
    )
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "share encoder, decoder and output embeddings (joined dictionary)"}
    )


# As in fairseq's transformer, decoder sizes left unset follow the encoder's.
ENCODER_TWINS = {"decoder_embed_dim": "encoder_embed_dim", "decoder_ffn_embed_dim": "encoder_ffn_embed_dim"}


def fill_defaults(args: Any, **overrides: Any) -> None:
    """Set every option ``args`` leaves unset to ``overrides`` or the ResMLP-6 default.

    ``args`` is whatever fairseq hands an architecture function: a Namespace, a DictConfig or
    a :class:`ResMLPSeq2SeqConfig`; options given on the command line are kept.
    """
    specs = [spec for spec in fields(ResMLPSeq2SeqConfig) if not spec.name.startswith("_")]
    unknown = set(overrides) - {spec.name for spec in specs}
    if unknown:
        raise ValueError(f"unknown ResMLP seq2seq options {sorted(unknown)}; expected fields of ResMLPSeq2SeqConfig")
    for spec in specs:  # encoder fields come first, so their twins can read them
        default = overrides.get(spec.name, spec.default)
        if default is None and spec.name in ENCODER_TWINS:
            default = safe_getattr(args, ENCODER_TWINS[spec.name])
        setattr(args, spec.name, safe_getattr(args, spec.name, default))


def check_length(num_tokens: int, limit: int, option: str) -> None:
    """A sentence longer than its token-mixing matrix has no defined output: say which option limits it."""
    if num_tokens > limit:
        raise ValueError(
            f"a sequence of {num_tokens} tokens exceeds --{option.replace('_', '-')}={limit}, the size of the "
            "token-mixing matrix; filter long sentences (fairseq: --skip-invalid-size-inputs-valid-test) "
            "or train a model with a larger limit"
        )


def token_mixer_kwargs(cfg: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"init": str(cfg.token_mixer_init)}
    if str(cfg.token_mixer) == "multihead":
        kwargs["heads"] = cfg.token_mixer_heads
    return kwargs


def block_options(cfg: Any, side: str) -> dict[str, Any]:
    """Keyword arguments of the :class:`~resmlp_suite.block.ResMLPBlock` s of ``side`` ("encoder"/"decoder")."""
    return dict(
        dim=getattr(cfg, f"{side}_embed_dim"),
        num_tokens=getattr(cfg, "max_source_positions" if side == "encoder" else "max_target_positions"),
        init_values=cfg.layerscale_init,
        drop=cfg.dropout,
        act_layer=ACTIVATIONS[str(cfg.activation_fn)],
        act_drop=cfg.activation_dropout,
        mlp_hidden_dim=getattr(cfg, f"{side}_ffn_embed_dim"),
        token_mixer=str(cfg.token_mixer),
        token_mixer_kwargs=token_mixer_kwargs(cfg),
        norm_layer=str(cfg.normalization),
    )
