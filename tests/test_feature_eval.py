"""Frozen-feature evaluation: weighted k-NN (``vision/evaluate.py --knn``) and the linear probe
(``vision/linear_probe.py``) of any backbone checkpoint, and their raw-pixel and random-init baselines."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from types import ModuleType
from typing import Callable

import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

import resmlp_suite  # noqa: F401  (registers the models)
from resmlp_suite.vision import export_state_dict
from resmlp_suite.vision.feature_eval import prepare_features
from resmlp_suite.vision.knn import knn_accuracy, knn_predict
from resmlp_suite.vision.linear_probe import probe_accuracy, train_on_features
from vision_runs import REPO

CPU = ["--num-workers", "0", "--device", "cpu"]


def load_script(name: str) -> ModuleType:
    """A ``vision/`` script as a module, to call its ``main([...])`` in this process."""
    spec = importlib.util.spec_from_file_location(f"vision_{name}", REPO / "vision" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluate_main() -> Callable[[list[str]], dict]:
    return load_script("evaluate").main


@pytest.fixture(scope="module")
def probe_main() -> Callable[[list[str]], dict]:
    return load_script("linear_probe").main


def clusters(n_per_class: int, dim: int = 8, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points scattered around ``classes`` orthogonal directions, l2-normalised, sorted by class."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    points = torch.eye(dim)[labels] + 0.2 * torch.randn(len(labels), dim, generator=generator)
    return torch.nn.functional.normalize(points, dim=1), labels


# -- k-NN -----------------------------------------------------------------------------------------------


def _unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def test_knn_votes_are_dinos_weights_by_hand():
    # Training points at 0 (class 0), 90 and ~53.13 degrees (class 1: (0.6, 0.8)) and 180 (class 2).
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[0.8, 0.6]])  # cosines 0.8, 0.6, 0.96, -0.8
    t = 0.1
    # k 2: the neighbours at 0.96 (class 1) and 0.8 (class 0), each voting exp(s / T) / exp(0.96 / T).
    expected = torch.tensor([[math.exp((0.8 - 0.96) / t), 1.0, 0.0]])
    torch.testing.assert_close(knn_predict(train, labels, query, 3, k=2, temperature=t), expected)
    # k 3: the one at 0.6 (class 1) adds its vote to class 1.
    expected = torch.tensor([[math.exp((0.8 - 0.96) / t), 1.0 + math.exp((0.6 - 0.96) / t), 0.0]])
    scores = knn_predict(train, labels, query, 3, k=3, temperature=t)
    torch.testing.assert_close(scores, expected)
    # Up to the query's common factor these are DINO's exp(s / T) sums.
    dino = torch.tensor([[math.exp(8.0), math.exp(9.6) + math.exp(6.0), 0.0]])
    torch.testing.assert_close(scores * math.exp(9.6), dino)
    # An exact copy of a training point: its class, whatever k.
    for k in (1, 2, 3, 4):
        assert knn_predict(train, labels, train[:1], 3, k=k, temperature=t).argmax().item() == 0
    # A temperature whose exp(1 / T) is beyond float32 still gives finite scores and the same vote.
    cold = knn_predict(train, labels, torch.tensor([_unit(40)]), 3, k=3, temperature=0.005)
    assert torch.isfinite(cold).all() and cold.argmax().item() == 1


def test_knn_of_separable_features_is_perfect_and_k_is_checked():
    train, train_labels = clusters(30)
    test, test_labels = clusters(15, seed=1)
    loader = lambda x, y: DataLoader(TensorDataset(x, y), batch_size=16)  # noqa: E731
    cpu = torch.device("cpu")
    metrics = knn_accuracy(lambda x: x, loader(train, train_labels), loader(test, test_labels), cpu, 3)
    assert metrics == {"knn_top1": 100.0, "knn_top5": 100.0, "knn_count": 45}
    # limit: test images evenly spread over the (class-sorted) set, not its first class. Class 2's
    # queries carry a wrong label here, so a spread that reaches them scores 4/6.
    wrong = test_labels.where(test_labels != 2, 0)
    limited = knn_accuracy(lambda x: x, loader(train, train_labels), loader(test, wrong), cpu, 3, limit=6)
    assert limited["knn_count"] == 6 and limited["knn_top1"] == pytest.approx(100 * 4 / 6)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.90 \(the number of training features\), got 91"):
        knn_predict(train, train_labels, test, 3, k=91)


def test_evaluate_knn_of_a_trained_run_and_its_baselines(trained_run, shapes_root, evaluate_main, capsys):
    out, _ = trained_run
    run = evaluate_main([str(out / "best.pt"), "--knn", *CPU])
    assert run["knn_top1"] > 70 and run["knn_count"] == 60 and run["knn_memory"] == 120  # chance: 33 %
    assert (run["mode"], run["split"], run["train_split"], run["k"], run["temperature"]) == (
        "model", "val", "train", 20, 0.07)
    assert '"knn_top1": ' + str(run["knn_top1"]) in capsys.readouterr().out
    # A fixed subset of the memory: the same on every call, the whole split when it asks for more.
    small = [evaluate_main([str(out / "best.pt"), "--knn", "--knn-memory", "30", *CPU]) for _ in range(2)]
    assert small[0]["knn_memory"] == 30 and small[0]["knn_top1"] == small[1]["knn_top1"]
    assert evaluate_main([str(out / "best.pt"), "--knn", "--knn-memory", "500", *CPU])["knn_top1"] == run["knn_top1"]
    pixels = evaluate_main([str(out / "best.pt"), "--knn", "--pixels", *CPU])
    assert pixels["mode"] == "pixels" and 0 <= pixels["knn_top1"] <= 100 and pixels["knn_count"] == 60
    random_init = evaluate_main(["--model", "resmlp_tiny_p4", "--random-init", "--knn", "--data-root", str(shapes_root),
                                 "--img-size", "16", "--in-chans", "3", "--k", "5", *CPU,
                                 "--model-kwargs", "depth=2", "embed_dim=32"])
    assert random_init["mode"] == "random" and random_init["k"] == 5 and 0 <= random_init["knn_top1"] <= 100
    with pytest.raises(ValueError, match=r"k=121 \(--k\) must be in 1\.\.120: the 'train' split"):
        evaluate_main([str(out / "best.pt"), "--knn", "--k", "121", *CPU])
    # The run's model at initialisation, with the run's settings (no --model, --data-root).
    run_init = evaluate_main([str(out / "best.pt"), "--knn", "--random-init", *CPU])
    assert run_init["mode"] == "random" and run_init["knn_count"] == 60 and run_init["input_config"] == run["input_config"]
    with pytest.raises(ValueError, match="no checkpoint given"):
        evaluate_main(["--knn", "--model", "resmlp_tiny_p4", "--data-root", str(shapes_root), *CPU])
    with pytest.raises(ValueError, match="--pixels evaluates the input images as frozen features: add --knn"):
        evaluate_main([str(out / "best.pt"), "--pixels", *CPU])


@pytest.mark.parametrize("layout, head", [("deit", True), ("deit", False), ("timm", True), ("suite", False)],
                         ids=["official-with-head", "official-without-head", "timm", "teacher_backbone"])
def test_backbone_files_load_for_knn(layout, head, shapes_root, tmp_path, randomize_affines):
    """An official resmlp_24_dino.pth (DeiT-repo layout, {"model": ...}, with or without a 1000-class head),
    timm's copy, and a DINO run's teacher_backbone.pt give the source model's features (depth cut to 2)."""
    torch.manual_seed(0)
    source = randomize_affines(timm.create_model("resmlp_s24", depth=2, num_classes=0)).eval()
    state = export_state_dict(source, layout)
    if head:
        state["head.weight"], state["head.bias"] = torch.randn(1000, 384), torch.randn(1000)
    path = tmp_path / "backbone.pth"
    torch.save({"model": state}, path)
    features = prepare_features(path, "resmlp_s24", data={"root": shapes_root}, model_kwargs={"depth": 2},
                                device="cpu")
    assert features.setup.model.num_classes == 0 and features.setup.input_config["input_size"] == (3, 224, 224)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(features.embed(images), source(images))


