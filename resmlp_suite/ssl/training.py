"""Self-supervised DINO training of any timm backbone (ResMLP first) from a hydra config (``vision/train_dino.py``).

Built like the supervised :class:`~resmlp_suite.vision.training.Trainer`, from the same parts: datasets,
loaders and input config (:mod:`~resmlp_suite.vision.data`), the backbone (``create_model_from_config``
with ``num_classes=0``), torchrun processes (the student in DDP, the teacher outside it: it never has a
gradient and is updated identically on every rank), precision, metrics files and TensorBoard, atomic
checkpoints. ``last.pt`` after every epoch holds the student, the teacher, the optimizer, the loss's
centre, the step, every rank's RNG state and the metrics history: a killed run restarted with
``train.resume=auto`` continues bit for bit (on CPU with the same number of processes). The
per-iteration schedules (learning rate, weight decay, teacher momentum) are functions of the step and
the teacher temperature one of the epoch, so they need no state of their own.

Each image's crops are drawn from a generator seeded by (seed, epoch, image)
(:class:`~resmlp_suite.ssl.augment.SeededViews`): they do not depend on the number of processes, which
is what makes a 2-process run comparable with a 1-process run of the same global batch.

``teacher_backbone.pt`` (``{"model": state_dict}``, suite layout, no head) is written beside ``last.pt``
every epoch: ``vision/train.py model.pretrained_file=.../teacher_backbone.pt`` fine-tunes from it. Every
``dino.knn_every`` epochs the teacher backbone's weighted k-NN top-1 on the labelled data goes in the
epoch row (labels are used for nothing else).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.utils import random_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..training.checkpoint import (
    LAST,
    atomic_save,
    read_resume_checkpoint,
    resolve_resume,
    restore_rank_rng_state,
    rng_state,
)
from ..training.distributed import DistEnv, all_gather_objects, all_reduce_sum, run_in_process_group
from ..training.metrics import MetricsLogger
from ..training.precision import amp_dtype, autocast, grad_scaler
from ..vision.data import (
    create_datasets,
    create_eval_loader,
    create_eval_transform,
    create_train_loader,
    loader_workers,
    resolve_input_config,
    start_epoch,
    subsample,
)
from ..vision.knn import K, knn_accuracy, pooled_features
from ..vision.model_factory import create_model_from_config
from ..vision.training import NUMERIC_OPTIONS as SUPERVISED_OPTIONS
from ..vision.training import check_numeric_options, scaled_lr
from .augment import MultiCropAugmentation, SeededViews
from .collapse import CollapseMonitor
from .dino import (
    DINOHead,
    DINOLoss,
    DinoLossOutput,
    MultiCropWrapper,
    cancel_last_layer_gradients,
    clip_gradients,
    cosine_schedule,
    teacher_temperature_schedule,
    update_teacher,
)

__all__ = ["DinoTrainer", "train", "TEACHER_BACKBONE", "NUMERIC_OPTIONS"]

_logger = logging.getLogger(__name__)

TEACHER_BACKBONE = "teacher_backbone.pt"

# key -> (type, null allowed), checked before any value is used (hydra passes `dino.out_dim=abc` on as a string).
NUMERIC_OPTIONS = {
    **{key: SUPERVISED_OPTIONS[key] for key in (
        "train.epochs", "train.batch_size", "train.seed", "train.log_every", "train.num_threads", "optim.lr",
        "optim.lr_base_batch", "optim.weight_decay", "sched.warmup_epochs", "sched.min_lr", "data.img_size",
        "data.in_chans", "data.num_workers", "data.train_samples", "data.holdout", "data.eval_batch_size")},
    "optim.weight_decay_end": (float, False),
    **{f"dino.{key}": (int, False) for key in (
        "out_dim", "hidden_dim", "bottleneck_dim", "head_layers", "warmup_teacher_temp_epochs", "freeze_last_layer",
        "local_crops_number", "local_crops_size", "knn_every")},
    **{f"dino.{key}": (float, False) for key in (
        "momentum_teacher", "warmup_teacher_temp", "teacher_temp", "student_temp", "center_momentum",
        "collapse_tolerance")},
    "dino.clip_grad": (float, True),
    "dino.knn_train_samples": (int, True),
    "dino.knn_test_samples": (int, True),
}


def _require(ok: bool, option: str, expected: str, given: Any) -> None:
    if not ok:
        raise ValueError(f"{option} must be {expected}, got {given!r}")


def _check_scale(option: str, scale: Any) -> None:
    ok = (isinstance(scale, Sequence) and len(scale) == 2 and all(isinstance(v, (int, float)) for v in scale)
          and 0 < scale[0] <= scale[1] <= 1)
    _require(ok, option, "[min, max] area fractions with 0 < min <= max <= 1", scale)


def check_config(cfg: DictConfig, env: DistEnv) -> None:
    """Every option's type and range, before anything is built; errors name the option."""
    check_numeric_options(cfg, NUMERIC_OPTIONS)
    t, d = cfg.train, cfg.dino
    amp_dtype(t.amp)
    _require(t.epochs >= 1, "train.epochs", ">= 1", t.epochs)
    _require(t.seed >= 0, "train.seed", ">= 0", t.seed)
    _require(t.log_every >= 1, "train.log_every", ">= 1", t.log_every)
    if t.batch_size % env.world_size:
        raise ValueError(
            f"train.batch_size (global) = {t.batch_size} is not divisible by the {env.world_size} processes")
    scaled_lr(cfg.optim.lr, t.batch_size, cfg.optim.lr_base_batch, cfg.optim.lr_scaling)
    _require(0 <= cfg.sched.warmup_epochs <= t.epochs, "sched.warmup_epochs", f"in [0, train.epochs={t.epochs}]",
             cfg.sched.warmup_epochs)
    for key in ("out_dim", "hidden_dim", "bottleneck_dim", "head_layers", "local_crops_size"):
        _require(d[key] >= 1, f"dino.{key}", ">= 1", d[key])
    for key in ("warmup_teacher_temp_epochs", "freeze_last_layer", "local_crops_number", "knn_every"):
        _require(d[key] >= 0, f"dino.{key}", ">= 0", d[key])
    for key in ("warmup_teacher_temp", "teacher_temp", "student_temp"):
        _require(d[key] > 0, f"dino.{key}", "> 0", d[key])
    _require(0 <= d.momentum_teacher <= 1, "dino.momentum_teacher", "in [0, 1]", d.momentum_teacher)
    _require(0 <= d.center_momentum < 1, "dino.center_momentum", "in [0, 1)", d.center_momentum)
    _require(d.collapse_tolerance >= 0, "dino.collapse_tolerance", ">= 0 (nats)", d.collapse_tolerance)
    _require(d.clip_grad is None or d.clip_grad >= 0, "dino.clip_grad", ">= 0 or null (0, null: off)", d.clip_grad)
    for key in ("knn_train_samples", "knn_test_samples"):
        _require(d[key] is None or d[key] >= 1, f"dino.{key}", ">= 1 or null (all)", d[key])
    _check_scale("dino.global_crops_scale", d.global_crops_scale)
    _check_scale("dino.local_crops_scale", d.local_crops_scale)


