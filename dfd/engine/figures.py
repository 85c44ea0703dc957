"""Drawing ROC curves and reliability diagrams, the one way: a run's ``roc.png`` / ``reliability_<set>.png`` and
a report's per-test-set figures share it.

Figures are :class:`matplotlib.figure.Figure` objects on an Agg canvas (no pyplot state), so they draw on
headless machines and inside other programs without touching the global backend.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120
#: Axis labels that say which way the labels go (1 = fake is the positive class everywhere in dfd).
FPR_LABEL = "false positive rate (real called fake)"
TPR_LABEL = "true positive rate (fake caught)"


def slug(name: str) -> str:
    """A file-name-safe form of a test-set or perturbation name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def figure(width: float, height: float) -> Figure:
    """A new figure of ``width`` x ``height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_roc(ax: Axes, fpr: Sequence[float], tpr: Sequence[float], label: str,
             std: Sequence[float] | None = None) -> None:
    """One ROC curve; ``std`` draws a ±1 std band around it (curves averaged over seeds)."""
    (line,) = ax.plot(fpr, tpr, lw=1.6, label=label)
    if std is not None:
        t, s = np.asarray(tpr, float), np.asarray(std, float)
        ax.fill_between(fpr, np.clip(t - s, 0, 1), np.clip(t + s, 0, 1), color=line.get_color(), alpha=0.15, lw=0)


def finish_roc_axes(ax: Axes, title: str) -> None:
    """Chance diagonal, unit square, labelled axes, legend."""
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(FPR_LABEL)
    ax.set_ylabel(TPR_LABEL)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=7)


def plot_reliability(ax: Axes, mean_prob: Sequence[float | None], frac_fake: Sequence[float | None],
                     count: Sequence[int], label: str) -> None:
    """One reliability curve: the fraction of fakes against the mean P(fake) of each non-empty bin, marker area
    by the bin's share of the items (where the ECE's weight lies)."""
    keep = [i for i, c in enumerate(count) if c and mean_prob[i] is not None and frac_fake[i] is not None]
    x = np.array([mean_prob[i] for i in keep], float)
    y = np.array([frac_fake[i] for i in keep], float)
    share = np.array([count[i] for i in keep], float) / max(sum(count), 1)
    (line,) = ax.plot(x, y, lw=1.4, label=label)
    ax.scatter(x, y, s=8 + 120 * share, color=line.get_color(), alpha=0.7, lw=0)


def finish_reliability_axes(ax: Axes, title: str) -> None:
    """Perfect-calibration diagonal, unit square, labelled axes, legend."""
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlim(-0.02, 1.02)  # bins at P(fake) 0 or 1 (a confident model's) stay visible
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("mean P(fake) in the bin")
    ax.set_ylabel("fraction of fakes in the bin")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=7)
