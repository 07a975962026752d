"""Inference folding: absorb every Affine and LayerScale of a ResMLP into its linear maps.

ResMLP has no statistics-based normalisation, so at inference each block is affine-linear up to the
GELU and folds exactly (up to rounding). With ``s = gamma1 * alpha1`` and ``r = A @ 1`` (row sums):

* token mixing ``x + gamma1 * (A (alpha1 * x + beta1) + b) = x + s * (A x) + r (gamma1 * beta1) + b gamma1``.
  The two rank-one constants ride along as two extra columns of ``A`` and two extra rows of its operand:
  ``x + [A | r | b] @ [s * x ; gamma1 * beta1 ; gamma1]``, one GEMM for the whole batch (the stream is kept
  token-major, ``(T, B, C)``) that accumulates into the residual;
* channel mixing: ``alpha2, beta2`` go into ``fc1`` (``W1 * alpha2``, ``b1 + W1 @ beta2``), ``gamma2`` into ``fc2``
  (rows scaled), and ``fc2``'s product is accumulated into the residual inside the GEMM;
* ``fc2``'s bias is a per-channel constant on the residual stream. Rather than an add per block it is carried
  forward (``carry``) and absorbed by the next maps that read the stream: the next ``fc1`` bias, the next token
  mixing's constant row, and finally the head (``head(mean(alpha * x + beta))`` folds into the head's weights).

The folded model keeps :class:`~resmlp_suite.vision.ResMLP`'s interface and logits; its intermediate features
differ by the carried constant, and with a classifier its ``pre_logits`` are the un-normalised pooled features.
The residual stream stays in fp32 (or the model's wider dtype); the block GEMMs run in ``gemm_dtype`` (weights stored in it, e.g.
bf16 so that nothing is cast per call) or, under ``torch.autocast``, in the autocast dtype.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from ..affine import Affine
from ..block import ResMLPBlock
from .resmlp import ResMLP

__all__ = ["BatchMajor", "FoldedResMLPBlock", "TokenMajor", "fold_for_inference"]


def _plus_product(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``acc + a @ b`` (2-D), summed inside the GEMM when the dtypes agree, else by one add."""
    if acc.dtype != a.dtype:
        product = torch.mm(a, b)
        return acc.add_(product) if inplace else acc + product
    return acc.addmm_(a, b) if inplace else torch.addmm(acc, a, b)


class TokenMajor(nn.Module):
    """``(B, T, C)`` -> contiguous ``(T, B, C)``, at least fp32: the folded blocks' residual stream.

    Token-major, the token mixing of the whole batch is one GEMM ``(T, T + 2) @ (T + 2, B * C)`` and the
    channel MLP one GEMM over ``T * B`` rows. An autocast stem hands over bf16: the stream is kept in fp32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, num_tokens, dim = x.shape
        stream = torch.empty(num_tokens, batch, dim, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
        return stream.copy_(x.transpose(0, 1))


class BatchMajor(nn.Module):
    """``(T, B, C)`` -> a ``(B, T, C)`` view, the layout the rest of :class:`~resmlp_suite.vision.ResMLP` expects."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1)