def _teacher_model_config(model_cfg: DictConfig) -> DictConfig:
    """The student's model config without stochastic depth: DINO builds its teacher without drop-path."""
    plain = OmegaConf.to_container(model_cfg, resolve=True)
    if "drop_path_rate" in (plain.get("kwargs") or {}):
        plain["kwargs"]["drop_path_rate"] = 0.0
    return OmegaConf.create(plain)


def _check_local_crops(backbone: nn.Module, cfg: DictConfig, global_size: int) -> None:
    """A backbone that cannot take ``dino.local_crops_size`` (a ResMLP, a ViT without dynamic sizes) is refused
    now, with the option named, rather than at the first step."""
    d = cfg.dino
    if d.local_crops_number == 0 or d.local_crops_size == global_size:
        return
    probe = torch.zeros(1, cfg.data.in_chans, d.local_crops_size, d.local_crops_size)
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(probe)
    except (ValueError, AssertionError, RuntimeError) as error:
        raise ValueError(
            f"dino.local_crops_size={d.local_crops_size} does not fit model {cfg.model.name} "
            f"({type(error).__name__}: {error}). A ResMLP takes one patch grid, that of data.img_size: set "
            f"dino.local_crops_size={global_size} (local crops cut as small as dino.local_crops_scale says, "
            "then resized to the global size) or dino.local_crops_number=0") from None
    finally:
        backbone.train()


