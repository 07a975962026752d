"""DINO's parts (Caron et al., 2021, ``main_dino.py`` / ``utils.py``): projection head, multi-crop wrapper,
loss with centering and sharpening, teacher EMA, gradient rules and per-iteration schedules.

Each follows the official code: a 3-layer MLP head (GELU, 2048 hidden) to a 256-d bottleneck, l2
normalisation, a weight-normalised linear layer to ``out_dim`` prototypes whose norm is frozen at 1; a
cross-entropy between the teacher's centred, sharpened softmax on the two global crops and the student's
softmax on every other crop; a centre updated as an EMA (momentum 0.9) of the teacher's batch mean, summed
over processes; a teacher that is an EMA of the student with a momentum going 0.996 -> 1 along a cosine;
per-parameter gradient-norm clipping; the last layer's gradient dropped during the first epoch(s).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from ..training.distributed import all_reduce_sum

__all__ = [
    "DINOHead",
    "MultiCropWrapper",
    "DINOLoss",
    "DinoLossOutput",
    "update_teacher",
    "clip_gradients",
    "cancel_last_layer_gradients",
    "cosine_schedule",
    "teacher_temperature_schedule",
]


class DINOHead(nn.Module):
    """MLP (``layers`` linear layers, GELU) to a bottleneck, l2-normalised, then a weight-normalised linear
    layer without bias to ``out_dim`` logits.

    With ``norm_last_layer`` the weight norm's magnitude ``g`` stays 1 (frozen): the logits are cosines
    between the bottleneck feature and ``out_dim`` prototypes, which DINO found more stable; without it
    ``g`` is learned (better, less stable: DINO's choice for ViT-S, per ``main_dino.py``'s help).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 layers: int = 3, norm_last_layer: bool = True) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"dino.head_layers must be >= 1, got {layers}")
        if layers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            dims = [in_dim] + [hidden_dim] * (layers - 1)
            blocks: list[nn.Module] = []
            for a, b in zip(dims[:-1], dims[1:]):
                blocks += [nn.Linear(a, b), nn.GELU()]
            self.mlp = nn.Sequential(*blocks, nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp.apply(_init_linear)
        # The last layer keeps PyTorch's default init, as in DINO (its _init_weights runs before it exists).
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class MultiCropWrapper(nn.Module):
    """Backbone then head over a list of crops: one backbone pass per run of equally sized consecutive crops
    (all of them when the local crops have the global size), one head pass over every crop's feature.

    The output stacks the crops along the batch: ``[crop 0 of every image, crop 1 of every image, ...]``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        features, start = [], 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            features.append(self.backbone(torch.cat(list(crops[start:end]))))
            start = end
        return self.head(torch.cat(features))


class DinoLossOutput(NamedTuple):
    """The loss and the two collapse indicators of one batch (DINO paper, Fig. 7 / appendix D).

    ``teacher_entropy``: mean over the teacher's rows of the entropy of its centred, sharpened softmax
    (nats); ``kl``: mean KL(teacher || student) over the same crop pairs as the loss, which is
    ``loss - teacher_entropy`` since every teacher crop meets the same number of student crops.
    """

    loss: torch.Tensor
    teacher_entropy: torch.Tensor
    kl: torch.Tensor


class DINOLoss(nn.Module):
    """Cross-entropy between the teacher's two global crops and the student's other crops.

    ``student_output`` holds ``n_crops`` chunks of the batch, ``teacher_output`` the two global ones (in
    the order :class:`MultiCropWrapper` stacks them). The teacher's logits are centred (``center``, a
    buffer: part of the checkpoint) and sharpened by ``teacher_temp``; the student's are divided by
    ``student_temp``. Each call then moves the centre towards the teacher's batch mean (over all
    processes): ``center = m * center + (1 - m) * mean``.
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, n_crops: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if n_crops < 2:
            raise ValueError(f"DINO needs at least the 2 global crops, got n_crops={n_crops}")
        self.n_crops = n_crops
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor,
                teacher_temp: float) -> DinoLossOutput:
        student_logp = F.log_softmax(student_output.float() / self.student_temp, dim=-1).chunk(self.n_crops)
        teacher_p = F.softmax((teacher_output.float().detach() - self.center) / teacher_temp, dim=-1).chunk(2)
        total, pairs = student_output.new_zeros((), dtype=torch.float32), 0
        for t, q in enumerate(teacher_p):
            for s, logp in enumerate(student_logp):
                if s == t:  # the student never predicts the teacher's view of the same crop
                    continue
                total = total + torch.sum(-q * logp, dim=-1).mean()
                pairs += 1
        loss = total / pairs
        with torch.no_grad():
            entropy = torch.special.entr(torch.cat(teacher_p)).sum(-1).mean()
        self.update_center(teacher_output)
        return DinoLossOutput(loss, entropy, loss.detach() - entropy)

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """EMA of the teacher's mean output over the global batch (the sum is all-reduced, then divided)."""
        batch_sum = all_reduce_sum(teacher_output.float().sum(dim=0, keepdim=True))
        count = all_reduce_sum(torch.tensor(float(len(teacher_output)), device=teacher_output.device))
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student``, parameter by parameter (not buffers, as
    DINO), outside autograd. ``student`` is the unwrapped module (not its DDP wrapper)."""
    student_params = [p.detach() for p in student.parameters()]
    teacher_params = list(teacher.parameters())
    if len(student_params) != len(teacher_params):
        raise ValueError(f"student has {len(student_params)} parameters, teacher {len(teacher_params)}")
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1 - momentum)


@torch.no_grad()
def clip_gradients(model: nn.Module, max_norm: float) -> None:
    """Scale each parameter's gradient down to an l2 norm of at most ``max_norm`` (DINO's per-parameter rule,
    not one global norm), without a device sync per parameter."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if grads:
        # DINO: coef = max_norm / (norm + 1e-6), applied when below 1.
        torch._foreach_mul_(grads, [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in torch._foreach_norm(grads)])


