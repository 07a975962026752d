"""Inference folding: the folded model gives the unfolded model's logits with fewer operations."""
from __future__ import annotations

from typing import Callable

import pytest
import timm
import torch
from torch import nn

import resmlp_suite  # noqa: F401  (registers the models)
from resmlp_suite import Affine, LayerScale, ResMLPBlock
from resmlp_suite.vision import ResMLP, fold_for_inference
from resmlp_suite.vision.fold import BatchMajor, FoldedResMLPBlock, TokenMajor

CONFIGS = [
    pytest.param(dict(name="resmlp_tiny_p4"), id="tiny_p4"),
    pytest.param(dict(name="resmlp_tiny_p4", num_classes=0), id="tiny_p4-no-head"),
    pytest.param(dict(name="resmlp_tiny_p4", img_size=16, in_chans=3, mlp_ratio=3.0, depth=3), id="tiny-16px-ratio3"),
    pytest.param(dict(name="resmlp_s12", img_size=64), id="s12-64px"),
]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _model_and_input(config: dict, randomize: Callable, seed: int = 0) -> tuple[ResMLP, torch.Tensor]:
    torch.manual_seed(seed)
    config = dict(config)
    model = randomize(timm.create_model(config.pop("name"), **config), seed=seed).eval()
    return model, torch.randn(3, model.in_chans, *model.img_size)


@pytest.mark.parametrize("config", CONFIGS)
def test_folded_logits_equal_unfolded(config: dict, randomize_affines: Callable) -> None:
    model, x = _model_and_input(config, randomize_affines)
    folded = fold_for_inference(model)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert got.shape == expected.shape
    assert _relative_error(got, expected) < 1e-4
    # The folded model is a separate, frozen, inference-mode copy without any Affine or LayerScale.
    assert not folded.training and not any(p.requires_grad for p in folded.parameters())
    assert [type(b) for b in folded.blocks] == [TokenMajor, *[FoldedResMLPBlock] * len(model.blocks), BatchMajor]
    leftovers = [type(m).__name__ for m in folded.modules() if isinstance(m, (Affine, LayerScale, ResMLPBlock))]
    assert leftovers == ([] if model.num_classes else ["Affine"])  # without a head the final Affine stays
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)  # the original is untouched


def test_folding_is_exact_in_float64(randomize_affines: Callable) -> None:
    model, x = _model_and_input(dict(name="resmlp_tiny_p4"), randomize_affines, seed=3)
    model, x = model.double(), x.double()
    folded = fold_for_inference(model)
    with torch.no_grad():
        assert _relative_error(folded(x), model(x)) < 1e-12


def test_bf16_gemms_keep_an_fp32_stream(randomize_affines: Callable) -> None:
    model, x = _model_and_input(dict(name="resmlp_tiny_p4", num_classes=0), randomize_affines, seed=1)
    folded, folded_bf16 = fold_for_inference(model), fold_for_inference(model, gemm_dtype=torch.bfloat16)
    assert folded_bf16.blocks[1].fc1_weight.dtype == torch.bfloat16 and folded_bf16.blocks[1].scale.dtype == torch.float32
    stream_dtypes = set()
    for block in [*folded.blocks[1:-1], *folded_bf16.blocks[1:-1]]:
        block.register_forward_hook(lambda module, args, out: stream_dtypes.add(out.dtype))
    with torch.no_grad():
        expected = model(x)
        stored = folded_bf16(x)  # bf16 weights: bf16 GEMMs without autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = folded(x)  # fp32 weights, cast per call
            autocast_stored = folded_bf16(x)
    assert stream_dtypes == {torch.float32}  # the residual stream never left fp32, autocast or not
    for features in (stored, autocast):
        assert 1e-5 < _relative_error(features, expected) < 2e-2  # bf16 GEMMs: visibly rounded, still close
    torch.testing.assert_close(autocast_stored, autocast, rtol=1e-6, atol=1e-6)


def test_fold_rejects_what_it_cannot_fold() -> None:
    with pytest.raises(TypeError, match="expects a resmlp_suite ResMLP, got MlpMixer"):
        fold_for_inference(timm.create_model("resmlp_12_224", img_size=32))
    with pytest.raises(ValueError, match="causal"):
        FoldedResMLPBlock.fold(ResMLPBlock(8, 4, causal=True), torch.zeros(8))
    with pytest.raises(TypeError, match="GELU channel MLPs, got ReLU"):
        FoldedResMLPBlock.fold(ResMLPBlock(8, 4, act_layer=nn.ReLU), torch.zeros(8))
