"""Epoch time of `train_classifier` on CIFAR-10-LT (r = 100) from ../shared/data, real only and with synthetic data.

There are no generated CIFAR images in ../shared/data, so the synthetic pool is a stand-in: the balanced CIFAR-10
test set (1,000 real images per class) packed as an npz in the synthesis format. Timings of an epoch depend only on
how many images it holds, not on where they came from. The stand-in also makes the test accuracy meaningless, so
only times are reported. The batched crop + flip is also timed against torchvision's per-image transforms.

One JSON line per measurement; each carries `ratio` against the real-only baseline run in the same process.

    .venv/bin/python benchmarks/bench_classifier_epoch.py [--model cifar_resnet32] [--mode fill|ratio] [--ratio 1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LTAUG_DATA_DIR", ROOT.parent / "shared" / "data"))


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def time_augmentation(images: np.ndarray, batch: int = 128) -> tuple[float, float]:
    """Seconds for one pass of crop(pad 4) + flip over `images`: ltaug's batched version, torchvision per image."""
    import torch
    import torchvision.transforms.v2 as T

    from ltaug.classify.augment import crop_flip

    x = torch.from_numpy(images)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        crop_flip(x[i:i + batch], 4, True, g)
    ours = time.perf_counter() - t0
    tv = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    chw = x.permute(0, 3, 1, 2)
    t0 = time.perf_counter()
    for img in chw:
        tv(img)
    return ours, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_resnet32")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--mode", default="fill", choices=("fill", "ratio"))
    ap.add_argument("--ratio", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = ap.parse_args()

    import torch

    from ltaug.classify.train import train_classifier
    from ltaug.config import load_recipe
    from ltaug.data import load_npz
    from ltaug.files import read_jsonl

    if args.threads:
        torch.set_num_threads(args.threads)
    train, test = DATA / "cifar10_lt_r100_train.npz", DATA / "cifar10_test.npz"
    if not train.is_file():
        raise SystemExit(f"missing {train}: set LTAUG_DATA_DIR to the shared data folder")
    common = {"device": "cpu", "machine": os.uname().machine, "threads": torch.get_num_threads(),
              "model": args.model, "batch_size": args.batch_size}

    real = load_npz(train)
    ours, tv = time_augmentation(real.images)
    emit(name="crop_flip_pass", images=len(real), seconds=round(ours, 3), baseline="torchvision_per_image",
         baseline_seconds=round(tv, 3), ratio=round(ours / tv, 4), **common)

    sets = ["device=cpu", f"data.dataset=npz:{train}", f"data.test_dataset=npz:{test}", "classifier.epochs=1",
            f"classifier.model={args.model}", f"classifier.batch_size={args.batch_size}", "classifier.warmup_epochs=0"]
    with tempfile.TemporaryDirectory() as tmp:
        train_classifier(load_recipe(None, sets), Path(tmp) / "real", progress=False)
        base_epoch = read_jsonl(Path(tmp) / "real" / "metrics.jsonl")[-1]
        emit(name="epoch_real_only", images=base_epoch["images"], seconds=round(base_epoch["time_s"], 2),
             images_per_s=round(base_epoch["images"] / base_epoch["time_s"], 1), ratio=1.0, **common)

        synth = Path(tmp) / "standin.npz"  # the balanced test set as a stand-in synthetic pool (see the docstring)
        pool = load_npz(test)
        np.savez(synth, images=pool.images, labels=pool.labels, classes=np.array(pool.classes))
        mix = sets + [f"classifier.synthetic_mode={args.mode}", f"classifier.synthetic_ratio={args.ratio}"]
        res = train_classifier(load_recipe(None, mix), Path(tmp) / "synth", synthetic=[synth], progress=False)
        ep = read_jsonl(Path(tmp) / "synth" / "metrics.jsonl")[-1]
        emit(name=f"epoch_real_plus_synthetic_{args.mode}", images=ep["images"],
             synthetic_images=sum(res["train_counts_synthetic"]), seconds=round(ep["time_s"], 2),
             images_per_s=round(ep["images"] / ep["time_s"], 1), ratio=round(ep["time_s"] / base_epoch["time_s"], 3),
             ratio_per_image=round((ep["time_s"] / ep["images"]) / (base_epoch["time_s"] / base_epoch["images"]), 3),
             synthetic_pool="cifar10_test.npz stand-in (real test images)", **common)


if __name__ == "__main__":
    main()
