"""The synthetic folder: its format, in one place (what `ltaug synthesize` writes; what the classifier, the metrics
and the benchmarks read).

    OUT/settings.json        the identity of every image here: checkpoint + sha256, sampler, steps, eta, variance,
                             w (and s = 1 + w), seed, clip_x0, amp, filter; and the generator's classes
    OUT/plan.json            the latest plan (per class: label, name, real, new, total)
    OUT/<class>/<seed>.png   one PNG per image, named by its seed (8 digits); <class> = class_dirs(classes)[label]
    OUT/manifest.jsonl       one line per finished image: path (relative to OUT), label, class, seed, k, checkpoint
                             (relative to the run), checkpoint_sha256, sampler, steps, eta, variance, w, s, amp,
                             [confidence]
    OUT/rejected.jsonl       images the filter refused (seed, k, confidence): never written as PNG
    OUT/synthetic.npz        optional: images, labels, classes, seeds, files (the ../shared/data format + extras)
    OUT/grid.png             the first images of every class, one row per class, head to tail

An image is finished when its manifest line exists AND its PNG exists. `load_synthetic` also reads plain folders
of class sub-folders (any images) and npz archives, so any synthetic set can be mixed or evaluated.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ltaug.data.dataset import LTDataset
from ltaug.data.sources import IMAGE_EXTENSIONS, load_folder, load_npz, to_resolution
from ltaug.errors import LtaugError
from ltaug.files import read_json, read_jsonl

SETTINGS = "settings.json"
PLAN = "plan.json"
MANIFEST = "manifest.jsonl"
REJECTED = "rejected.jsonl"
NPZ = "synthetic.npz"
GRID = "grid.png"
OUTPUT_DIRS = ("evaluate",)  # folders other stages may write inside a synthetic folder; never read as classes
# What makes two images comparable: a folder holds images of one identity only.
IDENTITY_KEYS = ("checkpoint_sha256", "sampler", "steps", "eta", "variance", "w", "seed", "clip_x0", "filter", "amp")


MAX_DIR_BYTES = 96  # a class folder name at most (file systems allow 255 bytes; some encrypted ones 143)


def class_dirs(classes: list[str]) -> list[str]:
    """A safe, unique folder name per class: the class name with path characters replaced, and a name longer than
    MAX_DIR_BYTES cut and suffixed with a hash of the whole name (`long-na~3f2a9c01d4`). The real names are kept in
    settings.json, plan.json and every manifest line."""
    out, seen = [], set()
    for i, c in enumerate(classes):
        name = re.sub(r'[\\/:*?"<>|\x00-\x1f\x7f]', "_", str(c)).strip() or f"class_{i}"
        if name in (".", "..") or name.startswith("."):
            name = f"class_{i}_{name.lstrip('.')}"
        if len(name.encode()) > MAX_DIR_BYTES:
            digest = hashlib.sha256(str(c).encode()).hexdigest()[:10]
            head = name.encode()[:MAX_DIR_BYTES - len(digest) - 1].decode("utf-8", "ignore").rstrip()
            name = f"{head}~{digest}"
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        out.append(name)
    return out


def png_name(seed: int) -> str:
    return f"{int(seed):08d}.png"


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, C] (C = 1 or 3) -> PNG bytes."""
    arr = image[:, :, 0] if image.shape[-1] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L" if image.shape[-1] == 1 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def read_png(path: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W, C] of an image file (C = 1 for grey)."""
    with Image.open(path) as img:
        arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def is_synthetic_folder(path: str | os.PathLike) -> bool:
    """A folder written by `ltaug synthesize` (it has settings.json or manifest.jsonl)."""
    p = Path(path)
    return p.is_dir() and ((p / SETTINGS).is_file() or (p / MANIFEST).is_file())


def finished(root: str | os.PathLike) -> list[dict]:
    """Manifest records of the finished images (line and PNG both there), in manifest order."""
    root = Path(root)
    return [r for r in read_jsonl(root / MANIFEST)
            if isinstance(r, dict) and "path" in r and "label" in r and (root / str(r["path"])).is_file()]


def folder_classes(root: str | os.PathLike) -> list[str] | None:
    """The generator's class names, indexed by label, as a synthesis folder records them (settings or plan)."""
    root = Path(root)
    for name in (SETTINGS, PLAN):
        d = read_json(root / name)
        if d and isinstance(d.get("classes"), list):
            return [str(c) for c in d["classes"]]
    return None


def real_counts(root: str | os.PathLike, classes: list[str]) -> list[int] | None:
    """The real training count of each class name, from the folder's plan.json (None when it does not say)."""
    plan = read_json(Path(root) / PLAN) or {}
    real = {r.get("name"): r.get("real") for r in plan.get("rows", []) if isinstance(r, dict)}
    if all(isinstance(real.get(c), int) for c in classes):
        return [int(real[c]) for c in classes]
    return None


