"""Writing a synthetic folder, and repairing what a crash leaves (the format itself: ltaug.data.synthetic).

An image counts as done when its manifest line exists AND its PNG exists. A run killed at any moment (kill -9
included) leaves at worst: a `.tmp` file (deleted on resume), a renamed PNG without its manifest line (deleted and
redrawn identically from its seed), or a torn last manifest line (dropped). `scan()` repairs these and rewrites the
manifest atomically, so resuming completes the plan exactly, without duplicates.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ltaug.data.longtail import group_of
from ltaug.data.synthetic import (
    GRID,
    IDENTITY_KEYS,
    MANIFEST,
    NPZ,
    PLAN,
    REJECTED,
    SETTINGS,
    class_dirs,
    encode_png,
    finished,
    png_name,
    read_png,
)
from ltaug.diffusion.grid import head_to_tail, row_label, save_grid
from ltaug.errors import LtaugError
from ltaug.files import atomic_write_json, atomic_write_text, read_jsonl


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG under a temporary name in the same folder, then rename: never a truncated PNG under `path`.

    No fsync: the rename is atomic against a killed process (the kernel keeps the data); fsync of thousands of small
    files would dominate the run, and an image lost to a power cut is redrawn identically on resume.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(encode_png(image))
    os.replace(tmp, path)


@dataclass
class FolderState:
    """What a folder holds after `scan`: finished records (by seed) and rejected seeds, per label."""

    records: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    repaired: dict = field(default_factory=dict)  # what scan fixed: torn lines, duplicates, orphans, tmp files

    def done_k(self, label: int) -> set[int]:
        return {r["k"] for r in self.records if r["label"] == label}

    def rejected_k(self, label: int) -> set[int]:
        return {r["k"] for r in self.rejected if r["label"] == label}


def identity(settings: dict) -> dict:
    """The keys that make images comparable; a folder from before the amp option was sampled in fp32 ("none")."""
    return {k: settings.get(k, "none" if k == "amp" else None) for k in IDENTITY_KEYS}


def prepare(out: Path, settings: dict, classes: list[str], overwrite: bool) -> None:
    """Make `out` ready for images of `settings`' identity, or refuse (LtaugError) if it holds other images.

    overwrite: delete what an earlier synthesis wrote (settings, plan, manifests, npz, PNGs in class folders)
    and start over; other files are left alone.
    """
    out = Path(out)
    settings_path = out / SETTINGS
    if overwrite and out.exists():
        clear(out, classes)
    if settings_path.exists() and not overwrite:
        try:
            old = json.loads(settings_path.read_text())
        except (json.JSONDecodeError, OSError):
            raise LtaugError(f"{settings_path} is unreadable; use --overwrite to start this folder over") from None
        a, b = identity(old), identity(settings)
        diff = [k for k in IDENTITY_KEYS if a.get(k) != b.get(k)]
        if diff:
            detail = "; ".join(f"{k}: folder has {_short(a.get(k))}, this run asks {_short(b.get(k))}" for k in diff)
            raise LtaugError(
                f"{out} already holds images made with other settings ({detail}). Images of different checkpoints "
                f"or settings are never mixed: use --overwrite to start over, or --out to write elsewhere")
        if old.get("classes") != settings.get("classes"):
            raise LtaugError(f"{out} holds images of a generator with other classes; use --overwrite or --out")
        return
    if not overwrite and out.exists() and any(out.iterdir()):
        known = {MANIFEST, PLAN, NPZ, REJECTED}
        if any((out / k).exists() for k in known) or any((out / d).is_dir() for d in class_dirs(classes)):
            raise LtaugError(f"{out} holds synthetic images but no {SETTINGS} (their settings are unknown); "
                             "use --overwrite to start over, or --out to write elsewhere")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(settings_path, settings)


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 24 else s[:12] + "..." + s[-6:]


def clear(out: Path, classes: list[str]) -> None:
    """Delete what a synthesis wrote into `out` (and nothing else)."""
    for name in (SETTINGS, PLAN, MANIFEST, REJECTED, NPZ, GRID):
        (out / name).unlink(missing_ok=True)
    for d in class_dirs(classes):
        folder = out / d
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.suffix in (".png", ".tmp") and p.is_file():
                p.unlink()
        try:
            folder.rmdir()
        except OSError:  # the user's own files are in there
            pass


def scan(out: Path, classes: list[str]) -> FolderState:
    """Read back what is finished, repairing what a crash can leave (see the module docstring)."""
    out = Path(out)
    dirs = class_dirs(classes)
    repaired = {"torn_or_invalid_lines": 0, "duplicates": 0, "missing_png": 0, "orphan_png": 0, "tmp_files": 0}
    raw_lines = (out / MANIFEST).read_text().splitlines() if (out / MANIFEST).exists() else []
    records = read_jsonl(out / MANIFEST)
    repaired["torn_or_invalid_lines"] = sum(1 for line in raw_lines if line.strip()) - len(records)
    by_seed: dict[int, dict] = {}
    for r in records:
        try:
            seed, label, rel = int(r["seed"]), int(r["label"]), r["path"]
        except (KeyError, TypeError, ValueError):
            repaired["torn_or_invalid_lines"] += 1
            continue
        if not 0 <= label < len(classes) or rel != f"{dirs[label]}/{png_name(seed)}":
            repaired["torn_or_invalid_lines"] += 1
            continue
        if seed in by_seed:
            repaired["duplicates"] += 1
            continue
        if not (out / rel).is_file():
            repaired["missing_png"] += 1
            continue
        by_seed[seed] = r
    keep = set(by_seed)
    for label, d in enumerate(dirs):
        folder = out / d
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                repaired["tmp_files"] += 1
            elif p.suffix == ".png" and p.stem.isdigit() and int(p.stem) not in keep:
                p.unlink(missing_ok=True)  # renamed before its manifest line was written: redraw it
                repaired["orphan_png"] += 1
    clean = sorted(by_seed.values(), key=lambda r: r["seed"])
    if any(repaired[k] for k in ("torn_or_invalid_lines", "duplicates", "missing_png")):
        atomic_write_text(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in clean))
    rejected = {}
    for r in read_jsonl(out / REJECTED):
        if "seed" in r and "label" in r and "k" in r:
            rejected.setdefault(int(r["seed"]), r)
    rej = sorted(rejected.values(), key=lambda r: r["seed"])
    if (out / REJECTED).exists():
        atomic_write_text(out / REJECTED, "".join(json.dumps(r) + "\n" for r in rej))
    return FolderState(clean, rej, repaired)


def append_lines(path: Path, records: list[dict]) -> None:
    """Append records as JSON lines in one write (a kill can tear only the last line, which scan drops)."""
    if not records:
        return
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))


def write_npz(out: Path, classes: list[str]) -> Path:
    """Pack every image of the manifest into OUT/synthetic.npz (images uint8 [N,H,W,C], labels, classes, seeds,
    files), sorted by seed, written atomically. Readable by `ltaug.data.load_dataset("npz:...")`."""
    records = sorted(finished(out), key=lambda r: r["seed"])
    images = [read_png(out / r["path"]) for r in records]
    arr = np.stack(images) if images else np.zeros((0, 1, 1, 1), np.uint8)
    path = out / NPZ
    tmp = out / f".{NPZ}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, images=arr, labels=np.array([r["label"] for r in records], dtype=np.int64),
                 classes=np.array(classes), seeds=np.array([r["seed"] for r in records], dtype=np.int64),
                 files=np.array([r["path"] for r in records]))
    os.replace(tmp, path)
    return path


def write_grid(out: Path, classes: list[str], real_counts: list[int], cols: int = 8) -> Path | None:
    """OUT/grid.png: the first `cols` images (lowest k) of every class that has any, one row per class from head to
    tail, labelled with the class name and its real training count. None when the folder holds no image."""
    by_label: dict[int, list[dict]] = {}
    for r in finished(out):
        by_label.setdefault(int(r["label"]), []).append(r)
    rows, labels = [], []
    for y in head_to_tail(list(real_counts)):
        recs = sorted(by_label.get(y, []), key=lambda r: r.get("k", 0))[:cols]
        if recs:
            rows.append(np.stack([read_png(out / r["path"]) for r in recs]))
            labels.append(f"{row_label(classes[y], real_counts[y])} {group_of(real_counts)[y]}")
    return save_grid(rows, labels, out / GRID) if rows else None
