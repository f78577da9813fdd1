"""Wall time of two small `ltaug tune` sweeps, run as a user runs them (a subprocess, a local Ray on --num-cpus
cores), for the code in --tree (default: this checkout). One JSON line per sweep: its wall time, the trials' metrics
and the best configuration, so two trees (before / after a change) can be compared for the same trials and the same
best recipe.

    python benchmarks/bench_sweeps.py [--tree DIR] [--steps 300] [--epochs 3] [--num-cpus 2] [--only ratio|tau]
                                      [--fifo] [--set KEY=VALUE ...]

  ratio  synthetic_ratio, two values (0, 1): classifier keys only, one shared generator + samples
  tau    tau_schedule, two values (constant, increasing): generator keys, the judge's agreement (val_agreement.few)

The tree before a change: `git archive COMMIT | tar -x -C /tmp/before`, then --tree /tmp/before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEPS = {
    "ratio": ("synthetic_ratio", ["space.classifier.synthetic_ratio={grid: [0.0, 1.0]}"]),
    "tau": ("tau_schedule", ["space.generator.diffrop.tau={grid: [constant, increasing]}"]),
}


def sweep_file(tree: Path, name: str, sets: list[str], out: Path) -> Path:
    """The built-in sweep with the sets applied, as a file (a tree without `ltaug tune --set` runs it too)."""
    code = ("import sys, yaml; from ltaug.tune import load_sweep, apply_sets; "
            "raw = yaml.safe_load(open(sys.argv[1])); raw = apply_sets(raw, sys.argv[2:]); "
            "raw.pop('name', None); print(yaml.safe_dump(raw, sort_keys=False))")
    src = Path(__file__).resolve().parents[1] / "recipes" / "sweeps" / f"{name}.yaml"
    here = Path(__file__).resolve().parents[1]
    text = subprocess.run([sys.executable, "-c", code, str(src), *sets], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(here)}).stdout
    path = out / f"{name}.yaml"
    path.write_text(text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--steps", type=int, default=300, help="generator.steps of every sweep")
    ap.add_argument("--epochs", type=int, default=3, help="classifier.epochs of every sweep")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--only", choices=sorted(SWEEPS))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="more recipe / sweep overrides (as `ltaug tune --set`), e.g. evaluate.judge_per_class=8")
    ap.add_argument("--fifo", action="store_true", help="scheduler fifo: every trial runs to its end, so two trees "
                    "are compared on the same trials whatever order concurrent trials report in (ASHA's decisions "
                    "depend on that order)")
    args = ap.parse_args()
    tree = Path(args.tree).resolve()
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "LTAUG_PLAIN_PROGRESS": "1",
           "OMP_NUM_THREADS": "1"}
    for key, (name, space) in SWEEPS.items():
        if args.only and key != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-{key}-") as tmp:
            tmp = Path(tmp)
            sets = [*space, f"generator.steps={args.steps}", f"classifier.epochs={args.epochs}",
                    "generator.ckpt_every=100", *(["scheduler=fifo"] if args.fifo else []), *args.sets]
            spec = sweep_file(tree, name, sets, tmp)
            out = tmp / "out"
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "ltaug", "tune", str(spec), "--out", str(out), "--num-cpus",
                                str(args.num_cpus)], env=env, capture_output=True, text=True, cwd=tmp)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                print(json.dumps({"sweep": key, "tree": str(tree), "error": (p.stdout + p.stderr)[-2000:]}))
                continue
            res = json.loads((out / "sweep_results.json").read_text())
            print(json.dumps({"sweep": key, "name": name, "tree": str(tree), "wall_s": round(wall, 1),
                              "scheduler": res["sweep"]["scheduler"], "sets": args.sets,
                              "steps": args.steps, "epochs": args.epochs, "num_cpus": args.num_cpus,
                              "metric": res["sweep"]["metric"],
                              "trials": [{"config": t["config"], "metric": t["metric"]} for t in res["trials"]],
                              "best": res["best"]["config"]}), flush=True)


if __name__ == "__main__":
    main()