class FoldedResMLPBlock(nn.Module):
    """A ResMLP block for inference, with its Affines and LayerScales folded into the linear maps.

    Built by :meth:`fold` from a trained :class:`~resmlp_suite.block.ResMLPBlock`; holds buffers only.
    """

    def __init__(
        self,
        scale: torch.Tensor,
        mix: torch.Tensor,
        mix_rows: torch.Tensor,
        fc1_weight: torch.Tensor,
        fc1_bias: torch.Tensor,
        fc2_weight: torch.Tensor,
        gelu_approximate: str = "none",
    ) -> None:
        super().__init__()
        self.register_buffer("scale", scale)  # [C]: gamma1 * alpha1, applied to the stream
        # GEMM operands, all in the GEMM dtype:
        self.register_buffer("mix", mix)  # [T, T + 2]: A, its row sums, its bias
        self.register_buffer("mix_rows", mix_rows)  # [2, C]: the operand rows matching mix's extra columns
        self.register_buffer("fc1_weight", fc1_weight)  # [H, C]
        self.register_buffer("fc1_bias", fc1_bias)  # [H]
        self.register_buffer("fc2_weight", fc2_weight)  # [C, H]
        self.gelu_approximate = gelu_approximate

    @classmethod
    @torch.no_grad()
    def fold(
        cls, block: ResMLPBlock, carry: torch.Tensor, gemm_dtype: Optional[torch.dtype] = None
    ) -> tuple["FoldedResMLPBlock", torch.Tensor]:
        """Fold ``block`` whose input stream lacks the per-channel constant ``carry``.

        Returns the folded block and the constant its output lacks. Arithmetic is done in float64, the
        result stored in the block's dtype (``scale``) and ``gemm_dtype`` (default: the block's dtype).
        """
        mixer = block.linear_tokens
        if mixer.causal:
            raise ValueError("fold_for_inference folds bidirectional (image) blocks; got a causal token-mixing layer")
        if mixer.heads != 1:
            raise ValueError(f"fold_for_inference folds one token-mixing matrix per block; got {mixer.heads} heads")
        if not (isinstance(block.norm1, Affine) and isinstance(block.norm2, Affine)):
            raise TypeError(f"fold_for_inference folds Affine normalisation, got {type(block.norm1).__name__}")
        act = block.mlp_channels.act
        if not isinstance(act, nn.GELU):
            raise TypeError(f"fold_for_inference supports GELU channel MLPs, got {type(act).__name__}")
        f64 = {name: p.double() for name, p in block.named_parameters()}
        alpha1, beta1 = f64["norm1.alpha"], f64["norm1.beta"]
        alpha2, beta2 = f64["norm2.alpha"], f64["norm2.beta"]
        gamma1, gamma2 = f64["ls1.gamma"], f64["ls2.gamma"]
        tokens = mixer.mixing_matrix(mixer.max_tokens).double()
        token_bias = mixer.token_bias(mixer.max_tokens)
        token_bias = None if token_bias is None else token_bias.double()
        w1, b1 = f64["mlp_channels.fc1.weight"], f64["mlp_channels.fc1.bias"]
        w2, b2 = f64["mlp_channels.fc2.weight"], f64["mlp_channels.fc2.bias"]
        carry = carry.double()

        scale = gamma1 * alpha1
        if token_bias is None:
            token_bias = torch.zeros_like(tokens[:, 0])
        mix = torch.cat([tokens, tokens.sum(dim=1, keepdim=True), token_bias[:, None]], dim=1)
        # The carried constant d enters the token mixing as A (alpha1 * d) and stays on the stream.
        mix_rows = torch.stack([gamma1 * (alpha1 * carry + beta1), gamma1])
        fc1_weight = w1 * alpha2
        fc1_bias = b1 + w1 @ (alpha2 * carry + beta2)
        fc2_weight = w2 * gamma2[:, None]

        dtype = block.norm1.alpha.dtype
        gemm_dtype = gemm_dtype or dtype
        gemm_operands = (t.to(dtype).to(gemm_dtype) for t in (mix, mix_rows, fc1_weight, fc1_bias, fc2_weight))
        folded = cls(scale.to(dtype), *gemm_operands, gelu_approximate=act.approximate)
        return folded, carry + gamma2 * b2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Update the token-major stream ``x`` (contiguous ``(T, B, C)``, see :class:`TokenMajor`)."""
        num_tokens, batch, dim = x.shape
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.mix.dtype
        # No-ops unless autocast asks for another dtype than the stored one.
        mix, mix_rows, fc1_weight, fc1_bias, fc2_weight = (
            t.to(dtype) for t in (self.mix, self.mix_rows, self.fc1_weight, self.fc1_bias, self.fc2_weight)
        )
        # The GEMM dtype is chosen here, so autocast must not recast the operands (nor the stream).
        with torch.autocast(device, enabled=False):
            operand = torch.empty(num_tokens + 2, batch, dim, dtype=dtype, device=x.device)
            operand[:num_tokens] = x * self.scale
            operand[num_tokens:] = mix_rows.unsqueeze(1)
            x = _plus_product(x.view(num_tokens, -1), mix, operand.view(num_tokens + 2, -1)).view(x.shape)

            stream = x.view(-1, dim)  # a new tensor: the channel GEMMs may update it in place
            hidden = torch.addmm(fc1_bias, stream.to(dtype), fc1_weight.t())
            hidden = torch.ops.aten.gelu_(hidden, approximate=self.gelu_approximate)
            _plus_product(stream, hidden, fc2_weight.t(), inplace=True)
        return x

    def extra_repr(self) -> str:
        return f"dim={self.scale.numel()}, num_tokens={self.mix.shape[0]}, hidden={self.fc1_bias.numel()}"


@torch.no_grad()
def fold_for_inference(model: ResMLP, gemm_dtype: Optional[torch.dtype] = None) -> ResMLP:
    """A folded copy of ``model`` for inference (``model`` itself is untouched): same logits, fewer ops.

    Every block becomes a :class:`FoldedResMLPBlock`, working on a token-major stream between
    :class:`TokenMajor` and :class:`BatchMajor`; the final Affine goes into the head (or, without a
    classifier, absorbs the carried constant and stays). The copy is in eval mode and holds no trainable
    parameters. ``gemm_dtype=torch.bfloat16`` stores the block GEMM weights in bf16: bf16 inference
    without autocast and without casting weights on every call (the residual stream stays fp32).
    """
    if not isinstance(model, ResMLP):
        raise TypeError(f"fold_for_inference expects a resmlp_suite ResMLP, got {type(model).__name__}")
    if not isinstance(model.norm, Affine):
        raise TypeError(f"fold_for_inference folds Affine normalisation, got {type(model.norm).__name__}")
    folded = copy.deepcopy(model).eval().requires_grad_(False)
    carry = torch.zeros(model.embed_dim, dtype=torch.float64, device=model.norm.alpha.device)
    blocks = []
    for block in folded.blocks:
        folded_block, carry = FoldedResMLPBlock.fold(block, carry, gemm_dtype)
        blocks.append(folded_block)
    folded.blocks = nn.Sequential(TokenMajor(), *blocks, BatchMajor())

    alpha, beta = folded.norm.alpha.double(), folded.norm.beta.double()
    shift = alpha * carry + beta
    if isinstance(folded.head, nn.Linear):
        weight = folded.head.weight.double()
        folded.head.bias.copy_(folded.head.bias.double() + weight @ shift)
        folded.head.weight.copy_(weight * alpha)
        folded.norm = nn.Identity()
    else:
        folded.norm.beta.copy_(shift)
    return folded
