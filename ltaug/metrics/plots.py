"""Plots of evaluation results: one bar panel per metric, bars = overall and the many / medium / few groups."""

from __future__ import annotations

import os

from matplotlib.figure import Figure

from ltaug.data.longtail import GROUPS
from ltaug.data.plot import GROUP_COLORS
from ltaug.files import atomic_savefig

PANELS = (("fid", "FID (lower is better)"), ("kid", "KID (lower is better)"), ("precision", "precision"),
          ("recall", "recall"), ("density", "density"), ("coverage", "coverage"), ("is", "Inception Score"))


def plot_group_metrics(results: dict, path: str | os.PathLike) -> None:
    """Bar charts of every metric present in `results` (as returned by `evaluate`), per class group."""
    panels = [(k, t) for k, t in PANELS if any(isinstance(results.get(g, {}).get(k), float) for g in GROUPS)]
    if not panels:
        return
    fig = Figure(figsize=(2.6 * len(panels) + 0.5, 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)
    colors = {"overall": "#555555", **GROUP_COLORS}
    for ax, (key, title) in zip(axes[0], panels):
        names = [g for g in GROUPS if isinstance(results.get(g, {}).get(key), float)]
        values = [results[g][key] for g in names]
        ax.bar(names, values, color=[colors[g] for g in names])
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    p = results.get("protocol", {})
    fig.suptitle(f"reference {p.get('reference', '?')} | N={p.get('num_generated', '?')} | "
                 f"{p.get('sampler', '')} {p.get('steps') or ''} w={p.get('w', '')}", fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
