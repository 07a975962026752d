"""Collapse of a DINO run, read off the teacher's output entropy (DINO paper, section 5.3 / appendix D).

Centering keeps one output dimension from dominating but pushes towards a uniform output; sharpening
does the opposite. A run that loses the balance collapses either way, and the teacher's entropy (of its
centred, sharpened softmax) shows which: near 0 nats, one dimension dominates; near ``ln(out_dim)``, the
output is uniform. Either way the student-teacher KL drops to 0: the student has nothing left to learn.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

__all__ = ["ONE_DIMENSION", "UNIFORM", "collapse_kind", "CollapseMonitor"]

_logger = logging.getLogger(__name__)

ONE_DIMENSION = "one dimension dominates"
UNIFORM = "uniform output"
_REMEDIES = {
    ONE_DIMENSION: "centering is too weak for the sharpening: lower dino.center_momentum or raise dino.teacher_temp",
    UNIFORM: "sharpening is too weak for the centering: lower dino.teacher_temp / dino.warmup_teacher_temp",
}


def collapse_kind(entropy: float, out_dim: int, tolerance: float) -> Optional[str]:
    """:data:`ONE_DIMENSION` or :data:`UNIFORM` when ``entropy`` (nats) is within ``tolerance`` of 0 or of
    ``ln(out_dim)``; None in between."""
    if entropy <= tolerance:
        return ONE_DIMENSION
    if entropy >= math.log(out_dim) - tolerance:
        return UNIFORM
    return None


class CollapseMonitor:
    """Logs a WARNING when the teacher's entropy enters a collapse band, once per episode: again only after
    it has left the band (or entered the other one)."""

    def __init__(self, out_dim: int, tolerance: float) -> None:
        self.out_dim = out_dim
        self.tolerance = tolerance
        self.state: Optional[str] = None

    def check(self, entropy: float, step: int) -> Optional[str]:
        """The collapse kind at this ``entropy``, warned about on entering it."""
        kind = collapse_kind(entropy, self.out_dim, self.tolerance)
        if kind is not None and kind != self.state:
            _logger.warning(
                "collapse at step %d: %s (teacher entropy %.4g nats, within dino.collapse_tolerance=%g of %s; "
                "ln(out_dim) = %.4g). If it lasts, %s",
                step, kind, entropy, self.tolerance, "0" if kind == ONE_DIMENSION else "ln(dino.out_dim)",
                math.log(self.out_dim), _REMEDIES[kind],
            )
        self.state = kind
        return kind
