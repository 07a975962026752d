"""The fairseq ResMLP translation model: padding/batch invariance, causality, incremental decoding, limits."""
from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import pytest
import torch
from fairseq import models, options, utils
from fairseq.data import Dictionary, data_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import ARCH_MODEL_REGISTRY, FairseqDecoder, FairseqEncoderDecoderModel
from fairseq.sequence_generator import SequenceGenerator
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from resmlp_suite import Affine, CrossTokenLinear, ResMLPBlock
from resmlp_suite.translation.decoder import ResMLPDecoderLayer

# The way fairseq's tools load the plugin (--user-dir): registers --arch resmlp_seq2seq*.
utils.import_user_module(Namespace(user_dir=str(Path(__file__).resolve().parents[1] / "translation" / "resmlp_mt")))

VOCAB = 30
MAX_POSITIONS = 24
# Every research option must keep the guarantees below (invariances, causality, exact incremental decoding).
VARIANTS = {
    "defaults": {},
    "affine": {"normalization": "affine"},
    "toeplitz": {"token_mixer": "toeplitz"},
    "multihead": {"token_mixer": "multihead", "token_mixer_heads": 2},
    "init-average": {"token_mixer_init": "average"},
    "init-identity": {"token_mixer_init": "identity"},
    "layernorm-output": {"output_normalization": "layernorm"},
}
every_variant = pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))


pytestmark = pytest.mark.usefixtures("one_thread")


def make_task(joined: bool = True) -> TranslationTask:
    src = Dictionary()
    for i in range(VOCAB):
        src.add_symbol(f"w{i}")
    tgt = src
    if not joined:
        tgt = Dictionary()
        for i in range(VOCAB + 3):
            tgt.add_symbol(f"v{i}")
    return TranslationTask(TranslationConfig(), src, tgt)


def build(task: TranslationTask | None = None, **overrides) -> FairseqEncoderDecoderModel:
    """A tiny model in eval mode, its architecture applied the way fairseq's CLI does."""
    torch.manual_seed(0)
    settings = dict(
        arch="resmlp_seq2seq_tiny",
        encoder_embed_dim=32,
        encoder_ffn_embed_dim=64,
        decoder_attention_heads=2,
        max_source_positions=MAX_POSITIONS,
        max_target_positions=MAX_POSITIONS,
        share_all_embeddings=True,
    )
    args = Namespace(**{**settings, **overrides})
    model = ARCH_MODEL_REGISTRY[args.arch].build_model(args, task or make_task())
    # LayerScale 0.2 at init keeps branches small; larger scales make the checks below more sensitive.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
    return model.eval()


def sentences(lengths, seed=0) -> list[torch.Tensor]:
    """Random sentences ending in EOS (as fairseq's datasets store them)."""
    g = torch.Generator().manual_seed(seed)
    eos = make_task().source_dictionary.eos()
    return [torch.cat([torch.randint(4, 4 + VOCAB, (n - 1,), generator=g), torch.tensor([eos])]) for n in lengths]


def collate(sents, left_pad: bool, pad: int = 1) -> torch.Tensor:
    return data_utils.collate_tokens(sents, pad, left_pad=left_pad)


