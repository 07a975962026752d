"""Token-mixing pictures: the matrices read from every kind of file, the data of the panels, the errors."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf
from torch import nn

import resmlp_suite  # noqa: F401  (registers the models)
from resmlp_suite.vision import export_state_dict
from resmlp_suite.vision.weights import save_state_dict
from resmlp_suite.visualize import (
    corresponding_patch,
    default_patches,
    main,
    plot_token_mixing,
    row_maps,
    token_mixing_matrices,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def planted_model(**kwargs) -> nn.Module:
    """resmlp_tiny_p4 (28 px, patch 4: a 7x7 grid) whose block 0 mixes by the identity: row r is one-hot at patch r."""
    torch.manual_seed(0)
    model = timm.create_model("resmlp_tiny_p4", depth=2, **kwargs)
    with torch.no_grad():
        weight = model.blocks[0].linear_tokens.weight
        weight.copy_(torch.eye(weight.shape[0]))
    return model


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("layout", ["suite", "timm", "deit"])
def test_weight_files_give_the_planted_matrix_in_every_layout(layout: str, suffix: str, tmp_path: Path) -> None:
    model = planted_model()
    path = tmp_path / f"weights{suffix}"
    # .pth DeiT-repo files are {"model": ...}, as the official releases.
    save_state_dict(export_state_dict(model, layout), path, wrap_model=layout == "deit" and suffix == ".pth")
    kind, matrices, grid = token_mixing_matrices(path)
    assert kind == "image" and grid == (7, 7) and list(matrices) == ["block 0", "block 1"]
    assert torch.equal(matrices["block 0"], torch.eye(49))
    assert torch.equal(matrices["block 1"], model.blocks[1].linear_tokens.weight.detach())
    if suffix == ".pth":
        assert plot_token_mixing(path, tmp_path / "mixing.png") == tmp_path / "mixing.png"
        assert_png(tmp_path / "mixing.png")


@pytest.mark.parametrize("img_size_in", ["model.kwargs", "data"])
def test_training_checkpoint_gives_its_non_square_grid(img_size_in: str, tmp_path: Path) -> None:
    model = planted_model(img_size=(28, 36))
    run = {"model": {"name": "resmlp_tiny_p4", "kwargs": {"depth": 2}}, "data": {"name": "fashion_mnist"}}
    cfg = OmegaConf.create(run)
    OmegaConf.update(cfg, f"{img_size_in}.img_size", [28, 36])
    checkpoint = {"model": model.state_dict(), "model_ema": None, "config": OmegaConf.to_yaml(cfg),
                  "classes": [f"c{i}" for i in range(10)], "epoch": 3}
    path = tmp_path / "last.pt"
    torch.save(checkpoint, path)
    kind, matrices, grid = token_mixing_matrices(path)
    assert kind == "image" and grid == (7, 9)
    assert torch.equal(matrices["block 0"], torch.eye(63))
    # The same weights without the run's config: 63 patches have no square grid to guess.
    weights = tmp_path / "weights.safetensors"
    save_state_dict(export_state_dict(model), weights)
    with pytest.raises(ValueError, match=r"weights\.safetensors.*63 patches, not a square grid"):
        token_mixing_matrices(weights)


def test_command_line_writes_the_png(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "best.pt"
    save_state_dict(export_state_dict(planted_model()), path)
    main([str(path), "--layers", "1", "0", "--resample-to", "9"])
    assert_png(tmp_path / "best.token_mixing.png")
    assert str(tmp_path / "best.token_mixing.png") in capsys.readouterr().out
    with pytest.raises(ValueError, match="--resample-to takes H or H W"):
        main([str(path), "--resample-to", "9", "9", "9"])


def test_panel_rows_peak_at_their_patch_before_and_after_resampling() -> None:
    grid = (7, 7)
    patches = default_patches(grid)
    assert patches == [(3, 3), (0, 0), (3, 0)]  # centre, corner, edge
    assert default_patches((7, 9)) == [(3, 4), (0, 0), (3, 0)]
    for patch, values in row_maps(torch.eye(49), grid, patches):
        expected = torch.zeros(grid)
        expected[patch] = 1.0
        assert torch.equal(values, expected)
    for new_grid in [(10, 10), (14, 14), (5, 5), (10, 13)]:
        rows = row_maps(torch.eye(49), grid, patches, new_grid)
        assert [patch for patch, _ in rows] == [corresponding_patch(patch, grid, new_grid) for patch in patches]
        for patch, values in rows:
            assert values.shape == new_grid
            assert divmod(int(values.argmax()), new_grid[1]) == patch, (new_grid, patch)


def test_corresponding_patch_covers_the_same_part_of_the_image() -> None:
    # Twice as fine: each old centre is a corner of four new patches; the one nearer the border is taken.
    assert corresponding_patch((0, 0), (7, 7), (14, 14)) == (0, 0)
    assert corresponding_patch((6, 6), (7, 7), (14, 14)) == (13, 13)
    assert corresponding_patch((3, 0), (7, 7), (14, 14)) == (7, 0)  # the image centre is a tie too: (6 or 7)
    assert corresponding_patch((0, 0), (7, 7), (21, 21)) == (1, 1)  # three times as fine: the middle of 3x3
    assert corresponding_patch((3, 3), (7, 7), (10, 10)) == (5, 5)
    assert corresponding_patch((0, 0), (7, 7), (10, 10)) == (0, 0)
    assert corresponding_patch((6, 6), (7, 7), (10, 10)) == (9, 9)
    assert corresponding_patch((6, 0), (7, 9), (5, 3)) == (4, 0)
    assert corresponding_patch((3, 3), (7, 7), (7, 7)) == (3, 3)


@pytest.mark.parametrize("mixer,kwargs", [("toeplitz", {}), ("multihead", {"heads": 2})])
def test_toeplitz_and_multihead_matrices_are_the_mixers_own(mixer: str, kwargs: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("resmlp_tiny_p4", depth=1, token_mixer=mixer, token_mixer_kwargs=kwargs)
    path = tmp_path / "weights.safetensors"
    save_state_dict(export_state_dict(model, "timm"), path)
    kind, matrices, grid = token_mixing_matrices(path)
    expected = model.blocks[0].linear_tokens.mixing_matrix(49).detach()
    assert kind == "image" and grid == (7, 7) and expected.shape == ((2, 49, 49) if kwargs else (49, 49))
    assert torch.equal(matrices["block 0"], expected)
    if mixer == "multihead":
        assert_png(plot_token_mixing(path, tmp_path / "head1.png", head=1))
        with pytest.raises(ValueError, match=r"head 2 is out of range: block 0 of .*weights\.safetensors has 2 heads"):
            plot_token_mixing(path, tmp_path / "head2.png", head=2)
    else:  # a Toeplitz mixer runs along the flattened patches: there is no grid to resample it to
        assert_png(plot_token_mixing(path, tmp_path / "toeplitz.png"))
        with pytest.raises(ValueError, match="Toeplitz"):
            plot_token_mixing(path, tmp_path / "resampled.png", resample_to=10)


@pytest.mark.parametrize("token_mixer", ["dense", "toeplitz"])
def test_translation_checkpoint_gives_full_encoder_and_causal_decoder_matrices(token_mixer: str,
                                                                               tmp_path: Path) -> None:
    pytest.importorskip("fairseq")
    from resmlp_suite.translation.build import build_from_flags, synthetic_dictionary

    torch.manual_seed(0)
    flags = ["--arch", "resmlp_seq2seq_tiny", "--encoder-embed-dim", 32, "--encoder-ffn-embed-dim", 64,
             "--decoder-attention-heads", 2, "--max-source-positions", 40, "--max-target-positions", 36,
             "--token-mixer", token_mixer]
    model, _ = build_from_flags(flags, synthetic_dictionary(50))
    # What fairseq-train writes, as far as the reader is concerned: the fairseq <= 0.10 "args" Namespace and
    # the int64 arrays of the BLEU metrics are what the weights-only reader must be allowed to unpickle.
    checkpoint = {"args": argparse.Namespace(arch="resmlp_seq2seq_tiny"), "model": model.state_dict(),
                  "cfg": {"model": {"_name": "resmlp_seq2seq"}},
                  "extra_state": {"metrics": np.zeros(4, dtype=np.int64)}}
    path = tmp_path / "checkpoint_best.pt"
    torch.save(checkpoint, path)
    for tokens in (20, 100):  # 100: all the positions there are, 40 in the encoder and 36 in the decoder
        kind, matrices, grid = token_mixing_matrices(path, tokens=tokens)
        assert kind == "sequence" and grid is None
        assert list(matrices) == ["encoder 0", "encoder 1", "decoder 0", "decoder 1"]
        for i in range(2):
            encoder, decoder = matrices[f"encoder {i}"], matrices[f"decoder {i}"]
            size = min(tokens, 40)
            assert torch.equal(encoder, model.encoder.layers[i].linear_tokens.mixing_matrix(size).detach())
            size = min(tokens, 36)
            assert decoder.shape == (size, size)
            above = torch.ones(size, size, dtype=torch.bool).triu(1)
            assert decoder[above].isnan().all() and not decoder[~above].isnan().any()
            own = model.decoder.layers[i].linear_tokens.mixing_matrix(size).detach()
            assert torch.equal(decoder[~above], own[~above])
    assert_png(plot_token_mixing(path, tmp_path / "mixing.png", tokens=20))
    with pytest.raises(ValueError, match=r"layer 2 is out of range: .*checkpoint_best\.pt has 2 encoder layers"):
        plot_token_mixing(path, tmp_path / "mixing.png", layers=[0, 2])
    with pytest.raises(ValueError, match="translation model"):
        plot_token_mixing(path, tmp_path / "mixing.png", resample_to=10)


def test_a_file_without_token_mixing_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "vit.pth"
    torch.save({"stem.proj.weight": torch.zeros(8, 1, 4, 4), "head.weight": torch.zeros(10, 8)}, path)
    with pytest.raises(ValueError, match=r"vit\.pth holds no token-mixing weights: expected blocks\.<i>"):
        token_mixing_matrices(path)


def test_a_layer_out_of_range_names_the_number_of_blocks(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    save_state_dict(export_state_dict(planted_model()), path)
    with pytest.raises(ValueError, match=r"layer 2 is out of range: .*weights\.pth has 2 blocks \(0 to 1\)"):
        plot_token_mixing(path, tmp_path / "mixing.png", layers=[2])
    assert not (tmp_path / "mixing.png").exists()
