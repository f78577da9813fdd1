"""The features of a run, on disk: `RUN/features/<split>-x.npy` (float32 [N, D], memory-mapped when read),
`<split>-y.npy` (int64 [N]) and `<split>.json` (what made them: the backbone's identity, the dataset, a digest of
its images and labels, the classes). The JSON is written last, so a split without it is unfinished.

Extraction is resumable and memory-bounded: rows go into a memory-mapped `.partial` file chunk by chunk, with the
number of finished rows in `<split>.progress`; a killed run continues from there. A cache written by another
backbone or dataset is refused, naming what differs (`overwrite=True` rebuilds it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ltaug.data.dataset import Labelled
from ltaug.errors import LtaugError
from ltaug.files import atomic_write, atomic_write_json, read_json
from ltaug.progress import progress_bar

SPLITS = ("train", "val", "test")


@dataclass
class FeatureSet(Labelled):
    x: np.ndarray  # float32 [N, D] (a read-only memory map)
    labels: np.ndarray  # int64 [N]
    classes: list[str]
    info: dict

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])


def paths(folder: Path, split: str) -> tuple[Path, Path, Path]:
    return folder / f"{split}-x.npy", folder / f"{split}-y.npy", folder / f"{split}.json"


def is_done(folder: str | os.PathLike, split: str) -> bool:
    return paths(Path(folder), split)[2].is_file()


def load_split(folder: str | os.PathLike, split: str) -> FeatureSet:
    """A finished split, its features memory-mapped (never all in memory at once)."""
    fx, fy, fj = paths(Path(folder), split)
    info = read_json(fj)
    if info is None:
        raise LtaugError(f"{folder}: no finished '{split}' features ({fj.name} is missing); run the features stage "
                         "(`ltaug run` with generator.space features)")
    return FeatureSet(np.load(fx, mmap_mode="r"), np.load(fy), list(info["classes"]), info)


def _differs(have: dict, want: dict) -> Optional[str]:
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            return f"{key}: cached {have.get(key)!r}, now {want.get(key)!r}"
    return None


def extract_split(folder: str | os.PathLike, split: str, images: np.ndarray, labels: np.ndarray,
                  classes: list[str], identity: dict, encode: Callable[[np.ndarray], np.ndarray], *,
                  batch_size: int = 256, overwrite: bool = False, progress: bool = True) -> FeatureSet:
    """Encode uint8 images [N, H, W, C] into `folder` as `split` (or return the cached split when its identity
    matches). identity: what decides the features (backbone, dataset, image digest); encode: images -> [n, D]."""
    folder = Path(folder)
    fx, fy, fj = paths(folder, split)
    partial, prog = fx.with_name(fx.name + ".partial"), folder / f"{split}.progress"
    want = dict(identity, n=int(len(labels)), classes=list(classes))
    done = read_json(fj)
    if done is not None:
        why = _differs({k: done.get(k) for k in want}, want)
        if why is None:
            return load_split(folder, split)
        if not overwrite:
            raise LtaugError(f"{fj}: the cached {split} features were made otherwise ({why}); delete {folder} to "
                             "rebuild them, or use another --out")
        for p in (fj, fx, fy):
            p.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    state = read_json(prog)
    start = 0
    if state is not None and state.get("identity") == want and partial.is_file() and not overwrite:
        start = int(state["rows"])
        out = np.load(partial, mmap_mode="r+")
    else:
        dim = int(np.asarray(encode(images[:1])).shape[1])
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(len(labels), dim))
        atomic_write_json(prog, {"identity": want, "rows": 0})
    with progress_bar(len(labels), f"features {split}", "img", enabled=progress, completed=start) as bar:
        for s in range(start, len(labels), batch_size):
            e = min(s + batch_size, len(labels))
            out[s:e] = np.asarray(encode(images[s:e]), dtype=np.float32)
            out.flush()
            atomic_write_json(prog, {"identity": want, "rows": e})
            bar.advance(e - s)
    if not np.isfinite(np.asarray(out)).all():
        raise LtaugError(f"the backbone gave non-finite {split} features; check features.backbone")
    dim = int(out.shape[1])
    del out
    atomic_write(fy, lambda f: np.save(f, np.asarray(labels, dtype=np.int64)))
    os.replace(partial, fx)
    atomic_write_json(fj, dict(want, dim=dim))  # last: marks the split finished
    prog.unlink(missing_ok=True)
    return load_split(folder, split)


def save_split(folder: str | os.PathLike, split: str, x: np.ndarray, labels: np.ndarray, classes: list[str],
               identity: dict) -> FeatureSet:
    """Write features computed elsewhere as a finished split (a user's own features, tests)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fx, fy, fj = paths(folder, split)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(labels):
        raise LtaugError(f"features must be [N, D] with one label each, got {x.shape} and {len(labels)} labels")
    atomic_write(fx, lambda f: np.save(f, x))
    atomic_write(fy, lambda f: np.save(f, np.asarray(labels, dtype=np.int64)))
    atomic_write_json(fj, dict(identity, n=int(len(labels)), classes=list(classes), dim=int(x.shape[1])))
    return load_split(folder, split)


def standardization(x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (float64, std floored at 1e-6) of [N, D] features, read in chunks."""
    n, d = x.shape
    s, ss = np.zeros(d), np.zeros(d)
    for i in range(0, n, chunk):
        b = np.asarray(x[i:i + chunk], dtype=np.float64)
        s += b.sum(0)
        ss += (b * b).sum(0)
    mean = s / max(n, 1)
    return mean, np.sqrt(np.maximum(ss / max(n, 1) - mean * mean, 1e-12))


def describe(folder: str | os.PathLike) -> str:
    """One line per finished split (for logs)."""
    rows = []
    for split in SPLITS:
        info = read_json(paths(Path(folder), split)[2])
        if info:
            rows.append(f"{split} {info['n']} x {info['dim']}")
    return ", ".join(rows) or "none"
