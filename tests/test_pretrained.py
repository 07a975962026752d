"""Pretrained tags and token-mixing resampling: every official release by name, at any resolution, offline.

Downloads are replaced by fakes that serve generated weights in the layout of each source (timm's Hub
copy, the DeiT repo's file), so the whole loading path runs without a network.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

import pytest
import timm
import torch
from timm.models import _builder
from torch import nn

import resmlp_suite  # noqa: F401  (registers the models)
from resmlp_suite import convert
from resmlp_suite.vision import export_state_dict
from resmlp_suite.vision.model_factory import create_model_from_config
from resmlp_suite.vision.resample import resample_state_dict, resample_token_mixing, square_grid
from resmlp_suite.vision.resmlp import RELEASES
from resmlp_suite.vision.weights import from_suite_layout, read_state_dict, save_state_dict, to_suite_layout

OURS_TO_TIMM_ARCH = {"resmlp_s12": "resmlp_12_224", "resmlp_s24": "resmlp_24_224", "resmlp_s36": "resmlp_36_224",
                     "resmlp_b24": "resmlp_big_24_224"}


def test_every_release_is_a_tag_with_timms_sources() -> None:
    assert set(timm.list_pretrained("resmlp_s*")) | set(timm.list_pretrained("resmlp_b24.*")) == set(RELEASES)
    for tag, (timm_tag, _, _) in RELEASES.items():
        ours, theirs = timm.models.get_pretrained_cfg(tag), timm.models.get_pretrained_cfg(timm_tag)
        assert ours.hf_hub_id == f"timm/{timm_tag}" == theirs.hf_hub_id
        assert ours.url == theirs.url and ours.url.startswith("https://dl.fbaipublicfiles.com/deit/")
        assert ours.crop_pct == 0.9 and ours.input_size == (3, 224, 224)  # the paper's evaluation crop
        assert ours.num_classes == (0 if tag.endswith("fb_dino") else 1000)
        assert tag.split(".")[0] in OURS_TO_TIMM_ARCH and timm_tag.startswith(OURS_TO_TIMM_ARCH[tag.split(".")[0]])


@pytest.fixture(scope="module")
def timm_reference(randomize_affines: Callable) -> Callable[[str], nn.Module]:
    """timm's model of a tag cut to two blocks (the loading path is the same at any depth), random weights;
    one per architecture (building B24 takes seconds)."""
    @functools.lru_cache(maxsize=None)
    def reference(timm_architecture: str) -> nn.Module:
        torch.manual_seed(0)
        model = timm.create_model(timm_architecture)
        model.blocks = model.blocks[:2]
        return randomize_affines(model).eval()

    return lambda timm_tag: reference(timm_tag.split(".")[0])


def _images(img_size=(224, 224), batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *img_size, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def fake_downloads(monkeypatch: pytest.MonkeyPatch):
    """Serve ``served[source]`` for the Hub id or the URL timm asks for; record what was asked."""
    served: dict[str, dict] = {}
    asked: list[str] = []

    def from_hub(hub_id, *args, **kwargs):
        asked.append(hub_id)
        return served[hub_id]

    def from_url(url, *args, **kwargs):
        asked.append(url)
        return served[url]

    monkeypatch.setattr(_builder, "load_state_dict_from_hf", from_hub)
    monkeypatch.setattr(_builder, "load_state_dict_from_url", from_url)
    return served, asked


@pytest.mark.parametrize("tag", sorted(RELEASES))
@pytest.mark.parametrize("source", ["hub", "deit"])
def test_tag_loads_and_matches_timms_model(tag: str, source: str, fake_downloads, monkeypatch: pytest.MonkeyPatch,
                                           timm_reference: Callable) -> None:
    """Each tag from each source, in that source's layout: the same logits (or features) as timm's model."""
    served, asked = fake_downloads
    reference = timm_reference(RELEASES[tag][0])
    config = timm.models.get_pretrained_cfg(tag)
    if source == "hub":
        served[config.hf_hub_id] = reference.state_dict()
    else:  # the DeiT repo's file: {"model": ...} in the official layout; used when the Hub is not reachable
        monkeypatch.setattr(_builder, "has_hf_hub", lambda necessary=False: False)
        served[config.url] = {"model": deit_layout(reference)}
    ours = timm.create_model(tag, pretrained=True, depth=2).eval()
    assert asked == [config.hf_hub_id if source == "hub" else config.url]
    x = _images()
    with torch.no_grad():
        if tag.endswith("fb_dino"):  # a backbone: pooled features, the file's classifier ignored
            assert ours.num_classes == 0
            torch.testing.assert_close(ours(x), reference.forward_head(reference.forward_features(x), pre_logits=True))
        else:
            torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


def deit_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """A timm ResMLP's weights in the official DeiT-repo layout."""
    return from_suite_layout(to_suite_layout(model.state_dict()), "deit")


