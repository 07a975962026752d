"""Shared fixtures."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

from vision_runs import compose_cfg, make_shapes, tiny_overrides

_AFFINE_SCALES = re.compile(r"alpha$")
_LAYER_SCALES = re.compile(r"(gamma|ls[12])$")
_SHIFTS = re.compile(r"(beta|bias)$")


@torch.no_grad()
def _randomize_affines(model: nn.Module, seed: int = 0) -> nn.Module:
    # At init alpha = 1, beta = 0, biases are zero and timm's classifier is all zeros: comparisons of logits
    # would not see these tensors mis-mapped or mis-folded.
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if _AFFINE_SCALES.search(name):
            param.copy_(torch.empty(param.shape).uniform_(0.5, 1.5, generator=generator))
        elif _LAYER_SCALES.search(name):
            # Large enough for every block to matter, small enough for 36 blocks to keep activations moderate.
            param.copy_(torch.empty(param.shape).uniform_(0.05, 0.15, generator=generator))
        elif _SHIFTS.search(name):
            param.copy_(torch.empty(param.shape).normal_(0.0, 0.2, generator=generator))
        elif name == "head.weight":
            param.copy_(torch.empty(param.shape).normal_(0.0, 0.05, generator=generator))
    return model


@pytest.fixture(scope="session")
def randomize_affines() -> Callable[..., nn.Module]:
    """Give every Affine alpha/beta, LayerScale gamma, bias and the classifier random non-trivial values
    (suite or timm models)."""
    return _randomize_affines


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    """The generated 3-class shapes ImageFolder (16 px, 40 train and 20 val images per class)."""
    return make_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def trained_run(shapes_root, tmp_path_factory) -> tuple[Path, dict]:
    """A 4-epoch vision/train.py run on the shapes (a 2-block, 32-wide resmlp_tiny_p4): its directory and last
    metrics row."""
    from resmlp_suite.vision.training import train  # here: the translation tests need not import it

    out = tmp_path_factory.mktemp("run")
    last = train(compose_cfg(tiny_overrides(shapes_root, out, epochs=4)))
    return out, last


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors: on a busy 2-core machine more threads only contend.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def hydra_version_base():
    """Each test module starts from the hydra version base it found: a compose with ``version_base=None``
    sets it to hydra's own for the whole process, and fairseq's config conversion (hydra.experimental) then
    fails in any later module."""
    from hydra.version import VersionBase

    base = VersionBase.instance().getbase()
    yield
    VersionBase.instance().version_base = base
