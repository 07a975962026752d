"""Top-1/top-5 accuracy of a classifier over a loader (summed over torchrun processes), or of a checkpoint file."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import transforms
from tqdm import tqdm

from ..training.checkpoint import read_checkpoint
from ..training.distributed import DistEnv, all_reduce_sum, resolve_device
from ..training.precision import autocast
from .data import (
    create_dataset,
    create_eval_loader,
    create_eval_transform,
    loader_workers,
    resolve_input_config,
)
from .model_factory import classifier_from_run, classifier_from_weights

__all__ = ["evaluate", "evaluate_checkpoint"]


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
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets[:, None])
        totals[:3] += torch.stack(
            [F.cross_entropy(logits, targets, reduction="sum"), hits[:, 0].sum(), hits.any(dim=1).sum()]
        ).double()
    totals[3] = count
    all_reduce_sum(totals)
    loss, hits1, hits5, count = totals.tolist()
    if count == 0:
        raise ValueError("evaluation loader yielded no samples")
    return {"loss": loss / count, "top1": 100 * hits1 / count, "top5": 100 * hits5 / count, "count": int(count)}


def evaluate_checkpoint(
    checkpoint: os.PathLike | str,
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
) -> dict[str, Any]:
    """Accuracy of a checkpoint on one split.

    A ``vision/train.py`` checkpoint brings its model, classes and data settings (``data`` entries
    override them: name, root, img_size, in_chans, crop_pct, interpolation, mean, std). Any other weight
    file needs ``model_name`` and ``data["root"]``; unset input settings come from the model's
    pretrained config (for ResMLP the paper's: 224 px, crop 0.9, bicubic). An ``img_size`` other than
    the run's evaluates a ResMLP with its token mixing resampled to that size. ``source_img_size`` first
    resizes every image to that size (data that comes at another resolution than the model's).
    """
    state = read_checkpoint(checkpoint)
    overrides = {k: v for k, v in (data or {}).items() if v is not None}
    if "config" in state:
        model, run_cfg = classifier_from_run(state, use_ema=use_ema, img_size=overrides.get("img_size"))
        settings = {**OmegaConf.to_container(run_cfg.data, resolve=True), **overrides}
        if settings["in_chans"] != run_cfg.data.in_chans:
            raise ValueError(
                f"in_chans={settings['in_chans']} (--in-chans) does not fit {checkpoint}: its model takes "
                f"{run_cfg.data.in_chans}-channel images (the run's data.in_chans); leave the option out"
            )
        split = split or settings["val_split"]
        dataset, _ = create_dataset(
            settings["name"], settings["root"], split, in_chans=settings["in_chans"], classes=state["classes"]
        )
    else:
        if not model_name or "root" not in overrides:
            raise ValueError(
                f"{checkpoint} is not a vision/train.py checkpoint: give the timm model name and the data root"
            )
        settings = {"name": "imagefolder", **overrides}
        split = split or ("test" if settings["name"] == "fashion_mnist" else "val")
        dataset, classes = create_dataset(
            settings["name"], settings["root"], split, in_chans=settings.get("in_chans") or 3
        )
        kwargs = {"in_chans": settings["in_chans"]} if "in_chans" in settings else {}
        model = classifier_from_weights(checkpoint, model_name, len(classes), **kwargs)
    dev = resolve_device(device)
    input_config = resolve_input_config(settings, model)
    dataset.transform = create_eval_transform(input_config)
    if source_img_size is not None:
        dataset.transform = transforms.Compose([transforms.Resize(source_img_size), dataset.transform])
    loader = create_eval_loader(
        dataset, batch_size, DistEnv(rank=0, local_rank=0, world_size=1, device=dev), loader_workers(num_workers, 4)
    )
    metrics = evaluate(model.to(dev), loader, dev, amp=amp, progress=progress)
    return {"checkpoint": str(checkpoint), "split": split, **metrics, "input_config": input_config}
