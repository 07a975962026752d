"""The token-mixer family: every registered mixer against an explicit reference, causality, padding,
incremental steps and beam reordering; init schemes; the registry and injection into the blocks."""
from __future__ import annotations

import pytest
import timm
import torch

from resmlp_suite import ResMLPBlock
from resmlp_suite.token_mixers import INIT_SCHEMES, TOKEN_MIXERS, CrossTokenLinear, TokenMixer, create_token_mixer
from resmlp_suite.vision import fold_for_inference

B, T, C = 3, 7, 8
MIXERS = sorted(TOKEN_MIXERS)
per_mixer = pytest.mark.parametrize("name", MIXERS)


def make(name: str, max_tokens: int = T, causal: bool = False, init: str = "trunc_normal", seed: int = 0) -> TokenMixer:
    torch.manual_seed(seed)
    kwargs = {"heads": 2} if name == "multihead" else {}
    mixer = create_token_mixer(name, max_tokens, C, causal=causal, init=init, **kwargs)
    with torch.no_grad():
        mixer.bias.normal_()  # non-zero so that every check also covers the bias
    return mixer


def reference_matrices(mixer: TokenMixer, n: int) -> torch.Tensor:
    """``(heads, n, n)`` built entry by entry from the raw parameters, independently of the implementation."""
    w = mixer.weight.detach()
    out = torch.zeros(mixer.heads, n, n)
    for i in range(n):
        for j in range(n):
            if mixer.causal and j > i:
                continue
            if isinstance(mixer, CrossTokenLinear):
                out[0, i, j] = w[i, j]
            elif name_of(mixer) == "toeplitz":
                out[0, i, j] = w[i - j] if mixer.causal else w[i - j + mixer.max_tokens - 1]
            else:
                out[:, i, j] = w[:, i, j]
    return out


def name_of(mixer: TokenMixer) -> str:
    return next(name for name, cls in TOKEN_MIXERS.items() if type(mixer) is cls)


@per_mixer
@pytest.mark.parametrize("causal", [False, True])
def test_matches_the_explicit_reference(name, causal):
    mixer = make(name, max_tokens=T + 2, causal=causal)
    x = torch.randn(B, T, C)
    a = reference_matrices(mixer, T)
    groups = x.view(B, T, mixer.heads, C // mixer.heads)
    bias = mixer.bias.detach().view(mixer.heads, -1)[:, :T]
    expected = torch.einsum("hij,bjhd->bihd", a, groups) + bias.t()[None, :, :, None]
    torch.testing.assert_close(mixer(x), expected.reshape(B, T, C))


@per_mixer
@pytest.mark.parametrize("causal", [False, True])
def test_shorter_sequence_uses_top_left_submatrix(name, causal):
    # The paper's rule: pad to max_tokens with zeros, apply the full matrix, keep the first T rows.
    mixer = make(name, max_tokens=11, causal=causal)
    x = torch.randn(B, T, C)
    padded = torch.cat([x, torch.zeros(B, 11 - T, C)], dim=1)
    torch.testing.assert_close(mixer(x), mixer(padded)[:, :T])


@per_mixer
def test_bad_shapes_and_lengths_raise(name):
    mixer = make(name)
    with pytest.raises(ValueError, match=rf"at most {T} tokens; got a sequence of {T + 1}"):
        mixer(torch.randn(B, T + 1, C))
    with pytest.raises(ValueError, match=r"\(batch, tokens, channels\), got shape \(7, 8\)"):
        mixer(torch.randn(T, C))
    with pytest.raises(ValueError, match=r"must have shape \(batch, tokens\) = \(3, 7\), got \(3, 6\)"):
        mixer(torch.randn(B, T, C), key_padding_mask=torch.zeros(B, T - 1, dtype=torch.bool))


@per_mixer
def test_causal_outputs_ignore_future_tokens_in_value_and_gradient(name):
    mixer = make(name, causal=True)
    x = torch.randn(B, T, C, requires_grad=True)
    out = mixer(x)
    for t in range(T - 1):
        perturbed = x.detach().clone()
        perturbed[:, t + 1 :] += torch.randn(B, T - t - 1, C)
        out_perturbed = mixer(perturbed)
        torch.testing.assert_close(out_perturbed[:, : t + 1], out[:, : t + 1].detach(), rtol=0, atol=0)
        assert not torch.allclose(out_perturbed[:, t + 1 :], out[:, t + 1 :].detach())
        (grad,) = torch.autograd.grad(out[:, t].sum(), x, retain_graph=True)
        assert grad[:, t + 1 :].abs().max() == 0 and grad[:, t].abs().max() > 0


@per_mixer
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_future_token_reaches_no_earlier_output_nor_gradient(name, value):
    mixer = make(name, causal=True)
    x = torch.randn(B, T, C, dtype=torch.float64)
    reference = mixer.double()(x)
    t = T // 2
    poisoned = x.clone()
    poisoned[0, t, 1] = value  # one channel of one token of one sequence
    poisoned.requires_grad_(True)
    out = mixer(poisoned)
    torch.testing.assert_close(out[:, :t], reference[:, :t], rtol=0, atol=0)
    torch.testing.assert_close(out[1:], reference[1:], rtol=0, atol=0)  # other sequences untouched
    assert not torch.isfinite(out[0, t:, 1]).any()  # from t on, the bad value is in the output's past
    (grad,) = torch.autograd.grad(out[:, :t].sum(), poisoned, retain_graph=True)
    assert torch.isfinite(grad).all() and grad[:, t:].abs().max() == 0
    mixer.zero_grad()
    out[:, :t].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in mixer.parameters() if p.grad is not None)


