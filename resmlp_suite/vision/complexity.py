"""Parameter and multiply-accumulate counts of the ResMLP classifiers, beside the paper's Table 1.

MACs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` (``MACs = FLOPs / 2``) over one
forward pass on the meta device: nothing is allocated or computed, so even B24/8 (100 GMACs) counts in
milliseconds. Like the paper, only the linear maps and the patch convolution count; the elementwise
Affines, LayerScales, GELUs and the pooling are free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["PAPER_COMPLEXITY", "Complexity", "count_complexity", "complexity_table", "format_table"]

# Paper (Table 1 and the released B24/8): parameters in millions, GMACs at 224 px.
PAPER_COMPLEXITY: dict[str, tuple[float, float]] = {
    "resmlp_s12": (15.35, 3.01),
    "resmlp_s24": (30.02, 5.96),
    "resmlp_s36": (44.69, 8.91),
    "resmlp_b24": (129.14, 100.23),
    "resmlp_b24_p16": (115.74, 23.02),
}


@dataclass(frozen=True)
class Complexity:
    model: str
    img_size: int
    params_m: float
    gmacs: float
    paper_params_m: Optional[float]
    paper_gmacs: Optional[float]


def count_complexity(name: str, img_size: Optional[int] = None, **kwargs: object) -> Complexity:
    """Parameters (M) and GMACs of one image through timm model ``name`` (default: its native size)."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **({"img_size": img_size} if img_size else {}), **kwargs)
    in_chans, height, width = model.pretrained_cfg["input_size"]
    if img_size:
        height = width = img_size
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.empty(1, getattr(model, "in_chans", in_chans), height, width, device="meta"))
    paper = PAPER_COMPLEXITY.get(name) if height == 224 else None
    return Complexity(
        model=name,
        img_size=height,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        gmacs=counter.get_total_flops() / 2e9,
        paper_params_m=paper[0] if paper else None,
        paper_gmacs=paper[1] if paper else None,
    )


def complexity_table(names: Optional[list[str]] = None, img_size: Optional[int] = None) -> list[Complexity]:
    """:func:`count_complexity` for ``names`` (default: the paper's five models)."""
    return [count_complexity(name, img_size) for name in (names or list(PAPER_COMPLEXITY))]


def format_table(rows: list[Complexity]) -> str:
    """A Markdown table: counted and paper parameters/MACs side by side."""

    def number(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        "| model | img | params (M) | paper params (M) | MACs (G) | paper MACs (G) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.model} | {row.img_size} | {number(row.params_m)} | {number(row.paper_params_m)} "
            f"| {number(row.gmacs)} | {number(row.paper_gmacs)} |"
        )
    return "\n".join(lines)
