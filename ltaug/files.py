"""Files that are never seen half-written, and the small readers every stage shares.

Every file that could be read while it is being written goes through a temporary name in the same folder and
`os.replace`, so a crash leaves the old file or the new one, never a torn one. JSONL files are appended one whole
line per write; a reader drops a torn last line, and a failed append (a full disk) is cut back to the file's size
before it, so no torn line is ever left by a fault. A write the file system refuses (full, read-only) raises
`ltaug.space.WriteFault` after the temporary file is removed. Appends never follow a symbolic link
(`check_no_links` refuses links inside an output folder before a stage writes there).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from ltaug.errors import LtaugError
from ltaug.space import as_fault

_UMASK = os.umask(0)
os.umask(_UMASK)
TMP_RE = re.compile(r"^\..+\.tmp$")  # what atomic_write, write_png and the npz writer leave when killed mid-write


class _Recording:
    """A file proxy that remembers the OSError a write raised (torch.save reports a failed write as an opaque
    RuntimeError; this keeps the errno, so a full disk is named as such)."""

    def __init__(self, f: Any):
        self._f = f
        self.error: Optional[OSError] = None
        self.written = 0

    def write(self, data: Any) -> Any:
        try:
            n = self._f.write(data)
        except OSError as e:
            self.error = e
            raise
        self.written += len(data)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb",
                 size_hint: Optional[int] = None) -> None:
    """Call `write(f)` on a temporary file beside `path`, fsync it, then rename it to `path` (e.g.
    `atomic_write(p, lambda f: torch.save(state, f))`). size_hint: the bytes the file will take (named in the
    message when the disk is full). Raises WriteFault (temporary file removed) when the file system refuses."""
    path = Path(path)
    tmp = None
    rec = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
        with os.fdopen(fd, mode) as f:
            rec = _Recording(f)
            write(rec)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        cause = rec.error if rec is not None and rec.error is not None else e
        fault = as_fault(cause, path, max(size_hint or 0, rec.written if rec else 0) or None)
        if fault is not None:
            raise fault from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data), "wb")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_savefig(fig: Any, path: str | os.PathLike, **kw: Any) -> None:
    """Save a matplotlib figure atomically; the format comes from the final name's suffix."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **kw)
    atomic_write_bytes(path, buf.getvalue())


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append `text` in one write. Never through a symbolic link (LtaugError), and never a torn tail: when the
    write fails (a full disk) the file is cut back to its size before it and WriteFault is raised."""
    path = Path(path)
    data = text.encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LtaugError(f"{path} is a symbolic link; ltaug never writes through links in its output "
                             "folders: remove the link (or write elsewhere with --out)") from None
        fault = as_fault(e, path, len(data))
        if fault is not None:
            raise fault from None
        raise
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            fault = as_fault(e, path, len(data))
            if fault is not None:
                raise fault from None
            raise
    finally:
        os.close(fd)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (a whole line per write, so a reader never sees half a record)."""
    append_text(path, json.dumps(record, default=_json_default) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a torn last line (from a crash mid-write) is ignored."""
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON file's content, or None when it is missing or unreadable (a reader of optional outputs)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex), read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def is_link(path: str | os.PathLike) -> bool:
    return Path(path).is_symlink()


def check_no_links(folder: str | os.PathLike, what: str = "") -> None:
    """Refuse (LtaugError) an output folder that holds a symbolic link anywhere inside it: a stage writes, deletes
    and reads only inside its own folder, and a link there would take it elsewhere. The folder itself (the path a
    user gave) may be a link; nothing below it is followed."""
    root = Path(folder)
    if not root.is_dir():
        return
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.is_symlink():
                target = os.readlink(e.path)
                raise LtaugError(f"{e.path} is a symbolic link (to {target}){' in ' + what if what else ''}; ltaug "
                                 f"never writes, deletes or follows links inside its output folders: remove the "
                                 f"link, or give the real folder with --out")
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))


def remove_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the temporary files a writer killed mid-write left in `folder` (`.NAME.*.tmp`; call it while holding
    the folder's lock, so no other writer's file is taken). Returns what was removed."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for p in (root.rglob(".*.tmp") if recursive else root.glob(".*.tmp")):
        if TMP_RE.match(p.name) and (p.is_file() or p.is_symlink()):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
