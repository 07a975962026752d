"""Weighted k-NN classification on frozen features, as DINO evaluates (``eval_knn.py``: k 20, T 0.07).

Features are l2-normalised, so the similarity is the cosine; each of the ``k`` nearest training images
votes for its class with weight ``exp(similarity / T)``. Under torchrun every process extracts the
features of its shard and the shards are gathered, so every process classifies with the whole train set.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..training.distributed import all_gather_objects
from ..training.precision import autocast
from .evaluation import topk_hits

__all__ = ["K", "TEMPERATURE", "extract_features", "knn_accuracy", "knn_predict", "pooled_features"]

K = 20
TEMPERATURE = 0.07


def pooled_features(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The image embedding a timm classifier puts before its head (a backbone with ``num_classes=0``: its output)."""
    return lambda images: model.forward_head(model.forward_features(images), pre_logits=True)


@torch.no_grad()
def extract_features(embed: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, device: torch.device,
                     amp: str = "none", normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, labels)`` of every image of ``loader`` (all processes' shards), on CPU; features
    l2-normalised unless ``normalize=False`` (a linear probe trains on the features as they are, as DINO's does)."""
    features, labels = [], []
    for images, targets in loader:
        with autocast(device, amp):
            out = embed(images.to(device, non_blocking=True)).float().flatten(1)
        features.append((F.normalize(out, dim=1) if normalize else out).cpu())
        labels.append(targets.cpu())
    local = (torch.cat(features), torch.cat(labels))
    shards = all_gather_objects(local)
    return torch.cat([f for f, _ in shards]), torch.cat([y for _, y in shards])


def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                num_classes: int, k: int = K, temperature: float = TEMPERATURE, chunk: int = 1000) -> torch.Tensor:
    """Class scores ``(n_test, num_classes)`` of the weighted vote of each test feature's ``k`` nearest
    training features (rows l2-normalised).

    A neighbour at similarity ``s`` votes ``exp((s - s_max) / T)``, ``s_max`` being the query's nearest
    similarity: DINO's ``exp(s / T)`` divided by the same ``exp(s_max / T)`` for every class of a query, so
    the ranking is DINO's, and small temperatures cannot overflow (``exp(1 / 0.01)`` is beyond float32).
    """
    if not 1 <= k <= len(train_features):
        raise ValueError(f"k must be in 1..{len(train_features)} (the number of training features), got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scores = []
    for start in range(0, len(test_features), chunk):
        similarity = test_features[start:start + chunk] @ train_features.T
        top, index = similarity.topk(k, dim=1)  # sorted: top[:, :1] is the nearest
        votes = torch.zeros(len(top), num_classes, dtype=top.dtype, device=top.device)
        scores.append(votes.scatter_add_(1, train_labels[index], ((top - top[:, :1]) / temperature).exp()))
    return torch.cat(scores)


def knn_accuracy(embed: Callable[[torch.Tensor], torch.Tensor], train_loader: DataLoader, test_loader: DataLoader,
                 device: torch.device, num_classes: int, k: int = K, temperature: float = TEMPERATURE,
                 amp: str = "none", limit: Optional[int] = None) -> dict[str, float]:
    """Top-1 / top-5 (%) of weighted k-NN on ``embed``'s features of the test images, with the train images as memory.

    ``limit`` caps the test images classified (a quick per-epoch estimate) to ones evenly spread over the test
    set: the first ones of an ImageFolder split are its first classes. Every test image is still embedded
    (a loader over a subset saves that time too); the train set is always used whole.
    """
    train_features, train_labels = extract_features(embed, train_loader, device, amp)
    test_features, test_labels = extract_features(embed, test_loader, device, amp)
    if limit is not None and limit < len(test_labels):
        spread = torch.arange(limit) * len(test_labels) // limit
        test_features, test_labels = test_features[spread], test_labels[spread]
    hits = topk_hits(knn_predict(train_features, train_labels, test_features, num_classes, k, temperature), test_labels)
    return {"knn_top1": 100 * hits[:, 0].float().mean().item(), "knn_top5": 100 * hits[:, 1].float().mean().item(),
            "knn_count": len(test_labels)}
