"""The translation study end to end at its quick size: two runs trained, scored on every test sentence,
reported (table, JSON, plot), and kept by the report so that a re-run (on another machine) skips them."""
from __future__ import annotations

import json
import shutil

from resmlp_suite.translation import study
from resmlp_suite.translation.study import PAPER_RESMLP, Run, best_options, first_runs, later_runs


def test_quick_study_runs_scores_reports_and_resumes_from_its_report(tmp_path):
    work, out = tmp_path / "work", tmp_path / "report" / "study"
    argv = ["--quick", "--work-dir", str(work), "--out", str(out), "--only", "screen/*-paper-s1"]
    study.main(argv)
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert sorted(runs) == ["screen/resmlp-paper-s1", "screen/transformer-paper-s1"]
    for record in runs.values():
        assert record["test_sentences"] == 25 and record["bleu"][0][0] == 4 and record["valid_loss"]
        assert (work / record["key"] / "generate_4" / "generate-test.txt").is_file()
    table = out.with_suffix(".md").read_text()
    assert "| resmlp | paper | " in table and "| transformer | learning rate=2e-3 | - / - |" in table
    # Another machine: no work directory, only the report. Nothing is retrained.
    shutil.rmtree(work)
    study.main(argv)
    assert not (work / "screen").exists()
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == runs


def test_combination_takes_each_factors_best_option_and_seeds_are_interleaved():
    runs = first_runs()
    assert [r.key for r in runs[:2]] == ["screen/transformer-paper-s1", "screen/resmlp-paper-s1"]
    assert all(r.seed == 1 for r in runs[: len(runs) // 2 - 1])
    fake = {r.key: {"bleu": [[1500, 10.0]]} for r in runs if r.size == "screen"}
    fake["screen/resmlp-learning_rate=2e-3-s1"] = fake["screen/resmlp-learning_rate=2e-3-s2"] = {"bleu": [[1500, 12.0]]}
    fake["screen/resmlp-LayerScale_init=0.1-s1"] = {"bleu": [[1500, 15.0]]}
    del fake["screen/resmlp-LayerScale_init=0.1-s2"]  # one seed only: not chosen
    chosen = best_options(fake, "resmlp", study.RESMLP_FACTORS)
    assert chosen["learning rate"] == "2e-3" and chosen["LayerScale init"] == "0.2"
    combined = next(r for r in later_runs(fake) if r.label == "combined")
    assert combined == Run("resmlp", "confirm", "combined", PAPER_RESMLP + ("--lr", "2e-3"), 1)
