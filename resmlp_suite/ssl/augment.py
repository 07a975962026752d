"""DINO's multi-crop augmentation (``DataAugmentationDINO``), for fixed-grid backbones and small grey images.

Every image gives two global crops and ``local_number`` local crops:

- global 1: random-resized crop (``global_scale``), flip, colour jitter (p 0.8), grayscale (p 0.2), blur (p 1.0);
- global 2: the same with blur p 0.1 and solarisation p 0.2;
- local: a crop of ``local_scale`` of the image, flip, colour jitter, grayscale, blur (p 0.5).

Crop sizes, and what they cost. DINO's local crops are 96 px with 224 px global crops. A ResMLP takes
one fixed patch grid (its token-mixing matrices are ``N x N``), so here the local crops are cut from a
small region as in DINO but **resized to** ``local_size``, by default the global size: the local views
keep their meaning (a small part of the image to match with the whole) but each costs as much as a
global crop. Per image, with F the backbone's forward cost at the global size (ResMLP-S12 at 224 px:
3.0 GMACs) and a backward at about 2 F, a step costs::

    teacher 2 global crops (forward)           2 F
    student 2 global crops (forward+backward)  6 F
    student n local crops at the global size   3 F each      -> (8 + 3n) F

so 2 local crops make a step 1.75x as costly as none, DINO's 8 make it 4x (DINO's ViT-S pays about
0.18 F per 96-px crop, 5.4x fewer tokens). Without local crops DINO advises a wider range of global
crop scales, (0.14, 1) (``main_dino.py``'s help of ``--global_crops_scale``): the default of
``vision/train_dino.py`` and of its ImageNet presets.

Grey images (Fashion-MNIST, mode "L") go through the same steps: the hue and saturation jitter and the
grayscale step leave them as they are, brightness/contrast and solarisation act on the grey level. The
blur's sigma is DINO's (0.1, 2.0) px at 224 px scaled to the crop size, so it hides the same fraction
of any image (0.0125-0.25 px at 28 px).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image, ImageFilter
from timm.data.transforms import str_to_interp_mode
from torch.utils.data import Dataset
from torchvision import transforms

__all__ = ["MultiCropAugmentation", "RandomBlur", "SeededViews"]

DINO_SIZE = 224  # the crop size DINO's blur radii (0.1, 2.0) were chosen for
COLOR_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)


class RandomBlur:
    """PIL's Gaussian blur (as DINO) with probability ``p``, sigma drawn in DINO's (0.1, 2.0) px at 224 px
    scaled to ``size`` px. Draws from torch's generator (:class:`SeededViews` seeds it); PIL's blur is
    ~50x faster than torchvision's tensor blur on small images."""

    def __init__(self, size: int, p: float) -> None:
        self.p = p
        self.sigma = tuple(s * size / DINO_SIZE for s in (0.1, 2.0))

    def __call__(self, image: Image.Image) -> Image.Image:
        if torch.rand(()) >= self.p:
            return image
        return image.filter(ImageFilter.GaussianBlur(torch.empty(()).uniform_(*self.sigma).item()))


class MultiCropAugmentation:
    """``image -> [global 1, global 2, local 1, ..., local n]`` normalised tensors (see the module docstring)."""

    def __init__(self, global_size: int, global_scale: Sequence[float], local_number: int, local_size: int,
                 local_scale: Sequence[float], mean: Sequence[float], std: Sequence[float],
                 interpolation: str = "bicubic") -> None:
        mode = str_to_interp_mode(interpolation)
        flip_and_jitter = [
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomApply([transforms.ColorJitter(**COLOR_JITTER)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
        ]
        normalize = [transforms.ToTensor(), transforms.Normalize(mean, std)]

        def crop(size: int, scale: Sequence[float]) -> transforms.RandomResizedCrop:
            return transforms.RandomResizedCrop(size, scale=tuple(scale), interpolation=mode)

        self.global_1 = transforms.Compose(
            [crop(global_size, global_scale), *flip_and_jitter, RandomBlur(global_size, 1.0), *normalize])
        self.global_2 = transforms.Compose(
            [crop(global_size, global_scale), *flip_and_jitter, RandomBlur(global_size, 0.1),
             transforms.RandomSolarize(128, p=0.2), *normalize])
        self.local = transforms.Compose(
            [crop(local_size, local_scale), *flip_and_jitter, RandomBlur(local_size, 0.5), *normalize])
        self.local_number = local_number

    def __call__(self, image: Any) -> list[torch.Tensor]:
        return [self.global_1(image), self.global_2(image)] + [self.local(image) for _ in range(self.local_number)]


class SeededViews(Dataset):
    """``dataset[index]`` with torch's generator seeded by ``(seed, epoch, index)`` for the call (and restored
    after): an image's crops depend on nothing else, not on the number of processes, loader workers, or
    where a resumed run restarted. (torchvision's transforms draw from torch's generator only.)

    Call :meth:`set_epoch` before each epoch's loader iterator is made (workers copy the dataset then).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + self.epoch) * 100_000_007 + index) % 2**63)
            return self.dataset[index]
