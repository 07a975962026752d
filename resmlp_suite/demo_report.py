"""The demo's report, built only from the files its steps wrote (see :mod:`resmlp_suite.demo`)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .files import atomic_copy, atomic_write_text
from .plotting import plot_curves, plot_dino_run, plot_grouped_bars
from .report import Document, Heading, Image, Paragraph, Table
from .training.metrics import read_metrics
from .translation.bible import book_names
from .translation.demo import plot_demo_valid_loss
from .visualize import plot_token_mixing

# The paper's reference numbers (Table 1 top-1 on ImageNet, Table 5 BLEU on newstest2014), for context only.
PAPER_TOP1 = {"ResMLP-S12": 76.6, "ResMLP-S24": 79.4, "ResMLP-S36": 79.7, "ResMLP-B24": 81.0}
PAPER_BLEU_EN_DE = {"Transformer (base)": 27.3, "ResMLP-6": 26.4, "ResMLP-12": 26.8}
COLORS = {"timm": "C7", "ours": "C0", "ours-folded": "C1"}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def _updates(model: dict[str, Any]) -> int:
    """The updates a translation model trained for: those of its last validation."""
    return model["valid_loss"][-1][0]


def summary_table(results: dict[str, Any]) -> Table:
    """The headline table: ours beside the baseline."""
    vision, mt, knn = results["vision"]["runs"], results["translation"]["models"], results["dino"]["knn"]
    resmlp, transformer = mt["resmlp"], mt["transformer"]
    budget = ("same size and updates" if _updates(resmlp) == _updates(transformer) else
              f"same size; {_updates(transformer):,} updates in {_minutes(transformer['train_wall_s'])} min, ResMLP "
              f"{_updates(resmlp):,} in {_minutes(resmlp['train_wall_s'])}")
    count = results["translation"]["settings"].get("average_last", 1)
    averaged = f", mean of the last {count} checkpoints" if count > 1 else ""
    return Table(["task", "ResMLP", "baseline", "baseline model"], [
        ["Fashion-MNIST test top-1 (%)", vision["resmlp"]["final"]["val_top1"], vision["baseline"]["final"]["val_top1"],
         "ViT (attention), same recipe and epochs, lr 4e-3"],
        [f"Bible De->En test sacreBLEU{averaged}", resmlp["bleu"], transformer["bleu"], f"fairseq transformer, {budget}"],
        ["Fashion-MNIST test k-NN top-1 (%), trained without labels (DINO)", knn["DINO (teacher)"]["knn_top1"],
         knn["raw pixels"]["knn_top1"], "k-NN on the raw pixels"],
    ])


def vision_section(results: dict[str, Any], work_dir: Path, report_dir: Path) -> list:
    runs = results["vision"]["runs"]
    curves = plot_curves([work_dir / r["run_dir"] / "metrics.json" for r in runs.values()], report_dir / "vision_curves.png",
                         labels=list(runs), title="Fashion-MNIST: ResMLP vs attention baseline")
    rows = [[label, r["epochs"], r["final"]["val_top1"], r["best_top1"], r["final"].get("val_top5"), _minutes(r["train_s"]),
             _minutes(r["wall_s"])] for label, r in runs.items()]
    mixing = plot_token_mixing(work_dir / runs["resmlp"]["run_dir"] / "last.pt", report_dir / "vision_token_mixing.png")
    return [
        Heading("Image classification: Fashion-MNIST (`python vision/train.py`)"),
        Paragraph("The default run (`configs/experiment/fmnist_tiny.yaml`) and its attention baseline "
                  "(`experiment=fmnist_vit`: same data, recipe and number of epochs, at the learning rate a ViT can take), on this machine's CPU."),
        Table(["run", "epochs", "final top-1 (%)", "best top-1 (%)", "final top-5 (%)", "training minutes", "step minutes (last invocation)"], rows),
        Image(curves.name, "Loss and test top-1 per epoch"),
        Paragraph("What the ResMLP learned to mix (`python -m resmlp_suite.visualize` on its `last.pt`): rows of the "
                  "token-mixing matrix A of the first, middle and last block, each drawn over the 7x7 patch grid "
                  "around its own patch (outlined), then the same rows after resampling A to a 10x10 grid, as "
                  "loading the weights at 40 px does."),
        Image(mixing.name, "Token-mixing rows over the patch grid, and after resampling"),
    ]


def dino_section(results: dict[str, Any], work_dir: Path, report_dir: Path) -> list:
    dino = results["dino"]
    knn = dino["knn"]
    plot = plot_dino_run(work_dir / dino["run_dir"], report_dir / "dino_knn_entropy.png",
                         {label: r["knn_top1"] for label, r in knn.items()}, math.log(dino["out_dim"]),
                         "DINO on Fashion-MNIST: features without labels, and the teacher during training")
    first = next(iter(knn.values()))
    rows = [[label, r["knn_top1"], r["knn_top5"], f"`{r['command']}`"] for label, r in knn.items()]
    epochs = [[r["epoch"], f"{r['train_loss']:.3f}", f"{r['teacher_entropy']:.2f}", f"{r['student_teacher_kl']:.3f}",
               r.get("knn_top1", "-")] for r in read_metrics(work_dir / dino["run_dir"] / "metrics.json")]
    return [
        Heading("Self-supervised: DINO on Fashion-MNIST (`python vision/train_dino.py`)"),
        Paragraph(f"The vision step's ResMLP, trained without labels by DINO (`configs/dino_experiment/fmnist_tiny.yaml`, "
                  "its batch, learning rate and teacher momentum chosen on held-out training images: "
                  f"`docs/dino_settings.md`; {dino['epochs']} epoch{'s' * (dino['epochs'] != 1)}, "
                  f"{_minutes(dino['train_s'])} training minutes), then its frozen features "
                  f"judged by weighted k-NN (k 20, T 0.07, cosine) on the {first['knn_count']:,} {first['split']} "
                  f"images with the {first['knn_memory']:,} training images as the memory, beside what needs no "
                  "training and what the labels give."),
        Table(["features", "k-NN top-1 (%)", "k-NN top-5 (%)", "command"], rows),
        Image(plot.name, "k-NN top-1 of each kind of features; teacher entropy and student-teacher KL per step"),
        Table(["epoch", "DINO loss", f"teacher entropy (nats, of ln {dino['out_dim']} = "
               f"{math.log(dino['out_dim']):.2f})", "student-teacher KL",
               "k-NN top-1 in training (%, memory: dino.knn_train_samples)"], epochs),
    ]


def translation_section(results: dict[str, Any], report_dir: Path) -> list:
    mt = results["translation"]
    plot = plot_demo_valid_loss(mt, report_dir / "translation_valid_loss.png")
    rows = [[name, f"{m['params'] / 1e6:.2f} M", f"`{' '.join(m.get('options', []))}`", f"{_updates(m):,}", m["bleu"],
             m.get("last_checkpoint", m)["bleu"], m.get("test_sentences"), _minutes(m["train_wall_s"]),
             f"`{m['signature']}`"] for name, m in mt["models"].items()]
    updates = {_updates(m) for m in mt["models"].values()}
    budget = (f"{updates.pop():,} updates" if len(updates) == 1 else
              "the updates in the table, ResMLP's set for about the transformer's training time since its updates "
              "cost less")
    size = mt["settings"]
    count = size.get("average_last", 1)
    averaged = (f", translating with the mean of each model's last {count} checkpoints ({size['validate_every']} "
                "updates apart; the next column scores its last checkpoint alone)" if count > 1 else "")
    examples = [
        Paragraph(f"Five test verses, spread evenly over {book_names(mt['settings']['test_books'])} among those of "
                  "8-25 words (chosen by position and length, not by score):"),
        Table(["line", "German source", "reference", *mt["models"]],
              [[e["line"], e["source"], e["reference"], *(e[name] for name in mt["models"])] for e in mt["examples"]]),
    ] if "examples" in mt else []  # a translation step cached by an older version has none
    return [
        Heading("Machine translation: Bible De->En (`python translation/bible_demo.py`)"),
        Paragraph("Elberfelder German -> World English Bible, split by book ("
                  + ", ".join(f"{split} {n} verses" for split, n in mt["corpus_lines"].items())
                  + f"; validation {book_names(size['valid_books'])}, test {book_names(size['test_books'])}); both models "
                  f"with the same budget (d {size['dim']}, {size['layers']}+{size['layers']} layers, "
                  f"{size['max_tokens']:,} tokens per batch, {budget}, Adam with inverse-sqrt "
                  f"decay after {size['warmup_updates']:,} warm-up updates unless its options say otherwise), each with "
                  "its own options (the learning rate and warm-up measured best for it), beam 4, "
                  f"scored with sacreBLEU on every test sentence{averaged}."),
        Table(["model", "params", "options", "updates", "sacreBLEU", "sacreBLEU, last checkpoint", "test sentences",
               "train minutes", "signature"], rows),
        Image(plot.name, "Validation loss against updates"),
        *examples,
    ]


def study_section(results: dict[str, Any]) -> list:
    rows = results["meta"].get("translation_study")
    if not rows:
        return []
    return [
        Heading("Translation study so far (`python -m resmlp_suite.translation.study`, not re-run by the demo)"),
        Paragraph("The study's screen (d 128, 2+2 layers, 4,096 tokens per batch, 1,500 updates, sacreBLEU on all of "
                  "Acts, beam 4) as `docs/translation_study.md` holds it: each model as given and its best setting "
                  "so far."),
        Table(["model", "setting", "mean sacreBLEU", "seeds"], rows),
    ]


def models_section(results: dict[str, Any]) -> list:
    rows = [[r["model"], r["params_m"], r["paper_params_m"], r["gmacs"], r["paper_gmacs"]] for r in results["models"]["rows"]]
    return [
        Heading("The paper's models: parameters and multiply-accumulates at 224 px (`python -m resmlp_suite.info`)"),
        Table(["model", "params (M)", "paper params (M)", "GMACs", "paper GMACs"], rows),
    ]


def vision_benchmark_section(results: dict[str, Any], report_dir: Path) -> list:
    bench = results["vision_inference"]
    rows = [[r["model"], r["mode"], f"{r['img_per_s']:.1f}", f"{r['roofline_pct']:.0f}%",
             "-" if r["vs_timm"] is None else f"{r['vs_timm']:.2f}x"] for r in bench["results"]]
    speeds: dict[str, dict[str, float]] = {}
    for r in bench["results"]:
        speeds.setdefault(r["model"], {})[r["mode"]] = r["img_per_s"]
    plot = plot_grouped_bars(speeds, report_dir / "vision_inference.png", "images / s",
                             f"ResMLP-S12 inference, batch {bench['batch']}, {bench['device']}", COLORS)
    roof = ", ".join(f"{dtype} {value:.0f} GFLOP/s" for dtype, value in bench["roofline_gflop_per_s"].items())
    skipped = bench.get("skipped")
    not_measured = f" Not measured: {', '.join(skipped['modes'])}, since {skipped['reason']}." if skipped else ""
    return [
        Heading("Inference speed: ResMLP-S12 (`python benchmarks/vision_inference.py`)"),
        Paragraph(f"{bench['device_name']}, {bench['threads']} threads; GEMM roofline {roof}. Ratios are against "
                  f"timm's `resmlp_12_224` in the same mode, measured interleaved in the same process.{not_measured}"),
        Table(["model", "mode", "images/s", "% of GEMM roofline", "vs timm"], rows),
        Image(plot.name, "Images per second by model and mode"),
    ]


def report_document(results: dict[str, Any], work_dir: Path, report_dir: Path) -> Document:
    """The report of the demo run in ``work_dir``; its plots are written into ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    meta = results["meta"]
    walls = {name: result["step_wall_s"] for name, result in results.items() if name != "meta"}
    doc = Document("resmlp-suite: demo report")
    return doc.add(
        Paragraph(f"Produced by `{meta['command']}` on {meta['machine']}. Small-scale runs on real data that ships "
                  "offline; the paper's ImageNet and WMT14 numbers are listed for context, not reproduced here."),
        Heading("Summary"),
        summary_table(results),
        Paragraph("Paper, for context: ImageNet top-1 " + ", ".join(f"{k} {v}" for k, v in PAPER_TOP1.items())
                  + "; WMT14 En-De tokenized BLEU " + ", ".join(f"{k} {v}" for k, v in PAPER_BLEU_EN_DE.items()) + "."),
        *vision_section(results, work_dir, report_dir),
        *dino_section(results, work_dir, report_dir),
        *translation_section(results, report_dir),
        *study_section(results),
        *models_section(results),
        *vision_benchmark_section(results, report_dir),
        *translation_benchmark_section(results),
        Heading("Wall time per step (minutes, when it last ran)"),
        Table([*walls, "all steps"], [[*(_minutes(v) for v in walls.values()), _minutes(sum(walls.values()))]]),
    )


