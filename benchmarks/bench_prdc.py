"""Precision / recall / density / coverage: peak memory and time, blocked (ltaug) versus dense (full matrices).

Each measurement runs in a fresh subprocess so that its peak RSS (ru_maxrss) is its own. One JSON line each; the
blocked figures at a size where dense fits also carry ratios against dense from the same script run.

    python benchmarks/bench_prdc.py                         # 10k and 50k points, D=2048 (slow on a small CPU)
    python benchmarks/bench_prdc.py --dim 64 --device cpu   # quick look at the memory behaviour
    python benchmarks/bench_prdc.py --device cuda           # on a GPU (peak = torch.cuda.max_memory_allocated)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# Dense needs three float64 N x N matrices (real-real, fake-fake, real-fake) plus sort copies.
DENSE_BYTES_PER_PAIR = 8 * 5


def _child(kind: str, n: int, dim: int, device: str, max_gib: float) -> dict:
    import numpy as np

    from ltaug.metrics.prdc import prdc, prdc_dense

    rng = np.random.default_rng(0)
    real = rng.normal(size=(n, dim)).astype(np.float32)
    fake = (rng.normal(size=(n, dim)) * 1.1 + 0.05).astype(np.float32)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if kind == "dense":
        out = prdc_dense(real, fake, k=5)
    else:
        out = prdc(real, fake, k=5, device=device, max_bytes=int(max_gib * 2**30))
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    rec = {"bench": "prdc", "kind": kind, "n": n, "dim": dim, "device": device, "seconds": round(sec, 3),
           "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30, 3),
           "rss_before_gib": round(base_rss / 2**30, 3), **{k: round(v, 5) for k, v in out.items()}}
    if kind == "blocked":
        rec["max_bytes_gib"] = max_gib
    if device.startswith("cuda"):
        import torch

        rec["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-gib", type=float, default=2.0, help="block budget of the blocked computation")
    ap.add_argument("--dense-limit-gib", type=float, default=16.0, help="skip dense above this estimated memory")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, n, dim, device, max_gib = a.child
        print(json.dumps(_child(kind, int(n), int(dim), device, float(max_gib))), flush=True)
        return
    for n in map(int, a.sizes.split(",")):
        runs = {}
        for kind in ("dense", "blocked"):
            if kind == "dense" and n * n * DENSE_BYTES_PER_PAIR / 2**30 > a.dense_limit_gib:
                print(json.dumps({"bench": "prdc", "kind": "dense", "n": n, "dim": a.dim, "skipped":
                                  f"needs ~{n * n * DENSE_BYTES_PER_PAIR / 2**30:.0f} GiB"}), flush=True)
                continue
            p = subprocess.run([sys.executable, __file__, "--child", kind, str(n), str(a.dim), a.device,
                                str(a.max_gib)], capture_output=True, text=True)
            if p.returncode != 0:
                print(json.dumps({"bench": "prdc", "kind": kind, "n": n, "error": p.stderr.strip()[-300:]}), flush=True)
                continue
            runs[kind] = json.loads(p.stdout.strip().splitlines()[-1])
            rec = runs[kind]
            if kind == "blocked" and "dense" in runs:
                d = runs["dense"]
                rec["time_vs_dense"] = round(rec["seconds"] / d["seconds"], 3)
                rec["peak_rss_vs_dense"] = round(rec["peak_rss_gib"] / d["peak_rss_gib"], 3)
                rec["max_abs_diff_vs_dense"] = max(abs(rec[k] - d[k]) for k in ("precision", "recall", "density",
                                                                                 "coverage"))
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
