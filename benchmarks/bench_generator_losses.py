"""Training throughput of the generator losses: img/s of one optimizer step (forward, backward, fused Adam) on real
MNIST-LT batches, `small` preset, batch 64, CPU; every figure also as a ratio to DDPM measured in the same process.

    python benchmarks/bench_generator_losses.py [--rounds 7] [--batch 64] [--resolution 32] [--preset small]
        [--threads N] [--active 0.25 0.5 0.75]

Cases run interleaved: each round times one step of every case in turn, and a case's ratio is the median over rounds
of (its step time / the DDPM step time of the same round), so that a load change on a shared machine moves both.

Pass-count bounds (method.md §3; forward 1, backward 2, a DDPM step = 3; k = fraction of samples whose label was kept,
about 0.9 with p_uncond 0.1, a = fraction of pairs the hinge still penalizes):
  cbdm, diffrop with a gradient into the negative branch (positive, none, both_sided), two-pass:  1 + k
  diffrop stop_grad negative (the negative pass needs no graph):                                  1 + k / 3
  diffrop active-only (a pass without graph for every pair, then one with a graph for the a):     1 + k (1 + 3a) / 3
  diffrop default, as `train-generator` runs it: active-only while the previous step's a < 2/3, else two-pass.
The baseline to beat, "diffrop-two-pass", is the straightforward step (both predictions with gradients, two calls, as
the CBDM reference code does). One JSON line per case and active fraction.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

# The form whose step cost these cases measure (DiffROP's original form: the negative branch has a gradient, so
# two-pass and active-only differ); the shipped default (stop_grad negative) costs the `negative` case.
ORIGINAL_FORM = dict(stop_grad="positive", negatives="uniform", pair_weight="none", tau="increasing", t_max=1.0)

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="add ddpm and the two-pass step under bf16 autocast")
    ap.add_argument("--active", type=float, nargs="+", default=[0.25, 0.5, 0.75],
                    help="fractions of pairs the hinge still penalizes (the margin is set to that quantile of D)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import torch.nn.functional as F

    from ltaug.config import DiffropConfig
    from ltaug.data import load_dataset
    from ltaug.diffusion.losses import LOSSES
    from ltaug.diffusion.schedule import NoiseSchedule
    from ltaug.diffusion.unet import build_unet, count_parameters

    ds = load_dataset("mnist-lt")
    C = ds.num_classes
    x_all = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    if args.resolution != x_all.shape[-1]:
        x_all = F.interpolate(x_all, size=args.resolution, mode="area")
    y_all = torch.from_numpy(ds.labels)
    sched = NoiseSchedule.linear()
    torch.manual_seed(0)
    net = build_unet(args.preset, C, ds.channels, args.resolution)
    # lr 0: a full fused-Adam step that leaves the weights unchanged, so D (and the active fraction) stays put
    opt = torch.optim.Adam(net.parameters(), lr=0.0, fused=True)
    idx = torch.randint(0, len(ds), (args.batch,), generator=torch.Generator().manual_seed(0))
    x0, y = x_all[idx], y_all[idx]
    base = dict(num_classes=C, counts=ds.counts, p_uncond=0.1)
    with torch.no_grad():
        d = LOSSES["diffrop"](net, sched, x0, y, torch.Generator().manual_seed(1), measure_only=True, **base)["D"]

    def step(loss, diffrop, margin, seed=1):
        # the same draws (t, eps, labels kept, negatives) every time: the active fraction is the one asked for
        diffrop = dict(diffrop)
        bf16 = diffrop.pop("bf16", False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = LOSSES[loss](net, sched, x0, y, torch.Generator().manual_seed(seed),
                               diffrop=DiffropConfig(gamma=0.1, margin=margin, **{**ORIGINAL_FORM, **diffrop}), **base)
        opt.zero_grad(set_to_none=True)
        out["loss"].mean().backward()
        opt.step()
        return out

    for a_target in args.active:
        # tau increasing makes t = 0 pairs inactive whatever the margin: aim the quantile at the pairs that can be
        margin = float(torch.nanquantile(d, a_target))
        probe = step("diffrop", {"stop_grad": "positive", "active_only": True}, margin)
        kept = float(torch.isfinite(probe["D"]).float().mean())
        a = float(probe["active"][torch.isfinite(probe["D"])].mean())
        default_active_only = a < 2 / 3  # what train-generator picks (from the previous step's a)
        cases = [("ddpm", "ddpm", {}, 1.0), ("cbdm", "cbdm", {}, 1 + kept)]
        for sg in ("positive", "negative", "none", "both_sided"):
            bound = 1 + kept / 3 if sg == "negative" else 1 + kept * (1 + 3 * a) / 3
            cases.append((f"diffrop-{sg}-active-only", "diffrop", {"stop_grad": sg, "active_only": True}, bound))
        cases.append(("diffrop-two-pass", "diffrop", {"stop_grad": "positive", "active_only": False}, 1 + kept))
        cases.append(("diffrop-default", "diffrop", {"stop_grad": "positive", "active_only": default_active_only},
                      min(1 + kept * (1 + 3 * a) / 3, 1 + kept)))
        if args.bf16:  # the same steps under bf16 autocast (bound: fp32's pass count, no speed-up assumed)
            cases += [("ddpm-bf16", "ddpm", {"bf16": True}, 1.0),
                      ("diffrop-two-pass-bf16", "diffrop", {"active_only": False, "bf16": True}, 1 + kept)]
        for name, loss, diffrop, _ in cases:  # warm-up
            step(loss, diffrop, margin)
        times: dict[str, list[float]] = {c[0]: [] for c in cases}
        for r in range(args.rounds):
            order = cases[r % len(cases):] + cases[: r % len(cases)]  # rotate: no case always runs first
            for name, loss, diffrop, _ in order:
                t0 = time.perf_counter()
                step(loss, diffrop, margin)
                times[name].append(time.perf_counter() - t0)
        for name, loss, diffrop, bound in cases:
            ratio = statistics.median(t / b for t, b in zip(times[name], times["ddpm"]))
            rec = {"bench": "generator_losses", "case": name, "preset": args.preset,
                   "params_M": round(count_parameters(net) / 1e6, 3), "batch": args.batch,
                   "resolution": args.resolution, "rounds": args.rounds, "threads": torch.get_num_threads(),
                   "img_s": round(args.batch / statistics.median(times[name]), 2),
                   "time_ratio_to_ddpm": round(ratio, 3), "pass_bound": round(bound, 3),
                   "over_bound": round(ratio / bound - 1, 3)}
            if loss == "diffrop":
                rec.update(active_fraction=round(a, 3), kept_fraction=round(kept, 3), margin=margin)
            if name == "diffrop-default":
                rec["mode"] = "active-only" if default_active_only else "two-pass"
                rec["vs_two_pass"] = round(statistics.median(
                    t / b for t, b in zip(times[name], times["diffrop-two-pass"])), 3)
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