def build_report(results: dict[str, Any], work_dir: Path, report_dir: Path) -> tuple[Document, Path]:
    """Write ``report_dir/{index.html,README.md,results.json}`` and the plots; returns the document and its HTML page."""
    doc = report_document(results, work_dir, report_dir)
    atomic_write_text(report_dir / "results.json", json.dumps(results, indent=1))
    return doc, doc.write(report_dir)[1]


README_BEGIN = "<!-- demo results: begin. Written by `python -m resmlp_suite.demo --readme` from its report; do not edit by hand. -->"
README_END = "<!-- demo results: end -->"


def publish_to_readme(doc: Document, report_dir: Path, readme: Path, assets_dir: Path) -> None:
    """Put the report into ``readme`` between its demo-results markers, with its plots and results copied to ``assets_dir``,
    so that the repository's front page shows exactly what the last run measured."""
    text = readme.read_text(encoding="utf-8")
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1 or text.index(README_BEGIN) > text.index(README_END):
        raise ValueError(f"{readme} must contain the line {README_BEGIN!r} once, followed by {README_END!r}")
    assets_dir.mkdir(parents=True, exist_ok=True)
    for name in [*doc.images(), "results.json"]:
        atomic_copy(report_dir / name, assets_dir / name)
    prefix = assets_dir.resolve().relative_to(readme.resolve().parent).as_posix() + "/"
    body = doc.markdown(title=False, heading_shift=1, image_prefix=prefix)
    head, rest = text.split(README_BEGIN)
    tail = rest.split(README_END)[1]
    atomic_write_text(readme, f"{head}{README_BEGIN}\n\n{body.strip()}\n\n{README_END}{tail}")


