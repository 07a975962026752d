"""The quick demo runs end to end and its report shows the numbers that run produced."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from resmlp_suite.demo import REPO
from resmlp_suite.demo_report import README_BEGIN, README_END, publish_to_readme, report_document, summary_table
from resmlp_suite.report import Document
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
    for png in ("vision_curves.png", "vision_token_mixing.png", "dino_knn_entropy.png", "translation_valid_loss.png",
                "vision_inference.png"):
        assert (report / png).stat().st_size > 1000
        assert f'src="{png}"' in page
    assert (report / "README.md").read_text().startswith("# resmlp-suite: demo report")


def test_report_numbers_come_from_the_run(quick_demo: tuple[Path, Path]) -> None:
    work, report = quick_demo
    markdown = (report / "README.md").read_text()
    for label in ("resmlp", "baseline"):
        top1 = read_metrics(work / "vision" / label / "metrics.json")[-1]["val_top1"]
        assert f"{top1:.2f}" in markdown
    # DINO: the run's own per-epoch rows, and the four k-NN evaluations side by side, each with its command.
    dino_rows = read_metrics(work / "dino" / "metrics.json")
    assert f"{dino_rows[-1]['train_loss']:.3f}" in markdown
    knn = json.loads((work / "dino.json").read_text())["knn"]
    assert list(knn) == ["raw pixels", "same network at initialisation", "DINO (teacher)", "supervised (step 1)"]
    for result in knn.values():
        # the quick demo's memory: 10,000 of the 60,000 training images (--knn-memory)
        assert result["knn_count"] == 10_000 and result["knn_memory"] == 10_000 and result["split"] == "test"
        assert f"| {result['knn_top1']:.2f} |" in markdown and f"`{result['command']}`" in markdown
    # even the quick run's one supervised epoch makes its features better than at initialisation
    assert knn["supervised (step 1)"]["knn_top1"] > knn["same network at initialisation"]["knn_top1"]
    translation = json.loads((work / "translation" / "results.json").read_text())
    for model in translation["models"].values():
        assert f"{model['bleu']:.2f}" in markdown
        assert model["signature"].replace("|", "\\|") in markdown  # a table cell: its pipes escaped
    speed = json.loads((work / "translation_speed.raw.json").read_text())
    assert f"{speed['ratios']['train']:.2f}x" in markdown and f"{speed['ratios']['generate_flops']:.2f}x" in markdown
    # bf16 is measured only where it is native (--skip-slow-bf16): each mode asked for is measured or named as skipped
    bench = json.loads((work / "vision_inference.raw.json").read_text())
    measured, skipped = {r["mode"] for r in bench["results"]}, set(bench["skipped"]["modes"] if bench["skipped"] else ())
    assert measured | skipped == {"eager-fp32", "eager-bf16"} and not measured & skipped
    assert set(bench["roofline_gflop_per_s"]) == {mode.split("-")[1] for mode in measured}
    for dtype, value in bench["roofline_gflop_per_s"].items():
        assert f"{dtype} {value:.0f} GFLOP/s" in markdown
    assert ("Not measured: " in markdown) == bool(skipped)
    assert not skipped or f"Not measured: {', '.join(bench['skipped']['modes'])}, since" in markdown
    # five test verses side by side, each model's line being its translation of that verse
    references = (work / "translation" / "corpus" / "test.en").read_text().splitlines()
    assert len(translation["examples"]) == 5
    for example in translation["examples"]:
        assert example["reference"] == references[example["line"] - 1] and example["reference"] in markdown
        for name in translation["models"]:
            hypotheses = (work / "translation" / name / "test.hyp.en").read_text().splitlines()
            assert example[name] == hypotheses[example["line"] - 1]
    assert "Translation study so far" in markdown  # the repository's study report, summarised


def test_second_run_reuses_every_step(quick_demo: tuple[Path, Path], tmp_path: Path) -> None:
    work, _ = quick_demo
    out = subprocess.run([sys.executable, "-m", "resmlp_suite.demo", "--quick", "--work-dir", str(work),
                          "--report-dir", str(tmp_path)], check=True, capture_output=True, text=True, timeout=300)
    assert out.stdout.count("re-using") == 6, out.stdout
    assert (tmp_path / "index.html").is_file()


def test_report_replaces_the_readme_results_section(quick_demo: tuple[Path, Path], tmp_path: Path) -> None:
    work, report = quick_demo
    doc = report_document(json.loads((report / "results.json").read_text()), work, report)
    readme = tmp_path / "README.md"
    readme.write_text(f"# suite\n\n## Results\n\n{README_BEGIN}\nstale numbers\n{README_END}\n\n## Next\n")
    publish_to_readme(doc, report, readme, tmp_path / "docs" / "results")
    text = readme.read_text()
    assert "stale numbers" not in text and text.startswith("# suite\n") and text.endswith(f"{README_END}\n\n## Next\n")
    section = text.split(README_BEGIN)[1].split(README_END)[0]
    assert section.strip() == doc.markdown(title=False, heading_shift=1, image_prefix="docs/results/").strip()
    for png in doc.images():
        assert (tmp_path / "docs" / "results" / png).read_bytes() == (report / png).read_bytes()
        assert f"](docs/results/{png})" in section
    readme.write_text("# suite without markers\n")
    with pytest.raises(ValueError, match="demo results: begin"):
        publish_to_readme(doc, report, readme, tmp_path / "docs" / "results")


def test_repository_readme_shows_the_published_run() -> None:
    """The README's results section is the report of the run whose results.json sits in docs/results."""
    section = (REPO / "README.md").read_text().split(README_BEGIN)[1].split(README_END)[0]
    results = json.loads((REPO / "docs" / "results" / "results.json").read_text())
    assert Document("summary").add(summary_table(results)).markdown(title=False).strip() in section
    assert f"Produced by `{results['meta']['command']}`" in section
