"""Image datasets and loaders for training and evaluation: ImageFolder trees and Fashion-MNIST.

Transforms are timm's (``create_transform``), the ImageFolder reader is timm's ``ImageDataset``
(it logs and skips a file PIL cannot decode, naming it, and stops after 50 failures in a row).
Training order is a function of ``(seed, epoch)`` only, so a resumed run replays the same batches.
"""

from __future__ import annotations

import copy
import gzip
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import ImageDataset, create_transform, resolve_data_config
from timm.data.distributed_sampler import RepeatAugSampler
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from ..training.distributed import DistEnv

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FashionMNIST",
    "read_idx",
    "imagefolder_classes",
    "create_dataset",
    "create_datasets",
    "HeldOutPart",
    "resolve_input_config",
    "create_train_transform",
    "create_eval_transform",
    "create_train_loader",
    "create_eval_loader",
    "start_epoch",
]

DATASETS = ("imagefolder", "fashion_mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IMAGE_MODES = {1: "L", 3: "RGB"}


def read_idx(path: os.PathLike | str) -> np.ndarray:
    """An array from a (gzipped) IDX file, the format of the MNIST family."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (expected magic 0x0000<type><ndim>, got {data[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the file has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


class FashionMNIST(Dataset):
    """Fashion-MNIST (60k train / 10k test, 28x28 grey, 10 classes) read from the IDX files in ``root``."""

    classes = FASHION_MNIST_CLASSES

    def __init__(
        self, root: os.PathLike | str, split: str = "train", transform: Optional[Callable] = None, in_chans: int = 1
    ) -> None:
        if split not in _FASHION_MNIST_FILES:
            raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
        if in_chans not in _IMAGE_MODES:
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        paths = [Path(root) / name for name in _FASHION_MNIST_FILES[split]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"Fashion-MNIST files not found: {', '.join(missing)}. Install them with "
                "`apt-get install -y dataset-fashion-mnist` (into /usr/share/datasets/fashion-mnist) "
                "or point data.root at a folder holding the four *-idx?-ubyte.gz files"
            )
        self.images, self.targets = read_idx(paths[0]), read_idx(paths[1])
        if self.images.ndim != 3 or self.targets.shape != self.images.shape[:1]:
            raise ValueError(
                f"Fashion-MNIST {split}: images {self.images.shape} and labels {self.targets.shape} do not match"
            )
        self.transform = transform
        self.mode = _IMAGE_MODES[in_chans]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = Image.fromarray(self.images[index])  # uint8 (28, 28): mode "L"
        if self.mode != "L":
            img = img.convert(self.mode)
        return (self.transform(img) if self.transform else img), int(self.targets[index])


def imagefolder_classes(split_dir: Path) -> list[str]:
    """Class names of an ImageFolder split: its sub-folder names, sorted."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir} is not a directory: expected <root>/<split>/<class>/<image files>")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{split_dir} has no class sub-folders: expected <root>/<split>/<class>/<image files>")
    return classes


def _imagefolder(
    split_dir: Path, classes: Optional[Sequence[str]], transform: Optional[Callable], in_chans: int
) -> tuple[Dataset, list[str]]:
    found = imagefolder_classes(split_dir)
    if classes is not None and list(classes) != found:
        raise ValueError(
            f"{split_dir} has other class folders than the training classes: "
            f"missing {sorted(set(classes) - set(found))}, unexpected {sorted(set(found) - set(classes))}"
        )
    class_to_idx = {c: i for i, c in enumerate(found)}
    try:
        dataset = ImageDataset(
            str(split_dir), class_map=class_to_idx, transform=transform, input_img_mode=_IMAGE_MODES[in_chans]
        )
    except RuntimeError as e:  # timm's reader: "Found 0 images in subfolders of ..."
        raise FileNotFoundError(f"no images under {split_dir}: {e}") from None
    counts = np.bincount([t for _, t in dataset.reader.samples], minlength=len(found))
    empty = [c for c, i in class_to_idx.items() if counts[i] == 0]
    if empty:
        raise FileNotFoundError(f"class folders without images under {split_dir}: {empty}")
    return dataset, found


def create_dataset(
    name: str,
    root: os.PathLike | str,
    split: str,
    transform: Optional[Callable] = None,
    in_chans: int = 3,
    classes: Optional[Sequence[str]] = None,
) -> tuple[Dataset, list[str]]:
    """One split and its class names; ``classes`` (e.g. the training split's) must match the split's own."""
    if in_chans not in _IMAGE_MODES:
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    if name == "fashion_mnist":
        return FashionMNIST(root, split, transform, in_chans), list(FASHION_MNIST_CLASSES)
    if name != "imagefolder":
        raise ValueError(f"data.name must be one of {DATASETS}, got {name!r}")
    if not Path(root).is_dir():
        raise FileNotFoundError(
            f"data.root={str(root)!r} is not a directory (expected <root>/{split}/<class>/<image files>)"
        )
    return _imagefolder(Path(root) / split, classes, transform, in_chans)


