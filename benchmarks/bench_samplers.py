"""Which sampler: KID (and FID) against the validation split, and img/s, per sampler at a given budget, from ONE
trained generator, in one process. The same labels and seeds for every sampler; the generated classes are those the
reference split holds (MNIST-LT's validation split has no image of its head class 0: it all went to training).

    python benchmarks/bench_samplers.py RUN_OR_CKPT --n 64 --ddpm-n 8 [--w 1.0] [--out benchmarks/results/samplers]
    python benchmarks/bench_samplers.py RUN_OR_CKPT --timing-only --rounds 3 --timing-n 16   # img/s, interleaved

Each sampler is a `synth.sampler` + `synth.steps` setting run through `ltaug.synth.run.generate_images` (the path of
`ltaug synthesize` / `evaluate`); img/s times the sampling only (Inception comes after). KID: the unbiased polynomial
MMD^2 of ltaug.metrics.fid.kid, 100 subsets of min(N, 100) images; FID at such N is biased upwards (compare rows at
the same N only). Writes OUT.json (every figure and the protocol) and OUT.md (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# (label, sampler, steps): the budgets of the README table; ddpm always takes all T.
# DDPM last: it is T/10 times slower than DDIM-10, and the files are rewritten after every row.
SETTINGS = [("DDIM 10", "ddim", 10), ("DDIM 50", "ddim", 50), ("DPM++ 10", "dpm++", 10), ("DPM++ 20", "dpm++", 20),
            ("UniPC 10", "unipc", 10), ("Euler 20", "euler", 20), ("DDPM (all T)", "ddpm", None)]


def _portable(arg) -> str:
    """A path as the record keeps it: relative to the working directory when inside it, else from the run folder's
    name on (runs/NAME/...), so a record names no folder of the machine it was measured on."""
    p = Path(str(arg))
    if not p.is_absolute():
        return str(arg)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        parts = p.parts
        run = parts.index("generator") - 1 if "generator" in parts[1:] else len(parts) - 1
        return str(Path("runs", *parts[run:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("generator", help="run dir, generator dir or checkpoint")
    ap.add_argument("--n", type=int, default=200, help="images per sampler")
    ap.add_argument("--ddpm-n", type=int, default=None, help="images for DDPM-all-T (default --n; it is T/10 times "
                                                             "slower than DDIM-10)")
    ap.add_argument("--w", type=float, default=1.0, help="guidance weight (eps = (1+w) eps_c - w eps_null)")
    ap.add_argument("--dataset", default="mnist-lt", help="the generator's dataset (reference images)")
    ap.add_argument("--reference-split", default="val", choices=("val", "test"))
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--only", nargs="*", default=None, help="labels of SETTINGS to run (default all)")
    ap.add_argument("--out", default="benchmarks/results/samplers")
    ap.add_argument("--timing-only", action="store_true",
                    help="only re-time the samplers of OUT.json: --rounds interleaved rounds of --timing-n images each "
                         "(DDPM on 2), the median img/s added to every row (a shared machine's load changes between "
                         "the sequential rows)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timing-n", type=int, default=16)
    a = ap.parse_args()
    if a.timing_only:
        return retime(a)

    import torch

    from ltaug.config import SynthConfig
    from ltaug.data import load_dataset
    from ltaug.diffusion.checkpoint import load_generator
    from ltaug.files import atomic_write_json, atomic_write_text
    from ltaug.metrics import inception as inc
    from ltaug.metrics.fid import fid_from_feats, kid
    from ltaug.synth.plan import image_seed
    from ltaug.synth.run import generate_images

    torch.set_num_threads(1)
    gen = load_generator(a.generator, device="cpu", ema=True)
    ref = load_dataset(a.dataset, a.reference_split, resolution=gen.resolution)
    present = [i for i, c in enumerate(gen.classes) if c in ref.classes and ref.counts[ref.classes.index(c)] > 0]
    net = inc.load_feature_net(None, mode="clean", device="cpu", download=False)
    t0 = time.perf_counter()
    ref_f, _, _ = inc.cached_features(net, ref.images, name=f"mnist-lt-{a.reference_split}", batch_size=50)
    print(f"reference {a.reference_split}: {len(ref_f)} images, features in {time.perf_counter() - t0:.0f}s",
          flush=True)
    mu_r, sigma_r = ref_f.mean(0), np.cov(ref_f.astype(np.float64), rowvar=False)

    proto = {"generator": _portable(gen.checkpoint_path), "checkpoint_sha256": gen.checkpoint_sha256, "step": gen.step,
             "T": gen.schedule.T, "w": a.w, "reference": f"{a.dataset} {a.reference_split}",
             "reference_size": len(ref_f), "classes_generated": [gen.classes[i] for i in present],
             "kid": "100 subsets of min(N, 100)", "device": "cpu", "threads": 1, "batch_size": a.batch_size,
             "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
             "load_average_at_start": os.getloadavg()[0], "command": " ".join(["python", *map(_portable, sys.argv)])}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict]) -> str:
        atomic_write_json(out.with_suffix(".json"), {"protocol": proto, "rows": rows})
        text = table(rows)
        atomic_write_text(out.with_suffix(".md"), text + "\n")
        return text

    rows, shown = [], ""
    for label, sampler, steps in SETTINGS:
        if a.only and label not in a.only:
            continue
        n = (a.ddpm_n or a.n) if sampler == "ddpm" else a.n
        labels = [present[i % len(present)] for i in range(n)]
        seen: dict[int, int] = {}
        seeds = []
        for y in labels:
            seeds.append(image_seed(y, seen.get(y, 0), gen.num_classes, 0))
            seen[y] = seen.get(y, 0) + 1
        cfg = SynthConfig(sampler=sampler, steps=steps or 10, w=a.w, batch_size=a.batch_size)
        t = time.perf_counter()
        images = generate_images(gen, labels, cfg, seeds, device="cpu")
        sample_s = time.perf_counter() - t
        feats, _ = inc.extract(net, images, batch_size=50)
        k, k_std = kid(feats, ref_f, num_subsets=100, max_subset_size=100, seed=0)
        nfe = gen.schedule.T if sampler == "ddpm" else _nfe(cfg, gen.schedule)
        row = {"label": label, "sampler": cfg.identity(gen.schedule.T)["sampler"], "alias": sampler,
               "steps": gen.schedule.T if sampler == "ddpm" else steps, "net_evals": nfe, "n": n,
               "kid_x1e3": 1e3 * k, "kid_std_x1e3": 1e3 * k_std, "fid": fid_from_feats(feats, mu_r, sigma_r),
               "img_per_s": n / sample_s, "sample_s": sample_s, "load_average": os.getloadavg()[0]}
        print(json.dumps(row), flush=True)
        rows.append(row)
        shown = write(rows)

    print(shown)


def retime(a) -> None:
    import statistics

    import torch

    from ltaug.config import SynthConfig
    from ltaug.diffusion.checkpoint import load_generator
    from ltaug.files import atomic_write_json, atomic_write_text, read_json
    from ltaug.synth.run import generate_images

    torch.set_num_threads(1)
    out = Path(a.out)
    data = read_json(out.with_suffix(".json"))
    gen = load_generator(a.generator, device="cpu", ema=True)
    times: dict[str, list[float]] = {r["label"]: [] for r in data["rows"]}
    for _ in range(a.rounds):
        for r in data["rows"]:
            n = 2 if r["alias"] == "ddpm" else a.timing_n
            cfg = SynthConfig(sampler=r["alias"], steps=r["steps"] if r["alias"] != "ddpm" else 10, w=a.w,
                              batch_size=a.batch_size)
            labels = [1 + i % (gen.num_classes - 1) for i in range(n)]
            t = time.perf_counter()
            generate_images(gen, labels, cfg, list(range(n)), device="cpu")
            times[r["label"]].append(n / (time.perf_counter() - t))
            print(r["label"], f"{times[r['label']][-1]:.2f} img/s", flush=True)
    for r in data["rows"]:
        r["img_per_s_interleaved"] = statistics.median(times[r["label"]])
    data["protocol"]["timing"] = (f"median of {a.rounds} interleaved rounds, {a.timing_n} images per sampler "
                                  f"(DDPM 2), load average {os.getloadavg()[0]:.1f} at the end")
    atomic_write_json(out.with_suffix(".json"), data)
    atomic_write_text(out.with_suffix(".md"), table(data["rows"]) + "\n")
    print(json.dumps({r["label"]: round(r["img_per_s_interleaved"], 2) for r in data["rows"]}))


def table(rows: list[dict]) -> str:
    """The markdown table; img/s interleaved (when re-timed) beside the sequential figure of the KID pass."""
    timed = all("img_per_s_interleaved" in r for r in rows)
    lines = ["| sampler | steps | net evals / image | N | KID×10³ (± std over subsets) | FID (at N) | img/s"
             + (" (interleaved) | img/s (sequential) |" if timed else " |"),
             "|---|---|---|---|---|---|---|" + ("---|" if timed else "")]
    for r in rows:
        speed = f"{r['img_per_s_interleaved']:.2f} | {r['img_per_s']:.2f}" if timed else f"{r['img_per_s']:.2f}"
        lines.append(f"| {r['label']} (`{r['alias']}`) | {r['steps']} | {r['net_evals']} | {r['n']} | "
                     f"{r['kid_x1e3']:.1f} ± {r['kid_std_x1e3']:.1f} | {r['fid']:.1f} | {speed} |")
    return "\n".join(lines)


def _nfe(cfg, schedule) -> int:
    """Network evaluations per image (each a doubled-batch forward under guidance): the scheduler's timesteps."""
    if cfg.sampler == "ddim":
        return int(cfg.steps)
    from ltaug.diffusion.schedulers import make_scheduler

    s = make_scheduler(schedule, cfg.sampler)
    s.set_timesteps(cfg.steps)
    return len(s.timesteps)


if __name__ == "__main__":
    main()
