"""fairseq's command-line tools end to end with the ResMLP plugin (``--user-dir translation/resmlp_mt``).

One toy corpus (reverse a sentence of letters) goes through fairseq-preprocess, fairseq-train,
fairseq-generate, fairseq-interactive, fairseq-hydra-train and two-process gloo training.
"""
from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import sacrebleu
import torch
from fairseq import checkpoint_utils, options, utils

REPO = Path(__file__).resolve().parents[1]
USER_DIR = REPO / "translation" / "resmlp_mt"
LETTERS = "abcdefghijkl"
MAX_POSITIONS = 32
TEST_LINES = 101  # not a multiple of 8: fairseq must not drop a final partial batch
OVER_LONG = 40  # tokens, > MAX_POSITIONS

# The same flags train every model here; fairseq-train and the legacy-checkpoint test parse them.
TRAIN_FLAGS = [
    "--user-dir", USER_DIR, "--task", "translation", "--arch", "resmlp_seq2seq_tiny", "--cpu",
    "--share-all-embeddings", "--max-source-positions", MAX_POSITIONS, "--max-target-positions", MAX_POSITIONS,
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", 5e-3, "--lr-scheduler", "inverse_sqrt",
    "--warmup-updates", 50, "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", 0.1,
    "--dropout", 0.1, "--max-tokens", 1024, "--required-batch-size-multiple", 1, "--num-workers", 0,
    "--seed", 1, "--no-epoch-checkpoints", "--log-format", "simple", "--no-progress-bar",
    "--skip-invalid-size-inputs-valid-test",
]  # fmt: skip


