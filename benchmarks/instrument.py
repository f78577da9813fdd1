"""The 2-D instrument's studies (ltaug/instrument.py):

  screen  overlap forms, CBDM and class-balanced resampling against DDPM on a few screening seeds
  final   the chosen forms against DDPM on fresh paired seeds (A and B share seed, data, init and batches)
Both also record DDPM's convergence curve (its few-shot energy distance every --every steps).

  python benchmarks/instrument.py screen --seeds 100 101 102
  python benchmarks/instrument.py final  --seeds 0 1 2 3 4

Each run is one process with one thread (--jobs processes at once). Every finished run is kept in
benchmarks/results/instrument_<study>.json, so a study resumes where it stopped; the table goes to
benchmarks/results/instrument_<study>.md and the figure to docs/figures/instrument_<study>.png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch

from ltaug.files import atomic_savefig, atomic_write_text
from ltaug.instrument import LAYOUTS, TrainSpec, evaluate, generator_config, make_layout, train
from ltaug.stats import paired

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "figures"
WS = (0.0, 1.0)

# The forms compared: name -> (loss, class_power, diffrop options). `old default` is DiffROP's original form (the
# earlier shipped default) with its margin calibrated on the model (margin auto), so that its hinge acts as intended
# at this scale.
OLD = dict(variant="hinge", tau="increasing", negatives="uniform", stop_grad="positive", pair_weight="none",
           t_min=0.0, t_max=1.0, margin="auto")
FORMS = {
    # margin auto, as the CIFAR recipes set it: mse units depend on the data's scale
    "ddpm": ("ddpm", 1.0, {}),
    "cbdm": ("cbdm", 1.0, {}),
    "ddpm, class_power 0.5": ("ddpm", 0.5, {}),
    "diffrop old default": ("diffrop", 1.0, OLD),
    "diffrop old default, pair_weight count": ("diffrop", 1.0, {**OLD, "pair_weight": "count"}),
    "diffrop stop_grad negative": ("diffrop", 1.0, {**OLD, "stop_grad": "negative"}),
    "diffrop sg negative, more_frequent": ("diffrop", 1.0, {**OLD, "stop_grad": "negative",
                                                            "negatives": "more_frequent"}),
    "diffrop sg negative, more_frequent, rarity, tau constant, t < 0.7T": (
        "diffrop", 1.0, {**OLD, "stop_grad": "negative", "negatives": "more_frequent", "pair_weight": "rarity",
                         "tau": "constant", "t_max": 0.7}),
    "diffrop shipped default": ("diffrop", 1.0, {"margin": "auto"}),
}
SCREEN = [k for k in FORMS if k != "diffrop shipped default"]
FINAL = ["ddpm", "diffrop shipped default", "diffrop old default", "cbdm", "ddpm, class_power 0.5"]


def _run(job: tuple) -> tuple:
    """One (form, layout, seed): train once, evaluate at every w (or along the curve's snapshots)."""
    form, layout_name, seed, steps, record_every = job
    torch.set_num_threads(1)
    loss, q, options = FORMS[form]
    layout = make_layout(layout_name)
    t0 = time.time()
    net, snaps = train(layout, generator_config(loss, q, **options), seed, TrainSpec(steps=steps), record_every)
    out = {str(w): evaluate(net, layout, w, seed) for w in WS}
    curve = {str(s): {str(w): evaluate(m, layout, w, seed, n=300)["ed_few"] for w in WS} for s, m in snaps[:-1]}
    return job, {"result": out, "curve": curve, "seconds": time.time() - t0}


def _key(job) -> str:
    return "|".join(map(str, job[:4]))


def run_jobs(study: str, jobs: list, n_jobs: int) -> dict:
    path = RESULTS / f"instrument_{study}.json"
    done = json.loads(path.read_text())["runs"] if path.exists() else {}
    todo = [j for j in jobs if _key(j) not in done]
    print(f"{study}: {len(jobs) - len(todo)} runs kept, {len(todo)} to do", flush=True)
    with mp.get_context("spawn").Pool(n_jobs) as pool:
        for i, (job, res) in enumerate(pool.imap_unordered(_run, todo)):
            done[_key(job)] = res
            atomic_write_text(path, json.dumps({"runs": done}, indent=1))
            print(f"  [{i + 1}/{len(todo)}] {_key(job)}: {res['seconds']:.0f} s", flush=True)
    return done


def _get(done, form, layout, seed, steps, w, metric):
    return done[_key((form, layout, seed, steps))]["result"][str(w)][metric]


def table(done: dict, forms: list, seeds: list, steps: int, layouts=LAYOUTS) -> tuple[str, dict]:
    """Paired difference to DDPM (lower = better) of the few-shot energy distance and leak, per w, pooled over
    layouts (one pair per layout and seed), and per layout for the energy distance."""
    lines, summary = [], {}
    for w in WS:
        lines += [f"\n**w = {w:g}** (A - DDPM over {len(layouts)} layouts x {len(seeds)} seeds; negative = A better; "
                  "wins = pairs where A is lower)\n",
                  "| form | few-shot ED (DDPM mean) | few-shot ED A - DDPM | leak A - DDPM | all-class ED A - DDPM | "
                  + " | ".join(f"{lay} ED A - DDPM" for lay in layouts) + " |",
                  "|---|---|---|---|---|" + "---|" * len(layouts)]
        for form in forms:
            if form == "ddpm":
                continue
            row, summ = [], {}
            for metric in ("ed_few", "leak_few", "ed_all"):
                a = [_get(done, form, lay, s, steps, w, metric) for lay in layouts for s in seeds]
                b = [_get(done, "ddpm", lay, s, steps, w, metric) for lay in layouts for s in seeds]
                p = paired(a, b, lower_is_better=True)
                summ[metric] = dict(mean=p.mean, lo=p.lo, hi=p.hi, wins=p.wins, n=p.n, ddpm=float(np.mean(b)),
                                    a=float(np.mean(a)))
                row.append(p.text(digits=4 if metric != "leak_few" else 3))
            per_layout = []
            for lay in layouts:
                a = [_get(done, form, lay, s, steps, w, "ed_few") for s in seeds]
                b = [_get(done, "ddpm", lay, s, steps, w, "ed_few") for s in seeds]
                p = paired(a, b, lower_is_better=True)
                summ[f"ed_few_{lay}"] = dict(mean=p.mean, lo=p.lo, hi=p.hi, wins=p.wins, n=p.n)
                per_layout.append(p.text(digits=4))
            summary[f"{form}|{w:g}"] = summ
            lines.append(f"| {form} | {summ['ed_few']['ddpm']:.4f} | " + " | ".join(row + per_layout) + " |")
    return "\n".join(lines), summary


def figure(done: dict, forms: list, seeds: list, steps: int, name: str, layouts=LAYOUTS) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    labels = [f for f in forms if f != "ddpm"]
    for ax, w in zip(axes, WS):
        for i, form in enumerate(labels):
            d = [_get(done, form, lay, s, steps, w, "ed_few") - _get(done, "ddpm", lay, s, steps, w, "ed_few")
                 for lay in layouts for s in seeds]
            ax.scatter(d, np.full(len(d), i) + np.random.default_rng(i).uniform(-0.15, 0.15, len(d)), s=10)
            ax.plot([np.mean(d)], [i], "k|", ms=16)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_title(f"w = {w:g}: few-shot energy distance, A - DDPM (left = better)")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, FIGURES / f"instrument_{name}.png", dpi=110)


