"""DDPM, CBDM, DiffROP and class-balanced DDPM in the feature space of CIFAR-10-LT / CIFAR-100-LT, over paired seeds.

One protocol for every method (LDMLR's setting, ltaug.features): the backbone's features of the long-tailed train
set, of a validation split and of the test set are computed once (OUT/shared/features/, cached); per seed, linear
heads on the real features with each long-tail loss (the real-only baselines: cRT); per method and seed, a diffusion
model on the standardized training features at the same budget, the plan's synthetic features (fill to the head
count), heads on real + synthetic features with each long-tail loss, and the generator measured in the feature space
(Frechet distance, precision / recall, and the judge's reading of generated and of real held-out features per class).

Choices on validation only: the long-tail loss of every row is the one with the best mean validation accuracy over
the seeds (per method); the test set is read once per head. The validation split is a fixed, stratified part of
the balanced test set (data.val_from_test), since the shared npz files hold no balanced training pool; the test
numbers are on the rest. The shared files hold one long-tailed subset, so the seeds vary the generator, the
synthetic samples and the heads, not which images were drawn.

  python benchmarks/compare_features.py --dataset cifar10 --backbone runs/backbone-c10/classifier-real \
      --seeds 0 1 2 3 4 --out runs/features-c10
  python benchmarks/compare_features.py --dataset cifar10 --backbone inception --set features.resolution=128 ...
  python benchmarks/compare_features.py ... --report-only      # tables from OUT/results.json

Runs resume: every finished head, generator and synthetic set is reused when the command is run again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from ltaug.config import load_recipe
from ltaug.config.data import GROUPS
from ltaug.diffusion.checkpoint import list_checkpoints, load_generator
from ltaug.diffusion.train import train_generator
from ltaug.features.evaluate import evaluate_features
from ltaug.features.pipeline import extract_features, link_features, load_head, train_head_stage
from ltaug.features.store import load_split
from ltaug.features.synth import synthesize_features
from ltaug.files import atomic_write_json, atomic_write_text, read_json
from ltaug.rundir import RunDir
from ltaug.stats import mean_std, paired

METHOD_SETS = {"ddpm": ["generator.loss=ddpm"], "cbdm": ["generator.loss=cbdm"],
               "diffrop": ["generator.loss=diffrop", "generator.diffrop.margin=auto"],
               "ddpm_cp05": ["generator.loss=ddpm", "generator.class_power=0.5"]}
LT_LOSSES = ("ce", "balanced_softmax", "ldam_drw")
VAL_PER_CLASS = {"cifar10": 200, "cifar100": 30}


def base_recipe(args, extra: list[str] = ()):
    data = Path(args.data_dir)
    sets = [f"data.dataset=npz:{data / f'{args.dataset}_lt_r100_train.npz'}",
            f"data.test_dataset=npz:{data / f'{args.dataset}_test.npz'}",
            f"data.val_from_test={VAL_PER_CLASS[args.dataset]}", f"features.backbone={args.backbone}",
            f"device={args.device}", *args.set, *extra]
    return load_recipe(f"{args.dataset}_lt_features", sets=sets)


def heads(recipe, run: RunDir, kind: str, synthetic: Path | None) -> dict:
    """A head with each long-tail loss (cached in RUN/head-KIND-LOSS/results.json)."""
    out = {}
    for loss in LT_LOSSES:
        name = f"{kind}-{loss}"
        res = read_json(run.head(name) / "results.json")
        if res is None:
            train_head_stage(load_recipe(recipe, sets=[f"classifier.loss={loss}"]), run, name, synthetic)
            res = read_json(run.head(name) / "results.json")
        out[loss] = {k: res[k] for k in ("accuracy", "val_accuracy", "per_class", "train_time_s")}
    return out


def method_row(args, method: str, seed: int, shared: RunDir, judge_loss: str) -> dict:
    run = RunDir(Path(args.out) / f"{method}-s{seed}")
    done = read_json(run.path / "row.json")
    if done is not None:
        return done
    recipe = base_recipe(args, [f"seed={seed}", *METHOD_SETS[method]])
    if not run.exists():
        run.init(recipe)
    link_features(shared, run)
    t0 = time.perf_counter()
    if not run.stage_done("generator"):
        train_generator(recipe, run.path, resume=bool(list_checkpoints(run.checkpoints)), progress=False)
        run.finish_stage("generator", time.perf_counter() - t0)
    gen_s = run.stage_info("generator")["seconds"]
    device = torch.device(args.device if args.device != "auto" else "cpu")
    gen = load_generator(run.path, device=device)
    t0 = time.perf_counter()
    synth = synthesize_features(gen, recipe.synth, run.synth, seed=seed, device=device, progress=False)
    synth_s = time.perf_counter() - t0
    hs = heads(recipe, run, "synth", run.synth)
    judge = load_head(RunDir(Path(args.out) / f"real-s{seed}").head(f"real-{judge_loss}"))
    train = load_split(run.features, "train")
    n = min(recipe.evaluate.num_samples, 500 * train.num_classes)
    ev = {split: evaluate_features(gen, judge, load_split(run.features, split), train.counts, recipe.synth,
                                   num_samples=n, seed=seed, device=device) for split in ("val", "test")}
    row = {"method": method, "seed": seed, "heads": hs, "evaluate": ev, "generator_s": gen_s, "synth_s": synth_s,
           "synth": synth, "judge": f"real-only head ({judge_loss})"}
    atomic_write_json(run.path / "row.json", row)
    return row


def best_loss(rows: list[dict]) -> str:
    """The long-tail loss with the best mean validation accuracy (overall) over the rows' seeds."""
    return max(LT_LOSSES, key=lambda lo: statistics.fmean(r["heads"][lo]["val_accuracy"]["overall"] for r in rows))