def test_causal_dense_weight_gets_no_gradient_above_diagonal():
    mixer = make("dense", max_tokens=T + 2, causal=True)
    mixer(torch.randn(B, T, C)).square().sum().backward()
    grad = mixer.weight.grad
    assert torch.count_nonzero(grad.triu(diagonal=1)) == 0
    assert torch.count_nonzero(grad[:T, :T].tril()) == T * (T + 1) // 2  # the used lower triangle does learn
    assert torch.count_nonzero(grad[T:]) == 0 and torch.count_nonzero(grad[:, T:]) == 0  # unused rows/columns


@per_mixer
@pytest.mark.parametrize("causal", [False, True])
def test_padded_tokens_do_not_affect_real_tokens(name, causal):
    mixer = make(name, causal=causal)
    lengths = torch.tensor([T, 4, 2])
    mask = torch.arange(T)[None, :] >= lengths[:, None]  # True at padding
    x = torch.randn(B, T, C).masked_fill(mask.unsqueeze(-1), 0.0)
    garbage = torch.where(mask.unsqueeze(-1), 100 * torch.randn(B, T, C), x)
    real = ~mask.unsqueeze(-1)
    out = mixer(x, key_padding_mask=mask)
    torch.testing.assert_close(mixer(garbage, key_padding_mask=mask) * real, out * real, rtol=0, atol=0)
    for b, length in enumerate(lengths.tolist()):  # each sequence alone, unpadded, gives the same outputs
        torch.testing.assert_close(out[b : b + 1, :length], mixer(x[b : b + 1, :length]))


def run_steps(mixer: TokenMixer, x: torch.Tensor, state=None, start: int = 0):
    outs = []
    for t in range(start, x.shape[1]):
        out, state = mixer.step(x[:, t : t + 1], state, t)
        outs.append(out)
    return torch.cat(outs, dim=1), state


# Every mixer with every init it accepts (toeplitz refuses "average": see its own test).
@pytest.mark.parametrize("name, init", [(name, init) for name in MIXERS for init in INIT_SCHEMES
                                        if (name, init) != ("toeplitz", "average")])
def test_steps_equal_the_full_causal_forward_and_follow_reordering(name, init):
    mixer = make(name, max_tokens=T + 3, causal=True, init=init).double()
    x = torch.randn(4, T, C, dtype=torch.float64)
    stepped, state = run_steps(mixer, x[:, :4])
    torch.testing.assert_close(stepped, mixer(x[:, :4]), rtol=1e-12, atol=1e-12)
    # Beam search: reorder within the batch, then drop rows; the continuation matches the full forward.
    for order in (torch.tensor([1, 1, 3, 2]), torch.tensor([2, 0])):
        state = mixer.reorder_state(state, order)
        x = x[order]
    continued, _ = run_steps(mixer, x, state, start=4)
    torch.testing.assert_close(continued, mixer(x)[:, 4:], rtol=1e-12, atol=1e-12)


