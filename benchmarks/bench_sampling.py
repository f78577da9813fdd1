"""Sampling speed of the `small` UNet: DDIM-50 with and without guidance, guidance as one batched forward of the
doubled batch versus two calls, and DDPM-1000 versus DDIM-50 for the same images. One JSON line per measurement;
every figure also as a ratio against the unguided DDIM baseline measured in the same process.

    python benchmarks/bench_sampling.py                       # CPU, 8 images per measurement (DDPM-1000 on 2)
    python benchmarks/bench_sampling.py --n 64 --device cuda  # on a GPU
    python benchmarks/bench_sampling.py --skip-ddpm --steps 20

The network is freshly initialized (speed does not depend on the weights); images are MNIST-shaped by default
(--channels 3 for CIFAR).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


class TwoCalls(torch.nn.Module):
    """The same network, but a doubled batch [cond; null] is run as two forwards of half the size."""

    def __init__(self, net: torch.nn.Module, num_classes: int):
        super().__init__()
        self.net, self.null = net, num_classes

    def forward(self, x, t, y):
        n = x.shape[0] // 2
        if n > 0 and x.shape[0] == 2 * n and bool((y[n:] == self.null).all()):
            return torch.cat([self.net(x[:n], t[:n], y[:n]), self.net(x[n:], t[n:], y[n:])])
        return self.net(x, t, y)


def _schedule(T: int):
    from ltaug.diffusion.schedule import NoiseSchedule

    return NoiseSchedule.linear(T=T)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--n", type=int, default=8, help="images per DDIM measurement (one batch)")
    ap.add_argument("--n-ddpm", type=int, default=2, help="images for the DDPM-1000 versus DDIM-50 comparison")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--w", type=float, default=1.0)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-ddpm", action="store_true")
    args = ap.parse_args()

    from ltaug.diffusion.sampler import sample
    from ltaug.diffusion.unet import build_unet

    torch.manual_seed(0)
    net = build_unet(args.preset, args.classes, args.channels, args.resolution).to(args.device).eval()
    sched = _schedule(1000)
    shape = (args.channels, args.resolution, args.resolution)
    common = {"preset": args.preset, "device": args.device, "threads": torch.get_num_threads(),
              "image": list(shape)}

    cpu_seconds: list[float] = []

    def run(model, n, **kw) -> float:
        y = torch.arange(n) % args.classes
        sample(model, sched, y[:1], [0], num_classes=args.classes, shape=shape, device=args.device,
               sampler="ddim", steps=1)  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        sample(model, sched, y, list(range(n)), num_classes=args.classes, shape=shape, device=args.device, **kw)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        cpu_seconds.append(round(time.process_time() - c0, 3))  # less sensitive to other load than wall time
        return time.perf_counter() - t0

    ddim = dict(sampler="ddim", steps=args.steps)
    base = run(net, args.n, w=0.0, **ddim)
    rows = [("ddim_no_guidance", base, args.n, "w=0: one forward of N per step")]
    rows.append(("ddim_guided_batched", run(net, args.n, w=args.w, **ddim), args.n,
                 "cond + null in one forward of 2N per step"))
    rows.append(("ddim_guided_two_calls", run(TwoCalls(net, args.classes), args.n, w=args.w, **ddim), args.n,
                 "cond and null as two forwards of N per step"))
    # what ltaug synthesize does: net and x_t in NHWC strides (contiguous above)
    cl_net = build_unet(args.preset, args.classes, args.channels, args.resolution).to(args.device).eval()
    cl_net.load_state_dict(net.state_dict())
    cl_net = cl_net.to(memory_format=torch.channels_last)
    rows.append(("ddim_guided_batched_channels_last", run(cl_net, args.n, w=args.w, channels_last=True, **ddim),
                 args.n, "as ltaug synthesize runs it: batched guidance, channels_last"))
    for (name, sec, n, what), cpu in zip(rows, cpu_seconds):
        print(json.dumps({"bench": "sampling", "case": name, "sampler": f"ddim-{args.steps}", "n": n,
                          "w": args.w if "guided" in name else 0.0, "seconds": round(sec, 3), "cpu_seconds": cpu,
                          "cpu_ratio_vs_ddim_no_guidance": round(cpu / cpu_seconds[0], 3),
                          "img_per_s": round(n / sec, 3), "time_ratio_vs_ddim_no_guidance": round(sec / base, 3),
                          "what": what, **common}), flush=True)
    if not args.skip_ddpm:
        n = args.n_ddpm
        d = run(net, n, w=0.0, **ddim)
        p = run(net, n, w=0.0, sampler="ddpm")
        for name, sec in (("ddim_same_images", d), ("ddpm_1000", p)):
            print(json.dumps({"bench": "sampling", "case": name, "sampler": "ddpm-1000" if "ddpm" in name
                              else f"ddim-{args.steps}", "n": n, "w": 0.0, "seconds": round(sec, 3),
                              "img_per_s": round(n / sec, 3), "time_ratio_vs_ddim": round(sec / d, 3), **common}),
                  flush=True)


if __name__ == "__main__":
    main()