def run_all(args) -> dict:
    out = Path(args.out)
    shared = RunDir(out / "shared")
    recipe = base_recipe(args)
    if not shared.exists():
        shared.init(recipe)
    t0 = time.perf_counter()
    info = extract_features(recipe, shared, progress=True)
    print(json.dumps({"features": info, "seconds": time.perf_counter() - t0}), flush=True)
    if args.extract_only:
        return {}
    results = read_json(out / "results.json") or {"real": [], "methods": []}
    real_rows = []
    for seed in args.seeds:
        run = RunDir(out / f"real-s{seed}")
        if not run.exists():
            run.init(base_recipe(args, [f"seed={seed}"]))
        link_features(shared, run)
        real_rows.append({"seed": seed, "heads": heads(base_recipe(args, [f"seed={seed}"]), run, "real", None)})
    real_loss = best_loss(real_rows)
    rows = [r for r in results["methods"] if r["seed"] in args.seeds and r["method"] in args.methods]
    for method in args.methods:
        for seed in args.seeds:
            if any(r["method"] == method and r["seed"] == seed for r in rows):
                continue
            t0 = time.perf_counter()
            rows.append(method_row(args, method, seed, shared, real_loss))
            print(json.dumps({"method": method, "seed": seed, "seconds": time.perf_counter() - t0}), flush=True)
            results = {"real": real_rows, "methods": rows, "real_loss": real_loss, "features": info,
                       "backbone_e2e": read_json(Path(args.backbone) / "results.json") if args.backbone not in
                       ("inception",) else None, "args": {k: v for k, v in vars(args).items() if k != "out"}}
            atomic_write_json(out / "results.json", results)
    return results


def pct(p, digits=1) -> str:
    return p.text(scale=100, digits=digits)


