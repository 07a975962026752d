"""The quick demo runs end to end and its report shows the numbers that run produced."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from resmlp_suite.training.metrics import read_metrics


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work, report = tmp_path_factory.mktemp("demo"), tmp_path_factory.mktemp("report")
    subprocess.run([sys.executable, "-m", "resmlp_suite.demo", "--quick", "--work-dir", str(work),
                    "--report-dir", str(report)], check=True, timeout=1200)
    return work, report


def test_report_is_written_with_plots(quick_demo: tuple[Path, Path]) -> None:
    _, report = quick_demo
    page = (report / "index.html").read_text()
    for png in ("vision_curves.png", "translation_valid_loss.png", "vision_inference.png"):
        assert (report / png).stat().st_size > 1000
        assert f'src="{png}"' in page
    assert (report / "README.md").read_text().startswith("# resmlp-suite: demo report")


def test_report_numbers_come_from_the_run(quick_demo: tuple[Path, Path]) -> None:
    work, report = quick_demo
    markdown = (report / "README.md").read_text()
    for label in ("resmlp", "baseline"):
        top1 = read_metrics(work / "vision" / label / "metrics.json")[-1]["val_top1"]
        assert f"{top1:.2f}" in markdown
    translation = json.loads((work / "translation" / "results.json").read_text())
    for model in translation["models"].values():
        assert f"{model['bleu']:.2f}" in markdown
        assert model["signature"] in markdown
    speed = json.loads((work / "translation_speed.raw.json").read_text())
    assert f"{speed['ratios']['train']:.2f}x" in markdown


def test_second_run_reuses_every_step(quick_demo: tuple[Path, Path], tmp_path: Path) -> None:
    work, _ = quick_demo
    out = subprocess.run([sys.executable, "-m", "resmlp_suite.demo", "--quick", "--work-dir", str(work),
                          "--report-dir", str(tmp_path)], check=True, capture_output=True, text=True, timeout=300)
    assert out.stdout.count("re-using") == 5, out.stdout
    assert (tmp_path / "index.html").is_file()
