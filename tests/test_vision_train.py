"""vision/train.py and its library: presets, data checks, end-to-end runs, exact resume, torchrun, distillation.

The generated shapes and the tiny trained run (fixtures ``shapes_root``, ``trained_run``) are in conftest.py.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf
from PIL import Image
from timm.optim import create_optimizer_v2
from torch import nn
from torch.nn import functional as F

import resmlp_suite  # noqa: F401  (registers the models)
from resmlp_suite.plotting import plot_curves
from resmlp_suite.training import DistillationLoss, create_teacher, init_distributed, read_checkpoint, read_metrics
from resmlp_suite.training.checkpoint import RESULT_NEUTRAL_KEYS
from resmlp_suite.training.precision import amp_dtype
from resmlp_suite.vision.data import FashionMNIST, create_dataset, create_datasets, loader_workers, read_idx
from resmlp_suite.vision.evaluation import evaluate_checkpoint
from resmlp_suite.vision.training import Trainer, check_numeric_options, scaled_lr, train
from vision_runs import CONFIGS, REPO, SHAPES, compose_cfg, make_shapes, tiny_overrides

EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


# -- configs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_preset_composes(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    assert cfg.name == (f"{cfg.model.name}_fashion_mnist" if experiment.startswith("fmnist") else experiment)
    assert timm.is_model(cfg.model.name)
    assert cfg.data.name in ("imagefolder", "fashion_mnist")


@pytest.mark.parametrize("mixer", ["dense", "toeplitz", "multihead"])
def test_token_mixer_is_one_hydra_option(mixer):
    from resmlp_suite.token_mixers import TOKEN_MIXERS
    from resmlp_suite.vision.model_factory import create_model_from_config

    cfg = compose_cfg(["experiment=fmnist_tiny", f"model.kwargs.token_mixer={mixer}", "++model.kwargs.depth=1"])
    model = create_model_from_config(cfg.model, num_classes=10)
    assert type(model.blocks[0].linear_tokens) is TOKEN_MIXERS[mixer]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_s12_preset_is_the_published_recipe():
    cfg = compose_cfg(["experiment=resmlp_s12_in1k", "data.root=/data/imagenet"])
    assert (cfg.model.name, cfg.model.kwargs.drop_path_rate, cfg.model.kwargs.img_size) == ("resmlp_s12", 0.05, 224)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.amp) == (400, 2048, "none")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.lr_base_batch, cfg.optim.weight_decay) == ("lamb", 5e-3, 2048, 0.2)
    s = cfg.sched
    assert (s.name, s.warmup_epochs, s.warmup_lr, s.min_lr, s.cooldown_epochs) == ("cosine", 5, 1e-6, 1e-5, 0)
    a = cfg.aug
    assert a.transform.auto_augment == "rand-m9-mstd0.5-inc1" and a.transform.interpolation == "bicubic"
    assert (a.transform.re_prob, a.mixup.mixup_alpha, a.mixup.cutmix_alpha, a.smoothing, a.repeated_aug) == (
        0.25,
        0.8,
        1.0,
        0.1,
        3,
    )
    assert (cfg.data.crop_pct, cfg.data.interpolation, cfg.distill.type) == (0.9, "bicubic", "none")
    # The applied rate: 5e-3 at the published global batch, linear in the batch otherwise.
    assert scaled_lr(cfg.optim.lr, 2048, cfg.optim.lr_base_batch, cfg.optim.lr_scaling) == 5e-3
    assert scaled_lr(cfg.optim.lr, 512, cfg.optim.lr_base_batch, cfg.optim.lr_scaling) == pytest.approx(1.25e-3)


def test_presets_differ_where_they_should():
    drop_path = {
        m: compose_cfg([f"experiment={m}_in1k"]).model.kwargs.drop_path_rate
        for m in ("resmlp_s24", "resmlp_s36", "resmlp_b24")
    }
    assert drop_path == {"resmlp_s24": 0.1, "resmlp_s36": 0.15, "resmlp_b24": 0.2}
    dist = compose_cfg(["experiment=resmlp_s12_in1k_distilled"])
    assert (dist.distill.type, dist.distill.teacher, dist.distill.alpha, dist.optim.lr) == (
        "hard",
        "regnety_160",
        0.5,
        5e-3,
    )
    cifar = compose_cfg(["experiment=resmlp_s24_cifar"])
    assert (cifar.optim.name, cifar.optim.lr, cifar.optim.lr_base_batch, cifar.optim.weight_decay) == (
        "adamw",
        5e-6,
        768,
        0.05,
    )
    assert (cifar.train.epochs, cifar.train.batch_size, cifar.model.kwargs.drop_path_rate) == (1000, 768, 0.1)
    assert compose_cfg(["experiment=resmlp_s12_cifar"]).model.kwargs.drop_path_rate == 0.05
    vit = compose_cfg(["model=vit_fmnist"])  # the baseline: one override, same recipe
    default = compose_cfg([])
    assert vit.model.name == "vit_tiny_patch16_224" and vit.optim == default.optim and vit.train == default.train
    tuned = compose_cfg(["experiment=fmnist_vit"])  # the same with the rate a ViT can take
    assert tuned.model == vit.model and tuned.train == default.train and tuned.sched == default.sched
    assert (tuned.optim.lr, default.optim.lr) == (4e-3, 1e-2)


def test_lamb_preset_exempts_one_dimensional_parameters_from_weight_decay():
    cfg = compose_cfg(["experiment=resmlp_s12_in1k", "data.root=/x"])
    model = timm.create_model("resmlp_tiny_p4")
    opt = create_optimizer_v2(model, opt=cfg.optim.name, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.2 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decay) == (p.ndim > 1), name  # Affine alpha/beta, LayerScale gamma, biases: no decay


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_lr(1e-3, 256, 512, "sqrt")
    with pytest.raises(ValueError, match="amp must be one of"):
        amp_dtype("fp8")


@pytest.mark.parametrize("override, message", [
    ("train.epochs=abc", "train.epochs must be an integer, got 'abc'"),
    ("train.batch_size=12.5", "train.batch_size must be an integer, got 12.5"),
    ("optim.lr=fast", "optim.lr must be a number, got 'fast'"),
    ("train.grad_clip=true", "train.grad_clip must be a number or null, got True"),
])
def test_numeric_options_of_the_wrong_type_are_named(override, message):
    check_numeric_options(compose_cfg(["train.grad_clip=1", "data.num_workers=null"]))  # an int for a float; null
    with pytest.raises(ValueError, match=message):
        check_numeric_options(compose_cfg([override]))


# -- data ---------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 6)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    train_set, val_set, classes = create_datasets("fashion_mnist", tmp_path, "train", "test", in_chans=1)
    assert (len(train_set), len(val_set), len(classes)) == (12, 6, 10)
    img, label = train_set[3]
    assert img.mode == "L" and img.size == (28, 28) and label == 3
    np.testing.assert_array_equal(np.asarray(img), read_idx(tmp_path / "train-images-idx3-ubyte.gz")[3])
    (tmp_path / "bad-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad-idx1-ubyte.gz")


def test_holdout_splits_the_training_set_with_transforms_apart(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 6)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    images = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    train_set, val_set, _ = create_datasets("fashion_mnist", tmp_path, "train", "test", in_chans=1, holdout=15)
    assert (len(train_set), len(val_set)) == (25, 15)
    # A partition of the training split, the same on every call, the test split untouched.
    assert sorted(train_set.indices + val_set.indices) == list(range(40))
    again = create_datasets("fashion_mnist", tmp_path, "train", "test", in_chans=1, holdout=15)[1]
    assert again.indices == val_set.indices
    np.testing.assert_array_equal(np.asarray(val_set[0][0]), images[val_set.indices[0]])
    # Each part (and a copy of one, as the DINO trainer's k-NN memory) keeps its own transform.
    train_set.transform, val_set.transform = (lambda img: "train"), (lambda img: "val")
    memory = copy.copy(train_set)
    memory.transform = lambda img: "memory"
    assert (train_set[0][0], val_set[0][0], memory[0][0]) == ("train", "val", "memory")
    with pytest.raises(ValueError, match=r"data.holdout must be in 1..39 .*'train' split has 40 images.*got 40"):
        create_datasets("fashion_mnist", tmp_path, "train", "test", in_chans=1, holdout=40)


def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        FashionMNIST(tmp_path, "train")


def test_bad_imagefolders_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        create_datasets("imagefolder", tmp_path / "nowhere", "train", "val")
    root = make_shapes(tmp_path / "shapes", n_train=2, n_val=2)
    (root / "val" / "square").rename(root / "val" / "hexagon")
    with pytest.raises(ValueError, match=r"missing \['square'\], unexpected \['hexagon'\]"):
        create_datasets("imagefolder", root, "train", "val")
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images under"):
        create_dataset("imagefolder", empty, "train")
    (empty / "train" / "b").mkdir()
    Image.new("RGB", (8, 8)).save(empty / "train" / "a" / "x.png")
    with pytest.raises(FileNotFoundError, match=r"class folders without images .*\['b'\]"):
        create_dataset("imagefolder", empty, "train")
    with pytest.raises(ValueError, match="data.name must be one of"):
        create_dataset("cifar", root, "train")


def test_corrupt_image_is_logged_and_skipped(tmp_path, caplog):
    root = make_shapes(tmp_path / "shapes", n_train=2, n_val=1)
    bad = root / "train" / "circle" / "0.png"
    bad.write_bytes(b"not a png")
    dataset, _ = create_dataset("imagefolder", root, "train")
    with caplog.at_level(logging.WARNING):
        images = [dataset[i][0] for i in range(len(dataset))]
    assert len(images) == 6 and all(im.size == (16, 16) for im in images)
    assert any("Skipped sample" in r.getMessage() and str(bad) in r.getMessage() for r in caplog.records)


# -- training -----------------------------------------------------------------------------------------


def test_training_run_learns_and_writes_its_outputs(trained_run):
    out, last = trained_run
    for name in ("last.pt", "best.pt", "metrics.csv", "metrics.json", "curves.png"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    Image.open(out / "curves.png").verify()
    rows = read_metrics(out / "metrics.json")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and read_metrics(out / "metrics.csv") == rows
    assert last == rows[-1]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert max(r["val_top1"] for r in rows) > 70  # 3 classes: chance is 33 %
    ckpt = read_checkpoint(out / "last.pt")  # weights_only=True
    assert {
        "model",
        "model_ema",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "step",
        "rng",
        "config",
        "classes",
    } <= set(ckpt)
    assert (ckpt["epoch"], ckpt["step"], ckpt["classes"]) == (4, 4 * 10, sorted(SHAPES))
    assert OmegaConf.create(ckpt["config"]).train.epochs == 4
    assert {"python", "numpy", "torch", "cuda"} == set(ckpt["rng"][0])


def test_evaluate_reproduces_the_best_validation_accuracy(trained_run):
    out, _ = trained_run
    best_row = max(read_metrics(out / "metrics.json"), key=lambda r: r["val_top1"])
    result = evaluate_checkpoint(out / "best.pt", num_workers=0)
    assert result["count"] == 60 and result["split"] == "val"
    assert result["top1"] == pytest.approx(best_row["val_top1"]) and result["loss"] == pytest.approx(
        best_row["val_loss"]
    )
    assert result["input_config"]["crop_pct"] == 0.9 and result["input_config"]["interpolation"] == "bicubic"
    script = subprocess.run(
        [
            sys.executable,
            str(REPO / "vision" / "evaluate.py"),
            str(out / "best.pt"),
            "--num-workers",
            "0",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(script.stdout.strip().splitlines()[-1])["top1"] == pytest.approx(best_row["val_top1"])


def test_evaluate_names_an_input_channel_count_the_model_does_not_take(trained_run):
    out, _ = trained_run
    with pytest.raises(ValueError, match=r"in_chans=1 \(--in-chans\) does not fit .*best\.pt: its model takes 3-chan"):
        evaluate_checkpoint(out / "best.pt", data={"in_chans": 1}, num_workers=0)


def test_a_run_at_another_resolution_resamples_its_token_mixing(trained_run, shapes_root, tmp_path, caplog):
    """Evaluation at 24 px of a 16-px run (4x4 -> 6x6 patches), its naive alternative, and fine-tuning at 24 px."""
    out, _ = trained_run
    at_16 = evaluate_checkpoint(out / "best.pt", num_workers=0)
    with caplog.at_level(logging.INFO, logger="resmlp_suite"):
        resampled = evaluate_checkpoint(out / "best.pt", data={"img_size": 24}, num_workers=0)
    assert "from a 4x4 to a 6x6 patch grid" in caplog.text
    assert resampled["input_config"]["input_size"] == (3, 24, 24) and resampled["count"] == 60
    assert resampled["top1"] > 50  # the 16-px weights still recognise the shapes (chance: 33 %)
    resized_back = evaluate_checkpoint(out / "best.pt", source_img_size=24, num_workers=0)
    assert resized_back["input_config"]["input_size"] == (3, 16, 16) and resized_back["top1"] > 50
    assert resized_back["top1"] != at_16["top1"] or resized_back["loss"] != at_16["loss"]  # the images did change
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="resmlp_suite"):
        finetune = train(compose_cfg([*tiny_overrides(shapes_root, tmp_path / "ft24", epochs=1), "data.img_size=24",
                                      f"model.pretrained_file={out / 'best.pt'}"]))
    assert "from a 4x4 to a 6x6 patch grid" in caplog.text and finetune["epoch"] == 1


def test_finished_run_restarted_with_resume_auto_does_nothing(trained_run, shapes_root):
    out, last = trained_run
    before = (out / "last.pt").stat().st_mtime_ns
    assert train(compose_cfg(tiny_overrides(shapes_root, out, epochs=4))) == last
    assert (out / "last.pt").stat().st_mtime_ns == before


class Killed(Exception):
    pass


def test_killed_and_resumed_run_equals_uninterrupted_run(shapes_root, tmp_path, monkeypatch):
    # Random crops, flips, Mixup (numpy) and drop-path (torch) all draw random numbers during epoch 2.
    extra = ["aug.mixup.mixup_alpha=0.8", "model.kwargs.drop_path_rate=0.1", "train.ema=true", "train.ema_decay=0.9"]
    full = train(compose_cfg(tiny_overrides(shapes_root, tmp_path / "full", epochs=2) + extra))

    save = Trainer.save

    def save_then_die(self, is_best):
        save(self, is_best)
        raise Killed  # the process dies right after the epoch-1 checkpoint is on disk

    monkeypatch.setattr(Trainer, "save", save_then_die)
    with pytest.raises(Killed):
        train(compose_cfg(tiny_overrides(shapes_root, tmp_path / "resumed", epochs=2) + extra))
    monkeypatch.setattr(Trainer, "save", save)
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    torch.manual_seed(123)  # whatever the state of the generators, resuming restores them
    resumed = train(compose_cfg(tiny_overrides(shapes_root, tmp_path / "resumed", epochs=2) + extra))

    a, b = read_checkpoint(tmp_path / "full" / "last.pt"), read_checkpoint(tmp_path / "resumed" / "last.pt")
    for key in ("model", "model_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    assert {k: v for k, v in full.items() if "time" not in k and "per_s" not in k} == {
        k: v for k, v in resumed.items() if "time" not in k and "per_s" not in k
    }
    assert [r["epoch"] for r in read_metrics(tmp_path / "resumed" / "metrics.csv")] == [1, 2]


def test_hydra_sweep_gives_each_job_its_own_run_directory(shapes_root, tmp_path):
    out = tmp_path / "sweep"
    overrides = [o for o in tiny_overrides(shapes_root, out, epochs=1) if not o.startswith("optim.lr=")]
    cmd = [sys.executable, str(REPO / "vision" / "train.py"), "-m", *overrides, "optim.lr=1e-3,4e-3"]
    subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=True)
    runs = sorted(p.parent.name for p in out.glob("*/last.pt"))
    assert len(runs) == 2 and "optim.lr=0.001" in runs[0] and "optim.lr=0.004" in runs[1]
    lrs = [OmegaConf.create(read_checkpoint(out / r / "last.pt")["config"]).optim.lr for r in runs]
    assert lrs == [1e-3, 4e-3]


def test_two_process_torchrun_on_cpu(shapes_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "vision" / "train.py"),
        *tiny_overrides(shapes_root, out, epochs=2),
        "train.device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = read_checkpoint(out / "last.pt")
    assert len(ckpt["rng"]) == 2  # both ranks' generators are saved
    assert ckpt["step"] == 2 * 10  # each rank: 60 of the 120 images in batches of 6
    rows = read_metrics(out / "metrics.json")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert (out / ".hydra" / "config.yaml").is_file()


# -- distillation -------------------------------------------------------------------------------------


def test_hard_distillation_loss_is_the_documented_mix():
    torch.manual_seed(0)
    teacher = nn.Linear(6, 4)
    base = nn.CrossEntropyLoss(label_smoothing=0.1)
    inputs, outputs, labels = torch.randn(8, 6), torch.randn(8, 4, requires_grad=True), torch.randint(0, 4, (8,))
    loss = DistillationLoss(base, teacher, alpha=0.5)(inputs, outputs, labels)
    teacher_labels = teacher(inputs).argmax(-1)
    expected = 0.5 * base(outputs, labels) + 0.5 * F.cross_entropy(outputs, teacher_labels)
    torch.testing.assert_close(loss, expected)
    assert DistillationLoss(base, None)(inputs, outputs, labels) == base(outputs, labels)
    loss.backward()
    assert teacher.weight.grad is None and not teacher.weight.requires_grad


def test_hard_distillation_pulls_towards_the_teacher_and_keeps_it_frozen():
    teacher = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.9))
    with torch.no_grad():
        teacher[0].weight.copy_(torch.eye(3))
        teacher[0].bias.zero_()
    criterion = DistillationLoss(nn.CrossEntropyLoss(), teacher, alpha=1.0).train()
    assert not teacher.training  # dropout off: the teacher's labels are deterministic
    inputs = torch.tensor([[0.0, 0.0, 5.0]])  # the teacher says class 2
    agree, disagree = torch.tensor([[0.0, 0.0, 4.0]]), torch.tensor([[4.0, 0.0, 0.0]])
    labels = torch.tensor([0])  # the data label says class 0: with alpha=1 only the teacher counts
    assert criterion(inputs, agree, labels) < criterion(inputs, disagree, labels)
    with pytest.raises(ValueError, match="same classes"):
        criterion(inputs, torch.zeros(1, 5), labels)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        DistillationLoss(nn.CrossEntropyLoss(), teacher, alpha=1.5)


def test_distillation_run_with_a_teacher_checkpoint(trained_run, shapes_root, tmp_path):
    out, _ = trained_run
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        create_teacher("resmlp_tiny_p4", None, 3, torch.device("cpu"))
    teacher_kwargs = [
        "+distill.teacher_kwargs.img_size=16",
        "+distill.teacher_kwargs.in_chans=3",
        "+distill.teacher_kwargs.depth=2",
        "+distill.teacher_kwargs.embed_dim=32",
    ]
    overrides = tiny_overrides(shapes_root, tmp_path, epochs=1) + [
        "distill=hard",
        "distill.teacher=resmlp_tiny_p4",
        f"distill.teacher_checkpoint={out / 'best.pt'}",
        *teacher_kwargs,
    ]
    cfg = compose_cfg(overrides)
    trainer = Trainer(cfg, init_distributed("cpu"))
    teacher = trainer.criterion.teacher
    saved = read_checkpoint(out / "best.pt")["model"]
    assert all(torch.equal(teacher.state_dict()[k], saved[k]) for k in saved)
    row = trainer.fit()
    assert row["epoch"] == 1 and np.isfinite(row["train_loss"])


def test_plot_curves_overlays_runs(trained_run, tmp_path):
    out, _ = trained_run
    png = plot_curves(
        [out / "metrics.csv", out / "metrics.json"], tmp_path / "both.png", labels=["csv", "json"], title="t"
    )
    assert Image.open(png).size[0] > 500
    with pytest.raises(ValueError, match="2 metrics files but 1 labels"):
        plot_curves([out / "metrics.csv", out / "metrics.json"], tmp_path / "x.png", labels=["a"])


def test_loader_workers_default_to_this_processes_share_of_the_cpus(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    assert loader_workers(None) == min(10, cpus) and loader_workers(None, preferred=1) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cpus * 2))  # more torchrun processes than CPUs: one worker each
    assert loader_workers(None) == 1
    assert loader_workers(12) == 12  # asked for explicitly
    assert compose_cfg(["data=imagefolder", "data.root=/x"]).data.num_workers is None


# -- files that are not what they should be -----------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"hello, I am text\n"])
def test_a_file_that_is_not_a_checkpoint_is_named_by_every_reader(tmp_path, shapes_root, content):
    from resmlp_suite import convert
    from resmlp_suite.vision import load_checkpoint

    bad = tmp_path / "weights.pth"
    bad.write_bytes(content)
    message = rf"{bad} \({len(content)} bytes\) is not a checkpoint this suite can read"
    readers = {
        "load_checkpoint": lambda: load_checkpoint(timm.create_model("resmlp_tiny_p4"), bad),
        "evaluate": lambda: evaluate_checkpoint(bad, num_workers=0),
        "convert": lambda: convert.main([str(bad), str(tmp_path / "out.safetensors"), "--to", "timm"]),
        "pretrained_file": lambda: train(compose_cfg(tiny_overrides(shapes_root, tmp_path / "ft", epochs=1)
                                                     + [f"model.pretrained_file={bad}"])),
        "resume": lambda: train(compose_cfg(tiny_overrides(shapes_root, tmp_path / "r", epochs=1)
                                            + [f"train.resume={bad}"])),
    }
    for name, read in readers.items():
        with pytest.raises(ValueError, match=message):
            read()
    assert bad.read_bytes() == content


def test_resume_refuses_a_truncated_last_checkpoint_and_keeps_it(trained_run, shapes_root, tmp_path):
    out, _ = trained_run
    run = tmp_path / "run"
    run.mkdir()
    data = (out / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot resume from .*last\.pt: .*train\.resume=null"):
        train(compose_cfg(tiny_overrides(shapes_root, run, epochs=5)))
    assert (run / "last.pt").read_bytes() == data[: len(data) // 2]


def test_resume_on_data_with_other_classes_is_refused(trained_run, shapes_root, tmp_path):
    out, _ = trained_run
    other = tmp_path / "other"
    shutil.copytree(shapes_root, other)
    for split in ("train", "val"):
        (other / split / "circle").rename(other / split / "disc")
    run = tmp_path / "run"
    shutil.copytree(out, run)
    with pytest.raises(ValueError, match=r"trained on the classes \['circle', 'square', 'triangle'\], and "
                                         r"data.root=.* has \['disc', 'square', 'triangle'\]"):
        train(compose_cfg(tiny_overrides(other, run, epochs=5)))


def test_resume_auto_refuses_other_options_and_an_explicit_path_warns(trained_run, shapes_root, tmp_path, caplog):
    """Two runs never mix without a word: the checkpoint's options against the run's."""
    out, _ = trained_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = (run / "last.pt").read_bytes()
    changed = [*tiny_overrides(shapes_root, run, epochs=5), "optim.lr=3e-3", "data.holdout=6"]
    with pytest.raises(ValueError, match=r"cannot resume from .*last\.pt \(train\.resume=auto\): it was trained with "
                                         r"other options, data\.holdout: None -> 6; optim\.lr: 0\.002 -> 0\.003 "
                                         r".*train\.resume=null.*train\.resume=.*last\.pt"):
        train(compose_cfg(changed))
    assert (run / "last.pt").read_bytes() == before
    with caplog.at_level(logging.WARNING, logger="resmlp_suite"):
        resumed = train(compose_cfg([*changed, f"train.resume={run / 'last.pt'}"]))
    assert "trained with other options: data.holdout" in caplog.text and resumed["epoch"] == 5


def test_options_that_may_differ_on_resume_are_those_sweeps_leave_out_of_job_names():
    for name in ("train.yaml", "train_dino.yaml"):
        hydra_job = OmegaConf.load(REPO / "configs" / name).hydra.job
        assert set(hydra_job.config.override_dirname.exclude_keys) == RESULT_NEUTRAL_KEYS, name


def test_resumed_run_keeps_its_metrics_history_when_the_files_are_lost(trained_run, shapes_root, tmp_path):
    out, _ = trained_run
    before = read_metrics(out / "metrics.json")
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / "metrics.json").unlink()
    (run / "metrics.csv").unlink()
    train(compose_cfg(tiny_overrides(shapes_root, run, epochs=5)))
    for name in ("metrics.json", "metrics.csv"):
        rows = read_metrics(run / name)
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
        assert rows[3]["val_top1"] == pytest.approx(before[3]["val_top1"])


def test_a_damaged_metrics_file_is_set_aside_and_the_history_rebuilt_from_the_other(trained_run, shapes_root,
                                                                                    tmp_path, caplog):
    out, _ = trained_run
    before = read_metrics(out / "metrics.json")
    run = tmp_path / "run"
    shutil.copytree(out, run)
    old = torch.load(run / "last.pt", weights_only=True)
    del old["metrics"]  # a checkpoint from before the history was kept in it
    torch.save(old, run / "last.pt")
    damaged = (run / "metrics.json").read_text()[:50]
    (run / "metrics.json").write_text(damaged)
    with caplog.at_level(logging.WARNING):
        train(compose_cfg(tiny_overrides(shapes_root, run, epochs=5)))
    assert (run / "metrics.json.damaged").read_text() == damaged
    assert f"{run / 'metrics.json'} cannot be read" in caplog.text
    rows = read_metrics(run / "metrics.json")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["val_top1"] for r in rows[:4]] == pytest.approx([r["val_top1"] for r in before])
