"""Hard distillation for a single-head student (ResMLP has no distillation token).

DeiT's hard distillation gives the class token the true labels and the distillation token the
teacher's argmax. ResMLP has one head, so both targets act on the same logits::

    loss = (1 - alpha) * base(student(x), y_mixed) + alpha * CE(student(x), argmax teacher(x))

with ``alpha = 0.5`` as in DeiT. ``base`` is the run's usual criterion (soft-target CE on
Mixup/CutMix labels with label smoothing); the teacher sees the same augmented, mixed images and
is frozen in eval mode.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import timm
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DistillationLoss", "create_teacher"]


class DistillationLoss(nn.Module):
    """``(1 - alpha) * base + alpha * CE(outputs, teacher argmax)``; just ``base`` when ``teacher`` is None."""

    def __init__(self, base_criterion: nn.Module, teacher: Optional[nn.Module] = None, alpha: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distillation alpha must be in [0, 1], got {alpha}")
        self.base_criterion = base_criterion
        self.teacher = teacher
        self.alpha = alpha
        if teacher is not None:
            teacher.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "DistillationLoss":
        # The teacher stays in eval mode (no dropout, frozen norm statistics) whatever the student does.
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        base_loss = self.base_criterion(outputs, targets)
        if self.teacher is None:
            return base_loss
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        if teacher_logits.shape != outputs.shape:
            raise ValueError(
                f"teacher logits have shape {tuple(teacher_logits.shape)} but the student's have "
                f"{tuple(outputs.shape)}: the teacher must predict the same classes"
            )
        teacher_loss = F.cross_entropy(outputs, teacher_logits.argmax(dim=-1))
        return (1.0 - self.alpha) * base_loss + self.alpha * teacher_loss


def create_teacher(
    name: str, checkpoint: Optional[str], num_classes: int, device: torch.device, **kwargs: Any
) -> nn.Module:
    """A timm model (``pretrained=False``) with weights from a local file: nothing is downloaded."""
    if not checkpoint:
        raise ValueError(
            f"distillation needs teacher weights: set distill.teacher_checkpoint to a local file for {name!r} "
            "(nothing is downloaded)"
        )
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"distill.teacher_checkpoint={checkpoint!r} does not exist")
    teacher = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    timm.models.load_checkpoint(teacher, checkpoint, strict=True)
    return teacher.to(device)  # DistillationLoss freezes it
