"""DINO pre-training (resmlp_suite/ssl, vision/train_dino.py): the loss, teacher EMA, schedules and gradient rules
against hand computations; the augmentation on grey images; exact resume; 2 processes against 1; presets, errors,
collapse warnings."""

from __future__ import annotations

import copy
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import Dataset

import resmlp_suite  # noqa: F401  (registers the models)
from resmlp_suite.ssl.augment import MultiCropAugmentation, RandomBlur, SeededViews
from resmlp_suite.ssl.collapse import ONE_DIMENSION, UNIFORM, CollapseMonitor, collapse_kind
from resmlp_suite.ssl.dino import (
    DINOHead,
    DINOLoss,
    MultiCropWrapper,
    cancel_last_layer_gradients,
    clip_gradients,
    cosine_schedule,
    teacher_temperature_schedule,
    update_teacher,
)
from resmlp_suite.ssl.training import TEACHER_BACKBONE, DinoTrainer, check_config
from resmlp_suite.training import init_distributed, read_checkpoint, read_metrics
from resmlp_suite.vision.evaluation import prepare_evaluation
from resmlp_suite.vision.feature_eval import prepare_features
from resmlp_suite.vision.model_factory import classifier_from_weights, create_model_from_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PRESETS = sorted(p.stem for p in (CONFIGS / "dino_experiment").glob("*.yaml"))
CPU = init_distributed("cpu")