def translation_benchmark_section(results: dict[str, Any]) -> list:
    bench = results["translation_speed"]
    s = bench["settings"]
    rows = [[name, f"{m['params'] / 1e6:.2f} M", f"{m['train_words_per_s']:.0f}", f"{m['generate_sentences_per_s']:.1f}"]
            for name, m in bench["models"].items()]
    ratios = bench["ratios"]
    rows.append(["resmlp / transformer", "", f"{ratios['train']:.2f}x", f"{ratios['generate']:.2f}x"])
    rows.append(["operations: transformer / resmlp", "", f"{ratios['train_flops']:.2f}x", f"{ratios['generate_flops']:.2f}x"])
    return [
        Heading("Translation speed (`python benchmarks/translation_speed.py`)"),
        Paragraph(f"{bench['device_name']}, {bench['threads']} threads; d {s['dim']}, FFN {s['ffn_dim']}, "
                  f"{s['layers']}+{s['layers']} layers, batch {s['batch']}, beam 4 x {s['gen_len']} tokens; "
                  f"targets: training {bench['targets']['train']}x, generation {bench['targets']['generate']}x. "
                  "The operations row counts the matrix products' floating-point operations: the speed-up a run "
                  "bound by them would reach."),
        Table(["model", "params", "training target words/s", "beam-4 sentences/s"], rows),
    ]
