"""Linear probe: a linear classifier trained on a backbone's frozen pooled features, DINO's ``eval_linear``.

As there: one ``nn.Linear`` on the features (no BatchNorm; weights N(0, 0.01), bias 0), cross-entropy,
SGD with momentum 0.9 and no weight decay at ``lr * batch_size / 256`` (``lr`` 1e-3 by default, DINO's),
the rate following a cosine to 0. DINO steps its cosine once per epoch; here it moves every step, the
same curve without the stairs that a probe of a few epochs would show. The result is the accuracy after
the last epoch (DINO prints the best epoch's, chosen on the evaluation split).

The features (see :mod:`~resmlp_suite.vision.feature_eval` for the ``mode`` baselines) reach the classifier
in one of two ways:

* by default they are extracted once, from the train images through the evaluation transform (resize,
  centre crop), and the classifier trains on these cached features: an epoch is a pass over an (N, D)
  matrix, so a probe on a CPU takes minutes where running the frozen backbone every epoch takes hours;
* ``augment=True`` is DINO's protocol (its ImageNet numbers): every epoch embeds freshly augmented train
  images (random-resized crop, horizontal flip), a backbone pass per image and epoch: for a GPU.

Under torchrun the cached features are gathered over processes, in the dataset's order, and every process
trains the same classifier on all of them from the same seed: the processes need not talk while training,
so no collective can time out during a long probe, and the result is a single process's (up to rounding). With
``augment`` each process embeds its share of every batch and the gradients are averaged (as DDP would).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import transforms

from ..training.distributed import all_reduce_sum
from ..training.precision import autocast
from .data import create_train_loader, loader_workers, start_epoch
from .evaluation import topk_hits
from .feature_eval import prepare_features

__all__ = ["BASE_BATCH", "BASE_LR", "DEFAULT_EPOCHS", "augment_transform", "fit_linear", "linear_probe",
           "probe_accuracy", "train_on_features"]

BASE_LR = 1e-3  # at a batch of BASE_BATCH, scaled linearly with the batch (DINO's eval_linear default)
BASE_BATCH = 256
# DINO's 100 epochs for ImageNet; Fashion-MNIST's cached features need few (a CPU probe of the demo).
DEFAULT_EPOCHS = {"imagefolder": 100, "fashion_mnist": 10}

Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def fit_linear(batches: Batches, steps_per_epoch: int, feature_dim: int, num_classes: int, epochs: int, lr: float,
               device: torch.device, seed: int = 0, world_size: int = 1) -> tuple[nn.Linear, float]:
    """Train ``nn.Linear(feature_dim, num_classes)`` on ``batches(epoch)`` (``(features, labels)`` pairs,
    ``steps_per_epoch`` of them) at the applied rate ``lr``; returns it and its mean loss over the last epoch.

    ``world_size > 1`` averages the gradients over the processes (each feeding its own share of a batch).
    """
    linear = nn.Linear(feature_dim, num_classes)
    with torch.no_grad():
        linear.weight.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(seed))
        linear.bias.zero_()
    linear.to(device)
    optimizer = torch.optim.SGD(linear.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    for epoch in range(epochs):
        losses = []
        for features, labels in batches(epoch):
            loss = F.cross_entropy(linear(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world_size > 1:
                for param in linear.parameters():
                    all_reduce_sum(param.grad).div_(world_size)
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())
    return linear, torch.stack(losses).mean().item()


def _cached_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> Batches:
    """Every epoch a new order (a function of ``(seed, epoch)``), the last batch possibly smaller."""
    def epoch_batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        for batch in order.to(features.device).split(batch_size):
            yield features[batch], labels[batch]
    return epoch_batches


def train_on_features(features: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int,
                      lr: float = BASE_LR, batch_size: int = BASE_BATCH, seed: int = 0) -> tuple[nn.Linear, float]:
    """A linear probe on cached ``(N, D)`` features (on their device), at ``lr`` for a batch of 256 scaled to
    ``batch_size``; returns the classifier and its mean loss over the last epoch."""
    steps = math.ceil(len(features) / batch_size)
    return fit_linear(_cached_batches(features, labels, batch_size, seed), steps, features.shape[1], num_classes,
                      epochs, lr * batch_size / BASE_BATCH, features.device, seed)


@torch.no_grad()
def probe_accuracy(linear: nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 / top-5 (%) of the probe on features."""
    hits = topk_hits(linear(features.to(linear.weight.device)), labels.to(linear.weight.device)).float()
    return {"top1": 100 * hits[:, 0].mean().item(), "top5": 100 * hits[:, 1].mean().item()}