@per_mixer
def test_step_misuse_raises(name):
    x = torch.randn(B, 1, C)
    with pytest.raises(RuntimeError, match="causal"):
        make(name).step(x, None, 0)
    causal = make(name, causal=True)
    with pytest.raises(ValueError, match=r"positions 0\.\.1; the state holds 0"):
        causal.step(x, None, 2)  # no history
    with pytest.raises(ValueError, match=r"position must be >= 0, got -1"):
        causal.step(x, None, -1)
    _, state = causal.step(x, None, 0)
    with pytest.raises(ValueError, match="the state holds 1"):
        causal.step(x, state, 3)  # a position skipped
    with pytest.raises(ValueError, match=r"newest position only"):
        causal.step(torch.randn(B, 2, C), state, 1)


def test_init_schemes():
    avg = make("dense", causal=True, init="average").mixing_matrix(T)
    torch.testing.assert_close(avg.sum(dim=1), torch.ones(T))  # a running average: rows sum to one
    assert torch.equal(avg[3, :4], torch.full((4,), 0.25))
    assert torch.allclose(make("multihead", init="average").mixing_matrix(T), torch.full((2, T, T), 1 / T))
    for name in MIXERS:
        identity = make(name, causal=True, init="identity").mixing_matrix(T)
        assert (identity.diagonal(dim1=-2, dim2=-1) > 0.9).all() and identity.tril(-1).abs().max() < 0.1
        plain = make(name, init="trunc_normal").weight
        assert 0.01 < plain.std() < 0.03 and plain.mean().abs() < 0.01  # timm's trunc_normal_, std 0.02


def test_toeplitz_ties_weights_by_offset_and_refuses_the_average_init():
    a = make("toeplitz", max_tokens=T).mixing_matrix(T)
    for offset in range(-T + 1, T):
        diagonal = a.diagonal(offset=-offset)
        assert torch.equal(diagonal, diagonal[:1].expand_as(diagonal))
    assert make("toeplitz", max_tokens=50).weight.numel() == 99
    assert make("toeplitz", max_tokens=50, causal=True).weight.numel() == 50
    with pytest.raises(ValueError, match="no 'average' init"):
        create_token_mixer("toeplitz", T, C, init="average")


def test_registry_errors_and_a_new_mixer_in_one_class():
    with pytest.raises(ValueError, match=r"unknown token mixer 'nope'; expected one of \['dense', 'multihead', 'toeplitz'\]"):
        create_token_mixer("nope", T, C)
    with pytest.raises(ValueError, match="unknown token-mixing init 'zeros'"):
        create_token_mixer("dense", T, C, init="zeros")
    with pytest.raises(ValueError, match="divides the width 8; got 3"):
        create_token_mixer("multihead", T, C, heads=3)

    class PreviousToken(TokenMixer):  # a fixed shift: only the matrix is defined, the rest is inherited
        def __init__(self, max_tokens, dim=None, causal=False, init="trunc_normal"):
            super().__init__(max_tokens, causal, init)

        def reset_parameters(self):
            pass

        def mixing_matrix(self, num_tokens):
            return torch.ones(num_tokens, num_tokens).tril(-1).triu(-1)

    block = ResMLPBlock(C, T, causal=True, token_mixer=PreviousToken, init_values=1.0)
    x = torch.randn(B, T, C)
    out = block.linear_tokens(x)
    assert torch.equal(out[:, 1:], x[:, :-1]) and torch.equal(out[:, 0], torch.zeros(B, C))
    stepped, _ = run_steps(block.linear_tokens, x)
    torch.testing.assert_close(stepped, out)


@pytest.mark.parametrize("options", [dict(token_mixer="toeplitz"), dict(token_mixer="multihead", token_mixer_kwargs={"heads": 4}),
                                     dict(norm_layer="layernorm"), dict(token_mixer_kwargs={"init": "identity"})])
def test_vision_model_takes_every_option(options):
    model = timm.create_model("resmlp_tiny_p4", depth=2, **options).eval()
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    block = model.blocks[0]
    assert isinstance(block.linear_tokens, TOKEN_MIXERS[options.get("token_mixer", "dense")])
    if block.linear_tokens.heads == 1 and options.get("norm_layer", "affine") == "affine":
        torch.testing.assert_close(fold_for_inference(model)(x), model(x), atol=1e-4, rtol=1e-4)
    else:
        with pytest.raises((TypeError, ValueError), match="fold_for_inference folds"):
            fold_for_inference(model)
