"""Token mixing at another resolution: resample a ResMLP's ``N x N`` matrices to a new patch grid.

A ResMLP's token-mixing matrix ``A`` (``[N, N]``, ``N = h * w`` patches; ``[heads, N, N]`` for the
multi-head mixer) is tied to the grid it was trained on. Each row of ``A`` is a map over the ``h x w``
input patches, one per output patch, so ``A`` as a whole is an ``(h, w, h, w)`` tensor: resampling
interpolates both of its grids, the output grid (which row) and the input grid (which weights), to the
new ``H x W``, the same way timm resamples a ViT's position embeddings (bicubic, antialiased when
shrinking). The bias ``[N]`` is a map over the output grid and is interpolated as one.

What is kept:

- the same grid gives back the same weights;
- where a row looks, as a fraction of the image: a row centred on its own patch with a 3 x 3 patch
  footprint (the convolution-like rows of early layers) becomes a row centred on the matching new patch,
  covering the same part of the image, so more patches when the grid grows;
- each row's total weight (the sum over its input patches, as interpolated over the output grid): a row
  that averages over the 196 patches of 224 px averages over the 576 of 384 px, rather than summing 576 / 196
  times as much. The input-grid interpolation is scaled by ``h * w / (H * W)``, and what bicubic
  interpolation still gains or loses (a few per cent on sharp rows) is spread evenly over the row.

Not kept: a learned detail finer than the new grid when it shrinks (antialiasing smooths it away).
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from timm.layers import to_2tuple

__all__ = ["Grid", "resample_token_mixing", "resample_state_dict", "square_grid"]

Grid = tuple[int, int]
GridSpec = Union[int, Sequence[int]]
_TOKEN_MIXING_KEY = re.compile(r"^blocks\.\d+\.linear_tokens\.(weight|bias)$")


def _grid(grid: GridSpec, name: str) -> Grid:
    h, w = to_2tuple(grid)
    if int(h) != h or int(w) != w or h < 1 or w < 1:
        raise ValueError(f"{name} must be a positive grid size (h, w), got {grid!r}")
    return int(h), int(w)


def square_grid(num_tokens: int) -> Grid:
    """The square grid of ``num_tokens`` patches; an error for any other count (a non-square grid must be given)."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} tokens are not a square grid; give the grid (h, w) it was trained on")
    return side, side


def _resize(maps: torch.Tensor, size: Grid) -> torch.Tensor:
    """Bicubic resize of ``(n, h, w)`` maps to ``(n, *size)``, antialiased when shrinking (as timm's position embeddings)."""
    shrinking = size[0] < maps.shape[-2] or size[1] < maps.shape[-1]
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bicubic", align_corners=False,
                         antialias=shrinking).squeeze(1)


def resample_token_mixing(weight: torch.Tensor, bias: Optional[torch.Tensor], old_grid: GridSpec,
                          new_grid: GridSpec) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Token-mixing ``weight`` ``[..., N, N]`` and ``bias`` ``[..., N]`` (or None) of an ``old_grid`` of
    patches (``N = h * w``, row-major as the patch embedding flattens them) resampled to ``new_grid``
    ``(H, W)``: ``[..., H*W, H*W]`` and ``[..., H*W]``, in the input's dtype. See the module docstring
    for what is kept."""
    (h, w), (new_h, new_w) = _grid(old_grid, "old_grid"), _grid(new_grid, "new_grid")
    n, new_n = h * w, new_h * new_w
    if weight.dim() < 2 or weight.shape[-2:] != (n, n):
        raise ValueError(f"weight of shape {tuple(weight.shape)} is not a token-mixing matrix [..., {n}, {n}] "
                         f"of a {h}x{w} grid")
    if bias is not None and (bias.shape[-1] != n or bias.shape[:-1] != weight.shape[:-2]):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not match weight {tuple(weight.shape)}")
    lead = weight.shape[:-2]
    a = weight.detach().float().reshape(-1, h, w, h, w)  # (heads, out_h, out_w, in_h, in_w)
    heads = a.shape[0]
    # Output grid: one map per (head, input patch).
    a = _resize(a.permute(0, 3, 4, 1, 2).reshape(-1, h, w), (new_h, new_w))
    a = a.reshape(heads, h, w, new_h, new_w).permute(0, 3, 4, 1, 2)  # (heads, H, W, in_h, in_w)
    # Input grid: one map per (head, output patch), scaled so that each row keeps its total weight.
    rows = a.reshape(-1, h, w)
    resized = _resize(rows, (new_h, new_w)).reshape(-1, new_n) * (n / new_n)
    resized += (rows.sum((1, 2)) - resized.sum(1)).unsqueeze(1) / new_n
    new_weight = resized.reshape(*lead, new_n, new_n).to(weight.dtype)
    if bias is None:
        return new_weight, None
    new_bias = _resize(bias.detach().float().reshape(-1, h, w), (new_h, new_w)).reshape(*lead, new_n)
    return new_weight, new_bias.to(bias.dtype)


def resample_state_dict(state_dict: Mapping[str, torch.Tensor], new_grid: GridSpec,
                        old_grid: Optional[GridSpec] = None) -> tuple[dict[str, torch.Tensor], Optional[Grid]]:
    """Every token-mixing matrix of a suite-layout ResMLP state dict resampled to ``new_grid``.

    ``old_grid`` defaults to the square grid of the matrices' size. Returns the new dict and the old
    grid (None when the matrices already have ``new_grid``'s size, and the dict is returned as is).
    Toeplitz mixers (one weight per offset of the flattened sequence) have no grid and are refused.
    """
    new_grid = _grid(new_grid, "new_grid")
    weights = {k: v for k, v in state_dict.items() if _TOKEN_MIXING_KEY.match(k) and k.endswith(".weight")}
    if not weights:
        return dict(state_dict), None
    sizes = {v.shape[-1] for v in weights.values()}
    flat = [k for k, v in weights.items() if v.dim() < 2 or v.shape[-2] != v.shape[-1]]
    if flat:
        raise ValueError(f"{flat[0]} of shape {tuple(weights[flat[0]].shape)} is not a square token-mixing matrix "
                         "(a Toeplitz mixer?): only dense and multi-head mixers can be resampled")
    if len(sizes) != 1:
        raise ValueError(f"the token-mixing matrices have different sizes {sorted(sizes)}")
    (n,) = sizes
    if n == new_grid[0] * new_grid[1] and old_grid is None:
        return dict(state_dict), None
    old_grid = square_grid(n) if old_grid is None else _grid(old_grid, "old_grid")
    out = dict(state_dict)
    for key, weight in weights.items():
        bias_key = key[: -len("weight")] + "bias"
        out[key], new_bias = resample_token_mixing(weight, state_dict.get(bias_key), old_grid, new_grid)
        if new_bias is not None:
            out[bias_key] = new_bias
    return out, old_grid