@pytest.mark.parametrize("with_head", [True, False])
def test_dino_file_loads_with_or_without_a_classifier(with_head: bool, tmp_path: Path, timm_reference: Callable) -> None:
    backbone = timm_reference("resmlp_24_224")
    state = deit_layout(backbone)
    if not with_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    path = tmp_path / "resmlp_24_dino.pth"
    torch.save({"model": state}, path)
    features = timm.create_model("resmlp_s24.fb_dino", pretrained=True, depth=2,
                                 pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = _images()
    with torch.no_grad():
        expected = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
        torch.testing.assert_close(features(x), expected)
        # Fine-tuning from it: a new classifier, the backbone loaded.
        classifier = timm.create_model("resmlp_s24.fb_dino", pretrained=True, depth=2, num_classes=10,
                                       pretrained_cfg_overlay=dict(file=str(path))).eval()
        torch.testing.assert_close(classifier.forward_head(classifier.forward_features(x), pre_logits=True), expected)
    assert classifier.head.out_features == 10


# ---------------------------------------------------------------- resampling the token mixing

def _random_mixing(grid, heads: tuple[int, ...] = (), seed: int = 0):
    n = grid[0] * grid[1]
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*heads, n, n, generator=generator), torch.randn(*heads, n, generator=generator)


@pytest.mark.parametrize("grid", [(14, 14), (3, 5)])
def test_resampling_to_the_same_grid_is_the_identity(grid) -> None:
    weight, bias = _random_mixing(grid)
    new_weight, new_bias = resample_token_mixing(weight, bias, grid, grid)
    torch.testing.assert_close(new_weight, weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new_bias, bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("old,new", [((14, 14), (24, 24)), ((14, 14), (7, 7)), ((4, 6), (6, 4)), ((7, 7), (8, 10))])
def test_shapes_dtype_and_heads(old, new) -> None:
    weight, bias = _random_mixing(old, heads=(3,))
    new_weight, new_bias = resample_token_mixing(weight.to(torch.bfloat16), bias.to(torch.bfloat16), old, new)
    n = new[0] * new[1]
    assert new_weight.shape == (3, n, n) and new_bias.shape == (3, n) and new_weight.dtype == torch.bfloat16
    # Each head resamples on its own: the multi-head result is the stack of single-head ones.
    single, _ = resample_token_mixing(weight[1], bias[1], old, new)
    torch.testing.assert_close(resample_token_mixing(weight, bias, old, new)[0][1], single)


@pytest.mark.parametrize("old,new", [((14, 14), (24, 24)), ((14, 14), (10, 10)), ((7, 7), (8, 10))])
def test_an_average_stays_an_average(old, new) -> None:
    """A row that averages over every patch averages over every new patch: total weight 1, not (H*W)/(h*w)."""
    n, new_n = old[0] * old[1], new[0] * new[1]
    new_weight, new_bias = resample_token_mixing(torch.full((n, n), 1.0 / n), torch.full((n,), 0.5), old, new)
    torch.testing.assert_close(new_weight, torch.full((new_n, new_n), 1.0 / new_n))
    torch.testing.assert_close(new_bias, torch.full((new_n,), 0.5))


def test_a_local_row_stays_local_and_keeps_its_weight() -> None:
    """Convolution-like rows (each patch mixing its 3 x 3 neighbourhood) keep their place, footprint in
    the image and total weight."""
    h = w = 8
    positions = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2)
    near = (positions[:, None, :] - positions[None, :, :]).abs().amax(-1) <= 1
    weight = near.float() / 9
    new_weight, _ = resample_token_mixing(weight, None, (h, w), (16, 16))
    rows = new_weight.reshape(16, 16, 16, 16)
    for out in [(5, 6), (8, 9), (10, 7)]:  # rows that only interpolate rows away from the border (sum 1)
        row = rows[out]
        peak = divmod(int(row.argmax()), 16)
        assert max(abs(peak[0] - out[0]), abs(peak[1] - out[1])) <= 1, (out, peak)
        torch.testing.assert_close(row.sum(), torch.tensor(1.0))
        # The 3 x 3-patch footprint covers 6 x 6 patches of the finer grid (mass outside a 8 x 8 window: ~0).
        window = row[max(out[0] - 4, 0):out[0] + 4, max(out[1] - 4, 0):out[1] + 4]
        assert window.sum() > 0.97 * row.sum()
        assert (row > 0.5 * row.max()).sum() >= 16  # spread over more patches than the 9 it had


