"""Pictures of learned ResMLP token-mixing matrices A, as the paper draws them.

    python -m resmlp_suite.visualize runs/resmlp_tiny_p4_fashion_mnist/best.pt
    python -m resmlp_suite.visualize resmlp_12_no_dist.pth --layers 0 6 11 --resample-to 21 --out s12.png
    python -m resmlp_suite.visualize checkpoints/checkpoint_best.pt --tokens 48   # a resmlp_seq2seq model

Row ``i`` of an image model's ``A`` says how output patch ``i`` mixes the input patches: drawn over the
patch grid it is a map around patch ``i``, and in early layers it looks like a small convolution. The
figure shows three rows (the centre patch, a corner, an edge) of the first, middle and last block, each
with its own patch outlined; then the same rows after resampling ``A`` to a finer grid
(:func:`~resmlp_suite.vision.resample.resample_token_mixing`, what loading the weights at another image
size does), at the patch that covers the same part of the image, to show what resampling keeps.
A translation model's matrices are over sentence positions, not a grid: each layer's first ``T x T``
block is drawn as a heat map, the decoder's upper triangle (later positions, which a causal layer never
reads) left blank.

What a file holds is read from its content, never from its name: a ``vision/train.py`` checkpoint
(whose config gives the image size, so non-square grids too), a ResMLP weight file in the suite, timm or
DeiT-repo layout (``.pth`` or ``.safetensors``; square grids), or a fairseq ``resmlp_seq2seq`` checkpoint.
"""
from __future__ import annotations

import argparse
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Rectangle
from omegaconf import OmegaConf
from timm.layers import to_2tuple

from .cli import user_errors
from .files import PathLike
from .plotting import save_png
from .token_mixers import CrossTokenLinear, MultiHeadTokenMixer, ToeplitzTokenMixer, TokenMixer
from .training.checkpoint import read_checkpoint
from .translation.safe_load import allow_fairseq_checkpoints
from .vision.resample import Grid, resample_token_mixing, square_grid
from .vision.weights import to_suite_layout

__all__ = ["corresponding_patch", "default_patches", "plot_token_mixing", "row_maps", "token_mixing_matrices", "main"]

Patch = tuple[int, int]
Mixers = dict[str, TokenMixer]
_IMAGE_KEY = re.compile(r"^blocks\.(\d+)\.linear_tokens\.weight$")
_SEQUENCE_KEY = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.linear_tokens\.weight$")
_EXPECTED = ("blocks.<i>.linear_tokens.weight (a ResMLP image model, in the suite, timm or DeiT-repo layout) or "
             "encoder/decoder.layers.<i>.linear_tokens.weight (a resmlp_seq2seq translation model)")
# Unused (causal) entries are NaN, drawn in grey: distinct from a learned zero, which is white.
_COLORMAP = colormaps["RdBu_r"].with_extremes(bad="0.85")
_PANEL_INCHES = 2.0
_MIN_WIDTH = 7.5  # inches: room for the two-line title


def token_mixing_matrices(source: PathLike, tokens: int = 32) -> tuple[str, dict[str, torch.Tensor], Optional[Grid]]:
    """``(kind, {layer: A}, grid)`` of a checkpoint or weight file, each ``A`` as its mixer applies it.

    ``kind`` is ``"image"``: layers ``"block 0"``, ... with ``A`` of ``[N, N]`` (``[heads, N, N]`` for a
    multi-head mixer) over the ``grid`` ``(h, w)`` of patches, row-major; or ``"sequence"`` (a translation
    model): layers ``"encoder 0"``, ..., ``"decoder 0"``, ... with the first ``tokens`` positions of ``A``,
    the decoder's upper triangle NaN (the causal model never uses it), and ``grid`` None.
    """
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    kind, mixers, grid = _read_mixers(Path(source))
    return kind, {name: _matrix(mixer, None if kind == "image" else tokens) for name, mixer in mixers.items()}, grid


