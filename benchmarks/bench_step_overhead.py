"""What a generator step spends outside the network: the optimizer update, the EMA update and gradient clipping,
each the way `train-generator` does it now against the plain version it replaced, measured side by side in this
process (interleaved rounds, median). One JSON line per measurement.

    python benchmarks/bench_step_overhead.py [--preset small] [--rounds 30] [--device cpu]

  adam   torch.optim.Adam per-tensor loop (foreach=False, the CPU default)  vs  fused=True (what training uses)
  ema    a Python loop of lerp_ over named parameters                         vs  one torch._foreach_lerp_
                                                                                  (ltaug.diffusion.ema)
  clip   clip_grad_norm_ (for reference: the same in both)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def loop_ema(ema_net: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    """The per-tensor EMA update (the plain version)."""
    with torch.no_grad():
        ema_p = dict(ema_net.named_parameters())
        for name, p in net.named_parameters():
            ema_p[name].lerp_(p.detach(), 1.0 - decay)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from ltaug.diffusion.ema import EMA
    from ltaug.diffusion.unet import build_unet, count_parameters

    dev = torch.device(args.device)
    net = build_unet(args.preset, 10, 1, 32).to(dev)
    for p in net.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    ema = EMA(net, 0.999)
    plain_ema = EMA(net, 0.999).net
    adam_loop = torch.optim.Adam(net.parameters(), lr=0.0, foreach=False)
    adam_fused = torch.optim.Adam(net.parameters(), lr=0.0, fused=True)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    cases = {
        "adam-loop": adam_loop.step,
        "adam-fused": adam_fused.step,
        "ema-loop": lambda: loop_ema(plain_ema, net, 0.999),
        "ema-foreach": lambda: ema.update(net, 1000),
        "clip": lambda: torch.nn.utils.clip_grad_norm_(net.parameters(), 1e9),
    }
    for fn in cases.values():  # warm-up (optimizer state allocation)
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = {"adam-fused": "adam-loop", "ema-foreach": "ema-loop"}
    for name, t in med.items():
        rec = {"bench": "step_overhead", "case": name, "preset": args.preset, "device": str(dev),
               "params_M": round(count_parameters(net) / 1e6, 3), "tensors": len(list(net.parameters())),
               "threads": torch.get_num_threads(), "ms": round(t * 1e3, 3), "rounds": args.rounds}
        if name in base:
            rec["time_ratio_to_" + base[name]] = round(t / med[base[name]], 3)
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
