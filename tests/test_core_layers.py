"""The shared core: Affine, LayerScale and ResMLPBlock (the token mixers: test_token_mixers.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resmlp_suite import Affine, LayerScale, ResMLPBlock

B, T, C = 3, 7, 5


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
