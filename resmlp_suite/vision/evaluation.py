"""Top-1/top-5 accuracy of a classifier over a loader (summed over torchrun processes), or of a checkpoint file;
the model and data building that every evaluation of a checkpoint shares (accuracy, k-NN, linear probe)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import timm
import torch
import yaml
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from tqdm import tqdm

from ..training.checkpoint import read_checkpoint
from ..training.distributed import all_reduce_sum, init_distributed
from ..training.precision import autocast
from .data import (
    DATASETS,
    create_dataset,
    create_eval_loader,
    create_eval_transform,
    loader_workers,
    resolve_input_config,
)
from .model_factory import backbone_from_weights, classifier_from_weights, initialised_model, model_from_run

__all__ = [
    "EvalSetup",
    "add_evaluation_arguments",
    "evaluate",
    "evaluate_checkpoint",
    "evaluation_mode",
    "evaluation_options",
    "prepare_evaluation",
    "topk_hits",
]


def topk_hits(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(n, 2)`` booleans: whether each target is the top-scored class, and whether it is among the top 5
    (among all classes when there are fewer than 5: then always)."""
    hits = scores.topk(min(5, scores.shape[1]), dim=1).indices.eq(targets[:, None])
    return torch.stack([hits[:, 0], hits.any(dim=1)], dim=1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """``{"loss", "top1", "top5", "count"}``: mean cross-entropy and accuracies in percent over every sample.

    With fewer than 5 classes "top5" is top-``num_classes`` (100 by definition).
    """
    model.eval()
    # loss sum, top-1 hits, top-5 hits, samples: hits counted as integers, then summed over processes
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    count = 0
    for images, targets in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        count += targets.numel()
        hits = topk_hits(logits, targets)
        totals[:3] += torch.stack(
            [F.cross_entropy(logits, targets, reduction="sum"), hits[:, 0].sum(), hits[:, 1].sum()]
        ).double()
    totals[3] = count
    all_reduce_sum(totals)
    loss, hits1, hits5, count = totals.tolist()
    if count == 0:
        raise ValueError("evaluation loader yielded no samples")
    return {"loss": loss / count, "top1": 100 * hits1 / count, "top5": 100 * hits5 / count, "count": int(count)}


@dataclass
class EvalSetup:
    """A model and the data it is evaluated on, as :func:`prepare_evaluation` builds them."""

    model: nn.Module
    settings: dict[str, Any]  # data settings: name, root, in_chans, ... (a run's, with the caller's overrides)
    classes: list[str]  # in label order
    split: str  # the split evaluated
    train_split: str  # the split a frozen-feature evaluation learns from (k-NN memory, linear probe)
    input_config: dict[str, Any]  # timm's: input_size, mean, std, crop_pct, interpolation
    transform: Callable  # the evaluation transform (resize, centre crop, normalise)
    dataset: Dataset  # ``split`` with ``transform``

    def load_split(self, split: str, transform: Optional[Callable] = None) -> Dataset:
        """Another split of the same data with the same classes (checked), with ``transform`` (default: the
        evaluation transform)."""
        dataset, _ = create_dataset(self.settings["name"], self.settings["root"], split,
                                    in_chans=self.settings["in_chans"], classes=self.classes)
        dataset.transform = transform or self.transform
        return dataset


def _input_channels(model_name: str, settings: Mapping[str, Any], model_kwargs: Mapping[str, Any]) -> int:
    """The channels of the images to read: the data's ``in_chans``, else the model's (its ``model_kwargs``, its
    pretrained config: 1 for ``resmlp_tiny_p4``), else 3."""
    input_size = timm.models.get_pretrained_cfg_value(model_name, "input_size") or (3,)
    return settings.get("in_chans") or model_kwargs.get("in_chans") or input_size[0]


def _weight_file_model_kwargs(model_name: str, settings: Mapping[str, Any],
                              model_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``timm.create_model`` arguments for ``model_name``: ``model_kwargs``, the data's ``in_chans``, and its
    ``img_size`` for a model built for one input size (a ResMLP's token mixing is resampled to it; a
    convolutional network takes any size and no such argument)."""
    kwargs = {**model_kwargs, "in_chans": settings["in_chans"]}
    if settings.get("img_size") and timm.models.get_pretrained_cfg_value(model_name, "fixed_input_size"):
        kwargs["img_size"] = settings["img_size"]
    return kwargs


def prepare_evaluation(
    checkpoint: Optional[os.PathLike | str],
    model_name: Optional[str] = None,
    use_ema: bool = False,
    data: Optional[Mapping[str, Any]] = None,
    split: Optional[str] = None,
    source_img_size: Optional[int] = None,
    backbone: bool = False,
    model_kwargs: Optional[Mapping[str, Any]] = None,
    initialised: bool = False,
) -> EvalSetup:
    """The model of a checkpoint and the split to evaluate it on, with the evaluation transform.

    A ``vision/train.py`` checkpoint (and for ``backbone`` a ``vision/train_dino.py`` one: its teacher's
    backbone) brings its model, classes and data settings (``data`` entries
    override them: name, root, train_split, img_size, in_chans, crop_pct, interpolation, mean, std). Any
    other weight file needs ``model_name`` and ``data["root"]``; the model is built with ``model_kwargs``,
    the data's ``in_chans`` (default: the model's) and, for a model of one input size (ResMLP, ViT), its
    ``img_size``. Unset input settings come from the model's pretrained config (for ResMLP the paper's:
    224 px, crop 0.9, bicubic). An ``img_size`` other than the weights' evaluates a ResMLP with its token
    mixing resampled to that size. ``source_img_size`` first resizes every image to that size (data that
    comes at another resolution than the model's).

    ``initialised``: the architecture at its initialisation (seed 0), a random-weights baseline: ``model_name``
    with ``checkpoint=None``, or a run checkpoint's model with its data settings.
    ``backbone`` is for frozen-feature evaluation: a weight file then loads without classifier (one in the
    file is ignored, see :func:`~resmlp_suite.vision.model_factory.backbone_from_weights`); a run's model keeps
    its head, which pooled features (``forward_head(pre_logits=True)``) do not use.
    """
    state = read_checkpoint(checkpoint) if checkpoint is not None else {}
    overrides = {k: v for k, v in (data or {}).items() if v is not None}
    if "config" in state:
        if model_kwargs:
            raise ValueError(f"model_kwargs {dict(model_kwargs)} (--model-kwargs) do not apply to {checkpoint}: a "
                             "vision/train.py checkpoint builds its run's model; leave the option out")
        model, run_cfg = model_from_run(state, use_ema=use_ema, img_size=overrides.get("img_size"), backbone=backbone,
                                        initialised=initialised)
        settings = {**OmegaConf.to_container(run_cfg.data, resolve=True), **overrides}
        if settings["in_chans"] != run_cfg.data.in_chans:
            raise ValueError(
                f"in_chans={settings['in_chans']} (--in-chans) does not fit {checkpoint}: its model takes "
                f"{run_cfg.data.in_chans}-channel images (the run's data.in_chans); leave the option out"
            )
        classes = list(state["classes"])
        split = split or settings["val_split"]
        dataset, _ = create_dataset(
            settings["name"], settings["root"], split, in_chans=settings["in_chans"], classes=classes
        )
    else:
        if initialised and checkpoint is not None:
            raise ValueError(f"{checkpoint} is not a training run's checkpoint: a random-init baseline (--random-init) "
                             "takes a run's checkpoint (its model and data settings) or --model without a checkpoint")
        if not model_name or "root" not in overrides:
            what = (f"{checkpoint} is not a vision/train.py checkpoint" if checkpoint is not None
                    else "without a checkpoint (a baseline)")
            raise ValueError(f"{what}: give the timm model name (--model) and the data root (--data-root)")
        settings = {"name": "imagefolder", **overrides}
        settings["in_chans"] = _input_channels(model_name, settings, model_kwargs or {})
        split = split or ("test" if settings["name"] == "fashion_mnist" else "val")
        dataset, classes = create_dataset(settings["name"], settings["root"], split, in_chans=settings["in_chans"])
        kwargs = _weight_file_model_kwargs(model_name, settings, model_kwargs or {})
        if checkpoint is None:
            model = initialised_model(model_name, 0 if backbone else len(classes), **kwargs)
        elif backbone:
            model = backbone_from_weights(checkpoint, model_name, **kwargs)
        else:
            model = classifier_from_weights(checkpoint, model_name, len(classes), **kwargs)
    input_config = resolve_input_config(settings, model)
    transform = create_eval_transform(input_config)
    if source_img_size is not None:
        transform = transforms.Compose([transforms.Resize(source_img_size), transform])
    dataset.transform = transform
    train_split = settings.get("train_split") or "train"
    return EvalSetup(model, settings, classes, split, train_split, input_config, transform, dataset)


def evaluate_checkpoint(
    checkpoint: Optional[os.PathLike | str],
    model_name: Optional[str] = None,
    use_ema: bool = False,
    data: Optional[Mapping[str, Any]] = None,
    split: Optional[str] = None,
    batch_size: int = 256,
    num_workers: Optional[int] = None,
    device: str = "auto",
    amp: str = "none",
    progress: bool = False,
    source_img_size: Optional[int] = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Accuracy of a checkpoint on one split (what is read: :func:`prepare_evaluation`); under torchrun
    every process evaluates its share of the images and the counts are summed."""
    setup = prepare_evaluation(checkpoint, model_name, use_ema, data, split, source_img_size,
                               model_kwargs=model_kwargs)
    env = init_distributed(device)
    loader = create_eval_loader(setup.dataset, batch_size, env, loader_workers(num_workers, 4))
    metrics = evaluate(setup.model.to(env.device), loader, env.device, amp=amp, progress=progress and env.is_main)
    return {"checkpoint": None if checkpoint is None else str(checkpoint), "split": setup.split, **metrics,
            "input_config": setup.input_config}


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read as YAML, as in a Hydra override: ``depth=2`` gives an int,
    ``drop_path_rate=0.1`` a float, ``token_mixer=toeplitz`` a string."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. depth=2), got {text!r}")
    return key, yaml.safe_load(value)


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say what to evaluate on which data, shared by ``vision/evaluate.py`` and
    ``vision/linear_probe.py``; :func:`evaluation_options` and :func:`evaluation_mode` read them."""
    add = parser.add_argument
    add("checkpoint", nargs="?", help="a vision/train.py checkpoint, a vision/train_dino.py one (its teacher's "
                                      "backbone; frozen features only) or a weight file; none with --model and "
                                      "--random-init or --pixels")
    add("--model", help="timm model name (needed unless the file is a training run's checkpoint)")
    add("--model-kwargs", nargs="+", type=_key_value, metavar="KEY=VALUE",
        help="more timm.create_model arguments for --model, e.g. depth=2 embed_dim=32 (after CKPT)")
    add("--ema", action="store_true", help="the EMA weights of a training checkpoint")
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--random-init", action="store_true",
                          help="baseline: --model, or the run's model with the run's settings, at its "
                               "initialisation (seed 0) instead of trained weights")
    baseline.add_argument("--pixels", action="store_true",
                          help="baseline (frozen-feature evaluation only): the normalised input images, flattened, "
                               "as features; input settings from CKPT or --model")
    add("--data", dest="name", choices=DATASETS, help="dataset kind (default: the run's, else imagefolder)")
    add("--data-root", dest="root", help="dataset root (default: the run's)")
    add("--split", help="split to evaluate (default: the run's validation split, else val / test)")
    add("--train-split", help="split that frozen-feature evaluation learns from (k-NN memory, linear probe; "
                              "default: the run's training split, else train)")
    add("--img-size", type=int)
    add("--in-chans", type=int)
    add("--crop-pct", type=float)
    add("--interpolation", choices=("bilinear", "bicubic", "nearest"))
    add("--batch-size", type=int, default=256)
    add("--num-workers", type=int, default=None,
        help="data-loading processes (default: min(4, the CPUs this process may use))")
    add("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add("--amp", default="none", choices=("none", "bf16", "fp16"))


def evaluation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`prepare_evaluation` (and the loading options) that
    :func:`add_evaluation_arguments`'s options give."""
    data_keys = ("name", "root", "train_split", "img_size", "in_chans", "crop_pct", "interpolation")
    return {
        "checkpoint": args.checkpoint,
        "model_name": args.model,
        "model_kwargs": dict(args.model_kwargs or ()),
        "use_ema": args.ema,
        "data": {k: getattr(args, k) for k in data_keys},
        "split": args.split,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "device": args.device,
        "amp": args.amp,
    }


def evaluation_mode(args: argparse.Namespace) -> str:
    """What :func:`add_evaluation_arguments`' options ask to evaluate: "random" (--random-init), "pixels"
    (--pixels) or the checkpoint's "model" (the modes of :mod:`~resmlp_suite.vision.feature_eval`)."""
    return "random" if args.random_init else "pixels" if args.pixels else "model"