def cancel_last_layer_gradients(model: nn.Module, epoch: int, freeze_epochs: int) -> None:
    """Drop the head's last-layer gradients during the first ``freeze_epochs`` epochs (``epoch`` counts from
    0): DINO's remedy for an unstable start. The optimizer then skips those parameters (no update, no decay)."""
    if epoch >= freeze_epochs:
        return
    for name, param in model.named_parameters():
        if "last_layer" in name:
            param.grad = None


def cosine_schedule(base: float, final: float, epochs: int, iters_per_epoch: int, warmup_epochs: float = 0,
                    warmup_start: float = 0.0) -> np.ndarray:
    """One value per iteration: a linear warm-up from ``warmup_start`` to ``base`` over ``warmup_epochs``
    (its last value is ``base``), then a cosine from ``base`` down (or up) towards ``final``, which it would
    reach one iteration after the last, as DINO's ``cosine_scheduler``. ``warmup_epochs`` may be fractional
    (rounded to iterations)."""
    total = epochs * iters_per_epoch
    warmup = round(warmup_epochs * iters_per_epoch)
    if not 0 <= warmup <= total:
        raise ValueError(f"warm-up of {warmup_epochs} epochs ({warmup} iterations) does not fit in "
                         f"{epochs} epochs ({total} iterations)")
    ramp = np.linspace(warmup_start, base, warmup)
    iters = np.arange(total - warmup)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(math.pi * iters / max(len(iters), 1)))
    return np.concatenate((ramp, cosine))


def teacher_temperature_schedule(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int) -> np.ndarray:
    """One value per epoch: linear from ``warmup_temp`` (epoch 0) to ``temp`` (epoch ``warmup_epochs - 1``),
    then ``temp``; a warm-up longer than the run is cut off there."""
    ramp = np.linspace(warmup_temp, temp, warmup_epochs)
    return np.concatenate((ramp, np.full(max(epochs - warmup_epochs, 0), temp)))[:epochs]