def test_state_dict_resampling_and_its_errors() -> None:
    source = export_state_dict(timm.create_model("resmlp_tiny_p4", depth=2), "suite")  # 7 x 7 patches
    out, old = resample_state_dict(source, (8, 10))
    assert old == (7, 7) and out["blocks.1.linear_tokens.weight"].shape == (80, 80)
    assert out["blocks.0.linear_tokens.bias"].shape == (80,) and out["stem.proj.weight"] is source["stem.proj.weight"]
    same, old = resample_state_dict(source, (7, 7))
    assert old is None and same.keys() == source.keys()
    assert square_grid(196) == (14, 14)
    with pytest.raises(ValueError, match="48 tokens are not a square grid"):
        square_grid(48)
    toeplitz = export_state_dict(timm.create_model("resmlp_tiny_p4", depth=1, token_mixer="toeplitz"), "suite")
    with pytest.raises(ValueError, match="Toeplitz"):
        resample_state_dict(toeplitz, (8, 8))
    with pytest.raises(ValueError, match="not a token-mixing matrix"):
        resample_token_mixing(torch.zeros(10, 10), None, (3, 3), (4, 4))


def test_resolution_study_round_trip_and_its_work_dir(tmp_path: Path) -> None:
    """(d) of the resolution study: a checkpoint whose matrices went to another grid and back keeps its shapes
    and, for a smooth A, its weights; and a work dir made from one base checkpoint refuses another."""
    from resmlp_suite.training.checkpoint import atomic_save, read_checkpoint
    from resmlp_suite.vision.resolution import claim_work_dir, round_trip

    model = export_state_dict(timm.create_model("resmlp_tiny_p4", depth=2), "suite")  # 7 x 7 patches
    smooth = torch.full((49, 49), 1.0 / 49)
    model["blocks.0.linear_tokens.weight"] = smooth
    checkpoint = tmp_path / "last.pt"
    atomic_save({"model": model, "model_ema": dict(model), "epoch": 1}, checkpoint)
    back = read_checkpoint(round_trip(checkpoint, 10, tmp_path / "round_trip.pt"))
    for key in ("model", "model_ema"):
        assert back[key]["blocks.1.linear_tokens.weight"].shape == (49, 49)
        torch.testing.assert_close(back[key]["blocks.0.linear_tokens.weight"], smooth)
    assert back["epoch"] == 1
    # Random (not smooth) rows do not survive exactly: the round trip is a measurement, not the identity.
    assert not torch.allclose(back["model"]["blocks.1.linear_tokens.weight"], model["blocks.1.linear_tokens.weight"])

    work_dir = tmp_path / "study"
    claim_work_dir(work_dir, checkpoint)
    claim_work_dir(work_dir, checkpoint)  # the same base again: its finished runs are re-used
    other = tmp_path / "other.pt"
    atomic_save({"model": {k: v + 1 for k, v in model.items()}}, other)
    with pytest.raises(ValueError, match=f"{work_dir} holds runs made from another 28-px checkpoint .*last.pt"):
        claim_work_dir(work_dir, other)
    older = tmp_path / "older_study"  # runs from before the record was kept: their base is unknown
    (older / "finetune_32").mkdir(parents=True)
    with pytest.raises(ValueError, match="finetune_32.* no record of the 28-px checkpoint"):
        claim_work_dir(older, checkpoint)


