"""Run directories and atomic files.

A run directory is append-only: `config.yaml` (the resolved recipe, itself a valid recipe), `env.json`, `log.txt`,
`metrics.jsonl`, and one sub-folder per stage (`generator/`, `synth/`, `classifier/`, `evaluate/`, ...). Numbered
like EDM's: `runs/00003-mnist_lt-diffrop/`. Every file that could be read while half-written goes through a
temporary name in the same folder and `os.replace`, so a crash leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

DEFAULT_RUNS = Path("runs")
_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    _atomic(Path(path), lambda f: f.write(text), "w")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic(Path(path), lambda f: f.write(data), "wb")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    _atomic(Path(path), lambda f: torch.save(obj, f), "wb")


def atomic_savefig(fig: Any, path: str | os.PathLike, **kw: Any) -> None:
    """Save a matplotlib figure atomically; the format comes from the final name's suffix."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    _atomic(Path(path), lambda f: fig.savefig(f, format=fmt, **kw), "wb")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (a whole line per write, so a reader never sees half a record)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "run"


def new_run_dir(root: str | os.PathLike | None = None, desc: str = "run") -> Path:
    """Create `root/NNNNN-desc` with the next free number (root defaults to ./runs)."""
    root = Path(root) if root is not None else DEFAULT_RUNS
    root.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    n = max(numbers, default=-1) + 1
    while True:
        path = root / f"{n:05d}-{_slug(desc)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another process took this number
            n += 1


def env_info() -> dict:
    """What produced a run: versions, host, devices. Written as env.json."""
    info: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "argv": sys.argv,
    }
    try:
        from ltaug import __version__

        info["ltaug"] = __version__
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cpu_threads"] = torch.get_num_threads()
    except Exception:  # env.json is informative; never fail a run over it
        pass
    return info


def init_run_dir(path: str | os.PathLike, recipe: Any) -> Path:
    """Write config.yaml (resolved recipe) and env.json into a run directory; returns the path."""
    from ltaug.config import save_recipe

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, path / "config.yaml")
    atomic_write_json(path / "env.json", env_info())
    return path


def log(run_dir: str | os.PathLike, message: str) -> None:
    """Append a timestamped line to run_dir/log.txt."""
    p = Path(run_dir) / "log.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message.rstrip() + "\n")
