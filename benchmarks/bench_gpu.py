"""The GPU path measured in one call: generator training img/s of the `ddpm-cifar` preset on real CIFAR-10-LT batches
(fp32, bf16, + channels_last, + torch.compile; ddpm against diffrop), MFU from torch.utils.flop_counter, and guided
DDIM synthesis img/s (fp32 against bf16) with the projected time of 50,000 images. One JSON line per measurement;
ratios are against baselines measured in the same process on the same card.

Made to fit a short loan of a GPU machine (about 8 minutes): copy the real data into an ignored folder of the working
tree, take it along to the GPU machine, run once:

    echo /.bench-data/ >> .git/info/exclude && mkdir -p .bench-data && \
        cp ../shared/data/cifar10_lt_r100_train.npz .bench-data/
    # on the GPU machine, with .bench-data/ copied along, time limit 540 s:
    PYTHONUNBUFFERED=1 python benchmarks/bench_gpu.py --data .bench-data/cifar10_lt_r100_train.npz \
        --out $OUT/bench_gpu.jsonl --budget-s 480

(diffusers is the only runtime dependency a bare GPU machine may lack: bring its wheel.)
A CPU smoke run: `python benchmarks/bench_gpu.py --device cpu --preset tiny --batch 8 --steps 2 --synth-n 4
--synth-steps 2 --no-compile`.

Cases (method.md §3 pass counts: a DDPM step is 3 units, the two-pass diffrop step 3 + 3k, k = kept labels):
  ddpm                one pass with a graph
  diffrop-two-pass    the straightforward step: the negative prediction with a graph, a second call (the baseline)
  diffrop-batched     the same loss, positive and negative predictions in one call of N + kN images
  diffrop-active-only the negative pass without graph, then with one only for pairs the hinge still penalizes
Goals (what the GPU path is for): the bf16 diffrop step >= 3x the fp32 two-pass step; 50,000 guided samples < 10 min.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# Dense peak TFLOP/s by (card, dtype): NVIDIA's H100/H200 SXM figures (without sparsity). fp32 convolutions and
# matmuls in PyTorch run on TF32 tensor cores only where allowed (cudnn.allow_tf32 is on by default for convs).
PEAK_TFLOPS = {"H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
               "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
               "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}}


# The form whose step cost these cases measure (DiffROP's original form: the negative branch has a gradient, so
# two-pass and active-only differ); the shipped default (stop_grad negative) costs the `negative` case.
ORIGINAL_FORM = dict(stop_grad="positive", negatives="uniform", pair_weight="none", tau="increasing", t_max=1.0)

def emit(rec: dict, sink) -> None:
    line = json.dumps(rec)
    print(line, flush=True)
    if sink is not None:
        sink.write(line + "\n")
        sink.flush()


def load_batches(path: str | None, batch: int, resolution: int, device: torch.device, n_batches: int = 4):
    """Real CIFAR-10-LT batches (uint8 NHWC npz) in [-1, 1], or a clearly labelled random stand-in without --data."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    if path:
        with np.load(path) as z:
            x = torch.from_numpy(z["images"]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            y = torch.from_numpy(z["labels"].astype("int64"))
        counts = torch.bincount(y).tolist()
        source = Path(path).name
    else:
        x = torch.rand(batch * n_batches, 3, resolution, resolution, generator=g) * 2 - 1
        y = torch.randint(0, 10, (batch * n_batches,), generator=g)
        counts = torch.bincount(y, minlength=10).tolist()
        source = "random (no --data)"
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=resolution, mode="area")
    idx = torch.randint(0, len(x), (n_batches, batch), generator=g)
    return [(x[i].to(device), y[i].to(device)) for i in idx], counts, source


def batched_two_pass(net, sched, x0, y, gen, *, num_classes, counts, margin, gamma=0.1, p_uncond=0.1, **_):
    """DiffROP's default loss (hinge, stop-gradient on the positive, tau increasing, uniform negatives) with the
    positive and negative predictions in one call; the same value and gradient as the two-pass step."""
    from ltaug.diffusion.losses import _draw_common, distance, draw_negatives, mse_per_sample, tau_of_t

    n = x0.shape[0]
    t, eps, keep, y_in = _draw_common(sched, x0, y, gen, num_classes, p_uncond, "sample")
    xt = sched.q_sample(x0, t, eps)
    y_neg = draw_negatives(y, num_classes, "uniform", counts, gen)[:, 0]
    idx = keep.nonzero().squeeze(1)
    out = net(torch.cat([xt, xt[idx]]), torch.cat([t, t[idx]]), torch.cat([y_in, y_neg[idx]]))
    pos, neg = out[:n], out[n:]
    dm = mse_per_sample(pos, eps)
    D = distance(pos[idx].detach(), neg, t[idx], "mse", sched)
    term = tau_of_t("increasing", 1.0, t[idx], sched) * torch.relu(margin - D)
    overlap = torch.zeros(n, device=x0.device).index_copy(0, idx, term)
    return {"loss": dm + gamma * overlap, "dm": dm, "overlap": overlap}


