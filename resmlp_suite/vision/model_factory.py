"""Classifiers from a run's config, from one of our training checkpoints, or from a weight file; backbones
(no classifier) from a weight file, a DINO run or at their initialisation, for frozen-feature evaluation."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Mapping, Optional

import timm
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from .resmlp import ResMLP, checkpoint_filter_fn
from .weights import load_checkpoint, read_state_dict

__all__ = [
    "create_model_from_config",
    "model_from_run",
    "classifier_from_weights",
    "backbone_from_weights",
    "initialised_model",
]


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def create_model_from_config(model_cfg: Mapping[str, Any], num_classes: int, load_pretrained: bool = True) -> nn.Module:
    """``timm.create_model(model.name, num_classes=..., **model.kwargs)``.

    Weights to start from (fine-tuning): ``model.pretrained_file`` (a local file, read by
    :func:`~resmlp_suite.vision.weights.read_state_dict`), or ``model.pretrained=true`` with a tagged
    name (``resmlp_s12.fb_in1k``: downloaded by timm). Both go through timm's pretrained loader and our
    filter, which adapt the layout, drop a classifier of another size and resample the token mixing
    to another ``img_size``.
    """
    kwargs = _plain(model_cfg.get("kwargs")) or {}
    pretrained_file = model_cfg.get("pretrained_file") if load_pretrained else None
    if pretrained_file:
        if not os.path.isfile(pretrained_file):
            raise FileNotFoundError(f"model.pretrained_file={pretrained_file!r} does not exist")
        return timm.create_model(
            model_cfg["name"],
            pretrained=True,
            pretrained_cfg_overlay=dict(state_dict=read_state_dict(pretrained_file)),
            num_classes=num_classes,
            **kwargs,
        )
    pretrained = bool(model_cfg.get("pretrained", False)) and load_pretrained
    return timm.create_model(model_cfg["name"], pretrained=pretrained, num_classes=num_classes, **kwargs)


def model_from_run(state: Mapping[str, Any], use_ema: bool = False, img_size: Optional[int] = None,
                   backbone: bool = False, initialised: bool = False) -> tuple[nn.Module, DictConfig]:
    """The model a training checkpoint holds, and the run's config: a ``vision/train.py`` ``last.pt``/``best.pt``
    (its classifier), or with ``backbone`` also a ``vision/train_dino.py`` ``last.pt`` (its teacher's backbone,
    what DINO evaluates, without classifier).

    ``img_size`` other than the run's builds the model for that size, with a ResMLP's token mixing
    resampled to its patch grid (:mod:`~resmlp_suite.vision.resample`). ``initialised``: the run's model at
    its initialisation (seed 0) instead of its weights, a random-weights baseline with the run's settings.
    """
    if "config" not in state or "classes" not in state:
        raise ValueError("not a vision/train.py or vision/train_dino.py checkpoint (no 'config'/'classes' entries)")
    cfg = OmegaConf.create(state["config"])
    if "teacher" in state:
        if not backbone:
            raise ValueError("a vision/train_dino.py checkpoint has no classifier: evaluate its features (--knn, "
                             "vision/linear_probe.py), or fine-tune it with vision/train.py model.pretrained_file=")
        if use_ema:
            raise ValueError("--ema: a DINO run's teacher is already the EMA of its student; leave the option out")
        weights = {k.removeprefix("backbone."): v for k, v in state["teacher"].items() if k.startswith("backbone.")}
        num_classes = 0
    else:
        key = "model_ema" if use_ema else "model"
        if state.get(key) is None:
            raise ValueError("the checkpoint holds no EMA weights (the run had train.ema=false)")
        weights, num_classes = state[key], len(state["classes"])
    if img_size is not None and img_size != cfg.data.img_size:
        with open_dict(cfg):
            cfg.model.kwargs.img_size = img_size
    if initialised:
        with _seeded(0):
            return create_model_from_config(cfg.model, num_classes, load_pretrained=False), cfg
    model = create_model_from_config(cfg.model, num_classes, load_pretrained=False)
    if isinstance(model, ResMLP):
        weights = checkpoint_filter_fn(weights, model)
    elif img_size is not None and img_size != cfg.data.img_size:
        raise ValueError(f"img_size {img_size}: only a ResMLP's weights can be resampled to another size than the "
                         f"run's {cfg.data.img_size}, and {cfg.model.name} is not one")
    model.load_state_dict(weights)
    return model, cfg


def classifier_from_weights(path: os.PathLike | str, model_name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """A timm model with weights from a file: official DeiT-repo or timm ResMLP weights (resampled to the
    model's ``img_size``), or any timm checkpoint."""
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **kwargs)
    if isinstance(model, ResMLP):
        load_checkpoint(model, str(path))  # reads the DeiT-repo, timm and suite layouts
    else:
        timm.models.load_checkpoint(model, str(path), strict=True)
    return model


def backbone_from_weights(path: os.PathLike | str, model_name: str, **kwargs: Any) -> nn.Module:
    """A timm model without classifier (``num_classes=0``: its output is the pooled features) with a file's
    weights, in any layout :func:`classifier_from_weights` reads.

    A classifier in the file is ignored: official DINO releases come with one or without it, a
    supervised file has one, and frozen-feature evaluation (k-NN, linear probe) never uses it.
    """
    model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or "head"
    prefixes = tuple(f"{name}." for name in ((names,) if isinstance(names, str) else names))
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(prefixes)}
    if isinstance(model, ResMLP):
        load_checkpoint(model, state, name=str(path))
    else:
        model.load_state_dict(state, strict=True)
    return model


def initialised_model(model_name: str, num_classes: int, seed: int = 0, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` at its initialisation, the same for every call with the same ``seed`` (a
    random-weights baseline is then reproducible) and without touching the caller's random state."""
    with _seeded(seed):
        return timm.create_model(model_name, pretrained=False, num_classes=num_classes, **kwargs)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Weights initialised from ``seed`` alone, the caller's random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
