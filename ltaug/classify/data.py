"""The training set of a classifier: the real long-tailed images plus a chosen number of synthetic ones per class.

Synthetic sets come from `ltaug synthesize`: a folder with one sub-folder of PNGs per class (named by class name,
`manifest.jsonl` beside them), or an npz in the shared/data format (`images`, `labels`, `classes`). Classes are
matched to the real dataset by name; a synthetic class the dataset does not have is an error.

How many synthetic images class c gets (`mix_counts`), with n_c real and a_c available:
  ratio r:  min(a_c, round(r * n_c))          (0 = real only)
  fill:     min(a_c, max_k n_k - n_c)         (every class topped up to the head class's count)
Which ones: a seeded shuffle of each class's pool (all synthetic sets concatenated in the order given).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ltaug.data import LTDataset
from ltaug.errors import LtaugError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _fit(images: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    from ltaug.data.sources import to_resolution

    return to_resolution(images, resolution, channels)


def _read_image(p: Path, mode: str, resolution: int, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as img:
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise LtaugError(f"--synthetic: {p} is not a readable image ({type(e).__name__}); remove it") from None
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return arr if arr.shape[:2] == (resolution, resolution) else _fit(arr[None], resolution, channels)[0]


def _folder_names(classes: list[str]) -> list[str]:
    try:  # the synthesis stage's rule for a class's folder name (path characters replaced)
        from ltaug.synth.folder import class_dirs

        return class_dirs(classes)
    except ImportError:
        return list(classes)


def _read_folder(root: Path, classes: list[str], resolution: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Images of a synthesis folder: the ones its manifest.jsonl lists (an image is done when both its line and its
    PNG exist), or, without a manifest, every image in the class sub-folders."""
    from ltaug.rundir import read_jsonl

    names = _folder_names(classes)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    manifest = root / "manifest.jsonl"
    if not class_dirs and not manifest.is_file():
        raise LtaugError(f"--synthetic {root}: no class sub-folders (expected {root}/CLASS_NAME/*.png, as written "
                         f"by `ltaug synthesize`)")
    unknown = [d.name for d in class_dirs if d.name not in names]
    files: list[tuple[Path, int]] = []
    if manifest.is_file():
        for r in read_jsonl(manifest):
            if "path" not in r or "class" not in r:
                continue
            if r["class"] not in classes:
                unknown.append(str(r["class"]))
                continue
            if (root / r["path"]).is_file():
                files.append((root / r["path"], classes.index(r["class"])))
    if unknown:
        shown = sorted(set(unknown))[:5]
        raise LtaugError(f"--synthetic {root}: class(es) {', '.join(shown)} are not classes of the dataset "
                         f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); use a synthetic set "
                         f"generated for this dataset")
    if not manifest.is_file():
        for d in class_dirs:
            label = names.index(d.name)
            files += [(p, label) for p in sorted(d.iterdir())
                      if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise LtaugError(f"--synthetic {root}: it holds no finished images (run `ltaug synthesize` to fill it)")
    mode = "L" if channels == 1 else "RGB"
    images = np.stack([_read_image(p, mode, resolution, channels) for p, _ in files])
    return images, np.asarray([label for _, label in files], dtype=np.int64)


def load_synthetic(path: str | os.PathLike, classes: list[str], resolution: int, channels: int) -> LTDataset:
    """A synthetic set with labels in the real dataset's class order, images uint8 [N, res, res, channels].

    path: a folder of class sub-folders, or an .npz (images, labels, classes). Raises LtaugError when its classes are
    not classes of the dataset (by name), or when it cannot be read.
    """
    from ltaug.data import load_npz

    path = Path(path).expanduser()
    if path.is_dir():
        images, labels = _read_folder(path, classes, resolution, channels)
    elif path.suffix == ".npz":
        ds = load_npz(path)
        unknown = [c for c in ds.classes if c not in classes]
        if unknown or len(ds.classes) != len(classes):
            raise LtaugError(f"--synthetic {path}: its classes ({', '.join(ds.classes[:10])}"
                             f"{', ...' if len(ds.classes) > 10 else ''}) differ from the dataset's "
                             f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); use a synthetic "
                             f"set generated for this dataset")
        remap = np.asarray([classes.index(c) for c in ds.classes], dtype=np.int64)
        images, labels = _fit(ds.images, resolution, channels), remap[ds.labels]
    elif not path.exists():
        raise LtaugError(f"--synthetic {path}: no such folder or file")
    else:
        raise LtaugError(f"--synthetic {path}: expected a folder of class sub-folders or an .npz file")
    return LTDataset(images, labels, list(classes), f"synthetic:{path.name}", {"source": str(path)})


