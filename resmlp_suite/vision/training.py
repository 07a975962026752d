"""Supervised image-classification training (the ResMLP/DeiT recipe) from a hydra config.

Everything is timm's: ``create_model``, ``create_transform``, ``Mixup``, ``create_optimizer_v2``
(weight decay off for 1-D parameters), ``create_scheduler_v2``, ``ModelEmaV3``,
``RepeatAugSampler``, the losses. This module wires them together, shards over torchrun processes,
and makes runs resumable: ``last.pt`` after every epoch holds everything a restarted process needs
to continue bit for bit (on CPU with the same number of processes).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, random_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..plotting import plot_curves
from ..training.checkpoint import (
    BEST,
    LAST,
    atomic_copy,
    atomic_save,
    read_resume_checkpoint,
    resolve_resume,
    restore_rank_rng_state,
    resume_way_out,
    rng_state,
)
from ..training.distill import DistillationLoss, create_teacher
from ..training.distributed import DistEnv, all_gather_objects, all_reduce_sum, run_in_process_group
from ..training.metrics import CSV_NAME, MetricsLogger
from ..training.precision import amp_dtype, autocast, grad_scaler
from .data import (
    create_datasets,
    create_eval_loader,
    create_eval_transform,
    create_train_loader,
    create_train_transform,
    loader_workers,
    resolve_input_config,
    start_epoch,
    subsample,
)
from .evaluation import evaluate
from .model_factory import create_model_from_config

__all__ = ["train", "Trainer", "scaled_lr", "create_criterion", "CURVES_NAME"]

_logger = logging.getLogger(__name__)

CURVES_NAME = "curves.png"
LR_SCALINGS = ("linear", "none")


def scaled_lr(lr: float, global_batch: int, base_batch: int, scaling: str) -> float:
    """The applied learning rate: ``lr`` is given for a global batch of ``base_batch``; ``linear`` scales it."""
    if scaling not in LR_SCALINGS:
        raise ValueError(f"optim.lr_scaling must be one of {LR_SCALINGS}, got {scaling!r}")
    return lr * global_batch / base_batch if scaling == "linear" else lr


def _container(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)


def create_criterion(smoothing: float, mixup_active: bool) -> nn.Module:
    """timm's losses as in DeiT: soft-target CE on Mixup/CutMix targets (smoothed by Mixup), else smoothed CE."""
    if mixup_active:
        return SoftTargetCrossEntropy()
    if smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing)
    return nn.CrossEntropyLoss()


# The numeric options, checked before any of them is used: hydra passes `train.epochs=abc` on as a string.
# key -> (type, whether null is allowed); a float option takes an int too.
NUMERIC_OPTIONS = {
    "train.epochs": (int, False), "train.batch_size": (int, False), "train.seed": (int, False),
    "train.log_every": (int, False), "train.num_threads": (int, True), "train.grad_clip": (float, True),
    "train.ema_decay": (float, False), "optim.lr": (float, False), "optim.lr_base_batch": (int, False),
    "optim.weight_decay": (float, False), "sched.warmup_epochs": (float, False), "sched.warmup_lr": (float, False),
    "sched.min_lr": (float, False), "sched.cooldown_epochs": (int, False), "data.img_size": (int, False),
    "data.in_chans": (int, False), "data.num_workers": (int, True), "data.train_samples": (int, True),
    "data.holdout": (int, True),
    "data.eval_batch_size": (int, True), "aug.smoothing": (float, False), "aug.repeated_aug": (int, False),
}


def check_numeric_options(cfg: DictConfig, options: Mapping[str, tuple[type, bool]] = NUMERIC_OPTIONS) -> None:
    """Each of ``options`` (key -> (type, null allowed)) present in ``cfg`` holds a value of its type."""
    absent = object()
    for key, (kind, nullable) in options.items():
        value = OmegaConf.select(cfg, key, default=absent, throw_on_missing=True)
        if value is absent or (value is None and nullable):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            expected = "an integer" if kind is int else "a number"
            raise ValueError(f"{key} must be {expected}{' or null' if nullable else ''}, got {value!r}")


def _check_config(cfg: DictConfig, env: DistEnv) -> None:
    check_numeric_options(cfg)
    t = cfg.train
    amp_dtype(t.amp)
    if t.epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {t.epochs}")
    if t.seed < 0:
        raise ValueError(f"train.seed must be >= 0, got {t.seed}")
    if t.batch_size % env.world_size:
        raise ValueError(
            f"train.batch_size (global) = {t.batch_size} is not divisible by the {env.world_size} processes"
        )
    scaled_lr(cfg.optim.lr, t.batch_size, cfg.optim.lr_base_batch, cfg.optim.lr_scaling)


