"""DDPM, CBDM and DiffROP side by side under one protocol, over several seeds (issue: evidence).

Three scales:
  toy      the 2-D Gaussian toy of method.md §3 (seconds): energy distance of each method's tail samples to the true
           tail, the share of tail samples in the head's region, and a figure of the densities and samples.
  mnist    the embedded MNIST-LT on the CPU: per seed, one real-only classifier; per method, a generator at the same
           budget, the same synthesis plan, a classifier on real + synthetic data, KID/FID per group (with
           --set 'evaluate.metrics=[kid,fid,overlap]'), and a judge (the classifier recipe trained once on balanced
           data) that reads every run's synthetic images: share judged their own class, share judged a head class.
  cifar10  the same on CIFAR-10-LT (../shared/data npz) with the ddpm-cifar preset: a GPU job.

Runs resume (re-run the same command after a stop); --report-only rebuilds the tables and figures from
OUT/results(.partial).json. Prints one JSON line per (method, seed) and writes OUT/results.json, OUT/results.md
(mean +- std per method and group), OUT/accuracy_by_group.png and OUT/tail_samples.png; for toy, OUT/toy2d.png.

  python benchmarks/compare_methods.py --scale toy --seeds 0 1 2 --out runs/compare-toy
  python benchmarks/compare_methods.py --scale toy --seeds 0 1 2 3 4 --toy-margins 0.005 0.01 0.02 0.05 0.1 \
      --toy-w 0 1 --out runs/toy-margins          # which margin and guidance work (table + toy_margins.png)
  python benchmarks/compare_methods.py --scale mnist --seeds 0 1 2 --out runs/compare-mnist \
      --set 'evaluate.metrics=[kid,fid,overlap]' --set evaluate.num_samples=300
  python benchmarks/compare_methods.py --scale cifar10 --seeds 0 1 2 --out runs/compare-cifar10 \
      --set generator.steps=50000 --set data.dataset=npz:../shared/data/cifar10_lt_r100_train.npz \
      --set data.test_dataset=npz:../shared/data/cifar10_test.npz
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ltaug.config.data import GROUPS

METHODS = ("ddpm", "cbdm", "diffrop")


def _mean_std(values: list, scale: float = 1.0, digits: int = 3) -> str:
    """'mean ± std' of the values that exist (sample std over seeds), each multiplied by `scale`."""
    values = [v * scale for v in values if v is not None]
    if not values:
        return "–"
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


# ----------------------------------------------------------------------------------------------- toy


def run_toy(seeds: list[int], methods: list[str], out: Path, steps: int, margin: float) -> list[dict]:
    import torch

    from ltaug.toy2d import HEAD_MEAN, HEAD_STD, energy_distance, sample_toy, toy_data, train_toy, true_tail

    torch.set_num_threads(1)
    ref = true_tail()

    def in_head_region(x: torch.Tensor) -> float:
        # the true densities decide: N((2,2), 1.5^2 I) above N((0,0), I)
        log_tail = -0.5 * (x ** 2).sum(1)
        log_head = -0.5 * ((x - HEAD_MEAN) ** 2).sum(1) / HEAD_STD ** 2 - 2 * torch.log(torch.tensor(HEAD_STD))
        return float((log_head > log_tail).float().mean())

    rows, samples = [], {}
    for seed in seeds:
        for method in methods:
            t0 = time.perf_counter()
            net = train_toy(method, margin=margin, steps=steps, seed=seed, data_seed=seed)
            tail = sample_toy(net, label=0, seed=100 + seed)
            row = {"scale": "toy", "method": method, "seed": seed, "energy_distance": energy_distance(tail, ref),
                   "tail_in_head_region": in_head_region(tail), "tail_mean": tail.mean(0).tolist(),
                   "seconds": time.perf_counter() - t0}
            print(json.dumps(row), flush=True)
            rows.append(row)
            if seed == seeds[0]:
                samples[method] = tail[:600]
    _toy_figure(samples, toy_data(seeds[0]), out / "toy2d.png", margin)
    return rows


def _toy_figure(samples: dict, data, path: Path, margin: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ltaug.files import atomic_savefig
    from ltaug.toy2d import HEAD_MEAN, HEAD_STD

    x, y = data
    grid = np.linspace(-4, 7, 200)
    gx, gy = np.meshgrid(grid, grid)
    tail_pdf = np.exp(-0.5 * (gx ** 2 + gy ** 2))
    head_pdf = np.exp(-0.5 * ((gx - HEAD_MEAN) ** 2 + (gy - HEAD_MEAN) ** 2) / HEAD_STD ** 2)
    fig, axes = plt.subplots(1, len(samples) + 1, figsize=(3.4 * (len(samples) + 1), 3.4), dpi=120, sharey=True)
    axes[0].scatter(x[y == 1, 0], x[y == 1, 1], s=2, c="#1f77b4", alpha=0.3, label="head (2000)")
    axes[0].scatter(x[y == 0, 0], x[y == 0, 1], s=14, c="#d62728", label="tail (20)")
    axes[0].set_title("training data")
    axes[0].legend(fontsize=7, loc="upper left")
    for ax, (method, s) in zip(axes[1:], samples.items()):
        s = s.numpy()
        ax.scatter(s[:, 0], s[:, 1], s=2, c="#d62728", alpha=0.4)
        ax.set_title(f"{method}: generated tail" + (f" (m={margin})" if "diffrop" in method else ""))
    for ax in axes:
        ax.contour(gx, gy, tail_pdf, levels=[0.05, 0.3, 0.7], colors="#d62728", linewidths=0.7)
        ax.contour(gx, gy, head_pdf, levels=[0.05, 0.3, 0.7], colors="#1f77b4", linewidths=0.7)
        ax.set_xlim(-4, 7)
        ax.set_ylim(-4, 7)
        ax.set_aspect("equal")
    fig.suptitle("2-D toy: true tail N(0, I) (red contours), head N((2,2), 1.5² I) (blue), imbalance 100", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def run_toy_margins(seeds: list[int], margins: list[float], ws: list[float], out: Path, steps: int) -> str:
    """Which margin and guidance work on the toy: energy distance of DiffROP's generated tail to the true tail, per
    margin and guidance weight w, against DDPM at the same w (the same seeds and budget). Writes toy_margins.png."""
    import torch

    from ltaug.toy2d import energy_distance, sample_toy, train_toy, true_tail

    torch.set_num_threads(1)
    ref = true_tail()
    ed: dict[tuple, list[float]] = {}
    for seed in seeds:
        nets = {("ddpm", 0.0): train_toy("ddpm", steps=steps, seed=seed, data_seed=seed)}
        for m in margins:
            nets[("diffrop", m)] = train_toy("diffrop", margin=m, steps=steps, seed=seed, data_seed=seed)
        for (method, m), net in nets.items():
            for w in ws:
                e = energy_distance(sample_toy(net, label=0, w=w, seed=100 + seed), ref)
                ed.setdefault((method, m, w), []).append(e)
                print(json.dumps({"scale": "toy-margins", "method": method, "margin": m, "w": w, "seed": seed,
                                  "energy_distance": e}), flush=True)
    lines = ["| method | margin | " + " | ".join(f"w = {w:g}" for w in ws) + " |",
             "|---|---|" + "---|" * len(ws)]
    for method, m in [("ddpm", 0.0)] + [("diffrop", m) for m in margins]:
        cells = []
        for w in ws:
            vals, base = ed[(method, m, w)], ed[("ddpm", 0.0, w)]
            wins = sum(v < b for v, b in zip(vals, base))
            cells.append(_mean_std(vals) + ("" if method == "ddpm" else f" ({wins}/{len(vals)} better)"))
        lines.append(f"| {method} | {'–' if method == 'ddpm' else f'{m:g}'} | " + " | ".join(cells) + " |")
    _margins_figure(ed, margins, ws, out / "toy_margins.png")
    return "\n".join(lines)


def _margins_figure(ed: dict, margins: list[float], ws: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ltaug.files import atomic_savefig

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for i, w in enumerate(ws):
        color = f"C{i}"
        means = [statistics.fmean(ed[("diffrop", m, w)]) for m in margins]
        sds = [statistics.stdev(ed[("diffrop", m, w)]) if len(ed[("diffrop", m, w)]) > 1 else 0 for m in margins]
        lo = [min(sd, mu * 0.95) for mu, sd in zip(means, sds)]  # keep the lower bar above 0 on the log axis
        ax.errorbar(margins, means, yerr=[lo, sds], marker="o", capsize=3, color=color, label=f"diffrop, w = {w:g}")
        ax.axhline(statistics.fmean(ed[("ddpm", 0.0, w)]), color=color, ls="--", lw=1, label=f"ddpm, w = {w:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")  # seeds differ by an order of magnitude under guidance
    ax.set_xlabel("hinge margin m")
    ax.set_ylabel("energy distance to the true tail")
    ax.set_title("2-D toy: DiffROP margin and guidance (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def toy_table(rows: list[dict], methods: list[str]) -> str:
    lines = ["| method | energy distance to true tail (lower is better) | tail samples in head region | seconds |",
             "|---|---|---|---|"]
    for m in methods:
        r = [x for x in rows if x["method"] == m]
        lines.append(f"| {m} | {_mean_std([x['energy_distance'] for x in r])} | "
                     f"{_mean_std([x['tail_in_head_region'] for x in r])} | {_mean_std([x['seconds'] for x in r])} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- images


def run_images(scale: str, seeds: list[int], methods: list[str], out: Path, sets: list[str]) -> list[dict]:
    from ltaug.config import load_recipe
    from ltaug.files import atomic_write_json
    from ltaug.pipeline import run_classifier_stage, run_pipeline
    from ltaug.rundir import RunDir

    base = "mnist_lt" if scale == "mnist" else "cifar10_lt"
    rows = []
    for seed in seeds:
        # one real-only classifier per seed, shared by every method (the baseline and the overlap judge)
        real_run = RunDir(out / f"seed{seed}" / "real")
        recipe = load_recipe(base, sets + [f"seed={seed}"])
        if not real_run.stage_done("classifier-real"):
            real_run.init(recipe)
            t0 = time.perf_counter()
            run_classifier_stage(recipe, real_run, "real", [], progress=False)
            real_run.finish_stage("classifier-real", time.perf_counter() - t0)
        for method in methods:
            recipe = load_recipe(base, sets + [f"seed={seed}", f"generator.loss={method}"])
            run = out / f"seed{seed}" / method
            summary = run_pipeline(recipe, run, progress=False, real_classifier=real_run.classifier("real"))
            ev = json.loads((run / "evaluate" / "results.json").read_text()) if (run / "evaluate").is_dir() else {}
            leakage = (ev.get("overlap") or {}).get("leakage", {})
            row = {"scale": scale, "method": method, "seed": seed,
                   "acc_real": summary["accuracy_real"], "acc_synth": summary["accuracy_synth"],
                   "gain": summary["gain"], "stages_s": summary["stages"],
                   "leakage_into_head": {g: (leakage.get(g) or {}).get("leakage_into_head") for g in GROUPS[1:]},
                   "agreement": {g: (leakage.get(g) or {}).get("agreement") for g in GROUPS[1:]},
                   "kid": {g: (ev.get(g) or {}).get("kid") for g in GROUPS},
                   "fid": {g: (ev.get(g) or {}).get("fid") for g in GROUPS}}
            print(json.dumps(row), flush=True)
            rows.append(row)
            atomic_write_json(out / "results.partial.json", {"scale": scale, "seeds": seeds, "sets": sets,
                                                             "rows": rows})  # survives a stop half-way
    return rows


def balanced_judge(out: Path, base: str, sets: list[str]) -> Path:
    """A reference classifier for the synthetic images: the same classifier recipe trained on the balanced training
    pool (imbalance ratio 1), so that it reads tail digits as well as head ones (the real-only classifier of the LT
    set cannot: it is the thing being fixed). Trained once per comparison, in OUT/judge."""
    from ltaug.config import load_recipe
    from ltaug.pipeline import run_classifier_stage
    from ltaug.rundir import RunDir

    run = RunDir(out / "judge")
    if not run.stage_done("classifier-judge"):
        # MNIST: the LT source with ratio 1 is the balanced pool; CIFAR: torchvision's balanced training set (an npz
        # LT file given with --set would otherwise be read as it is, long-tailed)
        balanced = ["data.imbalance_ratio=1"] if base == "mnist_lt" else ["data.dataset=cifar10-train"]
        recipe = load_recipe(base, sets + ["seed=0"] + balanced)
        run.init(recipe)
        t0 = time.perf_counter()
        run_classifier_stage(recipe, run, "judge", [], progress=False)
        run.finish_stage("classifier-judge", time.perf_counter() - t0)
    return run.classifier("judge")


def judge_synth(judge: Path, synth: Path) -> dict:
    """Per group of the generated class: the share of a run's synthetic images the balanced judge assigns to their
    own class (agreement) and to another, head class (leakage into head); ltaug.metrics.overlap's definitions."""
    from ltaug.classify.checkpoint import load_classifier, predict_proba
    from ltaug.data.synthetic import load_synthetic, real_counts
    from ltaug.metrics.overlap import leakage_summary, overlap_matrix

    model, meta = load_classifier(judge)
    ds = load_synthetic(synth)  # labelled in the generator's class order
    counts = real_counts(synth, ds.classes)
    probs = predict_proba(model, meta, ds.images)[:, [meta["classes"].index(c) for c in ds.classes]]
    summary = leakage_summary(overlap_matrix(probs, ds.labels, len(counts)), counts)
    return {g: {k: (summary.get(g) or {}).get(k) for k in ("agreement", "leakage_into_head")}
            for g in GROUPS[1:]}