def make_shapes(root: Path, n_train: int = 40, n_val: int = 20, size: int = 16) -> Path:
    """An ImageFolder tree of 3 classes (discs, squares, bars) in random colours on noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for cls in ("bar", "disc", "square"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 60, (size, size, 3), dtype=np.uint8))
                r = int(rng.integers(size // 5, size // 3))
                cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
                fill = tuple(int(c) for c in rng.integers(120, 256, 3))
                draw = ImageDraw.Draw(img)
                half_height = 1 if cls == "bar" else r
                shape = draw.ellipse if cls == "disc" else draw.rectangle
                shape([cx - r, cy - half_height, cx + r, cy + half_height], fill=fill)
                img.save(root / split / cls / f"{i}.png")
    return root


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name="train_dino", overrides=overrides)


def tiny(data_root: Path, out: Path, epochs: int = 2, samples: int = 12) -> list[str]:
    """A 2-block, 32-wide ResMLP on 16-px images, a small head, one local crop; ``samples`` / 12 steps per epoch."""
    return [
        "data=imagefolder", f"data.root={data_root}", "data.img_size=16", "data.num_workers=0",
        f"data.train_samples={samples}", "++model.kwargs.depth=2", "++model.kwargs.embed_dim=32",
        f"train.epochs={epochs}", "train.batch_size=12", "train.progress=false", "train.log_every=1",
        "train.num_threads=1", "train.device=cpu", "optim.lr=5e-2", "sched.warmup_epochs=0",
        "dino.out_dim=64", "dino.hidden_dim=32", "dino.bottleneck_dim=16", "dino.local_crops_number=1",
        "dino.freeze_last_layer=1",
        "dino.knn_train_samples=null", f"output_dir={out}",
    ]


@pytest.fixture(scope="module")
def images_root(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("shapes"))


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def runs(images_root, tmp_path_factory) -> dict:
    """Two 1-step epochs uninterrupted, and the same killed after its first checkpoint then resumed; drop-path
    on, so that resuming must restore the torch generator too (the crops do not depend on it)."""
    out = tmp_path_factory.mktemp("dino")
    extra = ["model.kwargs.drop_path_rate=0.1"]
    full = DinoTrainer(compose_cfg(tiny(images_root, out / "full") + extra), CPU)
    initial_last_layer = copy.deepcopy(full.student.head.last_layer.state_dict())
    full_row = full.fit()

    save = DinoTrainer.save

    def save_then_die(self):
        save(self)
        raise Killed  # the process dies right after the step-1 checkpoint is on disk

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DinoTrainer, "save", save_then_die)
        with pytest.raises(Killed):
            DinoTrainer(compose_cfg(tiny(images_root, out / "resumed") + extra), CPU).fit()
    killed = read_checkpoint(out / "resumed" / "last.pt")
    torch.manual_seed(123)  # whatever the state of the generators, resuming restores them
    resumed_row = DinoTrainer(compose_cfg(tiny(images_root, out / "resumed") + extra), CPU).fit()
    return dict(out=out, full=full, full_row=full_row, killed=killed, resumed_row=resumed_row,
                initial_last_layer=initial_last_layer)


# -- the method's parts against hand computations -------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_loss_centres_and_sharpens_the_teacher_as_by_hand():
    batch, dim, student_temp, teacher_temp = 2, 5, 0.1, 0.04
    g = torch.Generator().manual_seed(0)
    student = torch.randn(3 * batch, dim, generator=g, requires_grad=True)  # global 1, global 2, local: crop-major
    teacher = torch.randn(2 * batch, dim, generator=g, requires_grad=True)
    center = np.array([[0.3, -0.2, 0.1, 0.0, 0.5]])
    loss_fn = DINOLoss(dim, n_crops=3, student_temp=student_temp, center_momentum=0.9)
    loss_fn.center.copy_(torch.tensor(center))
    out = loss_fn(student, teacher, teacher_temp)

    s, t = student.detach().double().numpy(), teacher.detach().double().numpy()
    q = [_softmax((t[i * batch:(i + 1) * batch] - center) / teacher_temp) for i in range(2)]
    logp = [np.log(_softmax(s[v * batch:(v + 1) * batch] / student_temp)) for v in range(3)]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # (teacher crop, student crop): never the same crop
    expected = np.mean([(-q[a] * logp[b]).sum(-1).mean() for a, b in pairs])
    entropy = np.mean([(-qq * np.log(qq)).sum(-1).mean() for qq in q])
    kl = np.mean([(q[a] * (np.log(q[a]) - logp[b])).sum(-1).mean() for a, b in pairs])
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.teacher_entropy.item() == pytest.approx(entropy, rel=1e-5, abs=1e-6)
    assert out.kl.item() == pytest.approx(kl, rel=1e-4, abs=1e-6)
    # The centre moved towards the teacher's batch mean (both global crops' rows), momentum 0.9; uncentred outputs.
    np.testing.assert_allclose(loss_fn.center.double().numpy(), 0.9 * center + 0.1 * t.mean(0, keepdims=True),
                               rtol=1e-6, atol=1e-7)
    out.loss.backward()
    assert teacher.grad is None and student.grad is not None  # the teacher's targets are constants


def test_teacher_is_an_ema_of_the_student_with_the_scheduled_momentum_and_no_gradient():
    student, teacher = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        student.weight.fill_(8.0), student.bias.fill_(-4.0), teacher.weight.fill_(4.0), teacher.bias.fill_(4.0)
    teacher.requires_grad_(False)
    update_teacher(student, teacher, momentum=0.75)  # exact in binary: 0.75 * 4 + 0.25 * 8 = 5
    assert torch.equal(teacher.weight, torch.full((2, 2), 5.0)) and torch.equal(teacher.bias, torch.full((2,), 2.0))
    assert not teacher.weight.requires_grad and teacher.weight.grad_fn is None

    torch.manual_seed(0)
    student = MultiCropWrapper(nn.Linear(4, 3), DINOHead(3, 6, hidden_dim=8, bottleneck_dim=4))
    teacher = copy.deepcopy(student).requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.5)
    crops = [torch.randn(2, 4), torch.randn(2, 4)]
    with torch.no_grad():
        target = teacher(crops)
    DINOLoss(6, 2)(student(crops), target, 0.04).loss.backward()
    optimizer.step()
    before = {name: p.clone() for name, p in teacher.named_parameters()}
    momentum = float(cosine_schedule(0.996, 1.0, epochs=1, iters_per_epoch=4)[1])
    update_teacher(student, teacher, momentum)
    moved = 0
    for (name, s), (_, t) in zip(student.named_parameters(), teacher.named_parameters(), strict=True):
        torch.testing.assert_close(t, momentum * before[name] + (1 - momentum) * s.detach())
        assert t.grad is None and not t.requires_grad, name
        moved += not torch.equal(t, before[name])
    assert moved >= 7  # every trained tensor moved (the frozen weight-norm magnitude stays 1)


def test_schedules_warm_up_then_follow_a_cosine():
    base, final, epochs, iters, warmup = 2e-3, 1e-6, 10, 5, 2
    lr = cosine_schedule(base, final, epochs, iters, warmup)
    assert len(lr) == epochs * iters
    np.testing.assert_allclose(lr[:10], np.linspace(0, base, 10))  # linear from 0, its last value the base rate
    assert lr[10] == pytest.approx(base) and lr[30] == pytest.approx((base + final) / 2)  # cosine midpoint
    assert lr[-1] == pytest.approx(final + 0.5 * (base - final) * (1 + math.cos(math.pi * 39 / 40)))
    assert np.all(np.diff(lr[:10]) > 0) and np.all(np.diff(lr[10:]) < 0)
    assert len(cosine_schedule(1, 0, 2, 10, warmup_epochs=0.5)) == 20  # a fractional warm-up: 5 iterations
    assert cosine_schedule(1, 0, 2, 10, warmup_epochs=0.5)[4] == 1.0
    wd = cosine_schedule(0.04, 0.4, epochs, iters)
    assert wd[0] == pytest.approx(0.04) and wd[-1] == pytest.approx(0.4, abs=5e-4) and np.all(np.diff(wd) > 0)
    momentum = cosine_schedule(0.996, 1.0, epochs, iters)
    assert momentum[0] == pytest.approx(0.996) and momentum[-1] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(momentum) > 0)
    temps = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=30, epochs=100)
    assert len(temps) == 100 and temps[0] == 0.04 and temps[29] == pytest.approx(0.07)
    np.testing.assert_allclose(np.diff(temps[:30]), 0.03 / 29)
    assert np.all(temps[30:] == 0.07)
    assert np.all(teacher_temperature_schedule(0.04, 0.07, 0, 5) == 0.07)
    assert len(teacher_temperature_schedule(0.04, 0.07, 30, 10)) == 10  # a warm-up longer than the run is cut
    with pytest.raises(ValueError, match="does not fit"):
        cosine_schedule(1, 0, 2, 10, warmup_epochs=3)


def test_last_layer_is_frozen_in_the_first_epoch_and_gradients_are_clipped_per_parameter():
    head = DINOHead(4, 6, hidden_dim=8, bottleneck_dim=4)
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad and torch.equal(magnitude, torch.ones(6, 1))  # norm_last_layer
    assert DINOHead(4, 6, 8, 4, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad
    head(torch.randn(3, 4)).square().sum().backward()
    cancel_last_layer_gradients(head, epoch=1, freeze_epochs=1)  # the second epoch: kept
    assert head.last_layer.parametrizations.weight.original1.grad is not None
    cancel_last_layer_gradients(head, epoch=0, freeze_epochs=1)
    assert all(p.grad is None for n, p in head.named_parameters() if "last_layer" in n)
    assert all(p.grad is not None for n, p in head.named_parameters() if n.startswith("mlp"))

    model = nn.Linear(2, 2)
    model.weight.grad = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # norm 5
    model.bias.grad = torch.tensor([0.6, 0.8])  # norm 1
    clip_gradients(model, 3.0)
    torch.testing.assert_close(model.weight.grad, torch.tensor([[3.0, 4.0], [0.0, 0.0]]) * 3.0 / (5.0 + 1e-6))
    assert torch.equal(model.bias.grad, torch.tensor([0.6, 0.8]))  # each parameter on its own: left as it was


def test_multi_crop_wrapper_runs_the_backbone_once_per_crop_size():
    calls = []
    backbone = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    wrapper = MultiCropWrapper(backbone, nn.Identity())
    crops = [torch.randn(2, 3, 16, 16)] * 2 + [torch.randn(2, 3, 8, 8)] * 3
    assert wrapper(crops).shape == (10, 3) and calls == [4, 6]


# -- augmentation -----------------------------------------------------------------------------------


class GreyImages(Dataset):
    def __init__(self, transform) -> None:
        self.images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), 0


def test_multi_crop_augmentation_takes_grey_28px_images_and_is_seeded_per_image():
    augment = MultiCropAugmentation(28, (0.14, 1.0), 2, 28, (0.05, 0.4), (0.286,), (0.353,), "bilinear")
    dataset = GreyImages(augment)
    assert Image.fromarray(dataset.images[0]).mode == "L"
    crops, _ = dataset[0]
    assert [tuple(c.shape) for c in crops] == [(1, 28, 28)] * 4 and all(c.isfinite().all() for c in crops)
    blur = RandomBlur(28, p=1.0)
    assert blur.sigma == pytest.approx((0.0125, 0.25))  # DINO's (0.1, 2.0) px at 224 px, scaled to 28 px
    image = Image.fromarray(dataset.images[0])
    assert np.asarray(blur(image)).tolist() != np.asarray(image).tolist()
    assert RandomBlur(28, p=0.0)(image) is image

    seeded = SeededViews(dataset, seed=0)
    state = torch.get_rng_state()
    first = seeded[1][0]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is left alone
    torch.manual_seed(99)
    assert all(torch.equal(a, b) for a, b in zip(first, seeded[1][0]))  # (seed, epoch, image) decides the crops
    assert not torch.equal(first[0], seeded[2][0][0])
    seeded.set_epoch(1)
    assert not torch.equal(first[0], seeded[1][0][0])


# -- runs -------------------------------------------------------------------------------------------


def test_killed_and_resumed_run_equals_uninterrupted_run(runs):
    a = read_checkpoint(runs["out"] / "full" / "last.pt")
    b = read_checkpoint(runs["out"] / "resumed" / "last.pt")
    assert (a["epoch"], a["step"], runs["killed"]["epoch"], runs["killed"]["step"]) == (2, 2, 1, 1)
    for key in ("student", "teacher", "dino_loss"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    assert a["dino_loss"]["center"].abs().sum() > 0
    timing = ("train_time_s", "train_img_per_s")
    assert {k: v for k, v in runs["full_row"].items() if k not in timing} == {
        k: v for k, v in runs["resumed_row"].items() if k not in timing}
    assert [r["epoch"] for r in read_metrics(runs["out"] / "resumed" / "metrics.csv")] == [1, 2]


def test_resume_auto_refuses_a_run_with_other_options(runs, images_root):
    overrides = [*tiny(images_root, runs["out"] / "full"), "model.kwargs.drop_path_rate=0.1", "dino.student_temp=0.2"]
    with pytest.raises(ValueError, match=r"full.last\.pt \(train\.resume=auto\): it was trained with other options, "
                                         r"dino\.student_temp: 0\.1 -> 0\.2 "):
        DinoTrainer(compose_cfg(overrides), CPU)


def test_last_layer_stays_put_in_the_first_epoch_of_a_run(runs):
    killed, last = runs["killed"]["student"], read_checkpoint(runs["out"] / "full" / "last.pt")["student"]
    for name, initial in runs["initial_last_layer"].items():
        assert torch.equal(killed[f"head.last_layer.{name}"], initial)  # epoch 1: no update, no weight decay
    weight = "head.last_layer.parametrizations.weight.original1"
    assert not torch.equal(last[weight], killed[weight])  # epoch 2: it learns
    assert not torch.equal(killed["head.mlp.0.weight"], last["head.mlp.0.weight"])


def test_run_writes_its_outputs_and_follows_its_schedules(runs, images_root):
    out, trainer, row = runs["out"] / "full", runs["full"], runs["full_row"]
    for name in ("last.pt", TEACHER_BACKBONE, "metrics.csv", "metrics.json"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    rows = read_metrics(out / "metrics.json")
    assert rows[-1] == row and [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 < r["teacher_entropy"] < math.log(64) and r["student_teacher_kl"] > 0 and 0 <= r["knn_top1"] <= 100
    ckpt = read_checkpoint(out / "last.pt")
    assert {"student", "teacher", "optimizer", "scaler", "dino_loss", "epoch", "step", "rng", "config",
            "metrics", "classes"} <= set(ckpt)
    assert ckpt["metrics"] == rows
    # The schedules as applied: lr = optim.lr * global batch / 256, no weight decay on 1-D parameters.
    assert trainer.lr == pytest.approx(5e-2 * 12 / 256)
    groups = trainer.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.0, trainer.wd_schedule[1]]
    assert all(p.ndim <= 1 for p in groups[0]["params"]) and all(p.ndim > 1 for p in groups[1]["params"])
    assert groups[0]["lr"] == trainer.lr_schedule[1] == row["lr"]
    assert all(p.grad is None and not p.requires_grad for p in trainer.teacher.parameters())
    # Stochastic depth in the student only, as DINO builds its teacher.
    assert trainer.student.backbone.blocks[0].drop_path.drop_prob == 0.1
    assert isinstance(trainer.teacher.backbone.blocks[0].drop_path, nn.Identity)

    # teacher_backbone.pt: the teacher's backbone alone, suite layout; vision/train.py fine-tunes from it.
    saved = read_checkpoint(out / TEACHER_BACKBONE)
    assert set(saved) == {"model"} and not any(k.startswith("head.") for k in saved["model"])
    assert all(torch.equal(v, ckpt["teacher"][f"backbone.{k}"]) for k, v in saved["model"].items())
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        supervised = compose(config_name="train", overrides=[
            "data=imagefolder", f"data.root={images_root}", "data.img_size=16", "++model.kwargs.depth=2",
            "++model.kwargs.embed_dim=32", f"model.pretrained_file={out / TEACHER_BACKBONE}"])
    for num_classes in (3, 10):  # 10: the model's default count, where timm loads strictly
        model = create_model_from_config(supervised.model, num_classes)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in saved["model"].items())
        assert model.head.out_features == num_classes
    backbone = classifier_from_weights(out / TEACHER_BACKBONE, "resmlp_tiny_p4", 0, depth=2, embed_dim=32,
                                       img_size=16, in_chans=3)
    assert backbone(torch.zeros(1, 3, 16, 16)).shape == (1, 32)


def test_a_dino_run_evaluates_by_its_checkpoint_with_its_settings(runs, images_root, tmp_path):
    """``vision/evaluate.py runs/<dino run>/last.pt --knn`` (and --random-init, --pixels): the teacher's backbone,
    or the run's model at initialisation, with the run's model and data settings."""
    last = runs["out"] / "full" / "last.pt"
    teacher = read_checkpoint(runs["out"] / "full" / TEACHER_BACKBONE)["model"]
    trained = prepare_features(last, device="cpu").setup
    assert trained.model.num_classes == 0 and trained.input_config["input_size"] == (3, 16, 16)
    assert trained.settings["root"] == str(images_root) and trained.split == "val"
    assert all(torch.equal(trained.model.state_dict()[k], v) for k, v in teacher.items())
    initial = [prepare_features(last, mode="random", device="cpu").setup.model.state_dict() for _ in range(2)]
    assert all(torch.equal(initial[0][k], initial[1][k]) for k in teacher)  # seed 0, whatever the caller's state
    assert not torch.equal(initial[0]["blocks.0.linear_tokens.weight"], teacher["blocks.0.linear_tokens.weight"])
    with pytest.raises(ValueError, match="a vision/train_dino.py checkpoint has no classifier"):
        prepare_evaluation(last)
    with pytest.raises(ValueError, match="is not a training run's checkpoint: a random-init baseline"):
        prepare_features(runs["out"] / "full" / TEACHER_BACKBONE, "resmlp_tiny_p4", mode="random",
                         data={"root": images_root}, device="cpu")


def test_holdout_moves_part_of_the_training_images_into_the_knn_queries(images_root, tmp_path):
    trainer = DinoTrainer(compose_cfg(tiny(images_root, tmp_path) + ["data.holdout=9"]), CPU)
    memory, queries = (loader.dataset for loader in trainer.knn_loaders)
    total = len(list((images_root / "train").rglob("*.png")))
    assert (len(memory), len(queries)) == (total - 9, 9) and not set(memory.indices) & set(queries.indices)
    # Both unaugmented (one image, not a list of crops), the training images augmented.
    assert isinstance(memory[0][0], torch.Tensor) and isinstance(queries[0][0], torch.Tensor)
    assert isinstance(trainer.train_set[0][0], list)


def test_two_processes_match_one_process(images_root, tmp_path):
    """torchrun, 2 CPU processes (Gloo) against 1 at the same global batch. A step sees the same images (the
    sampler's shards of one permutation) with the same crops (seeded per image), the loss is a mean over the
    batch (DDP averages the processes' gradients), and the centre sums the teacher's outputs over processes:
    the centre, the weights and the epoch means agree up to float summation order. The k-NN accuracy (the
    features of every process gathered) is the same number. Drop-path is off: its masks are per process."""
    overrides = tiny(images_root, tmp_path / "one", samples=24)  # 2 steps per epoch either way
    one = DinoTrainer(compose_cfg(overrides), CPU).fit()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "vision" / "train_dino.py"), *tiny(images_root, tmp_path / "two", samples=24)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_checkpoint(tmp_path / "one" / "last.pt"), read_checkpoint(tmp_path / "two" / "last.pt")
    assert len(b["rng"]) == 2 and a["step"] == b["step"] == 4
    torch.testing.assert_close(a["dino_loss"]["center"], b["dino_loss"]["center"], rtol=1e-5, atol=1e-6)
    for key in ("student", "teacher"):
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=1e-4, atol=1e-5, msg=f"{key}.{name}")
    two = read_metrics(tmp_path / "two" / "metrics.json")[-1]
    for key in ("train_loss", "teacher_entropy", "student_teacher_kl"):
        assert two[key] == pytest.approx(one[key], rel=1e-4), key
    assert two["knn_top1"] == one["knn_top1"]
    assert (tmp_path / "two" / ".hydra" / "config.yaml").is_file()


# -- configs and errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_passes_the_checks(preset):
    cfg = compose_cfg([f"dino_experiment={preset}", "data.root=/data/imagenet"])
    check_config(cfg, CPU)
    if preset.endswith("_in1k"):
        model = preset.removesuffix("_in1k")
        assert (cfg.name, cfg.model.name, cfg.data.name, cfg.data.img_size) == (f"dino_{preset}", model,
                                                                                "imagefolder", 224)
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr, cfg.optim.lr_base_batch) == (300, 1024, 5e-4, 256)
        d = cfg.dino
        assert (d.out_dim, d.momentum_teacher, d.warmup_teacher_temp, d.teacher_temp,
                d.warmup_teacher_temp_epochs) == (65536, 0.996, 0.04, 0.07, 30)
        assert (d.local_crops_number, list(d.global_crops_scale), d.clip_grad, d.freeze_last_layer) == (
            0, [0.14, 1.0], 3.0, 1)
        assert (cfg.optim.weight_decay, cfg.optim.weight_decay_end, cfg.sched.warmup_epochs,
                cfg.sched.min_lr) == (0.04, 0.4, 10, 1e-6)


def test_the_default_run_is_fashion_mnist_with_a_backbone():
    cfg = compose_cfg([])
    assert (cfg.name, cfg.data.name, cfg.model.kwargs.depth) == ("dino_resmlp_tiny_p4_fashion_mnist",
                                                                 "fashion_mnist", 4)
    assert create_model_from_config(cfg.model, num_classes=0)(torch.zeros(2, 1, 28, 28)).shape == (2, 128)


@pytest.mark.parametrize("override, message", [
    ("dino.out_dim=abc", "dino.out_dim must be an integer, got 'abc'"),
    ("dino.teacher_temp=0", "dino.teacher_temp must be > 0, got 0"),
    ("dino.center_momentum=1", r"dino.center_momentum must be in \[0, 1\), got 1"),
    ("dino.global_crops_scale=[0.5,0.2]", r"dino.global_crops_scale must be \[min, max\] area fractions"),
    ("sched.warmup_epochs=5", r"sched.warmup_epochs must be in \[0, train.epochs=1\], got 5"),
])
def test_bad_settings_name_the_option(override, message):
    with pytest.raises(ValueError, match=message):
        check_config(compose_cfg([override]), CPU)


def test_local_crops_of_another_size_on_a_resmlp_are_refused(images_root, tmp_path):
    overrides = [*tiny(images_root, tmp_path), "dino.local_crops_size=8"]
    with pytest.raises(ValueError, match=r"dino.local_crops_size=8 does not fit model resmlp_tiny_p4 .*"
                                         r"set dino.local_crops_size=16 .* or dino.local_crops_number=0"):
        DinoTrainer(compose_cfg(overrides), CPU)
    app = subprocess.run([sys.executable, str(REPO / "vision" / "train_dino.py"), *overrides],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert app.returncode == 2 and app.stderr.startswith("error: dino.local_crops_size=8 does not fit"), app.stderr


# -- collapse -----------------------------------------------------------------------------------------


def test_collapse_kinds_from_the_teacher_entropy(caplog):
    constant = torch.tensor([[10.0, 0.0, 0.0, 0.0, 0.0]]).repeat(4, 1)  # one dimension dominates every row
    assert DINOLoss(5, 2)(torch.randn(4, 5), constant, 0.04).teacher_entropy.item() < 1e-6
    uniform = DINOLoss(5, 2)(torch.randn(4, 5), torch.zeros(4, 5), 0.04)  # a constant output, once centred
    assert uniform.teacher_entropy.item() == pytest.approx(math.log(5))
    assert (collapse_kind(0.01, 5, 0.05), collapse_kind(1.0, 5, 0.05), collapse_kind(math.log(5), 5, 0.05)) == (
        ONE_DIMENSION, None, UNIFORM)
    monitor = CollapseMonitor(5, 0.05)
    with caplog.at_level(logging.WARNING, logger="resmlp_suite.ssl.collapse"):
        for step, entropy in enumerate([1.0, 0.0, 0.0, 1.0, 0.0, math.log(5)]):
            monitor.check(entropy, step)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "collapse at step 1", "collapse at step 4", "collapse at step 5"]  # once per episode


@pytest.mark.parametrize("temperature, kind", [(1e-4, ONE_DIMENSION), (1e4, UNIFORM)])
def test_a_forced_collapse_is_warned_about_during_training(images_root, tmp_path, caplog, temperature, kind):
    overrides = [*tiny(images_root, tmp_path, epochs=1), f"dino.teacher_temp={temperature}",
                 f"dino.warmup_teacher_temp={temperature}", "dino.knn_every=0"]
    with caplog.at_level(logging.WARNING, logger="resmlp_suite.ssl.collapse"):
        row = DinoTrainer(compose_cfg(overrides), CPU).fit()
    assert f"collapse at step 1: {kind}" in caplog.text
    assert "knn_top1" not in row