def mix_counts(real_counts: list[int], available: list[int], mode: str, ratio: float) -> list[int]:
    """Synthetic images to use per class (see the module docstring). ratio >= 0; mode ratio | fill."""
    if ratio < 0:
        raise LtaugError(f"--synthetic-ratio {ratio}: must be >= 0 (0 = real only, 1 = one synthetic per real image)")
    if mode == "ratio":
        want = [int(round(ratio * n)) for n in real_counts]
    elif mode == "fill":
        head = max(real_counts) if real_counts else 0
        want = [head - n for n in real_counts]
    else:
        raise LtaugError(f"--synthetic-mode '{mode}': expected ratio or fill")
    return [max(0, min(int(a), w)) for a, w in zip(available, want)]


def select_per_class(labels: np.ndarray, take: list[int], seed: int) -> np.ndarray:
    """Indices of `take[c]` items of each class c, from a seeded shuffle of that class (sorted, int64)."""
    rng = np.random.default_rng(seed)
    picks = []
    for c, k in enumerate(take):
        idx = np.flatnonzero(labels == c)
        if k > len(idx):
            raise ValueError(f"class {c}: asked for {k} of {len(idx)}")
        picks.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(picks)).astype(np.int64) if picks else np.zeros(0, np.int64)


@dataclass
class TrainSet:
    """Real + selected synthetic images, in memory."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    synthetic: np.ndarray  # bool [N], True for synthetic images
    classes: list[str]
    real_counts: list[int]
    synthetic_counts: list[int]  # used per class
    available_counts: list[int]  # synthetic images that existed per class
    sources: list[dict] = field(default_factory=list)

    @property
    def counts(self) -> list[int]:
        return [r + s for r, s in zip(self.real_counts, self.synthetic_counts)]


def build_train_set(real: LTDataset, synthetic_paths: list[str | os.PathLike], mode: str, ratio: float,
                    seed: int) -> TrainSet:
    """Load the synthetic sets, choose per class (mix_counts), and concatenate them after the real images."""
    mix_counts(real.counts, [0] * real.num_classes, mode, ratio)  # checks ratio / mode before any loading
    pools, sources = [], []
    for p in synthetic_paths:
        ds = load_synthetic(p, real.classes, real.resolution, real.channels)
        pools.append(ds)
        sources.append({"path": str(Path(p).expanduser().resolve()), "images": len(ds), "counts": ds.counts})
    zero = [0] * real.num_classes
    if not pools:
        return TrainSet(real.images, real.labels, np.zeros(len(real), bool), list(real.classes), real.counts, zero,
                        zero, sources)
    pool_images = np.concatenate([d.images for d in pools])
    pool_labels = np.concatenate([d.labels for d in pools])
    available = np.bincount(pool_labels, minlength=real.num_classes).tolist()
    take = mix_counts(real.counts, available, mode, ratio)
    idx = select_per_class(pool_labels, take, seed)
    images = np.concatenate([real.images, pool_images[idx]])
    labels = np.concatenate([real.labels, pool_labels[idx]])
    synthetic = np.concatenate([np.zeros(len(real), bool), np.ones(len(idx), bool)])
    return TrainSet(images, labels, synthetic, list(real.classes), real.counts, take, available, sources)