def flops_of(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", default=None, help="CIFAR-10-LT npz (images uint8 NHWC, labels)")
    ap.add_argument("--preset", default="ddpm-cifar")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=15, help="timed optimizer steps per case (after 3 warm-up steps)")
    ap.add_argument("--synth-n", type=int, default=2000, help="images per synthesis measurement")
    ap.add_argument("--synth-batch", type=int, default=1000)
    ap.add_argument("--synth-steps", type=int, default=100)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--budget-s", type=float, default=0, help="skip the remaining cases past this many seconds")
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args()

    from ltaug.config import DiffropConfig
    from ltaug.diffusion.losses import LOSSES
    from ltaug.diffusion.schedule import NoiseSchedule
    from ltaug.diffusion.unet import build_unet, count_parameters

    t_start = time.perf_counter()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    sink = open(args.out, "a") if args.out else None
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    card = next((k for k in PEAK_TFLOPS if k in name), None)
    batches, counts, source = load_batches(args.data, args.batch, args.resolution, dev)
    C = len(counts)
    sched = NoiseSchedule.linear()
    emit({"bench": "gpu", "what": "setup", "device": name, "torch": torch.__version__, "data": source,
          "preset": args.preset, "batch": args.batch, "resolution": args.resolution, "classes": C,
          "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
          "matmul_precision": torch.get_float32_matmul_precision()}, sink)

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    def over_budget() -> bool:
        return args.budget_s > 0 and time.perf_counter() - t_start > args.budget_s

    # --- training steps
    torch.manual_seed(0)
    base_net = build_unet(args.preset, C, 3, args.resolution).to(dev)
    params_m = count_parameters(base_net) / 1e6
    loss_kw = dict(num_classes=C, counts=counts, p_uncond=0.1)
    with torch.no_grad():  # the margin that leaves about half of the pairs penalized on these batches
        x0, y = batches[0]
        d = LOSSES["diffrop"](base_net, sched, x0, y, torch.Generator().manual_seed(1), measure_only=True,
                              **loss_kw)["D"]
    margin = float(torch.nanquantile(d.float().cpu(), 0.5))
    two_pass = DiffropConfig(gamma=0.1, margin=margin, active_only=False, **ORIGINAL_FORM)
    active_only = DiffropConfig(gamma=0.1, margin=margin, active_only=True, **ORIGINAL_FORM)

    losses = {
        "ddpm": lambda net, x0, y, g: LOSSES["ddpm"](net, sched, x0, y, g, **loss_kw),
        "diffrop-two-pass": lambda net, x0, y, g: LOSSES["diffrop"](net, sched, x0, y, g, diffrop=two_pass,
                                                                    **loss_kw),
        "diffrop-batched": lambda net, x0, y, g: batched_two_pass(net, sched, x0, y, g, margin=margin, **loss_kw),
        "diffrop-active-only": lambda net, x0, y, g: LOSSES["diffrop"](net, sched, x0, y, g, diffrop=active_only,
                                                                       **loss_kw),
    }
    flops = {}
    for lname, fn in losses.items():  # FLOPs of one forward + backward (the same in every precision)
        x0, y = batches[0]
        flops[lname] = flops_of(lambda: fn(base_net, x0, y, torch.Generator().manual_seed(7))["loss"].mean()
                                .backward())
        base_net.zero_grad(set_to_none=True)

    configs = [("fp32", None, False, False), ("bf16", torch.bfloat16, False, False),
               ("bf16+channels_last", torch.bfloat16, True, False)]
    compiled = [] if args.no_compile else [("bf16+channels_last+compile", torch.bfloat16, True, True)]
    results: dict[tuple[str, str], float] = {}
    train_cases(args, configs, losses, flops, results, batches, C, dev, name, card, params_m, sink, over_budget, sync)
    synthesis(args, C, dev, name, sink, over_budget, sync)  # before compiling, which can take minutes
    train_cases(args, compiled, losses, flops, results, batches, C, dev, name, card, params_m, sink, over_budget,
                sync)
    emit({"bench": "gpu", "what": "done", "seconds": round(time.perf_counter() - t_start, 1)}, sink)


