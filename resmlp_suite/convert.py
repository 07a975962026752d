"""Convert ResMLP weight files between the suite, timm and official DeiT-repo layouts.

    python -m resmlp_suite.convert resmlp_12_no_dist.pth resmlp_s12.safetensors --to suite
    python -m resmlp_suite.convert resmlp_s12.safetensors resmlp_12_224.pth --to timm
    python -m resmlp_suite.convert resmlp_s12.safetensors resmlp_12.pth --to deit   # written as {"model": ...}
    python -m resmlp_suite.convert resmlp_12_no_dist.pth resmlp_s12_384.safetensors --to suite --img-size 384

The input layout is detected; ``.safetensors`` or ``.pth`` output is chosen by the extension of OUT.
``--img-size`` resamples every token-mixing matrix to the patch grid of that image size
(:func:`resmlp_suite.vision.resample.resample_token_mixing`), for a model created with the same ``img_size``.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .cli import user_errors
from .vision.resample import resample_state_dict
from .vision.weights import LAYOUTS, detect_layout, from_suite_layout, read_state_dict, save_state_dict, to_suite_layout


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m resmlp_suite.convert", description=__doc__.split("\n")[0])
    parser.add_argument("src", help="input weights: .pth/.pt (read with weights_only=True) or .safetensors")
    parser.add_argument("dst", help="output file: .safetensors, anything else is written with torch.save")
    parser.add_argument("--to", required=True, choices=LAYOUTS, help="layout of the output")
    parser.add_argument("--img-size", type=int, nargs="+", metavar="SIZE", default=None,
                        help="resample the token mixing for this input size (one number: square)")
    parser.add_argument("--src-img-size", type=int, nargs="+", metavar="SIZE", default=None,
                        help="the input size the weights were trained at (default: a square grid)")
    args = parser.parse_args(argv)

    raw = read_state_dict(args.src)
    source_layout = detect_layout(raw)
    state_dict = to_suite_layout(raw)
    resampled = ""
    if args.img_size is not None:
        patch = _patch_size(state_dict, args.src)
        new_grid = _grid_of(args.img_size, patch, "--img-size")
        old_grid = None if args.src_img_size is None else _grid_of(args.src_img_size, patch, "--src-img-size")
        state_dict, old_grid = resample_state_dict(state_dict, new_grid, old_grid)
        if old_grid is not None:
            resampled = f", token mixing {old_grid[0]}x{old_grid[1]} -> {new_grid[0]}x{new_grid[1]} patches"
    converted = from_suite_layout(state_dict, args.to)
    save_state_dict(converted, args.dst, wrap_model=args.to == "deit")
    num_params = sum(v.numel() for v in converted.values())
    print(f"{args.src} ({source_layout}) -> {args.dst} ({args.to}): {len(converted)} tensors, {num_params / 1e6:.2f} M values"
          f"{resampled}")


def _patch_size(state_dict: dict, src: str) -> int:
    proj = state_dict.get("stem.proj.weight")
    if proj is None or proj.dim() != 4:
        raise ValueError(f"{src} has no patch embedding (stem.proj.weight): cannot tell its patch size")
    return proj.shape[-1]


def _grid_of(img_size: list[int], patch: int, option: str) -> tuple[int, int]:
    if len(img_size) not in (1, 2):
        raise ValueError(f"{option} takes H or H W, got {len(img_size)} numbers")
    height, width = img_size * 2 if len(img_size) == 1 else img_size
    if height % patch or width % patch:
        raise ValueError(f"{option} {height} {width} is not a multiple of the weights' patch size {patch}")
    return height // patch, width // patch


if __name__ == "__main__":
    with user_errors():
        main()
