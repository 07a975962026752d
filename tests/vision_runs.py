"""Generated image data and tiny vision/train.py runs, shared by the vision tests (fixtures in conftest.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHAPES = {"circle": (230, 60, 60), "square": (60, 200, 60), "triangle": (60, 60, 230)}


def make_shapes(root: Path, n_train: int = 40, n_val: int = 20, size: int = 16, seed: int = 0) -> Path:
    """An ImageFolder tree of 3 classes: coloured circles, squares and triangles on dark noise backgrounds."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for cls, color in SHAPES.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 60, (size, size, 3), dtype=np.uint8))
                r = int(rng.integers(size // 5, size // 3))
                cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
                fill = tuple(int(np.clip(c + rng.integers(-40, 40), 0, 255)) for c in color)
                draw = ImageDraw.Draw(img)
                if cls == "circle":
                    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
                elif cls == "square":
                    draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
                else:
                    draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
                img.save(folder / f"{i}.png")
    return root


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name="train", overrides=overrides)


def tiny_overrides(data_root: Path, out: Path, epochs: int = 3) -> list[str]:
    """A seconds-long run on the generated shapes: a 2-block, 32-wide ResMLP on 16 px images."""
    return [
        "data=imagefolder",
        f"data.root={data_root}",
        "data.img_size=16",
        "data.num_workers=0",
        "++model.kwargs.depth=2",
        "++model.kwargs.embed_dim=32",
        f"train.epochs={epochs}",
        "train.batch_size=12",
        "train.progress=false",
        "train.log_every=2",
        "optim.lr=2e-3",
        "optim.lr_base_batch=12",
        "sched.warmup_epochs=0",
        f"output_dir={out}",
    ]