class DinoTrainer:
    """Builds data, student, teacher, loss, optimizer and schedules from ``cfg``; :meth:`fit` runs the epochs."""

    def __init__(self, cfg: DictConfig, env: DistEnv) -> None:
        check_config(cfg, env)
        self.cfg, self.env = cfg, env
        t, d = cfg.train, cfg.dino
        self.run_dir = Path(cfg.output_dir)
        self.batch_per_rank = t.batch_size // env.world_size

        train_set, val_set, self.classes = create_datasets(
            cfg.data.name, cfg.data.root, cfg.data.train_split, cfg.data.val_split, in_chans=cfg.data.in_chans,
            holdout=cfg.data.get("holdout"),
        )
        # Same initial weights on every rank; the teacher starts as a copy of the student.
        random_seed(t.seed, 0)
        student_backbone = create_model_from_config(cfg.model, num_classes=0)
        teacher_backbone = create_model_from_config(_teacher_model_config(cfg.model), 0, load_pretrained=False)
        self.input_config = resolve_input_config(cfg.data, student_backbone)
        global_size = self.input_config["input_size"][-1]  # square: data.img_size
        _check_local_crops(student_backbone, cfg, global_size)
        if env.is_distributed and env.device.type == "cuda":
            # DINO synchronises batch statistics (ResNet backbones); a ResMLP has no BatchNorm. Gloo has no SyncBN.
            student_backbone = nn.SyncBatchNorm.convert_sync_batchnorm(student_backbone)
            teacher_backbone = nn.SyncBatchNorm.convert_sync_batchnorm(teacher_backbone)
        self.student = MultiCropWrapper(student_backbone, self._head(student_backbone.num_features)).to(env.device)
        self.teacher = MultiCropWrapper(teacher_backbone, self._head(teacher_backbone.num_features)).to(env.device)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)

        # The k-NN memory is the labelled training split (less data.holdout), whole (not only data.train_samples),
        # unaugmented.
        memory = copy.copy(train_set)  # shares the image list; only the transform differs
        memory.transform = val_set.transform = create_eval_transform(self.input_config)
        train_set.transform = MultiCropAugmentation(
            global_size, d.global_crops_scale, d.local_crops_number, d.local_crops_size, d.local_crops_scale,
            self.input_config["mean"], self.input_config["std"], self.input_config["interpolation"],
        )
        self.train_set = SeededViews(subsample(train_set, cfg.data.get("train_samples")), t.seed)
        random_seed(t.seed, env.rank)
        workers = loader_workers(cfg.data.num_workers)
        self.train_loader = create_train_loader(self.train_set, self.batch_per_rank, env, num_workers=workers)
        eval_batch = cfg.data.get("eval_batch_size") or self.batch_per_rank
        # dino.knn_*_samples cap the k-NN sets (a fixed random subset); a split with fewer images is used whole.
        memory, val_set = (subsample(dataset, n if n is not None and n < len(dataset) else None)
                           for dataset, n in ((memory, d.knn_train_samples), (val_set, d.knn_test_samples)))
        if d.knn_every and len(memory) < K:
            raise ValueError(f"the k-NN memory (dino.knn_train_samples={d.knn_train_samples}) has {len(memory)} "
                             f"images, fewer than k={K}: use more, or dino.knn_every=0")
        self.knn_loaders = [create_eval_loader(dataset, eval_batch, env, workers) for dataset in (memory, val_set)]

        o, s = cfg.optim, cfg.sched
        self.lr = scaled_lr(o.lr, t.batch_size, o.lr_base_batch, o.lr_scaling)
        # timm's split: no weight decay on biases and 1-D parameters (norms, Affine, LayerScale), as DINO's
        # get_params_groups. The decay itself follows a schedule, set on the decayed groups every step.
        groups = param_groups_weight_decay(self.student, weight_decay=1.0)
        self.decayed_groups = [i for i, group in enumerate(groups) if group["weight_decay"] > 0]
        self.optimizer = create_optimizer_v2(groups, opt=o.name, lr=self.lr, **OmegaConf.to_container(o.kwargs))
        iters = len(self.train_loader)
        self.lr_schedule = cosine_schedule(self.lr, s.min_lr, t.epochs, iters, s.warmup_epochs)
        self.wd_schedule = cosine_schedule(o.weight_decay, o.weight_decay_end, t.epochs, iters)
        self.momentum_schedule = cosine_schedule(d.momentum_teacher, 1.0, t.epochs, iters)
        self.teacher_temps = teacher_temperature_schedule(
            d.warmup_teacher_temp, d.teacher_temp, d.warmup_teacher_temp_epochs, t.epochs)
        self.loss = DINOLoss(d.out_dim, 2 + d.local_crops_number, d.student_temp, d.center_momentum).to(env.device)
        self.scaler = grad_scaler(env.device, t.amp)
        self.monitor = CollapseMonitor(d.out_dim, d.collapse_tolerance)

        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer updates
        self.metrics: Optional[MetricsLogger] = None  # rank 0, during fit()
        self.resumed_history: Optional[list[dict[str, Any]]] = None
        checkpoint = resolve_resume(t.resume, self.run_dir)
        if checkpoint is not None:
            self.load(checkpoint)
        self.train_student: nn.Module = self.student
        if env.is_distributed:
            self.train_student = DistributedDataParallel(
                self.student, device_ids=[env.local_rank] if env.device.type == "cuda" else None)

    def _head(self, in_dim: int) -> DINOHead:
        d = self.cfg.dino
        return DINOHead(in_dim, d.out_dim, d.hidden_dim, d.bottleneck_dim, d.head_layers, d.norm_last_layer)

    # -- checkpoints -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "dino_loss": self.loss.state_dict(),  # the centre
            "epoch": self.epoch,
            "step": self.step,
            "classes": list(self.classes),
            "config": OmegaConf.to_yaml(self.cfg, resolve=True),
            "metrics": self.metrics.rows if self.metrics is not None else [],
        }

    def save(self) -> None:
        """``teacher_backbone.pt``, then ``last.pt``; a collective call, since every rank's RNG state goes in."""
        rng = all_gather_objects(rng_state())
        if not self.env.is_main:
            return
        # In this order a last.pt of epoch n always has a teacher_backbone.pt of epoch n or later beside it.
        atomic_save({"model": self.teacher.backbone.state_dict()}, self.run_dir / TEACHER_BACKBONE)
        atomic_save({**self.state_dict(), "rng": rng}, self.run_dir / LAST)

    def load(self, path: Path) -> None:
        state = read_resume_checkpoint(path, self.cfg)
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.loss.load_state_dict(state["dino_loss"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.resumed_history = state["metrics"]
        restore_rank_rng_state(state["rng"], self.env, self.cfg.train.seed + self.epoch, path)
        _logger.info("resumed from %s at epoch %d (step %d)", path, self.epoch, self.step)

    # -- loop ----------------------------------------------------------------------------------------

    def train_step(self, crops: Sequence[torch.Tensor], teacher_temp: float) -> DinoLossOutput:
        """One update of the student (and the teacher's EMA); ``crops`` are the batch's global crops, then its
        local ones. Returns the detached loss and collapse indicators."""
        t, d, env = self.cfg.train, self.cfg.dino, self.env
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = float(self.lr_schedule[self.step])
            if i in self.decayed_groups:
                group["weight_decay"] = float(self.wd_schedule[self.step])
        crops = [c.to(env.device, non_blocking=True) for c in crops]
        with autocast(env.device, t.amp):
            with torch.no_grad():
                teacher_output = self.teacher(crops[:2])  # the teacher sees the global crops only
            student_output = self.train_student(crops)
            out = self.loss(student_output, teacher_output, teacher_temp)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        if d.clip_grad:
            self.scaler.unscale_(self.optimizer)
            clip_gradients(self.student, d.clip_grad)
        cancel_last_layer_gradients(self.student, self.epoch, d.freeze_last_layer)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        update_teacher(self.student, self.teacher, float(self.momentum_schedule[self.step]))
        self.step += 1
        return DinoLossOutput(out.loss.detach(), out.teacher_entropy, out.kl)

    def train_one_epoch(self, metrics: Optional[MetricsLogger]) -> dict[str, float]:
        t, env = self.cfg.train, self.env
        self.train_student.train()
        self.teacher.train()  # as DINO: no drop-path in it; batch statistics for BatchNorm backbones
        start_epoch(self.train_loader, t.seed, self.epoch)
        self.train_set.set_epoch(self.epoch)
        teacher_temp = float(self.teacher_temps[self.epoch])
        sums = torch.zeros(3, dtype=torch.float64, device=env.device)  # loss, teacher entropy, KL
        start = time.perf_counter()
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{t.epochs}",
                   disable=not (env.is_main and t.progress), dynamic_ncols=True, leave=False)
        for crops, _ in bar:  # the labels are not used
            out = self.train_step(crops, teacher_temp)
            sums += torch.stack(list(out)).double()
            if self.step % t.log_every == 0:
                self._log_step(out, teacher_temp, metrics, bar)
        elapsed = time.perf_counter() - start
        # Every process runs len(train_loader) steps (the samplers split the data evenly).
        loss, entropy, kl = (all_reduce_sum(sums) / (env.world_size * len(self.train_loader))).tolist()
        last = self.step - 1
        return {
            "train_loss": self._finite(loss),
            "teacher_entropy": entropy,
            "student_teacher_kl": kl,
            "lr": float(self.lr_schedule[last]),
            "weight_decay": float(self.wd_schedule[last]),
            "teacher_momentum": float(self.momentum_schedule[last]),
            "teacher_temp": teacher_temp,
            "train_time_s": elapsed,
            "train_img_per_s": len(self.train_loader) * t.batch_size / elapsed,
        }

    def _log_step(self, out: DinoLossOutput, teacher_temp: float, metrics: Optional[MetricsLogger],
                  bar: tqdm) -> None:
        loss, entropy, kl = self._finite(out.loss.item()), out.teacher_entropy.item(), out.kl.item()
        if not self.env.is_main:
            return
        self.monitor.check(entropy, self.step)
        bar.set_postfix(loss=f"{loss:.4f}", entropy=f"{entropy:.3f}", kl=f"{kl:.3f}")
        if metrics is not None:
            last = self.step - 1
            for tag, value in (("loss", loss), ("teacher_entropy", entropy), ("student_teacher_kl", kl),
                               ("lr", self.lr_schedule[last]), ("weight_decay", self.wd_schedule[last]),
                               ("teacher_momentum", self.momentum_schedule[last]), ("teacher_temp", teacher_temp)):
                metrics.scalar(f"train/{tag}", float(value), self.step)

    def _finite(self, loss: float) -> float:
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"DINO loss is {loss} at epoch {self.epoch + 1}, step {self.step}: lower optim.lr, "
                "set dino.clip_grad, or use train.amp=none")
        return loss

    def knn(self) -> dict[str, float]:
        """Weighted k-NN (k 20, T 0.07) top-1/top-5 of the teacher backbone's pooled features, in eval mode."""
        self.teacher.eval()
        try:
            result = knn_accuracy(pooled_features(self.teacher.backbone), *self.knn_loaders, self.env.device,
                                  len(self.classes), amp=self.cfg.train.amp)
        finally:
            self.teacher.train()
        return {"knn_top1": result["knn_top1"], "knn_top5": result["knn_top5"]}

    def fit(self) -> dict[str, Any]:
        """Train from the current epoch to ``train.epochs``; returns the last epoch's metrics row."""
        cfg, env, d = self.cfg, self.env, self.cfg.dino
        if env.is_main:
            _logger.info(
                "DINO %s: %.2f M backbone + %.2f M head params, %d train images x (2 + %d) crops, global batch %d "
                "on %d process(es), lr %.3g, run dir %s",
                cfg.model.name, sum(p.numel() for p in self.student.backbone.parameters()) / 1e6,
                sum(p.numel() for p in self.student.head.parameters()) / 1e6, len(self.train_set),
                d.local_crops_number, cfg.train.batch_size, env.world_size, self.lr, self.run_dir,
            )
        metrics = self.metrics = (MetricsLogger(self.run_dir, self.epoch, self.step, self.resumed_history)
                                  if env.is_main else None)
        try:
            if self.epoch >= cfg.train.epochs:
                _logger.info("nothing to do: %s already completed %d of %d epochs",
                             self.run_dir, self.epoch, cfg.train.epochs)
            while self.epoch < cfg.train.epochs:
                row = self.train_one_epoch(metrics)
                self.epoch += 1
                if d.knn_every and (self.epoch % d.knn_every == 0 or self.epoch == cfg.train.epochs):
                    row.update(self.knn())
                row = {"epoch": self.epoch, "step": self.step, **row}
                # Metrics first: a run killed in between redoes this epoch and drops its row on resume.
                if metrics is not None:
                    metrics.log_epoch(row, self.step)
                    _logger.info("epoch %d/%d %s", self.epoch, cfg.train.epochs, "  ".join(
                        f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "step")))
                self.save()
            return metrics.last if metrics is not None else {}
        finally:
            if metrics is not None:
                metrics.close()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg`` in this process (one torchrun rank or a plain run); rank 0 writes under ``cfg.output_dir``."""
    return run_in_process_group(cfg.train.device, lambda env: DinoTrainer(cfg, env).fit(), cfg.train.num_threads)