def curve_table(done: dict, args, study: str) -> None:
    """DDPM's few-shot energy distance (mean over seeds) against steps: the budget is where it has flattened."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    xs = list(range(args.every, args.steps + 1, args.every))
    lines = ["| layout | w | " + " | ".join(str(x) for x in xs) + " |", "|---|---|" + "---|" * len(xs)]
    for ax, w in zip(axes, WS):
        for lay in args.layouts:
            runs = [done[_key(("ddpm", lay, s, args.steps))] for s in args.seeds]
            ys = [np.mean([r["curve"][str(x)][str(w)] if x < args.steps else r["result"][str(w)]["ed_few"]
                           for r in runs]) for x in xs]
            ax.plot(xs, ys, marker="o", label=lay)
            lines.append(f"| {lay} | {w:g} | " + " | ".join(f"{v:.3f}" for v in ys) + " |")
        ax.set_yscale("log")
        ax.set_xlabel("training steps")
        ax.set_title(f"DDPM, few-shot energy distance, w = {w:g}")
        ax.legend()
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, FIGURES / f"instrument_{study}_curve.png", dpi=110)
    text = (f"# Instrument: DDPM convergence ({study} study)\n\nFew-shot classes' energy distance of DDPM's EMA net "
            f"after each budget, mean over seeds {' '.join(map(str, args.seeds))} (300 samples per class before the "
            f"last budget, 500 at it).\n\n" + "\n".join(lines) + "\n")
    atomic_write_text(RESULTS / f"instrument_{study}_curve.md", text)
    print(text)


def compare(args, study: str, forms: list) -> None:
    # Pair by pair (DDPM first), so that a stopped study leaves whole pairs; DDPM records the convergence curve.
    jobs = [(f, lay, s, args.steps, args.every if f == "ddpm" else 0) for s in args.seeds for lay in args.layouts
            for f in forms]
    done = run_jobs(study, jobs, args.jobs)
    curve_table(done, args, study)
    text, summary = table(done, forms, args.seeds, args.steps, args.layouts)
    figure(done, forms, args.seeds, args.steps, study, args.layouts)
    head = (f"# Instrument: {study}\n\n`python benchmarks/instrument.py {study} --seeds "
            f"{' '.join(map(str, args.seeds))} --steps {args.steps} --layouts {' '.join(args.layouts)}`; ten classes "
            f"(400 down to 4 points); few-shot = the 4 classes with < 20 points; ED = energy distance of 500 samples "
            "to 500 held-out true samples; leak = share of samples the true densities assign to another class.\n")
    atomic_write_text(RESULTS / f"instrument_{study}.md", head + text + "\n")
    atomic_write_text(RESULTS / f"instrument_{study}_summary.json", json.dumps(summary, indent=1))
    print(head + text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=("screen", "final"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=TrainSpec.steps)
    ap.add_argument("--every", type=int, default=500, help="steps between DDPM's curve points")
    ap.add_argument("--jobs", type=int, default=2, help="processes at once (one thread each)")
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    ap.add_argument("--forms", nargs="+", help="override the study's forms (names in FORMS)")
    args = ap.parse_args(argv)
    forms = args.forms or (SCREEN if args.study == "screen" else FINAL)
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        sys.exit(f"--forms {unknown}: unknown; valid: {list(FORMS)}")
    compare(args, args.study, ["ddpm"] + [f for f in forms if f != "ddpm"])


if __name__ == "__main__":
    main()
