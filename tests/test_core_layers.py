"""The shared core: Affine, LayerScale, CrossTokenLinear and ResMLPBlock."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resmlp_suite import Affine, CrossTokenLinear, LayerScale, ResMLPBlock

B, T, C = 3, 7, 5


def _layer(max_tokens: int = T, causal: bool = False, seed: int = 0) -> CrossTokenLinear:
    torch.manual_seed(seed)
    layer = CrossTokenLinear(max_tokens, causal=causal)
    with torch.no_grad():
        layer.bias.normal_()  # non-zero so that every check also covers the bias
    return layer


def test_affine_is_identity_at_init_and_applies_alpha_beta() -> None:
    x = torch.randn(B, T, C)
    affine = Affine(C)
    assert torch.equal(affine(x), x)
    with torch.no_grad():
        affine.alpha.normal_()
        affine.beta.normal_()
    torch.testing.assert_close(affine(x), affine.alpha * x + affine.beta)


def test_layer_scale_multiplies_channels_by_init_value() -> None:
    x = torch.randn(B, T, C)
    scale = LayerScale(C, init_values=0.1)
    torch.testing.assert_close(scale(x), 0.1 * x)


def test_cross_token_linear_matches_einsum_reference() -> None:
    layer = _layer()
    x = torch.randn(B, T, C)
    expected = torch.einsum("ij,bjc->bic", layer.weight, x) + layer.bias[None, :, None]
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("causal", [False, True])
def test_shorter_sequence_uses_top_left_submatrix(causal: bool) -> None:
    # The paper's rule: pad to max_tokens with zeros, apply the full matrix, keep the first T rows.
    layer = _layer(max_tokens=11, causal=causal)
    x = torch.randn(B, T, C)
    padded = torch.cat([x, torch.zeros(B, 11 - T, C)], dim=1)
    torch.testing.assert_close(layer(x), layer(padded)[:, :T])


def test_too_long_sequence_raises() -> None:
    layer = _layer(max_tokens=T)
    with pytest.raises(ValueError, match=rf"at most {T} tokens; got a sequence of {T + 1}"):
        layer(torch.randn(B, T + 1, C))


def test_wrong_rank_and_mask_shape_raise() -> None:
    layer = _layer()
    with pytest.raises(ValueError, match=r"\(batch, tokens, channels\), got shape \(7, 5\)"):
        layer(torch.randn(T, C))
    with pytest.raises(ValueError, match=r"must have shape \(batch, tokens\) = \(3, 7\), got \(3, 6\)"):
        layer(torch.randn(B, T, C), key_padding_mask=torch.zeros(B, T - 1, dtype=torch.bool))


def test_causal_outputs_ignore_future_tokens() -> None:
    layer = _layer(causal=True)
    x = torch.randn(B, T, C)
    for t in range(T - 1):
        perturbed = x.clone()
        perturbed[:, t + 1 :] += torch.randn(B, T - t - 1, C)
        out, out_perturbed = layer(x), layer(perturbed)
        torch.testing.assert_close(out_perturbed[:, : t + 1], out[:, : t + 1], rtol=0, atol=0)
        assert not torch.allclose(out_perturbed[:, t + 1 :], out[:, t + 1 :])


def test_causal_weight_gets_no_gradient_above_diagonal() -> None:
    layer = _layer(max_tokens=T + 2, causal=True)
    layer(torch.randn(B, T, C)).square().sum().backward()
    grad = layer.weight.grad
    assert torch.count_nonzero(grad.triu(diagonal=1)) == 0
    assert torch.count_nonzero(grad[:T, :T].tril()) == T * (T + 1) // 2  # the used lower triangle does learn
    assert torch.count_nonzero(grad[T:]) == 0 and torch.count_nonzero(grad[:, T:]) == 0  # unused rows/columns


@pytest.mark.parametrize("causal", [False, True])
def test_padded_tokens_do_not_affect_real_tokens(causal: bool) -> None:
    layer = _layer(causal=causal)
    lengths = torch.tensor([T, 4, 2])
    mask = torch.arange(T)[None, :] >= lengths[:, None]  # True at padding
    x = torch.randn(B, T, C).masked_fill(mask.unsqueeze(-1), 0.0)
    garbage = torch.where(mask.unsqueeze(-1), 100 * torch.randn(B, T, C), x)
    real = ~mask.unsqueeze(-1)
    out = layer(x, key_padding_mask=mask)
    torch.testing.assert_close(layer(garbage, key_padding_mask=mask) * real, out * real, rtol=0, atol=0)
    # Each sequence on its own (no padding at all) gives the same real outputs.
    for b, length in enumerate(lengths.tolist()):
        alone = layer(x[b : b + 1, :length])
        torch.testing.assert_close(out[b : b + 1, :length], alone)


def test_step_equals_full_causal_forward_row_by_row() -> None:
    layer = _layer(max_tokens=T + 3, causal=True)
    x = torch.randn(B, T, C)
    full = layer(x)
    for t in range(T):
        torch.testing.assert_close(layer.step(x[:, : t + 1]), full[:, t : t + 1])
    with pytest.raises(RuntimeError, match="causal"):
        _layer().step(x)


def _block(drop_path: float = 0.0, seed: int = 0) -> ResMLPBlock:
    torch.manual_seed(seed)
    return ResMLPBlock(C * 2, T, init_values=0.5, drop_path=drop_path)


def test_block_matches_explicit_formula() -> None:
    block = _block().eval()
    x = torch.randn(B, T, 2 * C)
    mixed = torch.einsum("ij,bjc->bic", block.linear_tokens.weight, block.norm1(x)) + block.linear_tokens.bias[:, None]
    y = x + block.ls1.gamma * mixed
    mlp = block.mlp_channels
    hidden = F.gelu(F.linear(block.norm2(y), mlp.fc1.weight, mlp.fc1.bias))
    expected = y + block.ls2.gamma * F.linear(hidden, mlp.fc2.weight, mlp.fc2.bias)
    out = block(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(block.channel_mixing(block.token_mixing(x)), out)


def test_block_drop_path() -> None:
    x = torch.randn(16, T, 2 * C)
    always_dropped = _block(drop_path=1.0).train()
    torch.testing.assert_close(always_dropped(x), x, rtol=0, atol=0)  # both residual branches dropped
    reference = _block(drop_path=0.0).eval()
    assert not torch.allclose(reference(x), x)
    torch.testing.assert_close(always_dropped.eval()(x), reference(x))  # inactive at eval
    # p = 0.5: each sample keeps a branch (scaled by 2) or drops it, so per-sample outputs differ from eval.
    half = _block(drop_path=0.5).train()
    torch.manual_seed(1)
    out = half(x)
    dropped = torch.isclose(out, x).flatten(1).all(dim=1)
    assert 0 < int(dropped.sum()) < 16
