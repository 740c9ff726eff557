"""The paper's analysis figures as PNG files (matplotlib, Agg canvas).

- `plot_oneshot_vs_standalone`: Bender et al. 2018, Figure 5 (top).
- `plot_oneshot_histogram`: Figure 5 (bottom).
- `plot_kl_vs_accuracy`: Figure 6 (§5, symmetrized KL to the all-on model).
- `plot_search_progress`: best one-shot accuracy found against the number of
  architectures scored, evolution (per generation) against random search (§3.3
  notes random search "could be replaced by ... evolutionary algorithms").

Each figure is drawn on its own `Figure` with an Agg canvas (no pyplot state,
no display needed) and written atomically, at exactly `size` pixels:
`figure` and `save_figure` do that for the other figures too (insights,
fine-tuning, benchmarks).
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
DEFAULT_SIZE = (800, 600)  # pixels: width, height


def figure(size: tuple[int, int]) -> tuple[Figure, object]:
    """(figure, axes) of exactly `size` pixels with a light grid: every figure of the package starts here."""
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, alpha=0.3)
    return fig, ax


def save_figure(fig: Figure, path: str) -> str:
    """Writes the PNG through a temp file and a rename: never half a file."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)  # no bbox_inches: keeps the pixel size
    directory = os.path.dirname(path) or "."
    tf.io.gfile.makedirs(directory)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(buffer.getvalue())
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return path


def plot_oneshot_vs_standalone(
    oneshot: Sequence[float],
    standalone: Sequence[float],
    path: str,
    standalone_std: Sequence[float] | None = None,
    title: str = "",
    size: tuple[int, int] = DEFAULT_SIZE,
    split: str = "validation",
) -> str:
    """One-shot accuracy (x) against mean stand-alone accuracy (y), Figure 5 top.

    Args:
        oneshot: one-shot validation accuracy per architecture.
        standalone: stand-alone accuracy on `split`, mean over seeds.
        path: PNG file to write.
        standalone_std: spread over seeds, drawn as error bars.
        title: e.g. the rank correlations.
        size: (width, height) in pixels.
        split: "validation", or "test" for models trained on train + validation.

    Returns:
        `path`.
    """
    fig, ax = figure(size)
    ax.errorbar(
        oneshot, standalone, yerr=standalone_std, fmt="o", color="tab:blue",
        ecolor="tab:gray", capsize=3, markersize=5,
    )
    ax.set_xlabel("one-shot model accuracy (validation)")
    ax.set_ylabel(f"stand-alone model accuracy ({split}, mean over seeds)")
    ax.set_title(title or "One-shot vs stand-alone accuracy")
    return save_figure(fig, path)


def plot_oneshot_histogram(
    accuracies: Sequence[float],
    path: str,
    bins: int = 20,
    size: tuple[int, int] = DEFAULT_SIZE,
    distinct: int | None = None,
) -> str:
    """Distribution of one-shot accuracies of the scored architectures, Figure 5 bottom.

    `distinct`: how many different architectures the scores are of, when two
    searches scored some twice (the title then says both counts).
    """
    fig, ax = figure(size)
    values = np.asarray(accuracies, np.float64)
    ax.hist(values, bins=bins, color="tab:blue", edgecolor="white")
    ax.set_xlabel("one-shot model accuracy (validation)")
    ax.set_ylabel("number of scores")
    title = f"One-shot accuracies of {values.size} architectures"
    if distinct is not None and distinct != values.size:
        title = f"One-shot accuracies: {values.size} scores of {distinct} distinct architectures"
    ax.set_title(title)
    return save_figure(fig, path)


def plot_kl_vs_accuracy(
    kl: Sequence[float],
    accuracies: Sequence[float],
    path: str,
    title: str = "",
    size: tuple[int, int] = DEFAULT_SIZE,
) -> str:
    """Symmetrized KL to the reference (all-on) predictions vs one-shot accuracy, Figure 6."""
    fig, ax = figure(size)
    ax.scatter(kl, accuracies, s=12, color="tab:purple", alpha=0.7)
    ax.set_xlabel("symmetrized KL divergence to the reference model (training set)")
    ax.set_ylabel("one-shot model accuracy (validation)")
    ax.set_title(title or "Symmetrized KL divergence vs one-shot accuracy")
    return save_figure(fig, path)


def best_so_far(scores: Sequence[float]) -> np.ndarray:
    """Running maximum: the best score after each architecture scored."""
    return np.maximum.accumulate(np.asarray(scores, np.float64))


def evolution_progress(
    generations: Sequence[int], scores: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per generation: architectures scored so far, best so far, best of the generation.

    Args:
        generations: the generation of each scored architecture, in scoring order.
        scores: their one-shot accuracies.
    """
    generations = np.asarray(generations)
    scores = np.asarray(scores, np.float64)
    order = sorted(set(generations.tolist()))
    counts, best, within = [], [], []
    for g in order:
        counts.append(int((generations <= g).sum()))
        best.append(float(scores[generations <= g].max()))
        within.append(float(scores[generations == g].max()))
    return np.array(counts), np.array(best), np.array(within)


def plot_search_progress(
    random_scores: Sequence[float],
    evolution_generations: Sequence[int],
    evolution_scores: Sequence[float],
    path: str,
    size: tuple[int, int] = DEFAULT_SIZE,
) -> str:
    """Best one-shot accuracy vs number of architectures scored: random vs evolution.

    Args:
        random_scores: one-shot accuracies of random search, in scoring order.
        evolution_generations: generation of each evolution-scored architecture.
        evolution_scores: their one-shot accuracies, in scoring order.
        path: PNG file to write.
        size: (width, height) in pixels.
    """
    fig, ax = figure(size)
    if len(random_scores):
        ax.plot(
            np.arange(1, len(random_scores) + 1), best_so_far(random_scores),
            color="tab:gray", label="random search: best so far",
        )
    if len(evolution_scores):
        counts, best, within = evolution_progress(evolution_generations, evolution_scores)
        ax.plot(counts, best, "o-", color="tab:red", markersize=4,
                label="evolution: best so far (per generation)")
        ax.plot(counts, within, "x", color="tab:orange", markersize=5,
                label="evolution: best within the generation")
    ax.set_xlabel("architectures scored with the one-shot model")
    ax.set_ylabel("one-shot model accuracy (validation)")
    ax.set_title("Search progress")
    if len(random_scores) or len(evolution_scores):
        ax.legend(loc="lower right")
    return save_figure(fig, path)