def train_cases(args, configs, losses, flops, results, batches, C, dev, name, card, params_m, sink, over_budget,
                sync) -> None:
    from ltaug.diffusion.unet import build_unet

    cuda = dev.type == "cuda"
    for cname, dtype, cl, comp in configs:
        for lname, fn in losses.items():
            if comp and lname == "diffrop-active-only":
                continue  # its shapes change every step: a recompile per shape
            if over_budget():
                emit({"bench": "gpu", "what": "train", "config": cname, "loss": lname, "skipped": "budget"}, sink)
                continue
            torch.manual_seed(0)
            net = build_unet(args.preset, C, 3, args.resolution).to(dev)
            if cl:
                net = net.to(memory_format=torch.channels_last)
            opt = torch.optim.Adam(net.parameters(), lr=1e-4, fused=True)
            run_net = torch.compile(net) if comp else net

            def step(i):
                x0, y = batches[i % len(batches)]
                if cl:
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                # fixed draws per batch: the same shapes every step (compile) and comparable work across cases
                g = torch.Generator().manual_seed(i % len(batches))
                ctx = torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
                with ctx:
                    loss = fn(run_net, x0, y, g)["loss"].mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            t0 = time.perf_counter()
            for i in range(3):
                step(i)
            sync()
            warm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(args.steps):
                step(i)
            sync()
            dt = (time.perf_counter() - t0) / args.steps
            results[(cname, lname)] = dt
            achieved = flops[lname] / dt / 1e12
            peak_kind = "bf16" if dtype is not None else ("tf32" if torch.backends.cudnn.allow_tf32 else "fp32")
            rec = {"bench": "gpu", "what": "train", "device": name, "config": cname, "loss": lname,
                   "params_M": round(params_m, 2), "batch": args.batch, "step_ms": round(dt * 1e3, 2),
                   "img_s": round(args.batch / dt, 1), "tflops_per_step": round(flops[lname] / 1e12, 3),
                   "achieved_tflops": round(achieved, 1), "warmup_s": round(warm_s, 1)}
            if card:
                rec["mfu"] = round(achieved / PEAK_TFLOPS[card][peak_kind], 4)
                rec["mfu_peak"] = f"{card} {peak_kind} {PEAK_TFLOPS[card][peak_kind]} TFLOP/s"
            if (cname, "ddpm") in results:
                rec["time_ratio_to_ddpm_same_config"] = round(dt / results[(cname, "ddpm")], 3)
            if ("fp32", "diffrop-two-pass") in results and lname.startswith("diffrop"):
                rec["speedup_vs_fp32_two_pass"] = round(results[("fp32", "diffrop-two-pass")] / dt, 2)
            emit(rec, sink)
            if cuda:
                torch.cuda.empty_cache()



def synthesis(args, C, dev, name, sink, over_budget, sync) -> None:
    """DDIM, guided (w = 1), fp32 against bf16 autocast, channels_last."""
    from ltaug.diffusion.sampler import sample
    from ltaug.diffusion.schedule import NoiseSchedule
    from ltaug.diffusion.unet import build_unet

    torch.manual_seed(0)
    net = build_unet(args.preset, C, 3, args.resolution).to(dev).eval().to(memory_format=torch.channels_last)
    synth = {}
    for amp in ("none", "bf16"):
        if over_budget():
            emit({"bench": "gpu", "what": "synth", "amp": amp, "skipped": "budget"}, sink)
            continue
        dtype = torch.bfloat16 if amp == "bf16" else None

        def draw(n, first_seed):
            done = 0
            while done < n:
                b = min(args.synth_batch, n - done)
                y = torch.arange(done, done + b) % C
                ctx = torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
                with ctx, torch.no_grad():
                    sample(net, NoiseSchedule.linear(), y, list(range(first_seed + done, first_seed + done + b)),
                           num_classes=C, sampler="ddim", steps=args.synth_steps, w=1.0, device=dev,
                           shape=(3, args.resolution, args.resolution), channels_last=True)
                done += b

        draw(min(args.synth_batch, args.synth_n), 10**6)  # warm-up (cudnn autotune, allocator)
        sync()
        t0 = time.perf_counter()
        draw(args.synth_n, 0)
        sync()
        dt = time.perf_counter() - t0
        synth[amp] = dt
        img_s = args.synth_n / dt
        rec = {"bench": "gpu", "what": "synth", "device": name, "sampler": f"ddim-{args.synth_steps}", "w": 1.0,
               "amp": amp, "images": args.synth_n, "batch": args.synth_batch, "img_s": round(img_s, 1),
               "projected_50k_s": round(50000 / img_s, 1)}
        if "none" in synth and amp != "none":
            rec["speedup_vs_fp32"] = round(synth["none"] / dt, 2)
        emit(rec, sink)


if __name__ == "__main__":
    main()
