"""The timm-registered ResMLP classifiers: factories, input checks, complexity against the paper."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import DropPath

import resmlp_suite  # noqa: F401  (registers the models)
from resmlp_suite import info
from resmlp_suite.vision import ResMLP
from resmlp_suite.vision.complexity import PAPER_COMPLEXITY, complexity_table


def test_models_are_registered_in_timm() -> None:
    names = set(timm.list_models("resmlp_*"))
    assert {"resmlp_s12", "resmlp_s24", "resmlp_s36", "resmlp_b24", "resmlp_b24_p16", "resmlp_tiny_p4"} <= names
    # timm's own ResMLPs stay available beside them.
    assert "resmlp_12_224" in names


def test_create_model_honours_timm_arguments() -> None:
    model = timm.create_model("resmlp_tiny_p4", num_classes=5, img_size=32, in_chans=3, drop_path_rate=0.1)
    assert isinstance(model, ResMLP)
    assert model.stem.proj.in_channels == 3
    assert model.blocks[0].linear_tokens.weight.shape == (64, 64)  # (32 / 4) ** 2 tokens
    assert all(isinstance(b.drop_path, DropPath) and b.drop_path.drop_prob == 0.1 for b in model.blocks)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 5)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 128)
    model.reset_classifier(0)
    assert model.eval()(x).shape == (2, 128)


def test_wrong_input_shape_names_expected_and_given() -> None:
    model = timm.create_model("resmlp_tiny_p4")
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, 1, 28, 28\), got \(2, 3, 28, 28\)"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"img_size must be a multiple of patch_size"):
        timm.create_model("resmlp_tiny_p4", img_size=30)


def test_complexity_matches_paper_table() -> None:
    rows = complexity_table()
    assert [row.model for row in rows] == list(PAPER_COMPLEXITY)
    for row in rows:
        assert (round(row.params_m, 2), round(row.gmacs, 2)) == (row.paper_params_m, row.paper_gmacs), row


def test_info_cli_prints_counted_and_paper_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    info.main(["resmlp_s12", "resmlp_12_224", "resmlp_tiny_p4"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| resmlp_s12 | 224 | 15.35 | 15.35 | 3.01 | 3.01 |"
    assert lines[3] == "| resmlp_12_224 | 224 | 15.35 | - | 3.01 | - |"  # timm's model counts the same
    assert lines[4].startswith("| resmlp_tiny_p4 | 28 |")
    info.main(["resmlp_s12", "--img-size", "448"])
    row = capsys.readouterr().out.splitlines()[2].strip("| ").split(" | ")
    # 4x the patches: MLPs cost 4x, the token-mixing matrix 16x; no paper numbers at this size.
    assert row[1] == "448" and float(row[4]) > 4 * 3.01 and row[5] == "-"