def _unknown(path: Path, unknown: list[str], classes: list[str]) -> LtaugError:
    shown = sorted(set(unknown))[:5]
    return LtaugError(f"--synthetic {path}: class(es) {', '.join(shown)} are not classes of the dataset "
                      f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); use a synthetic set "
                      f"generated for this dataset")


def _from_manifest(root: Path, classes: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    records = finished(root)
    own = folder_classes(root) or sorted({str(r.get("class", r["label"])) for r in records})
    classes = list(classes) if classes is not None else own
    index = {c: i for i, c in enumerate(classes)}
    names = [str(r.get("class", own[int(r["label"])] if int(r["label"]) < len(own) else r["label"])) for r in records]
    unknown = [n for n in names if n not in index]
    if unknown:
        raise _unknown(root, unknown, classes)
    if not records:
        raise LtaugError(f"--synthetic {root}: it holds no finished images (run `ltaug synthesize` to fill it)")
    images = [read_png(root / str(r["path"])) for r in records]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise LtaugError(f"{root}: its images have different shapes {sorted(shapes)[:3]}; it is not one synthesis")
    return np.stack(images), np.asarray([index[n] for n in names], dtype=np.int64), classes


def _from_class_folders(root: Path, classes: list[str] | None, resolution: int | None,
                        channels: int) -> LTDataset:
    dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name not in OUTPUT_DIRS]
    if not dirs:
        raise LtaugError(f"--synthetic {root}: no class sub-folders (expected {root}/CLASS_NAME/*.png, as written "
                         f"by `ltaug synthesize`)")
    if resolution is None:  # the folder's own size: that of its first image
        first = next((f for d in dirs for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS), None)
        if first is None:
            raise LtaugError(f"synthetic folder {root} holds no images in class sub-folders")
        resolution = min(read_png(first).shape[:2])
    ds = load_folder(root, resolution=resolution, channels=channels, exclude=OUTPUT_DIRS)
    if classes is None:
        return ds
    # folder names are class_dirs(classes): map them back to the dataset's class names
    by_dir = dict(zip(class_dirs(classes), classes)) | {c: c for c in classes}
    unknown = [n for n in ds.classes if n not in by_dir]
    if unknown:
        raise _unknown(root, unknown, classes)
    remap = np.asarray([classes.index(by_dir[n]) for n in ds.classes], dtype=np.int64)
    return LTDataset(ds.images, remap[ds.labels], list(classes), ds.name, ds.meta)


def load_synthetic(path: str | os.PathLike, classes: list[str] | None = None, resolution: int | None = None,
                   channels: int = 0) -> LTDataset:
    """A synthetic set as an LTDataset: uint8 images [N, res, res, C], labels in the order of `classes` (default:
    the set's own classes: the generator's, for a synthesis folder).

    path: a synthesis folder (the images its manifest lists as finished), a folder of class sub-folders (any
    images), or an .npz (images, labels, classes). resolution / channels: resize (bicubic, center crop) and convert
    to these (None / 0 = as stored). Raises LtaugError when its classes are not among `classes` (by name).
    """
    path = Path(str(path)[4:] if str(path).startswith("npz:") else path).expanduser()
    if path.is_dir():
        if (path / MANIFEST).is_file():
            images, labels, names = _from_manifest(path, classes)
            ds = LTDataset(images, labels, names, f"synthetic:{path.name}", {"source": str(path)})
        else:
            ds = _from_class_folders(path, classes, resolution, channels)
            ds.meta["source"] = str(path)
    elif path.suffix == ".npz" and path.is_file():
        raw = load_npz(path)
        names = list(classes) if classes is not None else raw.classes
        unknown = [c for c in raw.classes if c not in names]
        if classes is not None and (unknown or len(raw.classes) != len(classes)):
            raise LtaugError(f"--synthetic {path}: its classes ({', '.join(raw.classes[:10])}"
                             f"{', ...' if len(raw.classes) > 10 else ''}) differ from the dataset's "
                             f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); use a synthetic "
                             f"set generated for this dataset")
        remap = np.asarray([names.index(c) for c in raw.classes], dtype=np.int64)
        ds = LTDataset(raw.images, remap[raw.labels], names, f"synthetic:{path.name}", {"source": str(path)})
    elif not path.exists():
        raise LtaugError(f"--synthetic {path}: no such folder or file")
    else:
        raise LtaugError(f"--synthetic {path}: expected a folder of class sub-folders or an .npz file")
    if resolution is not None or channels:
        ds.images = to_resolution(ds.images, resolution or ds.resolution, channels)
    return ds
