"""Weight layouts: timm's and the official DeiT-repo's ResMLP weights load into ours and give the same logits."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import timm
import torch
from torch import nn

import resmlp_suite  # noqa: F401  (registers the models)
from resmlp_suite import convert
from resmlp_suite.vision import CheckpointMismatchError, export_state_dict, load_checkpoint, to_suite_layout
from resmlp_suite.vision.resample import resample_token_mixing
from resmlp_suite.vision.weights import detect_layout, read_state_dict

PAIRS = [
    ("resmlp_12_224", "resmlp_s12"),
    ("resmlp_24_224", "resmlp_s24"),
    ("resmlp_36_224", "resmlp_s36"),
    ("resmlp_big_24_224", "resmlp_b24"),  # 100 GMACs: one image, once
]


def _logits(model: nn.Module, seed: int = 0) -> torch.Tensor:
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = model.eval()(x)
    assert logits.std() > 0.05, "degenerate logits would make the comparison meaningless"
    return logits


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _blank(model: nn.Module) -> nn.Module:
    """Fill every parameter with NaN, so that any tensor a load misses shows up."""
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))
    return model


@pytest.fixture(scope="module")
def timm_s12(randomize_affines: Callable) -> nn.Module:
    torch.manual_seed(0)
    return randomize_affines(timm.create_model("resmlp_12_224", pretrained=False)).eval()


@pytest.fixture(scope="module")
def ours_s12() -> nn.Module:
    """One resmlp_s12 shared by the tests (creating one costs more than a forward pass); blank it before use."""
    return timm.create_model("resmlp_s12").eval()


@pytest.mark.parametrize("timm_name,suite_name", PAIRS)
def test_timm_weights_give_timm_logits(timm_name: str, suite_name: str, randomize_affines: Callable) -> None:
    torch.manual_seed(0)
    reference = randomize_affines(timm.create_model(timm_name, pretrained=False))
    ours = timm.create_model(suite_name, pretrained=False)
    assert load_checkpoint(ours, reference.state_dict()) == "timm"
    expected = _logits(reference)
    torch.testing.assert_close(_logits(ours), expected, rtol=1e-4, atol=1e-4)


def test_export_and_reload_each_layout(timm_s12: nn.Module, ours_s12: nn.Module, randomize_affines: Callable) -> None:
    torch.manual_seed(1)
    source = randomize_affines(timm.create_model("resmlp_s12"), seed=1)
    for layout in ("deit", "timm", "suite"):
        exported = export_state_dict(source, layout)
        assert detect_layout(exported) == layout
        assert load_checkpoint(_blank(ours_s12), exported) == layout
        _assert_same_weights(ours_s12, source)
    deit, timm_layout = export_state_dict(source, "deit"), export_state_dict(source, "timm")
    # The official names hold the right tensors (a consistent swap would survive the round trips above).
    block = source.blocks[3]
    for key, value in {
        "patch_embed.proj.weight": source.stem.proj.weight,
        "blocks.3.attn.weight": block.linear_tokens.weight,
        "blocks.3.gamma_1": block.ls1.gamma,
        "blocks.3.gamma_2": block.ls2.gamma,
        "blocks.3.norm1.beta": block.norm1.beta,
        "blocks.3.mlp.fc2.bias": block.mlp_channels.fc2.bias,
        "norm.alpha": source.norm.alpha,
    }.items():
        assert torch.equal(deit[key], value), key
    assert timm_layout["blocks.3.norm2.alpha"].shape == (1, 1, 384) and timm_layout["blocks.3.ls1"].shape == (384,)
    theirs = timm.create_model("resmlp_12_224")
    theirs.load_state_dict(timm_layout, strict=True)  # timm's own model takes the timm layout as is
    torch.testing.assert_close(_logits(theirs), _logits(source), rtol=1e-5, atol=1e-5)


def test_wrappers_and_prefixes_are_removed(timm_s12: nn.Module, ours_s12: nn.Module) -> None:
    deit = export_state_dict(timm.create_model("resmlp_tiny_p4"), "deit")
    assert to_suite_layout({"model": deit, "epoch": 3}).keys() == to_suite_layout(deit).keys()
    assert to_suite_layout({f"_orig_mod.{k}": v for k, v in deit.items()}).keys() == to_suite_layout(deit).keys()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in timm_s12.state_dict().items()}}
    assert load_checkpoint(_blank(ours_s12), wrapped) == "timm"
    torch.testing.assert_close(_logits(ours_s12), _logits(timm_s12), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_convert_files_round_trip(
    suffix: str, tmp_path: Path, timm_s12: nn.Module, ours_s12: nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "timm.pth"
    torch.save(timm_s12.state_dict(), source)
    deit_file, suite_file, timm_file = (tmp_path / f"{name}{suffix}" for name in ("deit", "suite", "timm_again"))
    convert.main([str(source), str(deit_file), "--to", "deit"])
    assert "(timm) ->" in capsys.readouterr().out
    convert.main([str(deit_file), str(suite_file), "--to", "suite"])
    convert.main([str(suite_file), str(timm_file), "--to", "timm"])
    if suffix == ".pth":  # the official release format: {"model": state_dict}
        assert set(torch.load(deit_file, weights_only=True)) == {"model"}
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave nothing behind

    expected = _logits(timm_s12)
    for path, layout in ((deit_file, "deit"), (suite_file, "suite"), (timm_file, "timm")):
        assert load_checkpoint(_blank(ours_s12), path) == layout
        torch.testing.assert_close(_logits(ours_s12), expected, rtol=1e-4, atol=1e-4)
    again = read_state_dict(timm_file)
    for key, value in timm_s12.state_dict().items():
        assert torch.equal(again[key], value), key


def test_timm_pretrained_file_hook(tmp_path: Path, randomize_affines: Callable) -> None:
    # timm.create_model(pretrained=True) with a local DeiT-layout file goes through checkpoint_filter_fn.
    torch.manual_seed(2)
    source = randomize_affines(timm.create_model("resmlp_tiny_p4"))
    path = tmp_path / "tiny_deit.pth"
    torch.save({"model": export_state_dict(source, "deit")}, path)
    loaded = timm.create_model("resmlp_tiny_p4", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    _assert_same_weights(loaded, source)
    # Another number of classes: timm drops the classifier, everything else is loaded.
    finetune = timm.create_model("resmlp_tiny_p4", pretrained=True, num_classes=3, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(finetune.eval().forward_features(x), source.eval().forward_features(x))


def test_mismatches_list_keys_and_shapes(ours_s12: nn.Module) -> None:
    ours = ours_s12
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with torch.device("meta"):  # only shapes are compared before anything is loaded
        deeper = timm.create_model("resmlp_s24").state_dict()
        wider = timm.create_model("resmlp_b24_p16").state_dict()
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(144\): blocks\.12\.norm1\.alpha"):
        load_checkpoint(ours, deeper)
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint(ours, wider)
    assert "stem.proj.weight: expected (384, 3, 16, 16), given (768, 3, 16, 16)" in str(error.value)
    assert "missing" not in str(error.value)

    incomplete = export_state_dict(ours, "deit")
    del incomplete["blocks.5.gamma_2"], incomplete["head.bias"]
    with pytest.raises(CheckpointMismatchError, match=r"\(deit layout\).*\n  missing keys \(2\): blocks\.5\.ls2\.gamma, head\.bias"):
        load_checkpoint(ours, incomplete)
    for key, value in ours.state_dict().items():  # a failed load changes nothing
        assert torch.equal(value, before[key]), key
    # Another resolution is not a mismatch: the token mixing is resampled to the model's grid.
    at_128 = timm.create_model("resmlp_s12", img_size=128).state_dict()
    load_checkpoint(ours, at_128)
    expected, _ = resample_token_mixing(at_128["blocks.4.linear_tokens.weight"], None, (8, 8), (14, 14))
    torch.testing.assert_close(ours.blocks[4].linear_tokens.weight, expected)


def test_malformed_state_dicts_are_rejected() -> None:
    suite = export_state_dict(timm.create_model("resmlp_tiny_p4"), "suite")
    deit = export_state_dict(timm.create_model("resmlp_tiny_p4"), "deit")
    with pytest.raises(ValueError, match="mixes the deit and suite layouts"):
        detect_layout({**suite, "blocks.0.attn.weight": deit["blocks.0.attn.weight"]})
    timm_layout = export_state_dict(timm.create_model("resmlp_tiny_p4"), "timm")
    timm_layout["blocks.1.norm1.alpha"] = timm_layout["blocks.1.norm1.alpha"].reshape(-1, 1, 1)
    with pytest.raises(ValueError, match=r"expects blocks\.1\.norm1\.alpha of shape \(1, 1, C\), got \(128, 1, 1\)"):
        to_suite_layout(timm_layout)
    with pytest.raises(ValueError, match=r"non-tensor entries \['epoch'\]"):
        to_suite_layout({**suite, "epoch": 3})
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        read_state_dict("nowhere.pth")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker directory
        return (os.makedirs, (str(self.marker),))


def test_loading_never_runs_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"head.weight": torch.zeros(1)}, "payload": _Exploit(marker)}, path)
    with pytest.raises(Exception, match="weights_only"):
        load_checkpoint(timm.create_model("resmlp_tiny_p4"), path)
    assert not marker.exists()