def encode(model, sents, left_pad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = collate(sents, left_pad)
    out = model.encoder(tokens, src_lengths=torch.tensor([len(s) for s in sents]))
    return out["encoder_out"][0].transpose(0, 1), out["encoder_padding_mask"][0]


def decoder_inputs(sents) -> torch.Tensor:
    """fairseq's prev_output_tokens: EOS then the target without its final EOS, right-padded."""
    eos = make_task().source_dictionary.eos()
    return collate([torch.cat([torch.tensor([eos]), s[:-1]]) for s in sents], left_pad=False)


def test_both_sides_use_the_shared_resmlp_block():
    model = build()
    assert all(type(layer) is ResMLPBlock for layer in model.encoder.layers)
    assert all(type(layer) is ResMLPDecoderLayer and isinstance(layer, ResMLPBlock) for layer in model.decoder.layers)
    assert not model.encoder.layers[0].linear_tokens.causal and model.decoder.layers[0].linear_tokens.causal
    assert isinstance(model.decoder.layers[0].linear_tokens, CrossTokenLinear)
    assert model.decoder.layers[0].linear_tokens.weight.shape == (MAX_POSITIONS, MAX_POSITIONS)
    assert model.encoder.embed_tokens is model.decoder.embed_tokens
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight
    assert model.max_positions() == (MAX_POSITIONS, MAX_POSITIONS)


@pytest.mark.parametrize("left_pad", [True, False])
@every_variant
def test_encoder_output_does_not_depend_on_batch_companions_or_padding(left_pad, variant):
    model = build(**variant)
    sents = sentences([5, 9, 3, 7])
    batch_out, mask = encode(model, sents, left_pad)
    for i, sent in enumerate(sents):
        alone, _ = encode(model, [sent], left_pad)
        n = len(sent)
        # Returned right-padded whatever the input layout: the real tokens come first.
        assert not mask[i, :n].any() and mask[i, n:].all()
        torch.testing.assert_close(batch_out[i, :n], alone[0], atol=1e-5, rtol=1e-5)


# Not at the average init: uniform rows are order-blind until trained, as intended.
@pytest.mark.parametrize("variant", [v for k, v in VARIANTS.items() if k != "init-average"],
                         ids=[k for k in VARIANTS if k != "init-average"])
def test_encoder_is_sensitive_to_token_order(variant):
    # The invariance above would also hold for a bag-of-words encoder; A must mix positions.
    model = build(**variant, no_token_positional_embeddings=True)
    sent = sentences([6])[0]
    swapped = sent.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    a, _ = encode(model, [sent], True)
    b, _ = encode(model, [swapped], True)
    assert not torch.allclose(a[0, 2:], b[0, 2:], atol=1e-4)


@every_variant
def test_decoder_is_causal_by_perturbation_and_by_gradient(variant):
    model = build(**variant)
    src = collate(sentences([6, 4]), left_pad=True)
    enc = model.encoder(src)
    prev = decoder_inputs(sentences([8, 8], seed=1))
    t = 3
    logits, _ = model.decoder(prev, enc)
    changed = prev.clone()
    changed[:, t + 1 :] = torch.randint(4, 4 + VOCAB, changed[:, t + 1 :].shape)
    logits_changed, _ = model.decoder(changed, enc)
    torch.testing.assert_close(logits[:, : t + 1], logits_changed[:, : t + 1])
    assert not torch.allclose(logits[:, t + 1 :], logits_changed[:, t + 1 :])

    embedded = {}
    handle = model.decoder.embed.register_forward_hook(lambda m, i, out: embedded.setdefault("x", out))
    embedded_out, _ = model.decoder(prev, enc)
    handle.remove()
    (grad,) = torch.autograd.grad(embedded_out[:, t].sum(), embedded["x"])
    assert grad[:, t + 1 :].abs().max() == 0
    assert (grad[:, : t + 1].abs().sum(-1) > 0).all()


def run_incremental(model, enc, prev, state=None):
    """Feed ``prev`` one position at a time through the incremental decoder; log-probs (B, T, V)."""
    state = {} if state is None else state
    steps = []
    for t in range(prev.size(1)):
        out = model.decoder(prev[:, : t + 1], enc, incremental_state=state)
        steps.append(model.get_normalized_probs(out, log_probs=True))
    return torch.cat(steps, dim=1), state


@every_variant
def test_incremental_decoding_matches_teacher_forcing(variant):
    model = build(**variant)
    enc = model.encoder(collate(sentences([7, 3, 5]), left_pad=True))
    prev = torch.cat([torch.full((3, 1), 2), torch.randint(4, 4 + VOCAB, (3, 9))], dim=1)
    full = model.get_normalized_probs(model.decoder(prev, enc), log_probs=True)
    stepped, state = run_incremental(model, enc, prev)
    torch.testing.assert_close(stepped, full, atol=1e-4, rtol=1e-4)
    # Each layer's mixer keeps the normalised inputs of the decoded positions in a buffer of max_tokens rows.
    layer = model.decoder.layers[0]
    cache = layer.get_incremental_state(state, "token_mixing")
    assert cache["history"].shape == (MAX_POSITIONS, 3, model.decoder.embed_tokens.embedding_dim)
    assert cache["length"] == prev.size(1)


@every_variant
def test_incremental_step_reads_the_cache_not_the_prefix(variant):
    model = build(**variant)
    enc = model.encoder(collate(sentences([5, 6]), left_pad=True))
    prev = torch.cat([torch.full((2, 1), 2), torch.randint(4, 4 + VOCAB, (2, 6))], dim=1)
    stepped, state = run_incremental(model, enc, prev[:, :-1])
    # Corrupt the already-decoded prefix: a decoder that recomputed it would change its output.
    corrupted = prev.clone()
    corrupted[:, 1:-1] = torch.randint(4, 4 + VOCAB, corrupted[:, 1:-1].shape)
    with_cache = model.decoder(corrupted, enc, incremental_state=state)[0][:, -1]
    full = model.decoder(prev, enc)[0][:, -1]
    torch.testing.assert_close(with_cache, full, atol=1e-4, rtol=1e-4)


@every_variant
def test_reorder_incremental_state_follows_beam_reordering(variant):
    model = build(**variant).double()  # exact comparisons: float32 rounding would blur a wrong reorder
    s0, s1 = sentences([5, 7])
    enc = model.encoder(collate([s0, s0, s1, s1], left_pad=True))  # 2 sentences x 2 beams

    def tokens(rows, steps):
        return torch.randint(4, 4 + VOCAB, (rows, steps))

    seq = torch.cat([torch.full((4, 1), 2), tokens(4, 3)], dim=1)
    _, state = run_incremental(model, enc, seq)
    # Beam search reorders hypotheses within a sentence, then drops the finished sentence 0.
    for new_order in (torch.tensor([1, 1, 3, 2]), torch.tensor([2, 3])):
        model.decoder.reorder_incremental_state_scripting(state, new_order)
        enc = model.encoder.reorder_encoder_out(enc, new_order)
        start = seq.size(1)
        seq = torch.cat([seq[new_order], tokens(len(new_order), 2)], dim=1)
        stepped = [model.decoder(seq[:, : t + 1], enc, incremental_state=state)[0] for t in range(start, seq.size(1))]
        full = model.decoder(seq, enc)[0][:, start:]
        torch.testing.assert_close(torch.cat(stepped, dim=1), full, atol=1e-10, rtol=1e-10)


class FullRecomputeDecoder(FairseqDecoder):
    """Hides the incremental interface, so fairseq's generator re-runs the whole prefix every step."""

    def __init__(self, decoder):
        super().__init__(decoder.dictionary)
        self.inner = decoder

    def forward(self, prev_output_tokens, encoder_out=None, **kwargs):
        return self.inner(prev_output_tokens, encoder_out)

    def max_positions(self):
        return self.inner.max_positions()


def generate(model, sents, beam=4, max_len_b=12, **kwargs):
    task = make_task()
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_b=max_len_b, **kwargs)
    src = collate(sents, left_pad=True)
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(s) for s in sents])}}
    return generator.generate([model], sample)