def run(tool: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """Run a fairseq entry point from the venv; one intra-op thread (2 shared cores: more threads thrash)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [tool, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        pytest.fail(f"{tool} exited with {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def reversal_corpus(folder: Path) -> None:
    """Letter sentences of 3-9 tokens and their reversals; train also holds over-long pairs."""
    rng = random.Random(0)

    def sentence(length: int) -> list[str]:
        return [rng.choice(LETTERS) for _ in range(length)]

    splits = {
        "train": [sentence(rng.randint(3, 9)) for _ in range(3000)] + [sentence(OVER_LONG) for _ in range(5)],
        "valid": [sentence(rng.randint(3, 9)) for _ in range(200)],
        "test": [sentence(rng.randint(3, 9)) for _ in range(TEST_LINES)],
        "long": [sentence(OVER_LONG) for _ in range(3)],
    }
    for split, sents in splits.items():
        (folder / f"{split}.src").write_text("".join(" ".join(s) + "\n" for s in sents))
        (folder / f"{split}.tgt").write_text("".join(" ".join(reversed(s)) + "\n" for s in sents))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Binarised corpus and a ResMLP trained on it (about 30 s on one core)."""
    root = tmp_path_factory.mktemp("reversal")
    raw, data, save = root / "raw", root / "data-bin", root / "checkpoints"
    raw.mkdir()
    reversal_corpus(raw)
    run(
        "fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--joined-dictionary",
        "--trainpref", raw / "train", "--validpref", raw / "valid", "--testpref", f"{raw / 'test'},{raw / 'long'}",
        "--destdir", data, "--workers", 1,
    )  # fmt: skip
    train = run(
        "fairseq-train", data, *TRAIN_FLAGS, "--max-update", 300, "--save-dir", save,
        # Validation BLEU puts numpy arrays into the checkpoints' metric state (see test_safe_load).
        "--eval-bleu", "--eval-bleu-args", '{"beam": 1}', "--best-checkpoint-metric", "bleu",
        "--maximize-best-checkpoint-metric", "--validate-interval", 1000,
    )  # fmt: skip
    log = train.stderr + train.stdout
    print(*re.findall(r"done training in .*", log))
    return {"raw": raw, "data": data, "checkpoint": save / "checkpoint_last.pt", "train_log": log}


def hypotheses(output: str) -> dict[int, str]:
    """fairseq-generate / -interactive ``H-<id>\\t<score>\\t<text>`` lines by sentence id."""
    found = re.findall(r"^H-(\d+)\t\S+\t(.*)$", output, flags=re.M)
    return {int(i): text for i, text in found}


def test_training_skips_over_long_pairs(trained):
    assert f"5 samples have invalid sizes and will be skipped, max_positions=({MAX_POSITIONS}, {MAX_POSITIONS})" in (
        trained["train_log"]
    )


def test_generate_beam_4_translates_every_test_line(trained):
    out = run(
        "fairseq-generate", trained["data"], "--user-dir", USER_DIR, "--path", trained["checkpoint"], "--cpu",
        "--gen-subset", "test", "--beam", 4, "--batch-size", 16, "--required-batch-size-multiple", 1,
    )  # fmt: skip
    hyps = hypotheses(out.stdout)
    refs = (trained["raw"] / "test.tgt").read_text().splitlines()
    assert sorted(hyps) == list(range(TEST_LINES))
    bleu = sacrebleu.corpus_bleu([hyps[i] for i in range(TEST_LINES)], [refs])
    print(f"reversal test BLEU (beam 4): {bleu.score:.2f}")
    assert bleu.score > 90


def test_generate_refuses_over_long_sources_with_fairseqs_error(trained):
    out = run(
        "fairseq-generate", trained["data"], "--user-dir", USER_DIR, "--path", trained["checkpoint"], "--cpu",
        "--gen-subset", "test1", "--beam", 4, "--batch-size", 16, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    size = OVER_LONG + 1  # with the end-of-sentence token; fairseq prints the sizes as numpy ints
    number = rf"(np\.int\d+\()?{size}\)?"
    expected = rf"Size of sample #\d+ is invalid \(=\({number}, {number}\)\) since max_positions=\(32, 32\)"
    assert re.search(expected, out.stderr)


def test_interactive_translates_typed_lines(trained, tmp_path):
    lines = ["a b c d", "l k j i h", "c g a f e b"]  # no repeated letter: the 300-update model misses some
    (tmp_path / "input.txt").write_text("\n".join(lines) + "\n")
    out = run(
        "fairseq-interactive", trained["data"], "--user-dir", USER_DIR, "--path", trained["checkpoint"], "--cpu",
        "--source-lang", "src", "--target-lang", "tgt", "--beam", 4, "--input", tmp_path / "input.txt",
    )  # fmt: skip
    hyps = hypotheses(out.stdout)
    assert [hyps[i] for i in range(len(lines))] == [" ".join(reversed(line.split())) for line in lines]


def test_interactive_skips_a_line_longer_than_the_model_and_goes_on(trained, tmp_path):
    lines = ["a b c d", " ".join(["a"] * 40), "l k j i h"]  # the middle one is longer than the 32 positions of A
    (tmp_path / "input.txt").write_text("\n".join(lines) + "\n")
    out = run(
        "fairseq-interactive", trained["data"], "--user-dir", USER_DIR, "--path", trained["checkpoint"], "--cpu",
        "--source-lang", "src", "--target-lang", "tgt", "--beam", 4, "--input", tmp_path / "input.txt",
        "--skip-invalid-size-inputs-valid-test",
    )  # fmt: skip
    hyps = hypotheses(out.stdout)
    assert hyps == {0: "d c b a", 2: "h i j k l"}
    assert "have invalid sizes and will be skipped, max_positions=(32, 32)" in out.stderr


def test_safe_load_reads_fairseq_checkpoints_and_nothing_else(trained, tmp_path):
    checkpoint = trained["checkpoint"]
    # Without the plugin, torch's default weights-only load refuses this fairseq checkpoint.
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, torch; torch.load(sys.argv[1])", str(checkpoint)],
        capture_output=True,
        text=True,
    )
    assert plain.returncode != 0 and "Unsupported global" in plain.stderr

    utils.import_user_module(Namespace(user_dir=str(USER_DIR)))
    # timm's checkpoint loader allow-lists Namespace in torch's context manager, whose exit removes the
    # class from the process-wide list: fairseq checkpoints must still load after it.
    with torch.serialization.safe_globals([Namespace]):
        pass
    (model,), cfg = checkpoint_utils.load_model_ensemble([str(checkpoint)])
    assert type(model).__name__ == "ResMLPSeq2SeqModel" and cfg.model.max_source_positions == MAX_POSITIONS

    # fairseq <= 0.10 (and its released models) stored the flat argparse.Namespace as "args".
    state = torch.load(checkpoint)
    argv = [str(trained["data"]), *map(str, TRAIN_FLAGS)]
    state["args"], state["cfg"] = options.parse_args_and_arch(options.get_training_parser(), argv), None
    legacy = tmp_path / "legacy.pt"
    torch.save(state, legacy)
    (legacy_model,), _ = checkpoint_utils.load_model_ensemble([str(legacy)])
    torch.testing.assert_close(legacy_model.state_dict(), model.state_dict())

    # Anything else is still refused: weights_only stays on.
    hostile = tmp_path / "hostile.pt"
    torch.save({"model": {}, "payload": Path("/etc/passwd")}, hostile)
    with pytest.raises(Exception, match="Unsupported global"):
        checkpoint_utils.load_checkpoint_to_cpu(str(hostile))


def test_hydra_train_with_the_config(trained, tmp_path):
    run(
        "fairseq-hydra-train", "--config-dir", REPO / "configs" / "fairseq", "--config-name", "resmlp_seq2seq_tiny",
        f"task.data={trained['data']}", f"task.max_source_positions={MAX_POSITIONS}",
        f"task.max_target_positions={MAX_POSITIONS}", "optimization.max_update=20",
        f"checkpoint.save_dir={tmp_path / 'checkpoints'}", f"hydra.run.dir={tmp_path / 'hydra'}",
    )  # fmt: skip
    state = torch.load(tmp_path / "checkpoints" / "checkpoint_last.pt", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == 20
    assert state["cfg"]["model"]["_name"] == "resmlp_seq2seq"
    assert state["model"]["decoder.layers.1.linear_tokens.weight"].shape == (MAX_POSITIONS, MAX_POSITIONS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_training(trained, tmp_path):
    # fairseq's own launchers need GPUs (its spawn path asserts world size <= GPU count, torchrun's
    # env init divides by the GPU count, torch DDP wants device ids): one process per rank instead,
    # over gloo with fairseq's legacy_ddp all-reduce.
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"
    ranks = [
        subprocess.Popen(
            [
                "fairseq-train", str(trained["data"]), *map(str, TRAIN_FLAGS), "--max-update", "10",
                "--save-dir", str(tmp_path), "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                "--distributed-world-size", "2", "--distributed-rank", str(rank), "--distributed-no-spawn",
                "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-backend", "gloo",
                "--ddp-backend", "legacy_ddp",
            ],  # fmt: skip
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    logs = [process.communicate(timeout=600)[0] for process in ranks]
    assert [process.returncode for process in ranks] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    # fairseq checks every update that the workers' gradient norms agree.
    assert "training on 2 devices" in logs[0] and "num_updates 10" in logs[0]
    assert torch.load(tmp_path / "checkpoint_last.pt", weights_only=False)["optimizer_history"][-1]["num_updates"] == 10
