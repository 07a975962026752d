"""ResMLP weight layouts: detection, conversion and strict loading.

Three layouts hold the same tensors under different names and shapes:

========  ===========================  ====================  ===================  =========================
layout    patch embedding              token mixing          LayerScale           Affine alpha / beta
========  ===========================  ====================  ===================  =========================
suite     ``stem.proj.*``              ``linear_tokens.*``   ``ls1.gamma`` [C]    ``[C]``
timm      ``stem.proj.*``              ``linear_tokens.*``   ``ls1`` [C]          ``(1, 1, C)``
deit      ``patch_embed.proj.*``       ``attn.*``            ``gamma_1`` [C]      ``[C]``
========  ===========================  ====================  ===================  =========================

(the channel MLP is ``mlp_channels.*`` in suite and timm, ``mlp.*`` in the official DeiT-repo files).
Files are read with ``weights_only=True`` (or safetensors), so loading never runs pickled code.
"""
from __future__ import annotations

import os
import re
from typing import Literal, Mapping, Optional, Union

import torch
from safetensors.torch import save_file
from torch import nn
from timm.models import clean_state_dict

from ..files import PathLike, atomic_write
from ..training.checkpoint import atomic_save, read_tensor_file

__all__ = [
    "LAYOUTS",
    "CheckpointMismatchError",
    "detect_layout",
    "export_state_dict",
    "from_suite_layout",
    "load_checkpoint",
    "read_state_dict",
    "save_state_dict",
    "to_suite_layout",
]

Layout = Literal["suite", "timm", "deit"]
LAYOUTS: tuple[str, ...] = ("suite", "timm", "deit")
StateDict = dict[str, torch.Tensor]
Source = Union[str, os.PathLike, Mapping[str, object]]

# Suite-layout names and their names in the other layouts. "{i}" stands for a block index, "{j}" for 1 or 2;
# a name ending in "." renames a prefix, any other a whole key.
_RENAMES: dict[str, list[tuple[str, str]]] = {
    "suite": [],
    "timm": [("blocks.{i}.ls{j}.gamma", "blocks.{i}.ls{j}")],
    "deit": [
        ("stem.", "patch_embed."),
        ("blocks.{i}.linear_tokens.", "blocks.{i}.attn."),
        ("blocks.{i}.mlp_channels.", "blocks.{i}.mlp."),
        ("blocks.{i}.ls{j}.gamma", "blocks.{i}.gamma_{j}"),
    ],
}


def _rule(source: str, target: str) -> tuple[str, str]:
    """A ``re.sub`` (pattern, replacement) renaming ``source`` to ``target`` (both as in ``_RENAMES``)."""
    pattern = "^" + source.replace(".", r"\.").format(i=r"(?P<i>\d+)", j=r"(?P<j>[12])")
    return pattern + ("" if source.endswith(".") else "$"), target.format(i=r"\g<i>", j=r"\g<j>")


_FROM_SUITE = {layout: [_rule(suite, other) for suite, other in pairs] for layout, pairs in _RENAMES.items()}
_TO_SUITE = {layout: [_rule(other, suite) for suite, other in pairs] for layout, pairs in _RENAMES.items()}

