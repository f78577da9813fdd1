"""Training throughput of the generator losses: img/s of one optimizer step (forward, backward, Adam) on real
MNIST-LT batches, the `small` preset, batch 64, CPU; each figure also as a ratio to DDPM measured in this process.

    python benchmarks/bench_generator_losses.py [--steps 5] [--batch 64] [--preset small] [--threads N]
        [--active 0.5]      # fraction of pairs the hinge still penalizes (sets the margin as that quantile of D)

method.md §3 bounds, counting passes (forward 1, backward 2, DDPM = 3): 1.33x with no gradient into the negative
branch (stop_grad negative), 2x with one (positive, the default; none; both_sided), and below 2x when only the
penalized pairs get their negative branch recomputed with a gradient (active_only, the default). The plain two-pass
step (active_only false) is printed as the baseline "diffrop-two-pass". One JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--active", type=float, default=0.5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from ltaug.data import load_dataset
    from ltaug.diffusion.losses import LOSSES
    from ltaug.diffusion.schedule import NoiseSchedule
    from ltaug.diffusion.unet import build_unet, count_parameters

    ds = load_dataset("mnist-lt")
    C = ds.num_classes
    x_all = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    y_all = torch.from_numpy(ds.labels)
    sched = NoiseSchedule.linear()
    torch.manual_seed(0)
    net = build_unet(args.preset, C, ds.channels, ds.resolution)
    opt = torch.optim.Adam(net.parameters(), lr=0.0)  # full Adam step, weights unchanged: D (so the active fraction) stays put
    g0 = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(ds), (args.batch,), generator=g0)
    x0, y = x_all[idx], y_all[idx]
    base = dict(num_classes=C, counts=ds.counts, p_uncond=0.1, gamma=0.1)
    # The margin that leaves a fraction `active` of pairs penalized (tau increasing: t = 0 pairs are never active).
    with torch.no_grad():
        d = LOSSES["diffrop"](net, sched, x0, y, torch.Generator().manual_seed(1), margin=None, **base)["D"]
    margin = float(torch.nanquantile(d, args.active))

    cases = [("ddpm", "ddpm", {}), ("cbdm", "cbdm", {})]
    for sg in ("positive", "negative", "none", "both_sided"):
        cases.append((f"diffrop-{sg}", "diffrop", {"stop_grad": sg, "active_only": True}))
    cases.append(("diffrop-two-pass", "diffrop", {"stop_grad": "positive", "active_only": False}))

    def step(loss, diffrop, seed):
        out = LOSSES[loss](net, sched, x0, y, torch.Generator().manual_seed(seed), margin=margin, diffrop=diffrop,
                           **base)
        opt.zero_grad(set_to_none=True)
        out["loss"].mean().backward()
        opt.step()
        return out

    results = {}
    for name, loss, diffrop in cases:
        step(loss, diffrop, 99)  # warm-up
        active = []
        t0 = time.perf_counter()
        for s in range(args.steps):
            out = step(loss, diffrop, s)
            if "active" in out:
                active.append(float(out["active"].mean()))
        dt = time.perf_counter() - t0
        img_s = args.steps * args.batch / dt
        results[name] = img_s
        rec = {"bench": "generator_losses", "case": name, "preset": args.preset,
               "params_M": round(count_parameters(net) / 1e6, 3), "batch": args.batch, "steps": args.steps,
               "threads": torch.get_num_threads(), "img_s": round(img_s, 2),
               "time_ratio_to_ddpm": round(results["ddpm"] / img_s, 3)}
        if active:
            rec["active_fraction"] = round(sum(active) / len(active), 3)
            rec["margin"] = margin
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