def report(out: Path) -> str:
    res = read_json(out / "results.json")
    real, rows, real_loss = res["real"], res["methods"], res["real_loss"]
    seeds = sorted({r["seed"] for r in real})
    methods = [m for m in METHOD_SETS if any(r["method"] == m for r in rows)]
    lines = [f"# Feature space, {res['args']['dataset']}-LT (ratio 100), backbone {res['args']['backbone']}", "",
             f"Seeds {seeds}; validation: {VAL_PER_CLASS[res['args']['dataset']]} test images per class (fixed, "
             "stratified), test: the rest. Long-tail loss of each row chosen on mean validation accuracy.", ""]
    e2e = res.get("backbone_e2e")
    lines += ["## Test accuracy (%), mean ± sd over seeds", "", "| rows | loss | overall | many | medium | few |",
              "|---|---|---|---|---|---|"]
    if e2e:
        lines.append("| backbone's own head (end to end, one training) | " + e2e.get("loss", "ce") + " | "
                     + " | ".join(f"{100 * e2e['accuracy'][g]:.1f}" if e2e['accuracy'].get(g) is not None else "–"
                                  for g in GROUPS) + " |")
    for lo in LT_LOSSES:
        lines.append(f"| real only (cRT head) | {lo}{' (chosen)' if lo == real_loss else ''} | "
                     + " | ".join(mean_std([r["heads"][lo]["accuracy"][g] for r in real], 100) for g in GROUPS)
                     + " |")
    chosen = {}
    for m in methods:
        mr = sorted((r for r in rows if r["method"] == m), key=lambda r: r["seed"])
        chosen[m] = (best_loss(mr), mr)
        lo = chosen[m][0]
        lines.append(f"| real + {m} | {lo} | " + " | ".join(mean_std([r["heads"][lo]["accuracy"][g] for r in mr],
                                                                      100) for g in GROUPS) + " |")
    base = {r["seed"]: r["heads"][real_loss]["accuracy"] for r in real}
    lines += ["", f"## Paired difference to the real-only head ({real_loss}), points: mean [95% CI], wins", "",
              "| method | overall | many | medium | few |", "|---|---|---|---|---|"]
    for m, (lo, mr) in chosen.items():
        lines.append(f"| {m} ({lo}) | " + " | ".join(
            pct(paired([r["heads"][lo]["accuracy"][g] for r in mr], [base[r["seed"]][g] for r in mr]))
            for g in GROUPS) + " |")
    if "ddpm" in chosen:
        d_lo, d_rows = chosen["ddpm"]
        dd = {r["seed"]: r for r in d_rows}
        lines += ["", "## Paired difference to DDPM", "", "accuracy (points), each with its chosen loss:", "",
                  "| method | overall | many | medium | few |", "|---|---|---|---|---|"]
        for m, (lo, mr) in chosen.items():
            if m == "ddpm":
                continue
            lines.append(f"| {m} | " + " | ".join(pct(paired(
                [r["heads"][lo]["accuracy"][g] for r in mr], [dd[r["seed"]]["heads"][d_lo]["accuracy"][g] for r in mr
                                                              if r["seed"] in dd])) for g in GROUPS) + " |")
        lines += ["", "generator in the feature space (test features): lower FD is better; agreement: the judge reads "
                  "the class; leakage: a medium / few class read as a many class", "",
                  "| method | metric | overall | many | medium | few |", "|---|---|---|---|---|---|"]
        for metric, lower in (("fd", True), ("precision", False), ("recall", False), ("agreement", False),
                              ("leakage_into_head", True)):
            for m, (lo, mr) in chosen.items():
                if m == "ddpm":
                    continue

                def val(r, g, metric=metric):
                    e = r["evaluate"]["test"].get(g)
                    return e.get(metric) if e else None
                lines.append(f"| {m} | {metric} | " + " | ".join(paired(
                    [val(r, g) for r in mr], [val(dd[r["seed"]], g) for r in mr], lower_is_better=lower).text(
                    scale=1 if metric == "fd" else 100, digits=2 if metric == "fd" else 1) for g in GROUPS) + " |")
    lines += ["", "## The overlap DiffROP targets: share of a class's features the judge reads as a many class (%)",
              "", "judge: the real-only head chosen on validation; real = held-out test features of the class", "",
              "| method | group | generated | real | generated - real |", "|---|---|---|---|---|"]
    for m, (lo, mr) in chosen.items():
        for g in ("medium", "few"):
            gen_v = [r["evaluate"]["test"][g]["leakage_into_head"] for r in mr if r["evaluate"]["test"].get(g)]
            real_v = [r["evaluate"]["test"][g]["real_leakage_into_head"] for r in mr if r["evaluate"]["test"].get(g)]
            lines.append(f"| {m} | {g} | {mean_std(gen_v, 100)} | {mean_std(real_v, 100)} | "
                         f"{pct(paired(gen_v, real_v, lower_is_better=True))} |")
    lines += ["", "## Time per run (s), mean over seeds", "", "| method | generator | synthesis |", "|---|---|---|"]
    for m, (lo, mr) in chosen.items():
        lines.append(f"| {m} | {statistics.fmean(r['generator_s'] for r in mr):.0f} | "
                     f"{statistics.fmean(r['synth_s'] for r in mr):.1f} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "results.md", text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("cifar10", "cifar100"), default="cifar10")
    ap.add_argument("--backbone", required=True, help="inception, or a classifier folder (the LT-trained backbone)")
    ap.add_argument("--data-dir", default=os.environ.get("LTAUG_DATA_DIR", "../shared/data"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=list(METHOD_SETS), choices=list(METHOD_SETS))
    ap.add_argument("--set", action="append", default=[], help="recipe override for every run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True)
    ap.add_argument("--extract-only", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not args.report_only:
        run_all(args)
    if not args.extract_only and (Path(args.out) / "results.json").is_file():
        print(report(Path(args.out)))


if __name__ == "__main__":
    main()