class HeldOutPart(Subset):
    """Some items of a dataset, with a transform of their own: ``.transform`` is that of a private shallow
    copy of the dataset (the images are shared), so the held-out part and the rest can be transformed apart."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        super().__init__(copy.copy(dataset), indices)

    @property
    def transform(self) -> Optional[Callable]:
        return self.dataset.transform

    @transform.setter
    def transform(self, transform: Optional[Callable]) -> None:
        self.dataset.transform = transform

    def __copy__(self) -> "HeldOutPart":
        return HeldOutPart(self.dataset, self.indices)


def create_datasets(
    name: str,
    root: os.PathLike | str,
    train_split: str,
    val_split: str,
    in_chans: int = 3,
    holdout: Optional[int] = None,
) -> tuple[Dataset, Dataset, list[str]]:
    """``(train, val, class names)`` without transforms (set ``.transform`` once the model is known).

    ``holdout``: the validation set is instead a fixed random part of this many images of the training split,
    and training keeps the rest, so that settings are chosen without looking at ``val_split`` (a test set).
    """
    train, classes = create_dataset(name, root, train_split, in_chans=in_chans)
    if not holdout:
        val, _ = create_dataset(name, root, val_split, in_chans=in_chans, classes=classes)
        return train, val, classes
    if not 0 < holdout < len(train):
        raise ValueError(f"data.holdout must be in 1..{len(train) - 1} (the {train_split!r} split has {len(train)} "
                         f"images, and training keeps the rest), got {holdout}")
    # Its own generator: the same part whatever the run's seed and data.train_samples.
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
    return HeldOutPart(train, order[holdout:]), HeldOutPart(train, order[:holdout]), classes


def subsample(dataset: Dataset, num_samples: Optional[int], seed: int = 0) -> Dataset:
    """A fixed random subset of ``num_samples`` items (the same for every seed of the run), or ``dataset``."""
    if not num_samples:
        return dataset
    if not 0 < num_samples <= len(dataset):
        raise ValueError(f"data.train_samples must be in 1..{len(dataset)} (the split's size), got {num_samples}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:num_samples].tolist())


def resolve_input_config(data: Mapping[str, Any], model: Optional[nn.Module] = None) -> dict[str, Any]:
    """timm's data config (input_size, mean, std, crop_pct, interpolation): values from ``data``, the model's
    pretrained config for those left null."""
    args = {k: data.get(k) for k in ("mean", "std", "crop_pct", "interpolation")}
    if data.get("img_size"):
        args["input_size"] = (data.get("in_chans") or 3, data["img_size"], data["img_size"])
    args = {
        k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
        for k, v in args.items()
        if v is not None
    }
    return resolve_data_config(args, model=model)


def create_train_transform(input_config: Mapping[str, Any], transform_kwargs: Mapping[str, Any]) -> Callable:
    """timm's training transform; ``transform_kwargs`` are ``create_transform`` arguments (aug.transform)."""
    kwargs = {
        k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in transform_kwargs.items()
    }
    return create_transform(
        input_config["input_size"], is_training=True, mean=input_config["mean"], std=input_config["std"], **kwargs
    )


def create_eval_transform(input_config: Mapping[str, Any]) -> Callable:
    """Resize to ``size / crop_pct`` with the configured interpolation, centre crop, normalise."""
    return create_transform(**input_config, is_training=False)


def loader_workers(requested: Optional[int], preferred: int = 10) -> int:
    """``requested`` data-loading processes, or for None the lesser of ``preferred`` and this process's share
    of the CPUs it may use (torchrun's ``LOCAL_WORLD_SIZE`` processes share them): more workers than CPUs
    only contend for them, and torch warns."""
    if requested is not None:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(preferred, max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


def create_train_loader(
    dataset: Dataset, batch_size: int, env: DistEnv, num_workers: int = 0, repeated_aug: int = 0
) -> DataLoader:
    """Shuffled, sharded over ranks (timm's RepeatAugSampler when ``repeated_aug > 1``), last partial batch dropped.

    ``batch_size`` is per process. Call :func:`start_epoch` before each epoch.
    """
    sampler: Sampler
    if repeated_aug > 1:
        sampler = RepeatAugSampler(
            dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, num_repeats=repeated_aug
        )
    else:
        sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=0)
    if len(sampler) < batch_size:
        raise ValueError(
            f"the training set gives {len(sampler)} samples per process, fewer than one batch of {batch_size}"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=env.device.type == "cuda",
        drop_last=True,  # Mixup/CutMix need equal, even batches
        generator=torch.Generator(),
    )


def start_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Make this epoch's order and worker seeds a function of ``(seed, epoch)`` alone."""
    # timm's RepeatAugSampler seeds its shuffle with the epoch number only: folding the run seed into
    # that number gives both samplers a (seed, epoch) order.
    key = seed * 1_000_003 + epoch
    loader.sampler.set_epoch(key)
    loader.generator.manual_seed(key)


def create_eval_loader(dataset: Dataset, batch_size: int, env: DistEnv, num_workers: int = 0) -> DataLoader:
    """In order; with several processes each takes every ``world_size``-th sample (no padding, exact totals)."""
    if env.is_distributed:
        dataset = Subset(dataset, range(env.rank, len(dataset), env.world_size))
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=env.device.type == "cuda"
    )