def add_judge(rows: list[dict], out: Path, base: str, sets: list[str]) -> None:
    judge = balanced_judge(out, base, sets)
    acc = json.loads((judge / "results.json").read_text()).get("accuracy", {})
    for row in rows:
        row["judge"] = judge_synth(judge, out / f"seed{row['seed']}" / row["method"] / "synth")
        row["judge_accuracy"] = acc


def image_table(rows: list[dict], methods: list[str]) -> str:
    """Two tables: downstream accuracy in % (balanced test set), and generator quality with the overlap diagnostics."""
    pct = dict(scale=100.0, digits=1)
    acc = ["| training data | acc overall % | acc many % | acc medium % | acc few % |", "|---|---|---|---|---|"]
    real = [x["acc_real"] for x in rows if x["method"] == methods[0]]
    acc.append("| real only | " + " | ".join(_mean_std([r[g] for r in real], **pct) for g in GROUPS) + " |")
    for m in methods:
        r = [x for x in rows if x["method"] == m]
        acc.append(f"| real + {m} | " + " | ".join(_mean_std([x["acc_synth"][g] for x in r], **pct) for g in GROUPS)
                   + " |")
    gen = ["| generator | KID×10³ overall | KID×10³ many | KID×10³ medium | KID×10³ few | FID overall | "
           "few: leakage into head % | few: judged own class % | generator s | synthesize s | classifier s | "
           "evaluate s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        r = [x for x in rows if x["method"] == m]
        kid = " | ".join(_mean_std([(x.get("kid") or {}).get(g) for x in r], scale=1e3, digits=1) for g in GROUPS)
        fid = _mean_std([(x.get("fid") or {}).get("overall") for x in r], digits=1)
        secs = " | ".join(_mean_std([x["stages_s"].get(st) for x in r], digits=0)
                          for st in ("generator", "synth", "classifier-synth", "evaluate"))
        if all("judge" in x for x in r):  # the balanced judge, on the synthetic folder
            leak = [x["judge"]["few"]["leakage_into_head"] for x in r]
            agree = [x["judge"]["few"]["agreement"] for x in r]
        else:  # the run's own real-only classifier, on evaluate's samples
            leak = [x["leakage_into_head"]["few"] for x in r]
            agree = [x["agreement"]["few"] for x in r]
        gen.append(f"| {m} | {kid} | {fid} | {_mean_std(leak, **pct)} | {_mean_std(agree, **pct)} | {secs} |")
    return "\n".join(acc) + "\n\n" + "\n".join(gen)


def image_figures(rows: list[dict], methods: list[str], out: Path, seed: int) -> None:
    """accuracy_by_group.png (mean ± std over seeds, real only and real + each method) and tail_samples.png (the
    few-shot classes' synthetic images of every method, one seed, same image seeds across methods)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from ltaug.data import class_groups
    from ltaug.data.plot import GROUP_COLORS
    from ltaug.data.synthetic import finished
    from ltaug.files import atomic_savefig

    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=120)
    series = [("real only", [x["acc_real"] for x in rows if x["method"] == methods[0]])]
    series += [(f"real + {m}", [x["acc_synth"] for x in rows if x["method"] == m]) for m in methods]
    width = 0.8 / len(series)
    for i, (label, accs) in enumerate(series):
        means = [100 * statistics.fmean(a[g] for a in accs) for g in GROUPS]
        sds = [100 * statistics.stdev([a[g] for a in accs]) if len(accs) > 1 else 0 for g in GROUPS]
        ax.bar(np.arange(len(GROUPS)) + (i - (len(series) - 1) / 2) * width, means, width, yerr=sds, capsize=2,
               label=label, color="#999999" if i == 0 else f"C{i - 1}")
    ax.set_xticks(range(len(GROUPS)), GROUPS)
    ax.set_ylabel("balanced test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, ncol=len(series), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.set_title(f"classifier accuracy by class group (mean ± std over {len({x['seed'] for x in rows})} seeds)",
                 fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, out / "accuracy_by_group.png")
    plt.close(fig)

    # tail samples: rows = methods, columns = the first images of each few-shot class
    per_class = 6
    tiles, names = [], []
    for m in methods:
        synth = out / f"seed{seed}" / m / "synth"
        if not (synth / "plan.json").is_file():
            continue
        plan = json.loads((synth / "plan.json").read_text())
        counts = [r["real"] for r in plan["rows"]]
        few = class_groups(counts)["few"]
        manifest = finished(synth)
        row = []
        for c in few:
            imgs = sorted((r for r in manifest if r["label"] == c), key=lambda r: r["k"])[:per_class]
            row += [np.asarray(Image.open(synth / r["path"]).convert("L")) for r in imgs]
        if row:
            tiles.append(row)
            names.append(m)
    if not tiles:
        return
    n = min(len(r) for r in tiles)
    fig, axes = plt.subplots(len(tiles), 1, figsize=(n * 0.45 + 1.2, len(tiles) * 0.6 + 0.4), dpi=150, squeeze=False)
    for ax, row, m in zip(axes[:, 0], tiles, names):
        ax.imshow(np.concatenate(row[:n], axis=1), cmap="gray", vmin=0, vmax=255)
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_ylabel(m, rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title(f"synthetic images of the few-shot classes {few}, {per_class} each, seed {seed} "
                         f"(same image seeds for every method)", fontsize=7, color=GROUP_COLORS["few"])
    fig.tight_layout()
    atomic_savefig(fig, out / "tail_samples.png")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=("toy", "mnist", "cifar10"), default="toy")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe overrides for every run")
    ap.add_argument("--toy-steps", type=int, default=800)
    ap.add_argument("--toy-margin", type=float, default=0.02)
    ap.add_argument("--toy-margins", type=float, nargs="+", default=None,
                    help="toy only: scan these DiffROP margins (with --toy-w) instead of comparing methods")
    ap.add_argument("--toy-w", type=float, nargs="+", default=[0.0, 1.0], help="guidance weights of the margin scan")
    ap.add_argument("--report-only", action="store_true",
                    help="mnist/cifar10: rebuild results.md and the figures from OUT/results(.partial).json")
    args = ap.parse_args()
    out = (args.out or Path("runs") / f"compare-{args.scale}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.scale == "toy" and args.toy_margins:
        from ltaug.files import atomic_write_text

        table = run_toy_margins(args.seeds, args.toy_margins, args.toy_w, out, args.toy_steps)
        atomic_write_text(out / "toy_margins.md", table + "\n")
        print(table)
        return
    if args.scale == "toy":
        rows = run_toy(args.seeds, args.methods, out, args.toy_steps, args.toy_margin)
        table = toy_table(rows, args.methods)
    else:
        if args.report_only:
            src = out / "results.json" if (out / "results.json").is_file() else out / "results.partial.json"
            rows = json.loads(src.read_text())["rows"]
        else:
            rows = run_images(args.scale, args.seeds, args.methods, out, args.sets)
        add_judge(rows, out, "mnist_lt" if args.scale == "mnist" else "cifar10_lt", args.sets)
        table = image_table(rows, args.methods)
        image_figures(rows, args.methods, out, args.seeds[0])
        if args.report_only:
            from ltaug.files import atomic_write_json, atomic_write_text

            data = json.loads(src.read_text())
            atomic_write_json(src, dict(data, rows=rows))  # now with the judge's numbers
            atomic_write_text(out / "results.md", table + "\n")
            print(table)
            return
    from ltaug.files import atomic_write_json, atomic_write_text

    atomic_write_json(out / "results.json", {"scale": args.scale, "seeds": args.seeds, "sets": args.sets,
                                             "rows": rows, "wall_s": time.perf_counter() - t0})
    atomic_write_text(out / "results.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
