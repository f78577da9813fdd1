"""Disk space and writability: what a write fault looks like to the user, and the estimates that go with a plan.

A write that fails because the disk is full (ENOSPC, EDQUOT, EFBIG from a file-size limit) or the folder cannot be
written (EROFS, EACCES, EPERM) becomes a `WriteFault`: one message naming the folder, the space the work needs
there and what is free, and that running the command again resumes it. The CLI prints it and exits with status 1
(a runtime fault, not a usage error). The writers in `ltaug.files` remove their temporary file before raising it,
so nothing half-written stays behind.

Stages announce what they expect to write with `expect(folder, nbytes)`; a fault inside that folder then names the
larger of that estimate and the size of the write that failed.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Optional

from ltaug.errors import LtaugError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
FAULTS = NO_SPACE + NOT_WRITABLE

_EXPECTED: dict[Path, int] = {}  # folder -> bytes the current work expects to write there


def fmt_bytes(n: Optional[float]) -> str:
    """1536 -> '1.5 KiB' (None -> 'unknown')."""
    if n is None:
        return "unknown"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def existing_ancestor(path: str | os.PathLike) -> Path:
    """`path` itself when it exists, else its nearest existing parent."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike) -> Optional[int]:
    """Bytes free to this user on the file system of `path` (or of its nearest existing parent)."""
    try:
        return shutil.disk_usage(existing_ancestor(path)).free
    except OSError:
        return None


def expect(folder: str | os.PathLike, nbytes: int) -> None:
    """Record that the current work will write about `nbytes` into `folder` (named in a fault there)."""
    _EXPECTED[Path(folder).expanduser().absolute()] = int(nbytes)


def expected(path: str | os.PathLike) -> Optional[int]:
    """The estimate recorded for `path`'s folder or the nearest of its parents."""
    p = Path(path).expanduser().absolute()
    for d in (p, *p.parents):
        if d in _EXPECTED:
            return _EXPECTED[d]
    return None


def space_note(folder: str | os.PathLike, nbytes: int, what: str = "this plan") -> str:
    """'space: this plan writes about 12.3 MiB into OUT (4.0 GiB free there)', with a warning when it does not
    fit. Also records the estimate (`expect`)."""
    expect(folder, nbytes)
    free = free_bytes(folder)
    text = f"space: {what} writes about {fmt_bytes(nbytes)} into {folder} ({fmt_bytes(free)} free there)"
    if free is not None and free < nbytes:
        text += "; that is more than is free: free some space or choose another --out (an interrupted run resumes)"
    return text


class WriteFault(OSError):
    """A write refused by the file system (full, over quota, read-only, not permitted), with its context."""

    def __init__(self, err: int, path: str | os.PathLike, needed: Optional[int] = None, detail: str = ""):
        self.path = Path(path).absolute()
        self.folder = self.path.parent if not self.path.is_dir() else self.path
        self.needed = max(filter(None, (needed, expected(self.path))), default=None)
        self.free = free_bytes(self.folder)
        self.detail = detail
        super().__init__(err, os.strerror(err), str(path))

    @property
    def no_space(self) -> bool:
        return self.errno in NO_SPACE

    def __str__(self) -> str:
        if self.no_space:
            why = ("no space left on the device" if self.errno != errno.EFBIG else
                   "the file size limit of this process (ulimit -f) was reached")
            need = f"it needs about {fmt_bytes(self.needed)} there" if self.needed else "it needs more space there"
            return (f"{why} while writing {self.path.name} in {self.folder}: {need}, {fmt_bytes(self.free)} is "
                    "free. Nothing half-written was kept; free some space (or write elsewhere with --out), then run "
                    "the same command again (with --resume where it has one) to continue from what was written")
        return (f"cannot write {self.path.name} in {self.folder}: {self.strerror.lower()}"
                f"{' (' + self.detail + ')' if self.detail else ''}. Make the folder writable or choose another "
                "--out, then run the same command again (with --resume where it has one)")


def as_fault(e: BaseException, path: str | os.PathLike, needed: Optional[int] = None) -> Optional[WriteFault]:
    """`e` as a WriteFault when it is a full-disk / not-writable OSError (None otherwise)."""
    if isinstance(e, WriteFault):
        return e
    if isinstance(e, OSError) and e.errno in FAULTS:
        return WriteFault(e.errno, path, needed)
    return None


def require_writable(path: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse (LtaugError: a usage error, before anything is created) an output folder that cannot be written:
    `path` when it exists, else the nearest parent in which it would be created."""
    p = Path(path).expanduser().absolute()
    base = existing_ancestor(p)
    if base.exists() and not base.is_dir():
        raise LtaugError(f"{flag} {path}: {base} is a file, not a folder; choose a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        try:
            ro = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
        except OSError:
            ro = False
        why = "is on a read-only file system" if ro else "is not writable by this user"
        where = "" if base == p else f" (it would be created in {base})"
        raise LtaugError(f"{flag} {path}: {base} {why}{where}; choose a folder you can write")