@every_variant
def test_beam_search_with_cache_equals_full_recompute(variant):
    model = build(**variant)
    recompute = FairseqEncoderDecoderModel(model.encoder, FullRecomputeDecoder(model.decoder)).eval()
    sents = sentences([6, 3, 8, 5])
    cached, full = generate(model, sents), generate(recompute, sents)
    for hyps_cached, hyps_full in zip(cached, full):
        assert len(hyps_cached) == len(hyps_full) == 4
        for a, b in zip(hyps_cached, hyps_full):
            assert torch.equal(a["tokens"], b["tokens"])
            torch.testing.assert_close(a["score"], b["score"], atol=1e-4, rtol=1e-4)


@every_variant
def test_translation_does_not_depend_on_batch_companions(variant):
    model = build(**variant)
    sents = sentences([6, 3, 8, 5], seed=3)
    batched = generate(model, sents)
    for sent, hyps in zip(sents, batched):
        (alone,) = generate(model, [sent])
        assert [h["tokens"].tolist() for h in hyps] == [h["tokens"].tolist() for h in alone]
        for a, b in zip(hyps, alone):
            torch.testing.assert_close(a["positional_scores"], b["positional_scores"], atol=1e-4, rtol=1e-4)


def test_over_long_input_gets_a_clear_error():
    model = build()
    too_long = collate(sentences([MAX_POSITIONS + 1]), left_pad=True)
    with pytest.raises(ValueError, match="exceeds --max-source-positions=24"):
        model.encoder(too_long)
    enc = model.encoder(collate(sentences([4]), left_pad=True))
    with pytest.raises(ValueError, match="exceeds --max-target-positions=24"):
        model.decoder(torch.full((1, MAX_POSITIONS + 1), 5), enc)


def test_generation_never_exceeds_max_target_positions():
    # max_len_b asks for far more than A holds: the generator clamps to max_decoder_positions() - 1.
    model = build()
    (hyps,) = generate(model, sentences([5]), beam=2, max_len_b=10 * MAX_POSITIONS, min_len=MAX_POSITIONS - 1)
    assert max(len(h["tokens"]) for h in hyps) == MAX_POSITIONS


