"""The class histogram: images per class on a log scale, coloured by many / medium / few (the one group palette of
every ltaug plot)."""

from __future__ import annotations

import os

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ltaug.data.longtail import group_of
from ltaug.files import atomic_savefig

GROUP_COLORS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}


def plain(text) -> str:
    """A user's text (a class name, a title) as matplotlib shows it literally: `$` would start mathtext."""
    return str(text).replace("$", r"\$")


def plot_class_histogram(counts: list[int], classes: list[str], path: str | os.PathLike, title: str = "") -> None:
    groups = group_of(counts)
    fig = Figure(figsize=(max(6, 0.12 * len(counts) + 3), 3.5), dpi=120)
    ax = fig.subplots()
    ax.bar(range(len(counts)), [max(c, 0.8) for c in counts], color=[GROUP_COLORS[g] for g in groups], width=0.85)
    ax.set_yscale("log")
    ax.set_ylabel("training images (log)")
    ax.set_xlabel("class (head to tail)")
    if len(classes) <= 20:
        ax.set_xticks(range(len(classes)), [plain(c) for c in classes], rotation=45, ha="right", fontsize=8)
    ax.axhline(100, color="grey", lw=0.6, ls="--")
    ax.axhline(20, color="grey", lw=0.6, ls="--")
    ax.legend(handles=[Patch(color=c, label=f"{g} ({groups.count(g)})") for g, c in GROUP_COLORS.items()],
              fontsize=8, loc="upper right")
    ratio = max(counts) / max(min(counts), 1)
    ax.set_title(plain(title) if title else f"{len(counts)} classes, {sum(counts):,} images, ratio {ratio:.0f}")
    fig.tight_layout()
    atomic_savefig(fig, path)