# -- linear probe ---------------------------------------------------------------------------------------


def test_linear_probe_on_separable_cached_features_is_perfect():
    train, train_labels = clusters(50, dim=16)
    test, test_labels = clusters(20, dim=16, seed=1)
    linear, loss = train_on_features(train, train_labels, 3, epochs=10, lr=2.0, batch_size=50)
    assert probe_accuracy(linear, test, test_labels) == {"top1": 100.0, "top5": 100.0} and loss < 0.2
    again, _ = train_on_features(train, train_labels, 3, epochs=10, lr=2.0, batch_size=50)
    assert torch.equal(again.weight, linear.weight)  # seeded: the same probe every time


def test_linear_probe_of_a_trained_run(trained_run, shapes_root, probe_main):
    out, _ = trained_run
    run = probe_main([str(out / "best.pt"), "--epochs", "30", "--lr", "0.5", "--batch-size", "32", *CPU])
    assert run["top1"] > 70 and run["count"] == 60 and run["train_count"] == 120  # chance: 33 %
    assert (run["feature_dim"], run["epochs"], run["lr"], run["augment"]) == (32, 30, 0.5 * 32 / 256, False)
    augmented = probe_main([str(out / "best.pt"), "--epochs", "2", "--augment", "--batch-size", "24", *CPU])
    assert augmented["augment"] and augmented["train_count"] == 120 and 0 <= augmented["top1"] <= 100
    pixels = probe_main([str(out / "best.pt"), "--pixels", "--epochs", "5", "--lr", "0.05", "--batch-size", "32", *CPU])
    assert pixels["feature_dim"] == 3 * 16 * 16 and 0 <= pixels["top1"] <= 100


def test_linear_probe_under_torchrun_is_the_single_process_probe(trained_run, probe_main, tmp_path):
    """Two processes embed half of each split each; the gathered features, back in dataset order, train the
    same classifier as one process does (the batches of a 3-epoch probe differ with any other order)."""
    out, _ = trained_run
    args = [str(out / "best.pt"), "--epochs", "3", "--batch-size", "16", *CPU]
    single = probe_main(args)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "vision" / "linear_probe.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = proc.stdout.strip().splitlines()  # rank 0 alone prints
    both = json.loads(line)
    assert (both["count"], both["train_count"]) == (60, 120)
    assert both["top1"] == pytest.approx(single["top1"]) and both["train_loss"] == pytest.approx(single["train_loss"])
