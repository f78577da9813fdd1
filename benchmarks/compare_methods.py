"""DDPM, CBDM and DiffROP side by side under one protocol, over paired seeds: does a method help the tail?

Scales:
  toy      the 2-D Gaussian toy of method.md §3 (seconds): energy distance of each method's tail samples to the true
           tail, the share of tail samples in the head's region (the multi-class instrument is benchmarks/instrument.py)
  mnist    the embedded MNIST-LT on the CPU
  cifar10  the same on CIFAR-10-LT (a GPU job)

For an image scale, every method shares, per seed, the data, the synthesis plan and its image seeds, and the
classifier recipe. Per seed: real-only classifiers with every --classifier-losses loss (cross-entropy and the
long-tail losses); per method: a generator at the same budget, its synthetic tail, a classifier on real + synthetic
data with cross-entropy and with the long-tail loss that is best on the validation split (chosen from the real-only
runs, averaged over the seeds: never on the test set), KID per group of fresh samples against the test set, and a
judge (the classifier recipe on the balanced pool, never the test set) reading each method's synthetic tail. Tables:
accuracy per group (test set, read once per classifier), and paired differences to the reference method (mean,
95% t-interval, wins) for few-shot accuracy, judge agreement and KID few.

--curve trains each method once to the largest of --curve-steps, keeping a checkpoint at each, and measures judge
agreement and KID per group against the validation split at every one: the budget curve a comparison budget is chosen
from (where the curves flatten).

Runs resume (re-run the same command after a stop); --report-only rebuilds the tables and figures from OUT/results.json.
--image-seeds splits the generators over processes or machines sharing OUT (each process one core, say): every
process trains the baselines it finds missing, so start one first and the others once its baselines are in; finished
rows gather in OUT/results.partial.json, and the command without --image-seeds then writes the tables.

  python benchmarks/compare_methods.py --scale toy --seeds 0 1 2 --out runs/compare-toy
  python benchmarks/compare_methods.py --scale mnist --curve --curve-steps 300 600 1200 2400 --methods ddpm diffrop \
      --seeds 0 --out runs/mnist-curve
  python benchmarks/compare_methods.py --scale mnist --seeds 0 1 2 3 4 --out runs/compare-mnist5 \
      --set generator.steps=1200 --set 'evaluate.metrics=[kid,overlap]' --set evaluate.num_samples=300
  python benchmarks/compare_methods.py --scale cifar10 --seeds 0 1 2 --out runs/compare-cifar10 \
      --set generator.steps=50000 --set data.dataset=npz:../shared/data/cifar10_lt_r100_train.npz \
      --set data.test_dataset=npz:../shared/data/cifar10_test.npz --set data.val_dataset=cifar10-train
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from ltaug.config.data import GROUPS

METHODS = ("ddpm", "cbdm", "diffrop")
# What each method changes in the recipe (every other key is shared); --define NAME=key=value,key=value adds one.
METHOD_SETS = {"ddpm": ["generator.loss=ddpm"], "cbdm": ["generator.loss=cbdm"], "diffrop": ["generator.loss=diffrop"]}
LT_LOSSES = ("ce", "balanced_softmax", "logit_adjust", "ldam_drw")


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


# The long-tailed subset follows the seed (data.subset_seed = seed), so the intervals include which images were drawn;
# --fixed-subset keeps subset 0 for every seed (how the records before this rule were made).
SUBSET_FOLLOWS_SEED = True


def _recipe(base: str, sets: list[str], seed: int, method: str | None = None, extra: tuple = ()):
    from ltaug.config import load_recipe

    subset = [f"data.subset_seed={seed}"] if SUBSET_FOLLOWS_SEED else []
    return load_recipe(base, subset + list(sets) + [f"seed={seed}"] + (METHOD_SETS[method] if method else [])
                       + list(extra))


def _classifier(recipe, run, name: str, synthetic: list[Path], loss: str) -> dict:
    """One classifier of the study (resumes; a finished one is read back)."""
    from ltaug.config import load_recipe, to_dict
    from ltaug.files import read_json
    from ltaug.pipeline import run_classifier_stage

    folder = run.classifier(name)
    done = read_json(folder / "results.json")
    if done is not None:
        return done
    if not run.exists():
        run.init(recipe)
    r = load_recipe(to_dict(recipe), values={"classifier.loss": loss})
    return run_classifier_stage(r, run, name, synthetic, progress=False)


def _acc(res: dict, key: str = "accuracy") -> dict:
    return {g: (res.get(key) or {}).get(g) for g in GROUPS}


def run_baselines(base: str, seeds: list[int], out: Path, sets: list[str], losses: list[str]) -> dict:
    """Real-only classifiers, every loss, every seed: {loss: [{"test": acc, "val": acc} per seed]}."""
    from ltaug.rundir import RunDir

    table: dict[str, list] = {loss: [] for loss in losses}
    for seed in seeds:
        run = RunDir(out / f"seed{seed}" / "real")
        for loss in losses:
            res = _classifier(_recipe(base, sets, seed), run, f"real-{loss}", [], loss)
            table[loss].append({"seed": seed, "test": _acc(res), "val": _acc(res, "val_accuracy")})
            print(json.dumps({"baseline": loss, "seed": seed, **table[loss][-1]}), flush=True)
    return table


def best_loss(baselines: dict) -> str:
    """The long-tail loss with the best mean balanced validation accuracy over the seeds (never the test set)."""
    return max(baselines, key=lambda loss: statistics.fmean(r["val"]["overall"] for r in baselines[loss]))


def run_images(base: str, seeds: list[int], methods: list[str], out: Path, sets: list[str], lt_loss: str,
               judge: Path, finished_only: bool = False) -> list[dict]:
    from ltaug.files import read_json
    from ltaug.pipeline import run_pipeline
    from ltaug.rundir import RunDir

    rows = []
    for seed in seeds:
        real = RunDir(out / f"seed{seed}" / "real").classifier("real-ce")
        for method in methods:
            recipe = _recipe(base, sets, seed, method)
            run = RunDir(out / f"seed{seed}" / method)
            if finished_only and not (read_json(run.path / "summary.json") and
                                      read_json(run.classifier(f"synth-{lt_loss}") / "results.json")):
                print(f"seed {seed} {method}: not finished, left out (--finished-only)", flush=True)
                continue
            # the pipeline: generator, synthesis, the cross-entropy classifier on real + synthetic, evaluation; the
            # seed's real-only CE classifier is its baseline and overlap judge, shared by every method
            summary = run_pipeline(recipe, run.path, progress=False, real_classifier=real)
            lt = _classifier(recipe, run, f"synth-{lt_loss}", [run.synth], lt_loss)
            ev = read_json(run.evaluate / "results.json") or {}
            row = {"method": method, "seed": seed, "acc_synth_ce": summary["accuracy_synth"],
                   "val_synth_ce": summary["val_accuracy_synth"], f"acc_synth_{lt_loss}": _acc(lt),
                   f"val_synth_{lt_loss}": _acc(lt, "val_accuracy"),
                   "lt_loss": lt_loss, "stages_s": summary["stages"],
                   "kid": {g: (ev.get(g) or {}).get("kid") for g in GROUPS},
                   "fid": {g: (ev.get(g) or {}).get("fid") for g in GROUPS},
                   "judge": judge_synth(judge, run.synth), "judge_real": judge_real(judge, recipe)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            _record_partial(out / "results.partial.json", seeds, sets, row)
    return rows


def _record_partial(path: Path, seeds: list[int], sets: list[str], row: dict) -> None:
    """Add one finished (method, seed) row to the partial record, keeping the rows other processes wrote (several
    invocations with different --image-seeds may share one --out; the final full invocation rewrites everything)."""
    from ltaug.files import atomic_write_json, read_json

    old = read_json(path) or {}
    rows = [r for r in old.get("rows", []) if (r["method"], r["seed"]) != (row["method"], row["seed"])] + [row]
    rows.sort(key=lambda r: (r["seed"], r["method"]))
    atomic_write_json(path, {"seeds": sorted(set(old.get("seeds", [])) | set(seeds)), "sets": sets, "rows": rows})


def judge_synth(judge: Path, synth: Path) -> dict:
    """Per group of the generated class: the share of a run's synthetic images the judge assigns to their own class
    (agreement) and to another, head class (leakage into head); ltaug.metrics.overlap's definitions."""
    from ltaug.classify.checkpoint import load_classifier, predict_proba
    from ltaug.data.synthetic import load_synthetic, real_counts
    from ltaug.metrics.overlap import leakage_summary, overlap_matrix

    model, meta = load_classifier(judge)
    ds = load_synthetic(synth)  # labelled in the generator's class order
    counts = real_counts(synth, ds.classes)
    probs = predict_proba(model, meta, ds.images)[:, [meta["classes"].index(c) for c in ds.classes]]
    summary = leakage_summary(overlap_matrix(probs, ds.labels, len(counts)), counts)
    return {g: {k: (summary.get(g) or {}).get(k) for k in ("agreement", "leakage_into_head")} for g in GROUPS[1:]}