def augment_transform(input_config: Mapping[str, Any]) -> Callable:
    """DINO eval_linear's training transform at the model's input size: random-resized crop (scale 0.08-1),
    horizontal flip, normalisation."""
    return transforms.Compose([
        transforms.RandomResizedCrop(tuple(input_config["input_size"][1:]),
                                     interpolation=transforms.InterpolationMode(input_config["interpolation"])),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(input_config["mean"], input_config["std"]),
    ])


def linear_probe(
    checkpoint: Optional[os.PathLike | str],
    model_name: Optional[str] = None,
    mode: str = "model",
    data: Optional[Mapping[str, Any]] = None,
    split: Optional[str] = None,
    epochs: Optional[int] = None,
    lr: float = BASE_LR,
    batch_size: int = BASE_BATCH,
    augment: bool = False,
    use_ema: bool = False,
    model_kwargs: Optional[Mapping[str, Any]] = None,
    num_workers: Optional[int] = None,
    device: str = "auto",
    amp: str = "none",
    seed: int = 0,
) -> dict[str, Any]:
    """Top-1/top-5 (%) on ``split`` of a linear classifier trained on the train split's frozen features
    (``mode``, data settings: as :func:`~resmlp_suite.vision.feature_eval.knn_evaluate`).

    ``epochs`` defaults to :data:`DEFAULT_EPOCHS` of the dataset kind; ``lr`` is the rate at a batch of 256,
    ``batch_size`` the global batch.
    """
    if lr <= 0 or batch_size < 1:
        raise ValueError(f"lr={lr} (--lr) and batch_size={batch_size} (--batch-size) must be positive")
    source = prepare_features(checkpoint, model_name, mode, use_ema, data, split, model_kwargs, device)
    setup, env = source.setup, source.env
    epochs = DEFAULT_EPOCHS.get(setup.settings["name"], 100) if epochs is None else epochs
    if epochs < 1:
        raise ValueError(f"epochs={epochs} (--epochs): expected at least 1")
    eval_features, eval_labels = source.features(setup.dataset, batch_size, num_workers, amp, normalize=False)
    num_classes, applied_lr = len(setup.classes), lr * batch_size / BASE_BATCH
    if augment:
        if batch_size % env.world_size:
            raise ValueError(f"batch_size={batch_size} (--batch-size, the global batch) must be a multiple of the "
                             f"{env.world_size} processes with augment (--augment)")
        train_set = setup.load_split(setup.train_split, augment_transform(setup.input_config))
        loader = create_train_loader(train_set, batch_size // env.world_size, env, loader_workers(num_workers, 4))

        def augmented_batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            start_epoch(loader, seed, epoch)
            for images, labels in loader:
                with torch.no_grad(), autocast(env.device, amp):
                    features = source.embed(images.to(env.device, non_blocking=True))
                yield features.float().flatten(1), labels.to(env.device, non_blocking=True)

        linear, train_loss = fit_linear(augmented_batches, len(loader), eval_features.shape[1], num_classes, epochs,
                                        applied_lr, env.device, seed, env.world_size)
        train_count = len(train_set)
    else:
        train_features, train_labels = source.features(setup.load_split(setup.train_split), batch_size,
                                                       num_workers, amp, normalize=False)
        linear, train_loss = train_on_features(train_features.to(env.device), train_labels.to(env.device),
                                               num_classes, epochs, lr, batch_size, seed)
        train_count = len(train_labels)
    return {"checkpoint": None if checkpoint is None else str(checkpoint), "mode": mode, "split": setup.split,
            "train_split": setup.train_split, **probe_accuracy(linear, eval_features, eval_labels),
            "count": len(eval_labels), "train_count": train_count, "train_loss": train_loss,
            "feature_dim": eval_features.shape[1], "epochs": epochs, "lr": applied_lr, "batch_size": batch_size,
            "augment": augment, "input_config": setup.input_config}
