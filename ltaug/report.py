"""The run report: one self-contained report.html (images embedded) that says what a run did and what it gained.

Sections: the results table (accuracy overall / many / medium / few with and without synthetic data, and the
generator's metrics), the class histogram, the latest class grid, the synthetic samples (synth/grid.png), per-class
accuracy with versus without synthetic data, training curves from metrics.jsonl, and the overlap heat-map. Each
figure is also written as a PNG in report/. Every user-given text (class names, paths) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ltaug.data.longtail import GROUPS, group_of
from ltaug.data.plot import GROUP_COLORS, plain, plot_class_histogram
from ltaug.data.synthetic import GRID
from ltaug.files import atomic_savefig, atomic_write_text, read_json, read_jsonl
from ltaug.rundir import RunDir


def _img_tag(path: Path, alt: str, width: str = "100%") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" style="max-width:{width}" src="data:image/png;base64,{data}">'


def accuracy_of(results: dict | None, group: str) -> float | None:
    """Accuracy of one group from a classifier results.json (fractions in [0, 1])."""
    if not results:
        return None
    acc = results.get("accuracy", results)
    value = acc.get(group)
    return float(value) if isinstance(value, (int, float)) else None


def per_class_of(results: dict | None) -> list | None:
    """Per-class accuracy of a classifier results.json (top level, or inside `accuracy`)."""
    if not results:
        return None
    return results.get("per_class") or (results.get("accuracy") or {}).get("per_class")


def train_counts_of(results: dict | None) -> list | None:
    if not results:
        return None
    return results.get("train_counts_real") or results.get("train_counts")


def gain_table(real: dict | None, synth: dict | None) -> list[dict]:
    """Rows of {group, real, synth, gain} (percentage points) for overall / many / medium / few."""
    rows = []
    for g in GROUPS:
        a, b = accuracy_of(real, g), accuracy_of(synth, g)
        rows.append({"group": g, "real": a, "synth": b,
                     "gain": (b - a) if a is not None and b is not None else None})
    return rows


def plot_per_class_comparison(real: dict, synth: dict, classes: list[str], groups: list[str],
                              path: Path) -> None:
    a = np.array(per_class_of(real), dtype=float) * 100
    b = np.array(per_class_of(synth), dtype=float) * 100
    x = np.arange(len(a))
    fig = Figure(figsize=(max(6, 0.14 * len(a) + 3), 3.6), dpi=120)
    ax = fig.subplots()
    ax.bar(x - 0.2, a, width=0.4, color="#bbbbbb", label="real only")
    ax.bar(x + 0.2, b, width=0.4, color=[GROUP_COLORS.get(g, "#1f77b4") for g in groups],
           label="real + synthetic (coloured by group)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("class (head to tail)")
    if len(classes) <= 20:
        ax.set_xticks(x, [plain(c) for c in classes], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("per-class accuracy, with versus without synthetic data")
    fig.tight_layout()
    atomic_savefig(fig, path)


def plot_curves(records: list[dict], path: Path, title: str, x_key: str = "step") -> bool:
    """Every numeric loss-like key of metrics.jsonl against the step (log scale where positive)."""
    records = [r for r in records if x_key in r]
    if len(records) < 2:
        return False
    bookkeeping = {x_key, "step", "epoch", "lr", "img_s", "seconds", "time_s", "images", "margin", "active"}
    keys = sorted({k for r in records for k, v in r.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in bookkeeping})
    if not keys:
        return False
    fig = Figure(figsize=(7, 3.6), dpi=120)
    ax = fig.subplots()
    for k in keys[:8]:
        pts = [(r[x_key], r[k]) for r in records if isinstance(r.get(k), (int, float))]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=k, lw=1.2)
    if all(v > 0 for line in ax.get_lines() for v in line.get_ydata()):
        ax.set_yscale("log")
    ax.set_xlabel(x_key)
    ax.legend(fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    atomic_savefig(fig, path)
    return True


def _fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _fmt_gain(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f}"


METRIC_NAMES = ("fid", "kid", "fd", "precision", "recall", "density", "coverage", "is", "agreement",
                "real_agreement", "leakage_into_head", "real_leakage_into_head")


def _metrics_rows(evaluation: dict | None) -> list[tuple[str, str, str]]:
    """(metric, group, value) rows from evaluate/results.json: the Inception metrics of every group, and the
    overlap diagnostics (agreement, leakage into head) of every group."""
    rows: list[tuple[str, str, str]] = []
    if not evaluation:
        return rows
    for group in GROUPS:
        entry = evaluation.get(group) or {}
        rows += [(name, group, f"{entry[name]:.4g}") for name in METRIC_NAMES
                 if isinstance(entry.get(name), (int, float))]
    leakage = (evaluation.get("overlap") or {}).get("leakage") or {}
    for group in GROUPS:
        entry = leakage.get(group) or {}
        rows += [(name, group, f"{entry[name]:.3f}") for name in OVERLAP_NAMES
                 if isinstance(entry.get(name), (int, float))]
    return rows


# agreement is shown beside the judge's own accuracy on real images of the same classes, never alone
OVERLAP_NAMES = ("agreement", "judge_accuracy_real", "leakage_into_head")


def _judge_table(evaluation: dict | None) -> str:
    """Per class: the judge's agreement with generated images beside its accuracy on real test images."""
    leakage = ((evaluation or {}).get("overlap") or {}).get("leakage") or {}
    rows = leakage.get("per_class") or []
    if not rows:
        return ""
    classes = (evaluation or {}).get("classes") or []

    def cell(v: object) -> str:
        return "–" if not isinstance(v, (int, float)) else f"{v:.2f}"

    body = "".join(f"<tr><td>{html.escape(str(classes[r['class']] if r['class'] < len(classes) else r['class']))}"
                   f"</td><td>{r['group']}</td><td>{cell(r.get('agreement'))}</td>"
                   f"<td>{cell(r.get('judge_accuracy_real'))}</td></tr>" for r in rows)
    note = html.escape(leakage.get("judge_note") or "")
    return (f"<h2>Overlap judge per class</h2><p>{note}</p><table><tr><th>class</th><th>group</th>"
            f"<th>agreement (generated)</th><th>judge accuracy (real test images)</th></tr>{body}</table>")