def test_left_padded_targets_are_refused():
    model = build()
    enc = model.encoder(collate(sentences([4, 4]), left_pad=True))
    prev = collate([torch.tensor([2, 5, 6]), torch.tensor([2, 5])], left_pad=True)
    with pytest.raises(ValueError, match="right-padded targets"):
        model.decoder(prev, enc)


def test_share_all_embeddings_needs_a_joined_dictionary():
    with pytest.raises(ValueError, match="joined dictionary"):
        build(make_task(joined=False))
    separate = build(make_task(joined=False), share_all_embeddings=False)
    assert separate.decoder.output_projection.weight.shape[0] == VOCAB + 4 + 3


def parse(*argv):
    parser = options.get_training_parser()
    return options.parse_args_and_arch(parser, ["data-bin", "--task", "translation", *argv])


def test_default_architecture_is_resmlp_6():
    args = parse("--arch", "resmlp_seq2seq", "--max-source-positions", "24", "--max-target-positions", "20")
    model = models.build_model(convert_namespace_to_omegaconf(args).model, make_task())
    decoder_layer = model.decoder.layers[0]
    assert (len(model.encoder.layers), len(model.decoder.layers)) == (6, 6)
    assert decoder_layer.mlp_channels.fc1.weight.shape == (2048, 512)
    assert (decoder_layer.encoder_attn.num_heads, decoder_layer.linear_tokens.max_tokens) == (8, 20)
    assert model.encoder.layers[0].linear_tokens.max_tokens == 24
    assert torch.all(decoder_layer.ls1.gamma == 0.2) and isinstance(decoder_layer.mlp_channels.act, torch.nn.ReLU)


def test_architectures_set_paper_sizes_and_keep_command_line_values():
    args = parse("--arch", "resmlp_seq2seq_12", "--max-source-positions", "256")
    assert (args.encoder_layers, args.decoder_layers, args.encoder_embed_dim, args.decoder_ffn_embed_dim) == (
        12,
        12,
        512,
        2048,
    )
    assert (args.layerscale_init, args.decoder_attention_heads, args.max_source_positions) == (0.2, 8, 256)
    args = parse("--arch", "resmlp_seq2seq_tiny", "--encoder-embed-dim", "64", "--layerscale-init", "0.1")
    # Decoder sizes follow the encoder's unless given, as in fairseq's transformer.
    assert (args.encoder_embed_dim, args.decoder_embed_dim, args.encoder_layers, args.layerscale_init) == (
        64,
        64,
        2,
        0.1,
    )


def test_dropout_and_activation_options_reach_every_sublayer():
    model = build(dropout=0.3, attention_dropout=0.1, activation_dropout=0.2, activation_fn="gelu")
    block, layer = model.encoder.layers[0], model.decoder.layers[0]
    for b in (block, layer):
        assert (b.drop_tokens.p, b.mlp_channels.drop1.p, b.mlp_channels.drop2.p) == (0.3, 0.2, 0.3)
        assert isinstance(b.mlp_channels.act, torch.nn.GELU)
    assert (layer.drop_encoder_attn.p, layer.encoder_attn.dropout_module.p) == (0.3, 0.1)
    assert model.encoder.embed.dropout_module.p == model.decoder.embed.dropout_module.p == 0.3


def norm_types(model: FairseqEncoderDecoderModel) -> dict[str, str]:
    return {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, (torch.nn.LayerNorm, Affine))}


def test_output_normalization_sets_only_the_decoders_final_norm():
    same = norm_types(build(output_normalization="same"))
    defaults = norm_types(build())
    assert set(same.values()) == {"LayerNorm"}
    assert {name for name in same if same[name] != defaults[name]} == {"decoder.layer_norm"}
    assert defaults["decoder.layer_norm"] == "Affine"
    assert set(norm_types(build(normalization="affine")).values()) == {"Affine"}  # the paper's model


def test_checkpoint_with_another_output_norm_names_the_option():
    """A LayerNorm model saved when the final norm followed --normalization does not load into today's
    default (an Affine there) with a list of missing keys, but with the option that loads it."""
    saved = build(output_normalization="same").state_dict()
    with pytest.raises(ValueError, match="decoder.layer_norm.*--output-normalization same"):
        build().load_state_dict(saved)
    build(output_normalization="same").load_state_dict(saved)