@pytest.mark.parametrize("img_size", [384, (224, 320)])
def test_tag_at_another_resolution(img_size, fake_downloads, timm_reference: Callable,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """``timm.create_model(tag, pretrained=True, img_size=...)`` loads 224-px weights with resampled token mixing."""
    served, _ = fake_downloads
    reference = timm_reference("resmlp_12_224.fb_in1k")
    served["timm/resmlp_12_224.fb_in1k"] = reference.state_dict()
    with caplog.at_level(logging.INFO, logger="resmlp_suite"):
        model = timm.create_model("resmlp_s12.fb_in1k", pretrained=True, depth=2, img_size=img_size).eval()
    grid = model.stem.grid_size
    assert "resampled the token mixing of ResMLP from a 14x14 to a " f"{grid[0]}x{grid[1]} patch grid" in caplog.text
    expected, _ = resample_token_mixing(reference.blocks[1].linear_tokens.weight, None, (14, 14), grid)
    torch.testing.assert_close(model.blocks[1].linear_tokens.weight, expected)
    torch.testing.assert_close(model.blocks[1].mlp_channels.fc1.weight, reference.blocks[1].mlp_channels.fc1.weight)
    with torch.no_grad():
        logits = model(_images(model.img_size))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def test_fine_tuning_config_resamples_a_weight_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``vision/train.py``'s ``model.pretrained_file`` with another ``data.img_size``: resampled, and logged."""
    source = timm.create_model("resmlp_tiny_p4", depth=2)
    path = tmp_path / "tiny28.safetensors"
    save_state_dict(export_state_dict(source, "timm"), path)
    config = {"name": "resmlp_tiny_p4", "pretrained_file": str(path), "kwargs": {"img_size": 40, "in_chans": 1, "depth": 2}}
    with caplog.at_level(logging.INFO, logger="resmlp_suite"):
        model = create_model_from_config(config, num_classes=10)
    assert "from a 7x7 to a 10x10 patch grid" in caplog.text
    assert model.blocks[0].linear_tokens.weight.shape == (100, 100)


def test_convert_resamples_to_an_image_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = export_state_dict(timm.create_model("resmlp_tiny_p4", depth=2), "deit")
    src, dst = tmp_path / "tiny.pth", tmp_path / "tiny_32x40.safetensors"
    torch.save({"model": source}, src)
    convert.main([str(src), str(dst), "--to", "timm", "--img-size", "32", "40"])
    assert "7x7 -> 8x10 patches" in capsys.readouterr().out
    converted = read_state_dict(dst)
    model = timm.create_model("resmlp_tiny_p4", depth=2, img_size=(32, 40))
    model.load_state_dict(to_suite_layout(converted))
    expected, _ = resample_token_mixing(source["blocks.0.attn.weight"], None, (7, 7), (8, 10))
    torch.testing.assert_close(model.blocks[0].linear_tokens.weight, expected)
