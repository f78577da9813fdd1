"""Writing a synthetic folder, and repairing what a crash leaves (the format itself: ltaug.data.synthetic).

An image counts as done when its manifest line exists AND its PNG exists and decodes to the generator's shape. A
run killed at any moment (kill -9 included) or stopped by a full disk leaves at worst: a `.tmp` file (deleted on
resume), a renamed PNG without its manifest line (deleted and redrawn identically from its seed), a torn last
manifest line (dropped), or a PNG that is empty or truncated (a power cut after the rename; its line dropped, the
file deleted and redrawn). `scan()` repairs these and rewrites the manifest atomically, so resuming completes the
plan exactly, without duplicates. A failed append (full disk) is cut back to the manifest's previous size, so it
never leaves a torn line at all.

Nothing here follows a symbolic link: `synthesize` holds the folder's lock (ltaug.locks), which refuses a folder
with a link inside it, and the writers below create their files with O_EXCL | O_NOFOLLOW.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

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
from ltaug.files import append_text, atomic_write, atomic_write_json, atomic_write_text, read_jsonl
from ltaug.space import as_fault

MANIFEST_LINE_BYTES = 420  # a manifest line, for the space estimate (measured: 330 to 400 bytes)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG under a temporary name in the same folder, then rename: never a truncated PNG under `path`.

    The temporary file is created exclusively and never through a link (O_EXCL | O_NOFOLLOW). No fsync: the rename
    is atomic against a killed process (the kernel keeps the data); fsync of thousands of small files would dominate
    the run, and an image lost to a power cut is found by `scan` (it does not decode) and redrawn identically.
    Raises WriteFault (temporary file removed) when the disk is full or the folder read-only.
    """
    data = encode_png(image)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except FileExistsError:  # left by an earlier process with our pid
            tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        fault = as_fault(e, path, len(data))
        if fault is not None:
            raise fault from None
        if isinstance(e, OSError) and e.errno == errno.ELOOP:
            raise LtaugError(f"{tmp} is a symbolic link; ltaug never writes through links: remove it") from None
        raise


def png_ok(path: Path, shape: Optional[tuple] = None) -> bool:
    """Whether `path` is a whole PNG that decodes (to `shape` = (H, W, C) when given): the check a finished image
    passes before a resume trusts it."""
    try:
        if path.is_symlink() or path.stat().st_size == 0:
            return False
        with Image.open(path) as img:
            if img.format != "PNG":
                return False
            img.load()
            if shape is not None:
                channels = {"L": 1, "RGB": 3}.get(img.mode)
                if (img.height, img.width, channels) != tuple(shape):
                    return False
    except Exception:  # noqa: BLE001 - truncated, corrupt, a bomb, unreadable: not a finished image
        return False
    return True


def png_bytes_estimate(shape: tuple) -> int:
    """An upper bound of one PNG's size for images of `shape` (H, W, C): the size of a PNG of noise (which does not
    compress), as a generated image at most takes."""
    h, w, c = shape
    noise = np.random.default_rng(0).integers(0, 256, (h, w, c), dtype=np.uint8)
    return len(encode_png(noise))


def space_needed(out: Path, shape: tuple, new_images: int, npz_images: int = 0, classes: int = 0) -> int:
    """Bytes a plan still writes into `out`: `new_images` PNGs and manifest lines, the npz of `npz_images` images
    when asked for, the grid, and the small JSON files."""
    h, w, c = shape
    need = new_images * (png_bytes_estimate(shape) + MANIFEST_LINE_BYTES)
    if npz_images:
        need += npz_images * (h * w * c + 120) + 4096
    grid = (classes or 1) * 8 * (2 * h + 2) * (2 * w + 2) * 3 // 2  # at most the raw grid, PNG-compressed about 2x
    return need + grid + 64 * 1024


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
        if folder.is_symlink() or not folder.is_dir():
            continue  # a link is never followed (the lock refuses a folder holding one)
        for p in folder.iterdir():
            if p.suffix in (".png", ".tmp") and (p.is_file() or p.is_symlink()):
                p.unlink()
        try:
            folder.rmdir()
        except OSError:  # the user's own files are in there
            pass


def scan(out: Path, classes: list[str], shape: Optional[tuple] = None) -> FolderState:
    """Read back what is finished, repairing what a crash can leave (see the module docstring). shape: (H, W, C)
    every finished PNG must decode to (None: any whole PNG)."""
    out = Path(out)
    dirs = class_dirs(classes)
    # missing_png: a line whose PNG is missing, empty, truncated or undecodable (the line goes; the image is redrawn)
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
        if not (out / rel).is_file() or (out / rel).is_symlink():
            repaired["missing_png"] += 1
            continue
        if not png_ok(out / rel, shape):  # empty or truncated: drop the line; the file goes below, then redrawn
            repaired["missing_png"] += 1
            continue
        by_seed[seed] = r
    keep = set(by_seed)
    for label, d in enumerate(dirs):
        folder = out / d
        if folder.is_symlink() or not folder.is_dir():
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
    """Append records as JSON lines in one write (a kill can tear only the last line, which scan drops; a full disk
    tears nothing: ltaug.files.append_text cuts a failed append back)."""
    if not records:
        return
    append_text(path, "".join(json.dumps(r) + "\n" for r in records))


def write_npz(out: Path, classes: list[str]) -> Path:
    """Pack every image of the manifest into OUT/synthetic.npz (images uint8 [N,H,W,C], labels, classes, seeds,
    files), sorted by seed, written atomically. Readable by `ltaug.data.load_dataset("npz:...")`."""
    records = sorted(finished(out), key=lambda r: r["seed"])
    images = [read_png(out / r["path"]) for r in records]
    arr = np.stack(images) if images else np.zeros((0, 1, 1, 1), np.uint8)
    path = out / NPZ
    arrays = dict(images=arr, labels=np.array([r["label"] for r in records], dtype=np.int64),
                  classes=np.array(classes), seeds=np.array([r["seed"] for r in records], dtype=np.int64),
                  files=np.array([r["path"] for r in records]))
    atomic_write(path, lambda f: np.savez(f, **arrays), size_hint=arr.nbytes)
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