def build_report(run_dir: str | os.PathLike) -> Path:
    """Write run_dir/report.html (and its PNGs in run_dir/report/) from whatever stages the run has."""
    run = RunDir(run_dir)
    out = run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    parts: list[str] = []
    title = run.path.name

    # a feature-space run compares its heads (real only / real + synthetic features); an image run its classifiers
    real = read_json(run.head("real") / "results.json") or read_json(run.classifier("real") / "results.json")
    synth = read_json(run.head("synth") / "results.json") or read_json(run.classifier("synth") / "results.json")
    evaluation = read_json(run.evaluate / "results.json")
    summary = read_json(run.summary) or {}

    # --- results
    rows = gain_table(real, synth)
    if real or synth:
        body = "".join(f"<tr><td>{r['group']}</td><td>{_fmt_pct(r['real'])}</td><td>{_fmt_pct(r['synth'])}</td>"
                       f"<td class='{'pos' if (r['gain'] or 0) > 0 else 'neg'}'>{_fmt_gain(r['gain'])}</td></tr>"
                       for r in rows)
        parts.append("<h2>Classifier accuracy (balanced test set, %)</h2><table><tr><th>group</th><th>real only</th>"
                     f"<th>real + synthetic</th><th>gain (points)</th></tr>{body}</table>")
    metric_rows = _metrics_rows(evaluation)
    if metric_rows:
        protocol = html.escape(json.dumps(evaluation.get("protocol", {}), indent=1))
        body = "".join(f"<tr><td>{html.escape(m)}</td><td>{g}</td><td>{v}</td></tr>" for m, g, v in metric_rows)
        parts.append(f"<h2>Generator metrics</h2><table><tr><th>metric</th><th>group</th><th>value</th></tr>{body}"
                     f"</table><details><summary>protocol</summary><pre>{protocol}</pre></details>")
        parts.append(_judge_table(evaluation))
    if summary.get("stages"):
        body = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f}</td></tr>" for k, v in summary["stages"].items())
        parts.append(f"<h2>Wall time per stage (s)</h2><table>{body}</table>")

    # --- data
    counts, classes = None, None
    for res in (real, synth):
        if train_counts_of(res):
            counts, classes = train_counts_of(res), res.get("classes")
            break
    if counts is None and summary.get("train_counts"):
        counts, classes = summary["train_counts"], summary.get("classes")
    if counts:
        classes = classes or [str(i) for i in range(len(counts))]
        plot_class_histogram(counts, classes, out / "class_histogram.png")
        names = ", ".join(f"{html.escape(str(c))} ({n:,})" for c, n in zip(classes, counts))
        parts.append("<h2>Training set</h2>" + _img_tag(out / "class_histogram.png", "class histogram", "70%")
                     + f"<p class='classes'>{len(classes)} classes (training images): {names}</p>")

    # --- class grids (latest)
    grids = sorted(run.grids.glob("*.png")) if run.grids.is_dir() else []
    if grids:
        parts.append(f"<h2>Class grid ({html.escape(grids[-1].stem)}), rows head to tail</h2>"
                     + _img_tag(grids[-1], "class grid", "60%"))
    synth_grid = run.synth / GRID
    if synth_grid.is_file():
        parts.append("<h2>Synthetic samples (synth/), rows head to tail</h2>"
                     + _img_tag(synth_grid, "synthetic samples", "60%"))

    # --- per-class accuracy
    if per_class_of(real) and per_class_of(synth):
        cls = real.get("classes") or [str(i) for i in range(len(per_class_of(real)))]
        groups = group_of(train_counts_of(real) or counts or [0] * len(cls))
        plot_per_class_comparison(real, synth, cls, groups, out / "per_class_accuracy.png")
        parts.append("<h2>Per-class accuracy</h2>" + _img_tag(out / "per_class_accuracy.png", "per-class accuracy"))

    # --- curves
    gen_metrics = read_jsonl(run.generator_metrics)
    if plot_curves(gen_metrics, out / "generator_curves.png", "generator training"):
        parts.append("<h2>Generator training curves</h2>" + _img_tag(out / "generator_curves.png", "curves", "80%"))
    for name in ("real", "synth"):
        recs = read_jsonl(run.classifier(name) / "metrics.jsonl")
        if plot_curves(recs, out / f"classifier_{name}_curves.png", f"classifier ({name})", x_key="epoch"):
            parts.append(f"<h2>Classifier ({name}) curves</h2>"
                         + _img_tag(out / f"classifier_{name}_curves.png", "curves", "80%"))

    # --- overlap heat-map
    for candidate in ("overlap.png", "overlap_matrix.png", "leakage.png"):
        p = run.evaluate / candidate
        if p.is_file():
            parts.append("<h2>Overlap: where each class's synthetic images are classified</h2>"
                         + _img_tag(p, "overlap heat-map", "60%"))
            break

    css = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:4px 10px;"
           "text-align:right}th{background:#f3f3f3}.pos{color:#080}.neg{color:#a00}h2{margin-top:1.6em}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>ltaug report: {html.escape(title)}</title>"
            f"<style>{css}</style></head><body><h1>ltaug run report</h1><p>run directory: <code>"
            f"{html.escape(str(run.path))}</code></p>{''.join(parts) or '<p>no stage has finished yet</p>'}"
            "</body></html>")
    path = run.report
    atomic_write_text(path, page)
    return path
