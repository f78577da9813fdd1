"""One writer per output folder: an advisory lock (`flock`) on the folder itself for as long as a stage writes.

Two `ltaug synthesize` on one folder, two `train-generator --resume` on one run, two classifiers into one folder:
the second refuses at once (LtaugError, exit 2) naming the process that holds the folder. The lock is taken on the
directory (no lock file: nothing is left behind, no timestamp changes), and the kernel releases it when its
process ends however it ends (kill -9 included), so a crash never leaves a folder locked. A lock is re-entrant
within one process.

Taking the lock also checks the folder before the stage writes anything: one that cannot be written is refused by
name; folders the lock had to create are removed again on release when nothing was put in them (so a usage error
found under the lock leaves nothing behind); and with `refuse_links`, a folder with a symbolic link anywhere inside
it is refused (ltaug never writes, deletes or follows links in its output folders).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import os
from pathlib import Path
from typing import Any, Callable, Optional

from ltaug.errors import LtaugError
from ltaug.files import check_no_links
from ltaug.space import as_fault

_HELD: dict[Path, list] = {}  # folder -> [fd, depth] for the locks this process holds


def holder(folder: Path) -> Optional[str]:
    """The process that holds a flock on `folder` ("pid 123: ltaug synthesize ..."), from /proc/locks (Linux)."""
    try:
        st = os.stat(folder)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
            pid = parts[4]
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            except OSError:
                argv = []
            shown = " ".join(argv[1:] if argv and "python" in Path(argv[0]).name else argv)
            return f"pid {pid}" + (f": {shown[:160]}" if shown else "")
    return None


class FolderLock:
    """`with FolderLock(folder, "synthesize"): ...` (or acquire() / release())."""

    def __init__(self, folder: str | os.PathLike, what: str, refuse_links: bool = True):
        self.folder = Path(folder).expanduser().absolute()
        self.what = what
        self.refuse_links = refuse_links
        self._created: list[Path] = []
        self._owner = False

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> "FolderLock":
        held = _HELD.get(self.folder)
        if held is not None:
            held[1] += 1
            return self
        self._make_folder()
        try:
            if not os.access(self.folder, os.W_OK | os.X_OK):
                raise self._refusal(OSError(errno.EROFS if _read_only(self.folder) else errno.EACCES, ""),
                                    self.folder)
            if self.refuse_links:
                check_no_links(self.folder, f"the output folder of {self.what}")
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                who = holder(self.folder) or "another ltaug process"
                raise LtaugError(
                    f"{self.folder} is in use by {who}; two ltaug processes never write one folder at once: wait "
                    f"for that one to finish (or stop it), or write elsewhere with --out") from None
        except BaseException:
            self._remove_created()
            raise
        _HELD[self.folder] = [fd, 1]
        self._owner = True
        return self

    def _make_folder(self) -> None:
        missing = []
        p = self.folder
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        if not p.is_dir():
            raise LtaugError(f"{self.folder}: {p} is a file, not a folder; choose another output folder")
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                self._remove_created()
                raise self._refusal(e, d.parent) from None
            self._created.append(d)

    def _refusal(self, e: OSError, where: Path) -> BaseException:
        """The error for a folder `where` that cannot take the stage's writes."""
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            why = "is on a read-only file system" if e.errno == errno.EROFS else "is not writable by this user"
            shown = "" if where == self.folder else f" (the output folder {self.folder} would be created there)"
            return LtaugError(f"{where} {why}{shown}; choose an output folder you can write")
        return as_fault(e, where / ".") or e

    def release(self) -> None:
        held = _HELD.get(self.folder)
        if held is None:
            return
        if not self._owner or held[1] > 1:
            held[1] -= 1
            return
        del _HELD[self.folder]
        os.close(held[0])
        self._owner = False
        self._remove_created()

    def _remove_created(self) -> None:
        for d in reversed(self._created):
            try:
                d.rmdir()  # only when empty: whatever a stage wrote there stays
            except OSError:
                break
        self._created = []


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def holds_lock(folder_of: Callable[[dict], Optional[os.PathLike | str]], what: str,
               refuse_links: bool = True) -> Callable:
    """Decorator: hold `FolderLock(folder_of(arguments), what)` while the function runs. `arguments` are the
    call's bound arguments by name (defaults applied); None = no lock. Under torchrun only rank 0 (the writer)
    takes it."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            folder = folder_of(dict(bound.arguments)) if os.environ.get("RANK", "0") == "0" else None
            if folder is None:
                return fn(*args, **kwargs)
            with FolderLock(folder, what, refuse_links):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