class Trainer:
    """Builds data, model, optimizer, schedule and loss from ``cfg``; :meth:`fit` runs the epochs."""

    def __init__(self, cfg: DictConfig, env: DistEnv) -> None:
        _check_config(cfg, env)
        self.cfg, self.env = cfg, env
        t = cfg.train
        self.run_dir = Path(cfg.output_dir)
        self.batch_per_rank = t.batch_size // env.world_size

        self.train_set, self.val_set, self.classes = create_datasets(
            cfg.data.name, cfg.data.root, cfg.data.train_split, cfg.data.val_split, in_chans=cfg.data.in_chans,
            holdout=cfg.data.get("holdout"),
        )
        num_classes = len(self.classes)
        # Same initial weights on every rank (DDP would broadcast rank 0's anyway, but the EMA copy is made first).
        random_seed(t.seed, 0)
        self.model = create_model_from_config(cfg.model, num_classes).to(env.device)
        if t.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.input_config = resolve_input_config(cfg.data, self.model)
        self.train_set.transform = create_train_transform(self.input_config, _container(cfg.aug.transform))
        self.val_set.transform = create_eval_transform(self.input_config)
        self.train_set = subsample(self.train_set, cfg.data.get("train_samples"))
        random_seed(t.seed, env.rank)

        workers = loader_workers(cfg.data.num_workers)
        self.train_loader = create_train_loader(
            self.train_set,
            self.batch_per_rank,
            env,
            num_workers=workers,
            repeated_aug=cfg.aug.repeated_aug,
        )
        self.val_loader = create_eval_loader(
            self.val_set, cfg.data.get("eval_batch_size") or self.batch_per_rank, env, workers
        )

        mixup = _container(cfg.aug.mixup)
        mixup_active = mixup["mixup_alpha"] > 0 or mixup["cutmix_alpha"] > 0
        if mixup_active and self.batch_per_rank % 2:
            raise ValueError(f"Mixup/CutMix need an even batch per process, got {self.batch_per_rank}")
        self.mixup_fn = (
            Mixup(**mixup, label_smoothing=cfg.aug.smoothing, num_classes=num_classes) if mixup_active else None
        )
        teacher = None
        if cfg.distill.type == "hard":
            teacher = create_teacher(
                cfg.distill.teacher,
                cfg.distill.teacher_checkpoint,
                num_classes,
                env.device,
                **_container(cfg.distill.teacher_kwargs),
            )
        elif cfg.distill.type != "none":
            raise ValueError(f"distill.type must be 'none' or 'hard', got {cfg.distill.type!r}")
        self.criterion = DistillationLoss(
            create_criterion(cfg.aug.smoothing, mixup_active), teacher, cfg.distill.get("alpha", 0.5)
        )

        o = cfg.optim
        self.lr = scaled_lr(o.lr, t.batch_size, o.lr_base_batch, o.lr_scaling)
        self.optimizer = create_optimizer_v2(
            self.model, opt=o.name, lr=self.lr, weight_decay=o.weight_decay, **_container(o.kwargs)
        )
        s = cfg.sched
        self.updates_per_epoch = len(self.train_loader)
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer,
            sched=s.name,
            num_epochs=t.epochs,
            warmup_epochs=s.warmup_epochs,
            warmup_lr=s.warmup_lr,
            min_lr=s.min_lr,
            cooldown_epochs=s.cooldown_epochs,
            step_on_epochs=s.step_on_epochs,
            updates_per_epoch=self.updates_per_epoch,
        )
        self.scaler = grad_scaler(env.device, t.amp)
        self.ema = ModelEmaV3(self.model, decay=t.ema_decay) if t.ema else None

        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer updates
        self.best_top1 = -math.inf
        self.metrics: Optional[MetricsLogger] = None  # rank 0, during fit()
        self.resumed_history: Optional[list[dict[str, Any]]] = None  # the metrics rows of the loaded checkpoint
        checkpoint = resolve_resume(t.resume, self.run_dir)
        if checkpoint is not None:
            self.load(checkpoint)

        self.train_model: nn.Module = self.model
        if env.is_distributed:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[env.local_rank] if env.device.type == "cuda" else None
            )
        if t.compile:
            self.train_model = torch.compile(self.train_model)

    # -- checkpoints -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_top1": self.best_top1,
            "classes": list(self.classes),
            "config": OmegaConf.to_yaml(self.cfg, resolve=True),
            # the history lives with the weights, so no loss of a metrics file loses it
            "metrics": self.metrics.rows if self.metrics is not None else [],
        }

    def save(self, is_best: bool) -> None:
        """``last.pt`` (and ``best.pt``); a collective call, since every rank's RNG state goes in."""
        rng = all_gather_objects(rng_state())
        if not self.env.is_main:
            return
        atomic_save({**self.state_dict(), "rng": rng}, self.run_dir / LAST)
        if is_best:
            atomic_copy(self.run_dir / LAST, self.run_dir / BEST)

    def load(self, path: Path) -> None:
        state = read_resume_checkpoint(path, self.cfg)
        if list(state["classes"]) != list(self.classes):
            raise ValueError(
                f"cannot resume from {path}: it was trained on the classes {list(state['classes'])}, and "
                f"data.root={self.cfg.data.root!r} has {list(self.classes)} (names and order must match); "
                f"{resume_way_out(path)}"
            )
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            if state.get("model_ema") is None:
                _logger.warning("%s has no EMA weights: the EMA restarts from the loaded model", path)
                self.ema.module.load_state_dict(state["model"])
            else:
                self.ema.module.load_state_dict(state["model_ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.best_top1 = state["epoch"], state["step"], state["best_top1"]
        self.resumed_history = state.get("metrics")  # None in checkpoints written before it was kept there
        # timm's schedulers are functions of the epoch/update count: put the lr where the run left it.
        self.scheduler.step(self.epoch)
        self.scheduler.step_update(self.step)
        restore_rank_rng_state(state["rng"], self.env, self.cfg.train.seed + self.epoch, path)
        _logger.info("resumed from %s at epoch %d (step %d)", path, self.epoch, self.step)

    # -- loop ----------------------------------------------------------------------------------------

    def train_one_epoch(self, metrics: Optional[MetricsLogger]) -> dict[str, float]:
        t, env = self.cfg.train, self.env
        self.train_model.train()
        self.criterion.train()
        start_epoch(self.train_loader, t.seed, self.epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
        start = time.perf_counter()
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {self.epoch + 1}/{t.epochs}",
            disable=not (env.is_main and t.progress),
            dynamic_ncols=True,
            leave=False,
        )
        for images, targets in bar:
            images = images.to(env.device, non_blocking=True)
            targets = targets.to(env.device, non_blocking=True)
            if self.mixup_fn is not None:
                images, targets = self.mixup_fn(images, targets)
            if t.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(env.device, t.amp):
                outputs = self.train_model(images)
                loss = self.criterion(images, outputs, targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if t.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            if self.ema is not None:
                self.ema.update(self.model, step=self.step)
            self.scheduler.step_update(num_updates=self.step)
            loss_sum += loss.detach().double()
            if self.step % t.log_every == 0:
                value = self._finite(loss.item())
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
                if metrics is not None:
                    metrics.scalar("train/loss", value, self.step)
                    metrics.scalar("train/lr", lr, self.step)
        elapsed = time.perf_counter() - start
        # Every process runs len(train_loader) steps (the samplers split the data evenly).
        steps = env.world_size * len(self.train_loader)
        return {
            "train_loss": self._finite(all_reduce_sum(loss_sum).item() / steps),
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_time_s": elapsed,
            "train_img_per_s": len(self.train_loader) * t.batch_size / elapsed,
        }

    def _finite(self, loss: float) -> float:
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss} at epoch {self.epoch + 1}, step {self.step}: "
                "lower optim.lr, set train.grad_clip, or use train.amp=none"
            )
        return loss

    def evaluate(self) -> dict[str, float]:
        t = self.cfg.train
        kwargs = dict(
            device=self.env.device, amp=t.amp, channels_last=t.channels_last, progress=self.env.is_main and t.progress
        )
        row = {f"val_{k}": v for k, v in evaluate(self.model, self.val_loader, **kwargs).items() if k != "count"}
        if self.ema is not None:
            row.update(
                {f"ema_{k}": v for k, v in evaluate(self.ema.module, self.val_loader, **kwargs).items() if k != "count"}
            )
        return row

    def fit(self) -> dict[str, Any]:
        """Train from the current epoch to ``train.epochs``; returns the last epoch's metrics row."""
        cfg, env = self.cfg, self.env
        if env.is_main:
            n_params = sum(p.numel() for p in self.model.parameters())
            _logger.info(
                "%s: %.2f M params, %d classes, %d train / %d val images, global batch %d on %d process(es), "
                "lr %.3g, run dir %s",
                cfg.model.name,
                n_params / 1e6,
                len(self.classes),
                len(self.train_set),
                len(self.val_set),
                cfg.train.batch_size,
                env.world_size,
                self.lr,
                self.run_dir,
            )
        metrics = self.metrics = (MetricsLogger(self.run_dir, self.epoch, self.step, self.resumed_history)
                                  if env.is_main else None)
        try:
            if self.epoch >= cfg.train.epochs:
                _logger.info(
                    "nothing to do: %s already completed %d of %d epochs", self.run_dir, self.epoch, cfg.train.epochs
                )
            while self.epoch < cfg.train.epochs:
                row = self.train_one_epoch(metrics)
                self.epoch += 1
                self.scheduler.step(self.epoch)
                row = {"epoch": self.epoch, "step": self.step, **row, **self.evaluate()}
                is_best = row["val_top1"] > self.best_top1
                self.best_top1 = max(self.best_top1, row["val_top1"])
                # Metrics first: a run killed in between redoes this epoch and drops its row on resume.
                if metrics is not None:
                    metrics.log_epoch(row, self.step)
                    _logger.info(
                        "epoch %d/%d %s",
                        self.epoch,
                        cfg.train.epochs,
                        "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "step")),
                    )
                self.save(is_best)
            if env.is_main:
                plot_curves([self.run_dir / CSV_NAME], self.run_dir / CURVES_NAME, labels=[cfg.name])
            return metrics.last if metrics is not None else {}
        finally:
            if metrics is not None:
                metrics.close()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg`` in this process (one torchrun rank or a plain run); rank 0 writes under ``cfg.output_dir``."""
    return run_in_process_group(cfg.train.device, lambda env: Trainer(cfg, env).fit(), cfg.train.num_threads)
