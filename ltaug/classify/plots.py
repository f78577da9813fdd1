"""Per-class accuracy bars coloured by group, and the per-class gain of one classifier over another (PNG)."""

from __future__ import annotations

import os

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ltaug.data.longtail import GROUP_NAMES, group_of
from ltaug.data.plot import GROUP_COLORS as COLORS  # one palette for every plot
from ltaug.data.plot import plain
from ltaug.files import atomic_savefig


def _figure(num_classes: int):
    fig = Figure(figsize=(min(24.0, max(6.0, 0.25 * num_classes + 2)), 4.0))
    return fig, fig.subplots()


def _legend(ax, groups: list[str]) -> None:
    present = [g for g in GROUP_NAMES if g in groups]
    ax.legend(handles=[Patch(color=COLORS[g], label=g) for g in present], loc="best", fontsize=8)


def _xticks(ax, classes: list[str], counts: list[int]) -> None:
    if len(classes) <= 30:
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels([f"{plain(c)}\n({n})" for c, n in zip(classes, counts)], fontsize=7,
                           rotation=0 if len(classes) <= 12 else 90)
    ax.set_xlabel("class (real training images), head to tail as in the dataset order")


def plot_per_class_accuracy(per_class: list, classes: list[str], train_counts: list[int], path: str | os.PathLike,
                            title: str = "") -> None:
    """Bar per class of its test accuracy (fraction, None drawn as 0), coloured by its group from train_counts."""
    groups = group_of(train_counts)
    fig, ax = _figure(len(classes))
    ax.bar(range(len(classes)), [100 * (a or 0.0) for a in per_class], color=[COLORS[g] for g in groups])
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(plain(title or "per-class accuracy"))
    _xticks(ax, classes, train_counts)
    _legend(ax, groups)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)


def plot_gain(per_class: list, per_class_other: list, classes: list[str], train_counts: list[int],
              path: str | os.PathLike, title: str = "") -> None:
    """Bar per class of (accuracy - other accuracy) in points, coloured by group."""
    groups = group_of(train_counts)
    gain = [100 * ((a or 0.0) - (b or 0.0)) for a, b in zip(per_class, per_class_other)]
    fig, ax = _figure(len(classes))
    ax.bar(range(len(classes)), gain, color=[COLORS[g] for g in groups])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("accuracy gain (points)")
    ax.set_title(plain(title or "per-class accuracy gain"))
    _xticks(ax, classes, train_counts)
    _legend(ax, groups)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
