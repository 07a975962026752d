"""Learning curves of one or more runs from their metrics files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .files import PathLike, atomic_write
from .training.metrics import read_metrics, read_scalars

__all__ = ["plot_curves", "plot_dino_run", "plot_valid_loss", "plot_grouped_bars", "save_png"]


def plot_curves(
    paths: Sequence[PathLike], out: PathLike, labels: Optional[Sequence[str]] = None, title: Optional[str] = None
) -> Path:
    """Loss (train solid, validation dashed) and validation top-1 per epoch, one colour per run, saved as a PNG.

    ``paths`` are ``metrics.csv`` or ``metrics.json`` files; ``labels`` default to their folder names.
    """
    if not paths:
        raise ValueError("plot_curves needs at least one metrics file")
    labels = list(labels) if labels is not None else [Path(p).parent.name for p in paths]
    if len(labels) != len(paths):
        raise ValueError(f"got {len(paths)} metrics files but {len(labels)} labels")
    # A bare Figure renders with the Agg canvas and leaves pyplot's global state alone.
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, (path, label) in enumerate(zip(paths, labels, strict=True)):
        rows = read_metrics(path)
        epochs = [r["epoch"] for r in rows]
        color = f"C{i}"
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], color=color, marker=".", label=f"{label} train")
        ax_loss.plot(
            epochs, [r["val_loss"] for r in rows], color=color, marker=".", linestyle="--", label=f"{label} val"
        )
        ax_acc.plot(epochs, [r["val_top1"] for r in rows], color=color, marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="validation top-1")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return save_png(fig, out)


def plot_dino_run(run_dir: PathLike, out: PathLike, knn: dict[str, float], max_entropy: float,
                  title: Optional[str] = None) -> Path:
    """A DINO run: ``knn`` (label -> k-NN top-1 of each kind of features) as bars, and the teacher's output
    entropy and the student-teacher KL as logged every few steps (TensorBoard), with the two collapses'
    levels (0 and ``max_entropy`` = ln(out_dim)) marked."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_knn, ax_entropy = fig.subplots(1, 2)
    bars = ax_knn.barh(list(knn)[::-1], list(knn.values())[::-1], color=[f"C{i}" for i in range(len(knn))][::-1])
    ax_knn.bar_label(bars, fmt="%.1f", padding=2)
    ax_knn.set(xlabel="top-1 (%)", xlim=(0, 105), title="weighted k-NN (k 20, T 0.07) on the test images")
    for tag, label in (("train/teacher_entropy", "teacher output entropy"),
                       ("train/student_teacher_kl", "student-teacher KL")):
        steps, values = zip(*read_scalars(run_dir, tag))
        ax_entropy.plot(steps, values, label=label)
    for level, label in ((0.0, "collapse to one prototype"), (max_entropy, "collapse to uniform: ln(out_dim)")):
        ax_entropy.axhline(level, color="grey", linestyle=":", label=label)
    ax_entropy.set(xlabel="step", ylabel="nats", title="the teacher during training (logged steps)")
    ax_entropy.legend(fontsize="small")
    for ax in (ax_knn, ax_entropy):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_png(fig, out)


def plot_valid_loss(models: dict[str, dict], out: PathLike, title: str) -> Path:
    """Validation loss against updates, one line per model; ``models[name]`` holds ``valid_loss`` as
    ``[[update, loss], ...]`` and ``params``."""
    # the legend goes below the axes: a study's labels are long, and inside the axes they squeezed the plot
    fig = Figure(figsize=(7, 4 + 0.22 * len(models)), layout="constrained")
    ax = fig.subplots()
    for name, model in models.items():
        updates, losses = zip(*model["valid_loss"]) if model["valid_loss"] else ((), ())
        ax.plot(updates, losses, marker="o", label=f"{name} ({model['params'] / 1e6:.2f} M params)")
    ax.set(xlabel="updates", ylabel="validation loss (label-smoothed, bits/token)", title=title)
    fig.legend(loc="outside lower center", fontsize="small")
    ax.grid(alpha=0.3)
    return save_png(fig, out)


def plot_grouped_bars(values: dict[str, dict[str, float]], out: PathLike, ylabel: str, title: str,
                      colors: Optional[dict[str, str]] = None) -> Path:
    """``values[series][group]`` as bars, the groups along the x axis and one bar per series in each."""
    groups = list(dict.fromkeys(group for series in values.values() for group in series))
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(values)
    for i, (name, series) in enumerate(values.items()):
        ax.bar([g + (i - (len(values) - 1) / 2) * width for g in range(len(groups))],
               [series.get(group, 0.0) for group in groups], width, label=name, color=(colors or {}).get(name, f"C{i}"))
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylabel=ylabel, title=title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, out)


def save_png(fig: Figure, out: PathLike) -> Path:
    out = Path(out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return out
