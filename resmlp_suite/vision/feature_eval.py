"""Frozen-feature evaluation of a backbone: weighted k-NN (DINO's ``eval_knn.py``), and the feature source
it shares with the linear probe (:mod:`~resmlp_suite.vision.linear_probe`).

What gets evaluated (``mode``):

* ``"model"``: the pooled features (what a classifier head sees) of a checkpoint's model: a
  ``vision/train.py`` checkpoint, or a weight file in any ResMLP layout (the official DeiT-repo files such
  as ``resmlp_24_dino.pth``, with or without a classifier; timm's copies; a DINO run's
  ``teacher_backbone.pt``) with ``model_name`` naming the architecture;
* ``"random"``: ``model_name`` (no checkpoint), or a training run's model with the run's data settings, at its
  initialisation (seed 0): how much training adds;
* ``"pixels"``: the normalised input images themselves, flattened: how much any network adds. The input
  settings are those of the checkpoint's model, or of ``model_name``.

Under torchrun every process embeds its share of each split and the features are gathered
(:func:`~resmlp_suite.vision.knn.extract_features`), so every process holds the same result.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from ..training.distributed import DistEnv, init_distributed
from .data import create_eval_loader, loader_workers, subsample
from .evaluation import EvalSetup, prepare_evaluation
from .knn import K, TEMPERATURE, extract_features, knn_accuracy, pooled_features

__all__ = ["MODES", "FeatureSource", "check_mode", "knn_evaluate", "prepare_features"]

MODES = ("model", "random", "pixels")


@dataclass
class FeatureSource:
    """The frozen embedding to evaluate, the data, and where this process runs."""

    setup: EvalSetup
    embed: Callable[[torch.Tensor], torch.Tensor]
    env: DistEnv

    def loader(self, dataset: Dataset, batch_size: int, num_workers: Optional[int]) -> DataLoader:
        """In order, this process's share of ``dataset``: every ``world_size``-th image."""
        return create_eval_loader(dataset, batch_size, self.env, loader_workers(num_workers, 4))

    def features(self, dataset: Dataset, batch_size: int, num_workers: Optional[int], amp: str = "none",
                 normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, labels)`` of all of ``dataset`` on CPU, in its order whatever the number of processes
        (the gathered shards are interleaved back), so that what is trained on them does not depend on it."""
        features, labels = extract_features(self.embed, self.loader(dataset, batch_size, num_workers),
                                            self.env.device, amp, normalize)
        world = self.env.world_size
        if world > 1:
            order = torch.cat([torch.arange(rank, len(labels), world) for rank in range(world)])
            features, labels = (t.new_empty(t.shape).index_copy_(0, order, t) for t in (features, labels))
        return features, labels


def check_mode(mode: str, checkpoint: Optional[os.PathLike | str]) -> None:
    """A ``mode`` (see the module) with what it needs: a checkpoint for "model"."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "model" and checkpoint is None:
        raise ValueError("no checkpoint given: name one, or ask for a baseline (--random-init or --pixels) of --model")


def prepare_features(
    checkpoint: Optional[os.PathLike | str],
    model_name: Optional[str] = None,
    mode: str = "model",
    use_ema: bool = False,
    data: Optional[Mapping[str, Any]] = None,
    split: Optional[str] = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
    device: str = "auto",
) -> FeatureSource:
    """``mode``'s embedding (see the module) of ``checkpoint`` or ``model_name``, and the data to evaluate it on
    (:func:`~resmlp_suite.vision.evaluation.prepare_evaluation`: which settings come from where)."""
    check_mode(mode, checkpoint)
    setup = prepare_evaluation(checkpoint, model_name, use_ema, data, split, backbone=True, model_kwargs=model_kwargs,
                               initialised=mode == "random")
    env = init_distributed(device)
    if mode == "pixels":
        return FeatureSource(setup, lambda images: images.flatten(1), env)
    return FeatureSource(setup, pooled_features(setup.model.to(env.device).eval()), env)


def knn_evaluate(
    checkpoint: Optional[os.PathLike | str],
    model_name: Optional[str] = None,
    mode: str = "model",
    data: Optional[Mapping[str, Any]] = None,
    split: Optional[str] = None,
    k: int = K,
    temperature: float = TEMPERATURE,
    use_ema: bool = False,
    model_kwargs: Optional[Mapping[str, Any]] = None,
    batch_size: int = 256,
    num_workers: Optional[int] = None,
    device: str = "auto",
    amp: str = "none",
    memory_samples: Optional[int] = None,
) -> dict[str, Any]:
    """Weighted k-NN top-1/top-5 (%) of ``mode``'s features (cosine similarity, votes ``exp(s / T)``):
    the train split (``data["train_split"]``: default the run's, else "train") is the memory, ``split``
    (default the run's validation split, else val / test) the queries. Both splits go through the
    evaluation transform (resize, centre crop), as in DINO's evaluation. ``memory_samples``: at most this
    many training images (a fixed random subset) as the memory, for a quicker, rougher estimate."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} (--temperature): expected a positive number (DINO: 0.07)")
    source = prepare_features(checkpoint, model_name, mode, use_ema, data, split, model_kwargs, device)
    setup = source.setup
    memory = setup.load_split(setup.train_split)
    if memory_samples is not None and memory_samples < len(memory):
        memory = subsample(memory, memory_samples)
    if not 1 <= k <= len(memory):
        raise ValueError(f"k={k} (--k) must be in 1..{len(memory)}: the {setup.train_split!r} split (the k-NN "
                         f"memory) has {len(memory)} images")
    metrics = knn_accuracy(source.embed, source.loader(memory, batch_size, num_workers),
                           source.loader(setup.dataset, batch_size, num_workers), source.env.device,
                           len(setup.classes), k, temperature, amp)
    return {"checkpoint": None if checkpoint is None else str(checkpoint), "mode": mode, "split": setup.split,
            "train_split": setup.train_split, "k": k, "temperature": temperature, **metrics,
            "knn_memory": len(memory), "input_config": setup.input_config}