def default_patches(grid: Grid) -> list[Patch]:
    """The patch at the centre, one at a corner and one on an edge: how a row's map looks in the middle of the
    image and where it is cut off by the border."""
    h, w = grid
    return list(dict.fromkeys([(h // 2, w // 2), (0, 0), (h // 2, 0)]))


def corresponding_patch(patch: Patch, old_grid: Grid, new_grid: Grid) -> Patch:
    """The patch of ``new_grid`` whose centre is nearest to the centre of ``patch`` of ``old_grid`` (both
    grids cover the same image). Of two equally near (a grid twice as fine), the one nearer the border:
    a corner stays a corner."""
    (row, column), (h, w), (new_h, new_w) = patch, old_grid, new_grid
    return _nearest_index(row, h, new_h), _nearest_index(column, w, new_w)


def _nearest_index(index: int, size: int, new_size: int) -> int:
    # Exact fractions: the ties are exact, and must be seen as ties.
    centre = Fraction(2 * index + 1, 2) * new_size / size - Fraction(1, 2)  # in new patch indices
    nearest = math.floor(centre + Fraction(1, 2))
    if nearest == centre + Fraction(1, 2) and centre < Fraction(new_size - 1, 2):
        return nearest - 1
    return nearest


def row_maps(matrix: torch.Tensor, grid: Grid, patches: Sequence[Patch],
             new_grid: Optional[Grid] = None) -> list[tuple[Patch, torch.Tensor]]:
    """The rows of ``matrix`` (``[N, N]`` over ``grid``) that belong to ``patches``, each as an ``(h, w)`` map
    with its patch. With ``new_grid``: the rows of the matrix resampled to ``new_grid``, at the patches
    that correspond to ``patches``, as ``(H, W)`` maps."""
    if new_grid is not None:
        matrix, _ = resample_token_mixing(matrix, None, grid, new_grid)
        patches = [corresponding_patch(patch, grid, new_grid) for patch in patches]
        grid = new_grid
    return [(patch, matrix[patch[0] * grid[1] + patch[1]].reshape(grid)) for patch in patches]


def plot_token_mixing(source: PathLike, out_png: PathLike, layers: Optional[Sequence[int]] = None,
                      resample_to: Optional[Union[int, Sequence[int]]] = None, tokens: int = 32,
                      head: int = 0) -> Path:
    """Draw the token mixing of ``source`` (see the module docstring) into the PNG ``out_png``.

    ``layers``: indices in each stack (the blocks; or the encoder's and the decoder's layers), by default
    the first, middle and last. ``resample_to``: the patch grid (``H`` or ``(H, W)``) of the resampled
    panels of an image model, by default about 1.5 times the trained one; Toeplitz mixers are not
    resampled (they have no grid). ``tokens``: positions drawn of a translation model. ``head``: the head
    drawn of multi-head mixers.
    """
    path = Path(source)
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    kind, mixers, grid = _read_mixers(path)
    chosen = {name: mixers[name] for name in _select_layers(list(mixers), layers, path)}
    if kind == "sequence":
        if resample_to is not None:
            raise ValueError(f"{path} is a translation model: its token mixing is over positions, not a patch grid "
                             "that could be resampled")
        fig = _sequence_figure(path, chosen, tokens, head)
    else:
        assert grid is not None
        fig = _image_figure(path, chosen, grid, _new_grid(path, chosen, grid, resample_to), head)
    return save_png(fig, out_png)


# ---------------------------------------------------------------- reading

def _read_mixers(path: Path) -> tuple[str, Mixers, Optional[Grid]]:
    """``(kind, {layer: mixer}, grid)``: the token mixers of the file, rebuilt from its weights."""
    # One read for every kind of file: the fairseq allow-list only adds argparse.Namespace and numpy arrays
    # (in a translation checkpoint's args and metrics), and weights_only stays on. Added for good, as the
    # plugin does: torch's safe_globals context would remove them again on exit, also for the plugin.
    allow_fairseq_checkpoints()
    content = read_checkpoint(path)
    model = content.get("model")
    state = model if isinstance(model, Mapping) else content
    if any(_SEQUENCE_KEY.match(key) for key in state):
        return "sequence", _sequence_mixers(state, path), None
    try:
        state = to_suite_layout(content)
    except ValueError as error:
        raise ValueError(f"{path} is not a ResMLP checkpoint or weight file: {error}") from error
    blocks = sorted(int(match.group(1)) for key in state if (match := _IMAGE_KEY.match(key)))
    if not blocks:
        raise ValueError(f"{path} holds no token-mixing weights: expected {_EXPECTED}")
    mixers = {f"block {i}": _mixer(state, f"blocks.{i}.linear_tokens", False, path) for i in blocks}
    sizes = sorted({mixer.max_tokens for mixer in mixers.values()})
    if len(sizes) > 1:
        raise ValueError(f"{path}: the blocks mix different numbers of patches {sizes}, so they have no common grid")
    return "image", mixers, _image_grid(content, state, sizes[0], path)


def _sequence_mixers(state: Mapping[str, Any], path: Path) -> Mixers:
    layers = sorted((match.group(1) == "decoder", int(match.group(2)))
                    for key in state if (match := _SEQUENCE_KEY.match(key)))
    names = [("decoder" if decoder else "encoder", i) for decoder, i in layers]
    return {f"{side} {i}": _mixer(state, f"{side}.layers.{i}.linear_tokens", side == "decoder", path)
            for side, i in names}


def _mixer(state: Mapping[str, Any], prefix: str, causal: bool, path: Path) -> TokenMixer:
    """The token mixer whose weights are ``prefix.weight`` / ``prefix.bias``, its class read from the shape."""
    weight, bias = state[f"{prefix}.weight"].detach().float(), state.get(f"{prefix}.bias")
    kwargs: dict[str, Any] = {}
    if weight.dim() == 2 and weight.shape[0] == weight.shape[1]:
        cls, max_tokens = CrossTokenLinear, weight.shape[-1]
    elif weight.dim() == 3 and weight.shape[1] == weight.shape[2]:
        # dim only has to be divisible by the heads: the mixer never sees channels here.
        heads = weight.shape[0]
        cls, max_tokens, kwargs = MultiHeadTokenMixer, weight.shape[-1], {"heads": heads, "dim": heads}
    elif weight.dim() == 1 and (causal or weight.numel() % 2):
        cls, max_tokens = ToeplitzTokenMixer, weight.numel() if causal else (weight.numel() + 1) // 2
    else:
        vector = "[N] (causal)" if causal else "[2N - 1]"
        raise ValueError(f"{path}: {prefix}.weight of shape {tuple(weight.shape)} is not a token-mixing weight: "
                         f"expected [N, N] (dense), [heads, N, N] (multi-head) or a Toeplitz vector {vector}")
    tensors = {"weight": weight}
    if bias is not None:
        expected = (*weight.shape[:-2], max_tokens)
        if tuple(bias.shape) != expected:
            raise ValueError(f"{path}: {prefix}.bias of shape {tuple(bias.shape)} does not match its weight "
                             f"{tuple(weight.shape)}: expected {expected}")
        tensors["bias"] = bias.detach().float()
    # Built on the meta device: the mixer's random init would only be overwritten.
    with torch.device("meta"):
        mixer = cls(max_tokens, causal=causal, bias=bias is not None, **kwargs)
    mixer.load_state_dict(tensors, assign=True)
    return mixer.requires_grad_(False).eval()


def _image_grid(content: Mapping[str, Any], state: Mapping[str, torch.Tensor], num_tokens: int, path: Path) -> Grid:
    """The patch grid: from a training checkpoint's image size and the patch embedding, else square."""
    proj = state.get("stem.proj.weight")
    config = content.get("config")
    if isinstance(config, str) and proj is not None:
        cfg = OmegaConf.create(config)
        # The model is built from model.kwargs, which the presets fill from data.img_size.
        img_size = OmegaConf.select(cfg, "model.kwargs.img_size", default=OmegaConf.select(cfg, "data.img_size"))
        if img_size is not None:
            (height, width), patch = to_2tuple(img_size), proj.shape[-1]
            grid = (height // patch, width // patch)
            if grid[0] * grid[1] != num_tokens:
                raise ValueError(f"{path}: its config's {height}x{width} images in patches of {patch} make a "
                                 f"{grid[0]}x{grid[1]} grid, but its token mixing is over {num_tokens} patches")
            return grid
    try:
        return square_grid(num_tokens)
    except ValueError:
        raise ValueError(f"{path}: its token mixing is over {num_tokens} patches, not a square grid, and only a "
                         "vision/train.py checkpoint records the image size of a non-square one") from None


def _matrix(mixer: TokenMixer, tokens: Optional[int] = None) -> torch.Tensor:
    """The mixer's ``A`` over its first ``tokens`` positions (all by default), a causal one's upper triangle NaN."""
    size = mixer.max_tokens if tokens is None else min(tokens, mixer.max_tokens)
    matrix = mixer.mixing_matrix(size)
    if mixer.causal:
        matrix = matrix.masked_fill(torch.ones(size, size, dtype=torch.bool).triu(1), float("nan"))
    return matrix


def _select_layers(names: Sequence[str], layers: Optional[Sequence[int]], path: Path) -> list[str]:
    """The layers drawn: ``layers`` counted in each stack, or the first, middle and last of each."""
    stacks: dict[str, list[str]] = {}
    for name in names:
        stacks.setdefault(name.split()[0], []).append(name)
    chosen = []
    for stack, members in stacks.items():
        count = len(members)
        for index in dict.fromkeys(layers if layers is not None else sorted({0, count // 2, count - 1})):
            if not 0 <= index < count:
                what = ("block" if stack == "block" else f"{stack} layer") + ("s" if count > 1 else "")
                raise ValueError(f"layer {index} is out of range: {path} has {count} {what} (0 to {count - 1})")
            chosen.append(members[index])
    return chosen


def _one_head(matrix: torch.Tensor, head: int, name: str, path: Path) -> tuple[torch.Tensor, str]:
    """``matrix`` of one head and how a title names it ("" for a single-head mixer)."""
    if matrix.dim() == 2:
        if head:
            raise ValueError(f"head {head}: {path} has single-head token mixing ({name})")
        return matrix, ""
    heads = matrix.shape[0]
    if not 0 <= head < heads:
        raise ValueError(f"head {head} is out of range: {name} of {path} has {heads} heads (0 to {heads - 1})")
    return matrix[head], f", head {head} of {heads}"


def _new_grid(path: Path, mixers: Mixers, grid: Grid,
              resample_to: Optional[Union[int, Sequence[int]]]) -> Optional[Grid]:
    """The grid of the resampled panels; None for Toeplitz mixers, which the suite does not resample."""
    if any(isinstance(mixer, ToeplitzTokenMixer) for mixer in mixers.values()):
        if resample_to is not None:
            raise ValueError(f"{path} has Toeplitz token mixing (one weight per offset of the flattened patches): "
                             "it has no grid to resample")
        return None
    if resample_to is None:
        return max(grid[0] + 1, int(grid[0] * 1.5)), max(grid[1] + 1, int(grid[1] * 1.5))
    sizes = [resample_to] if isinstance(resample_to, int) else list(resample_to)
    sizes = sizes * 2 if len(sizes) == 1 else sizes
    if len(sizes) != 2 or not all(isinstance(n, int) and n >= 1 for n in sizes):
        raise ValueError(f"resample_to takes a grid H or (H, W) of positive numbers of patches, got {resample_to!r}")
    return sizes[0], sizes[1]


# ---------------------------------------------------------------- drawing

def _draw(ax: Axes, values: torch.Tensor, title: str) -> None:
    """``values`` in a diverging colormap centred at 0, symmetric to its own largest magnitude."""
    limit = float(values.nan_to_num().abs().max()) or 1.0
    ax.imshow(values.numpy(), cmap=_COLORMAP, vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_title(f"{title}, max |a| {limit:.2g}", fontsize="small")


def _image_figure(path: Path, mixers: Mixers, grid: Grid, new_grid: Optional[Grid], head: int) -> Figure:
    patches = default_patches(grid)
    sets = [None] if new_grid is None else [None, new_grid]
    fig = Figure(figsize=(max(_MIN_WIDTH, _PANEL_INCHES * len(patches) * len(sets)),
                          (_PANEL_INCHES * grid[0] / grid[1] + 0.5) * len(mixers) + 0.9), layout="constrained")
    subfigs: list[Union[Figure, SubFigure]] = [fig] if new_grid is None else list(fig.subfigures(1, 2, wspace=0.05))
    matrices = {name: _one_head(_matrix(mixer), head, name, path) for name, mixer in mixers.items()}
    for subfig, resample in zip(subfigs, sets, strict=True):
        axes = subfig.subplots(len(matrices), len(patches), squeeze=False)
        for row, (name, (matrix, head_title)) in zip(axes, matrices.items(), strict=True):
            for ax, (patch, values) in zip(row, row_maps(matrix, grid, patches, resample), strict=True):
                _draw(ax, values, f"{name}{head_title}\npatch {patch}")
                ax.add_patch(Rectangle((patch[1] - 0.5, patch[0] - 0.5), 1, 1, fill=False, edgecolor="black",
                                       linewidth=1.5))
                ax.set_xticks([])
                ax.set_yticks([])
        if new_grid is not None:
            subfig.suptitle(f"learned, {grid[0]}x{grid[1]} patches" if resample is None else
                            f"resampled to {new_grid[0]}x{new_grid[1]} patches (the same part of the image)")
    note = "" if new_grid is not None else "\nToeplitz token mixing (along the flattened patches): not resampled"
    fig.suptitle(f"{path.name}: rows of the token-mixing matrix A over the input patches\n"
                 f"(each row's own patch outlined; red > 0 > blue){note}")
    return fig


def _sequence_figure(path: Path, mixers: Mixers, tokens: int, head: int) -> Figure:
    stacks: dict[str, list[str]] = {}
    for name in mixers:
        stacks.setdefault(name.split()[0], []).append(name)
    columns = max(len(names) for names in stacks.values())
    fig = Figure(figsize=(max(_MIN_WIDTH, 1.4 * _PANEL_INCHES * columns), 1.4 * _PANEL_INCHES * len(stacks) + 0.8),
                 layout="constrained")
    axes = fig.subplots(len(stacks), columns, squeeze=False)
    for row, names in zip(axes, stacks.values(), strict=True):
        for ax, name in zip(row, names):
            mixer = mixers[name]
            matrix, head_title = _one_head(_matrix(mixer, tokens), head, name, path)
            _draw(ax, matrix, f"{name}{' (causal)' if mixer.causal else ''}{head_title}")
            ax.set(xlabel="input position", ylabel="output position")
        for ax in row[len(names):]:
            ax.set_axis_off()
    shown = min(tokens, *(mixer.max_tokens for mixer in mixers.values()))
    fig.suptitle(f"{path.name}: token-mixing matrices A, first {shown} positions\n"
                 "(red > 0 > blue; grey: later positions, which a causal layer never reads)")
    return fig


# ---------------------------------------------------------------- command line

def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m resmlp_suite.visualize", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a vision/train.py checkpoint, a ResMLP weight file (suite, timm or "
                                           "DeiT-repo layout, .pth or .safetensors) or a fairseq resmlp_seq2seq "
                                           "checkpoint")
    parser.add_argument("--out", default=None,
                        help="the PNG to write (default: beside the checkpoint, named CHECKPOINT.token_mixing.png)")
    parser.add_argument("--layers", type=int, nargs="+", metavar="I", default=None,
                        help="indices of the blocks (translation: of the encoder's and the decoder's layers) to draw; "
                             "default: the first, middle and last")
    parser.add_argument("--resample-to", type=int, nargs="+", metavar="SIZE", default=None,
                        help="image models: the patch grid H or H W of the resampled panels "
                             "(default: about 1.5x the trained grid)")
    parser.add_argument("--tokens", type=int, default=32, help="translation models: the positions drawn (default: 32)")
    parser.add_argument("--head", type=int, default=0, help="multi-head token mixing: the head drawn (default: 0)")
    args = parser.parse_args(argv)

    if args.resample_to is not None and len(args.resample_to) > 2:
        raise ValueError(f"--resample-to takes H or H W, got {len(args.resample_to)} numbers")
    source = Path(args.checkpoint)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}.token_mixing.png")
    plot_token_mixing(source, out, layers=args.layers, resample_to=args.resample_to, tokens=args.tokens,
                      head=args.head)
    print(f"{source} -> {out}")


if __name__ == "__main__":
    with user_errors():
        main()