def judge_real(judge: Path, recipe) -> dict:
    """The same reading of the real test images of each group (what the judge does to real data), beside its reading
    of the synthetic ones: a tail class the judge misreads when real says nothing about the generator."""
    from ltaug.classify.checkpoint import load_classifier, predict_proba
    from ltaug.data import load_from_config
    from ltaug.metrics.overlap import leakage_summary, overlap_matrix

    model, meta = load_classifier(judge)
    test = load_from_config(recipe.data, "test")
    counts = load_from_config(recipe.data).counts
    probs = predict_proba(model, meta, test.images)[:, [meta["classes"].index(c) for c in test.classes]]
    summary = leakage_summary(overlap_matrix(probs, test.labels, len(counts)), counts)
    return {g: {k: (summary.get(g) or {}).get(k) for k in ("agreement", "leakage_into_head")} for g in GROUPS[1:]}


def run_curve(base: str, seeds: list[int], methods: list[str], out: Path, sets: list[str], steps: list[int],
              judge: Path, num_samples: int) -> list[dict]:
    """The budget curve: per method and seed, one generator trained to max(steps) with a checkpoint kept at each
    step of the list; at each, the judge's agreement on fresh samples (every class) and KID per group against the
    validation split (never the test set)."""
    import dataclasses

    from ltaug.classify.checkpoint import load_classifier
    from ltaug.config import EvaluateConfig
    from ltaug.diffusion.checkpoint import list_checkpoints, load_generator
    from ltaug.diffusion.train import train_generator
    from ltaug.files import atomic_write_json, read_json
    from ltaug.metrics.agreement import judge_agreement
    from ltaug.metrics.evaluate import evaluate
    from ltaug.rundir import RunDir

    rows = []
    clf = load_classifier(judge)
    for seed in seeds:
        for method in methods:
            gcd = math.gcd(*steps)
            extra = (f"generator.steps={max(steps)}", f"generator.ckpt_every={gcd}", "generator.keep_ckpts=1000",
                     f"generator.grid_every={max(steps)}")
            recipe = _recipe(base, sets, seed, method, extra)
            run = RunDir(out / f"seed{seed}" / method)
            if not run.stage_done("generator"):
                t0 = time.perf_counter()
                train_generator(recipe, run.path, resume=bool(list_checkpoints(run.checkpoints)), progress=False)
                run.finish_stage("generator", time.perf_counter() - t0)
            for ckpt in list_checkpoints(run.checkpoints):
                step = int(ckpt.stem.split("-")[1])
                if step not in steps:
                    continue
                cached = read_json(run.path / f"curve-{step:07d}.json")
                if cached is None:
                    gen = load_generator(ckpt)
                    ev = evaluate(ckpt, EvaluateConfig(metrics=["kid"], reference=recipe.data.dataset,
                                                       reference_split="val", num_samples=num_samples,
                                                       min_samples=2, kid_subset_size=100, batch_size=50),
                                  dataclasses.replace(recipe.synth), recipe.data, seed=seed, device="cpu",
                                  out_dir=run.path / f"curve-{step:07d}", progress=False)
                    cached = {"method": method, "seed": seed, "step": step,
                              "judge": judge_agreement(gen, clf, recipe.synth, per_class=20),
                              "kid": {g: (ev.get(g) or {}).get("kid") for g in GROUPS}}
                    atomic_write_json(run.path / f"curve-{step:07d}.json", cached)
                print(json.dumps(cached), flush=True)
                rows.append(cached)
    return rows