# Keys that only one layout has: enough to tell the layouts apart.
_MARKERS: dict[str, re.Pattern[str]] = {
    "suite": re.compile(r"^blocks\.\d+\.ls[12]\.gamma$"),
    "timm": re.compile(r"^blocks\.\d+\.ls[12]$"),
    "deit": re.compile(r"^(patch_embed\.|blocks\.\d+\.(attn\.|mlp\.|gamma_[12]$))"),
}
_AFFINE_KEY = re.compile(r"(^|\.)norm[12]?\.(alpha|beta)$")


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model's (missing, unexpected or differently shaped)."""


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def _unwrap(checkpoint: Mapping[str, object]) -> StateDict:
    """The state dict inside a training checkpoint (``{"model": ...}`` or ``{"state_dict": ...}``), prefixes stripped."""
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]  # type: ignore[assignment]
            break
    not_tensors = sorted(k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(
            "expected a state dict of tensors (optionally wrapped as {'model': ...} or {'state_dict': ...}), "
            f"got non-tensor entries {not_tensors[:5]}"
        )
    # DDP ("module.") and torch.compile ("_orig_mod.") wrappers prefix every key.
    return clean_state_dict(dict(checkpoint))  # type: ignore[arg-type]


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> Layout:
    """``"suite"``, ``"timm"`` or ``"deit"`` from the key names (and the Affine shapes for block-less dicts)."""
    found = {name for name, marker in _MARKERS.items() if any(marker.match(k) for k in state_dict)}
    if len(found) > 1:
        raise ValueError(f"state dict mixes the {' and '.join(sorted(found))} layouts; expected one of {LAYOUTS}")
    if found:
        return found.pop()  # type: ignore[return-value]
    affine_dims = {v.dim() for k, v in state_dict.items() if _AFFINE_KEY.search(k)}
    return "timm" if affine_dims == {3} else "suite"


def _check_affine_shape(key: str, value: torch.Tensor, layout: str) -> None:
    expected_dim = 3 if layout == "timm" else 1
    if value.dim() != expected_dim or (expected_dim == 3 and value.shape[:2] != (1, 1)):
        expected = "(1, 1, C)" if expected_dim == 3 else "[C]"
        raise ValueError(f"{layout} layout expects {key} of shape {expected}, got {tuple(value.shape)}")


def to_suite_layout(state_dict: Mapping[str, object]) -> StateDict:
    """Convert an official DeiT-repo, timm or suite state dict (wrapped or not) to the suite layout."""
    state_dict = _unwrap(state_dict)
    layout = detect_layout(state_dict)
    out: StateDict = {}
    for key, value in state_dict.items():
        if _AFFINE_KEY.search(key):
            _check_affine_shape(key, value, layout)
            value = value.reshape(-1)
        out[_rename(key, _TO_SUITE[layout])] = value
    return out


def from_suite_layout(state_dict: Mapping[str, torch.Tensor], layout: Layout) -> StateDict:
    """Convert a suite-layout state dict to ``layout`` (``"suite"``, ``"timm"`` or ``"deit"``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    out: StateDict = {}
    for key, value in state_dict.items():
        if layout == "timm" and _AFFINE_KEY.search(key):
            value = value.reshape(1, 1, -1)
        out[_rename(key, _FROM_SUITE[layout])] = value
    return out


def export_state_dict(model: nn.Module, layout: Layout = "suite") -> StateDict:
    """The model's weights in ``layout``: ``"timm"`` loads into ``timm.create_model("resmlp_12_224")`` and
    friends, ``"deit"`` into the official ``resmlp_models.py`` (wrap it as ``{"model": ...}`` for a release file)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return from_suite_layout(state, layout)


def read_state_dict(source: Source) -> StateDict:
    """Read a ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file, or take a dict;
    unwrap ``{"model": ...}``/``{"state_dict": ...}`` and strip ``module.``/``_orig_mod.`` prefixes."""
    if isinstance(source, Mapping):
        return _unwrap(source)
    content = read_tensor_file(source)
    if not isinstance(content, Mapping):
        raise ValueError(f"{os.fspath(source)} holds a {type(content).__name__}, not a state dict")
    return _unwrap(content)  # EMA copies are ignored: the raw weights are what gets loaded


def _describe_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], limit: int = 12) -> str:
    def listing(title: str, items: list[str]) -> str:
        more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, given {tuple(given[k].shape)}"
        for k in expected
        if k in given and expected[k].shape != given[k].shape
    ]
    parts = [listing(t, items) for t, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                                 ("shape mismatches", shapes)) if items]
    return "".join(parts)


def load_checkpoint(model: nn.Module, source: Source, name: Optional[str] = None) -> Layout:
    """Load ResMLP weights strictly into ``model`` (a suite :class:`~resmlp_suite.vision.ResMLP`).

    ``source`` is a file path (``.pth``/``.pt``/``.safetensors``) or an already loaded dict, in the
    official DeiT-repo, timm or suite layout (auto-detected); token mixing of another patch grid (a
    square one) is resampled to the model's. Returns the detected layout. Raises
    :class:`CheckpointMismatchError` listing missing/unexpected keys and shape mismatches (nothing is loaded then),
    naming the source as ``name`` (default: the path, or "state dict" for a dict: a caller that filtered a
    file's tensors first names the file).
    """
    from .resample import resample_state_dict

    raw = read_state_dict(source)
    layout = detect_layout(raw)
    state_dict = to_suite_layout(raw)
    grid = getattr(getattr(model, "stem", None), "grid_size", None)
    if grid is not None:
        state_dict, _ = resample_state_dict(state_dict, grid)
    expected = model.state_dict()
    problems = _describe_mismatch(expected, state_dict)
    if problems:
        name = name or (source if not isinstance(source, Mapping) else "state dict")
        raise CheckpointMismatchError(
            f"{name} ({layout} layout) does not match {type(model).__name__}:{problems}"
        )
    model.load_state_dict(state_dict, strict=True)
    return layout


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: PathLike, wrap_model: bool = False) -> None:
    """Write ``state_dict`` to ``path`` atomically: ``.safetensors`` by extension, otherwise ``torch.save``,
    as ``{"model": state_dict}`` when ``wrap_model`` (the official release format)."""
    # Clones: safetensors refuses aliased or non-contiguous tensors.
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    if os.fspath(path).endswith(".safetensors"):
        # One flat dict of tensors: a {"model": ...} wrapper cannot be stored in safetensors.
        atomic_write(path, lambda tmp: save_file(tensors, tmp))
    else:
        atomic_save({"model": tensors} if wrap_model else tensors, path)