def curve_figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ltaug.files import atomic_savefig

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), dpi=120)
    panels = [("judge agreement, few-shot classes", lambda r: r["judge"]["few"]["agreement"]),
              ("KID x 1e3, few-shot classes (vs validation)", lambda r: 1e3 * r["kid"]["few"]),
              ("KID x 1e3, all classes (vs validation)", lambda r: 1e3 * r["kid"]["overall"])]
    for ax, (title, get) in zip(axes, panels):
        for i, method in enumerate(sorted({r["method"] for r in rows})):
            by_step: dict[int, list] = {}
            for r in rows:
                if r["method"] == method:
                    by_step.setdefault(r["step"], []).append(get(r))
            xs = sorted(by_step)
            ys = [statistics.fmean(by_step[x]) for x in xs]
            ax.plot(xs, ys, marker="o", color=f"C{i}", label=method)
        ax.set_xscale("log")
        steps = sorted({r["step"] for r in rows})
        ax.set_xticks(steps, [str(x) for x in steps])  # the measured budgets, not log-scale minor labels
        ax.minorticks_off()
        ax.set_xlabel("generator steps")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"MNIST-LT budget curve (mean over seeds {sorted({r['seed'] for r in rows})})", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def image_tables(baselines: dict, rows: list[dict], methods: list[str], lt_loss: str, reference: str) -> str:
    """Accuracy tables (test set), paired differences to the reference method, and generator quality."""
    from ltaug.stats import mean_std, paired

    pct = dict(scale=100.0, digits=1)
    lines = ["**Balanced test accuracy (%), mean ± sd over seeds**", "",
             "| training data | loss | overall | many | medium | few | val overall (choice) |",
             "|---|---|---|---|---|---|---|"]
    for loss, runs in baselines.items():
        mark = " (best on val)" if loss == lt_loss else ""
        lines.append(f"| real only | {loss}{mark} | " + " | ".join(mean_std([r["test"][g] for r in runs], **pct)
                                                                 for g in GROUPS)
                     + f" | {mean_std([r['val']['overall'] for r in runs], **pct)} |")
    for loss_key, val_key, loss in (("acc_synth_ce", "val_synth_ce", "ce"),
                                    (f"acc_synth_{lt_loss}", f"val_synth_{lt_loss}", lt_loss)):
        for m in methods:
            r = [x for x in rows if x["method"] == m]
            val = [x[val_key]["overall"] for x in r if x.get(val_key)]  # the classifier loss is chosen on it too
            lines.append(f"| real + {m} | {loss} | " + " | ".join(mean_std([x[loss_key][g] for x in r], **pct)
                                                               for g in GROUPS)
                         + f" | {mean_std(val, **pct) if len(val) == len(r) else ''} |")
    seeds = sorted({x["seed"] for x in rows})

    def series(m, get):
        by_seed = {x["seed"]: x for x in rows if x["method"] == m}
        return [get(by_seed[s]) if s in by_seed else None for s in seeds]

    lines += ["", f"**Paired differences to {reference} (same seed, data, plan): mean [95% interval], wins / seeds**",
              "", f"| method | few acc, ce (points) | few acc, {lt_loss} (points) | judge agreement few (points) | "
              "judge leakage into head, few (points; lower better) | KID×10³ few (lower better) |",
              "|---|---|---|---|---|---|"]
    for m in methods:
        if m == reference:
            continue
        cells = []
        for get, lower in ((lambda x: x["acc_synth_ce"]["few"], False),
                           (lambda x: x[f"acc_synth_{lt_loss}"]["few"], False),
                           (lambda x: x["judge"]["few"]["agreement"], False),
                           (lambda x: x["judge"]["few"]["leakage_into_head"], True)):
            cells.append(paired(series(m, get), series(reference, get), lower_is_better=lower).text(scale=100))
        cells.append(paired(series(m, lambda x: x["kid"]["few"]), series(reference, lambda x: x["kid"]["few"]),
                            lower_is_better=True).text(scale=1e3))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    # does the synthetic tail add anything over a good long-tail loss?
    base_few = {r["seed"]: r["test"]["few"] for r in baselines[lt_loss]}
    lines += ["", f"**Real + synthetic against real only, both with {lt_loss}: few-shot accuracy (points)**", "",
              "| method | difference [95% interval], wins |", "|---|---|"]
    for m in methods:
        lines.append(f"| {m} | " + paired(series(m, lambda x: x[f"acc_synth_{lt_loss}"]["few"]),
                                          [base_few.get(s) for s in seeds]).text(scale=100) + " |")
    lines += ["", "**Generator quality (KID×10³ of fresh samples vs the test set; the judge on the synthetic tail)**",
              "", "| generator | KID overall | KID many | KID medium | KID few | judge agreement few % | "
              "judge leakage into head few % | generator s | synthesis s |", "|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        r = [x for x in rows if x["method"] == m]
        kid = " | ".join(mean_std([(x.get("kid") or {}).get(g) for x in r], scale=1e3) for g in GROUPS)
        judge = " | ".join(mean_std([x["judge"]["few"][k] for x in r], **pct) for k in ("agreement",
                                                                                        "leakage_into_head"))
        secs = " | ".join(mean_std([x["stages_s"].get(st) for x in r], digits=0) for st in ("generator", "synth"))
        lines.append(f"| {m} | {kid} | {judge} | {secs} |")
    return "\n".join(lines)


def tail_figure(rows: list[dict], methods: list[str], out: Path, seed: int) -> None:
    """tail_samples.png: the few-shot classes' synthetic images of every method, one seed, same image seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from ltaug.data import class_groups
    from ltaug.data.plot import GROUP_COLORS
    from ltaug.data.synthetic import finished, real_counts
    from ltaug.files import atomic_savefig

    per_class = 6
    tiles, names, few = [], [], []
    for m in methods:
        synth = out / f"seed{seed}" / m / "synth"
        if not (synth / "plan.json").is_file():
            continue
        plan = json.loads((synth / "plan.json").read_text())
        counts = real_counts(synth, plan["classes"])
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
    ap.add_argument("--image-seeds", type=int, nargs="+", default=None,
                    help="train generators for these of --seeds only (the real-only baselines and the choice of the "
                         "long-tail loss still use every seed): split one comparison over several processes/machines")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--define", action="append", default=[],
                    help="NAME=key=value,key=value: a method as recipe overrides (e.g. a DiffROP form)")
    ap.add_argument("--reference", default="ddpm", help="the method every paired difference is taken against")
    ap.add_argument("--classifier-losses", nargs="+", default=list(LT_LOSSES))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe overrides for every run")
    ap.add_argument("--curve", action="store_true", help="the budget curve instead of the comparison")
    ap.add_argument("--curve-steps", type=int, nargs="+", default=[300, 600, 1200, 2400])
    ap.add_argument("--curve-samples", type=int, default=200, help="fresh samples per checkpoint for KID")
    ap.add_argument("--toy-steps", type=int, default=800)
    ap.add_argument("--toy-margin", type=float, default=0.02)
    ap.add_argument("--toy-margins", type=float, nargs="+", default=None,
                    help="toy only: scan these DiffROP margins (with --toy-w) instead of comparing methods")
    ap.add_argument("--toy-w", type=float, nargs="+", default=[0.0, 1.0], help="guidance weights of the margin scan")
    ap.add_argument("--fixed-subset", action="store_true",
                    help="every seed on long-tailed subset 0 (the protocol of the records made before the subset "
                         "followed the seed)")
    ap.add_argument("--finished-only", action="store_true",
                    help="tables from the finished (method, seed) runs only, starting none: a comparison still "
                         "under way (paired statistics over the seeds where both methods finished)")
    ap.add_argument("--report-only", action="store_true",
                    help="mnist/cifar10: rebuild results.md and the figures from OUT/results.json")
    args = ap.parse_args()
    global SUBSET_FOLLOWS_SEED
    SUBSET_FOLLOWS_SEED = not args.fixed_subset
    for d in args.define:
        name, _, sets = d.partition("=")
        METHOD_SETS[name] = [x for x in sets.split(",") if x]
    out = (args.out or Path("runs") / f"compare-{args.scale}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    from ltaug.files import atomic_write_json, atomic_write_text

    if args.scale == "toy" and args.toy_margins:
        table = run_toy_margins(args.seeds, args.toy_margins, args.toy_w, out, args.toy_steps)
        atomic_write_text(out / "toy_margins.md", table + "\n")
        print(table)
        return
    if args.scale == "toy":
        rows = run_toy(args.seeds, args.methods, out, args.toy_steps, args.toy_margin)
        table = toy_table(rows, args.methods)
        atomic_write_json(out / "results.json", {"scale": "toy", "seeds": args.seeds, "rows": rows})
        atomic_write_text(out / "results.md", table + "\n")
        print(table)
        return

    from ltaug.pipeline import train_judge
    from ltaug.rundir import RunDir

    base = "mnist_lt" if args.scale == "mnist" else "cifar10_lt"
    judge = train_judge(_recipe(base, args.sets, 0), RunDir(out / "judge"))
    if args.curve:
        rows = run_curve(base, args.seeds, args.methods, out, args.sets, sorted(args.curve_steps), judge,
                         args.curve_samples)
        atomic_write_json(out / "curve.json", {"scale": args.scale, "seeds": args.seeds, "sets": args.sets,
                                               "methods": {m: METHOD_SETS[m] for m in args.methods}, "rows": rows,
                                               "wall_s": time.perf_counter() - t0})
        curve_figure(rows, out / "budget_curve.png")
        return
    if args.report_only:
        data = json.loads((out / "results.json").read_text())
        baselines, rows, lt_loss = data["baselines"], data["rows"], data["lt_loss"]
    else:
        baselines = run_baselines(base, args.seeds, out, args.sets, args.classifier_losses)
        lt_loss = best_loss({k: v for k, v in baselines.items() if k != "ce"} or baselines)
        rows = run_images(base, args.image_seeds or args.seeds, args.methods, out, args.sets, lt_loss, judge,
                          args.finished_only)
        if args.image_seeds and set(args.image_seeds) != set(args.seeds):
            print(f"generators of seeds {args.image_seeds} done; run again without --image-seeds for the table")
            return
        atomic_write_json(out / "results.json", {
            "scale": args.scale, "seeds": args.seeds, "sets": args.sets, "reference": args.reference,
            "methods": {m: METHOD_SETS[m] for m in args.methods}, "lt_loss": lt_loss,
            "lt_loss_rule": "best mean balanced validation accuracy of the real-only classifiers over the seeds",
            "baselines": baselines, "rows": rows, "wall_s": time.perf_counter() - t0,
            "complete": all(any((r["method"], r["seed"]) == (m, sd) for r in rows)
                            for m in args.methods for sd in args.seeds)})
    table = image_tables(baselines, rows, args.methods, lt_loss, args.reference)
    tail_figure(rows, args.methods, out, args.seeds[0])
    atomic_write_text(out / "results.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
