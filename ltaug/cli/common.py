"""What every command shares: error handling (exit 2, no traceback), recipe resolution, common options.

This module and the command modules import no torch at the top, so `ltaug --help` stays fast; each command imports
the library it shells over when it runs.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import math
import os
import shutil
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ltaug.cli.options import key_option
from ltaug.config import Recipe, load_recipe
from ltaug.errors import LtaugError
from ltaug.rundir import CONFIG, ENV, LOG, RunDir
from ltaug.space import FAULTS, WriteFault


def _console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        # a log file or a pipe: one line per message, never wrapped at 80 columns (grep and logs read whole lines)
        c.soft_wrap = True
        c.width = 400
    return c


console = _console()
err_console = _console(stderr=True)


@dataclass
class Output:
    """What the command line was asked to print: -q (errors only, and --json's object), -v (the libraries'
    notices, a traceback with each error), --json (one JSON object on stdout, nothing else there)."""

    quiet: bool = False
    verbose: bool = False
    json: bool = False

    @property
    def progress(self) -> bool:
        return not self.quiet


OUTPUT = Output()

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="print nothing but errors (and --json's object): no "
                                        "tables, no progress bars")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="also print the libraries' notices (diffusers, "
                                          "timm, Ray) and a traceback with each error")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the results as one JSON object on stdout (tables and "
                                       "messages are left out; progress and errors stay on stderr)")]


def _set_output(quiet: bool, verbose: bool) -> None:
    OUTPUT.quiet, OUTPUT.verbose, OUTPUT.json = quiet, verbose, False
    console.quiet = quiet
    level = "info" if verbose else "error"
    # diffusers reads its verbosity when it is imported (commands import it later); the accelerate notice and its
    # other advice are warnings
    os.environ["DIFFUSERS_VERBOSITY"] = level
    if "diffusers" in sys.modules:
        sys.modules["diffusers"].utils.logging.set_verbosity(40 if not verbose else 20)


def json_output(enabled: bool) -> None:
    """Call first in a command with --json: its tables and messages go nowhere, emit_json prints the result."""
    if enabled:
        OUTPUT.json = True
        console.quiet = True


def _plain(obj: Any) -> Any:
    """JSON-safe: NaN / inf as null, paths and other objects as strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if hasattr(obj, "item"):  # numpy / torch scalars
        return _plain(obj.item())
    return str(obj)


def emit_json(obj: Any) -> None:
    """The --json output: one object on stdout."""
    if OUTPUT.json:
        sys.stdout.write(json.dumps(_plain(obj), indent=1, allow_nan=False) + "\n")
        sys.stdout.flush()

USAGE_EXIT = 2
FAULT_EXIT = 1


def fail(message: str, code: int = USAGE_EXIT) -> None:
    """Print an error (naming the flag/file and the fix) on one line and exit; 2 = usage error, 1 = a runtime fault
    (full disk, read-only folder). The message is user text (paths, class names): printed as it is, never as
    console markup."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Every command's shell: the -q / -v options (one home for them), LtaugError as a clear message and exit
    status 2, and a write the file system refused (full disk, read-only) as one message and exit status 1 (typer
    reads the wrapper's signature: the command's own parameters, then quiet and verbose)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, quiet: bool = False, verbose: bool = False, **kwargs: Any) -> Any:
        _set_output(quiet, verbose)
        try:
            return fn(*args, **kwargs)
        except LtaugError as e:
            if OUTPUT.verbose:
                traceback.print_exc()
            fail(str(e), getattr(e, "exit_code", USAGE_EXIT))
        except WriteFault as e:
            if OUTPUT.verbose:
                traceback.print_exc()
            fail(str(e), FAULT_EXIT)
        except OSError as e:
            if e.errno not in FAULTS:
                raise
            where = f" ({e.filename})" if e.filename else ""
            what = "no space left on the device" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) \
                else e.strerror.lower()
            fail(f"{what}{where}; free some space or make the folder writable (or use --out elsewhere), then run "
                 "the same command again (with --resume where it has one)", FAULT_EXIT)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130)

    sig = inspect.signature(fn, eval_str=True)
    extra = [inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=QuietOpt),
             inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=VerboseOpt)]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == p.POSITIONAL_OR_KEYWORD else p
              for p in sig.parameters.values()]
    wrapper.__signature__ = sig.replace(parameters=params + extra)
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), "quiet": QuietOpt, "verbose": VerboseOpt}
    return wrapper


BOOKKEEPING = (CONFIG, ENV, LOG)


@contextmanager
def undo_on_usage_error(run_path: str | os.PathLike, existed: Optional[bool] = None) -> Iterator[None]:
    """Take back what a command wrote into a run directory before a usage error (LtaugError) stopped it, so bad
    input leaves nothing behind: a run directory this command created is removed when it holds nothing but
    config.yaml / env.json / log.txt (and empty folders); in a run that existed and in which nothing else changed,
    log.txt is cut back to its size before and a config.yaml / env.json this command wrote is removed. Work a stage
    did (any other file written or changed) is never touched, and then neither is the log that records it.
    existed: whether the folder was there before the command (default: whether it is there now)."""
    path = Path(run_path).expanduser().absolute()
    existed = path.exists() if existed is None else existed
    log = path / LOG
    log_size = log.stat().st_size if log.is_file() else None
    had = {name: (path / name).exists() for name in BOOKKEEPING}
    before = _files(path) if existed else {}
    try:
        yield
    except LtaugError:
        if not existed:
            if path.is_dir() and not path.is_symlink() and _only_bookkeeping(path):
                shutil.rmtree(path, ignore_errors=True)
        elif path.is_dir() and _files(path) == before:
            if log_size is not None and log.is_file() and not log.is_symlink():
                with open(log, "r+b") as f:
                    f.truncate(log_size)
            for name in BOOKKEEPING:
                p = path / name
                if not had[name] and p.is_file() and not p.is_symlink():
                    p.unlink()
        raise


def _files(path: Path) -> dict:
    """(size, mtime) of every file in a run directory but its bookkeeping files (what a stage's work changes)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if p.parent == path and f in BOOKKEEPING:
                continue
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def _only_bookkeeping(path: Path) -> bool:
    """Whether a run directory holds only config.yaml, env.json, log.txt (and empty folders)."""
    return not _files(path)


def local_or_hub(path: Path, flag: str, what: str = "a run directory or a pipeline folder") -> Path:
    """`path` itself, unless it names a Hugging Face Hub repository (ltaug.hub's rule: OWNER/NAME that is not a local
    path, or hf://...): then the local snapshot of it (downloaded or cached; offline: a message naming `flag`). A
    local path that does not exist is refused as such, with the closest name beside it."""
    from ltaug.hub import closest_hint, parse_hub_id, resolve

    if parse_hub_id(str(path)) is not None:
        return resolve(str(path), flag=flag)
    if not Path(path).expanduser().exists():
        raise LtaugError(f"{flag} {path} does not exist (no such local file or folder)"
                         f"{closest_hint(Path(path).expanduser())}; pass {what} (or a Hub id OWNER/NAME)")
    return path


def resolve_recipe(recipe: Optional[str], sets: Optional[list[str]], **direct: Any) -> Recipe:
    """Recipe by name/path, then direct flags (dotted keys -> value, None = not given), then --set overrides."""
    return load_recipe(recipe, list(sets or []), values=direct)


def recipe_of(path: Path, recipe: Optional[str]) -> Optional[str]:
    """The recipe a command on `path` starts from: --recipe when given, else the recipe of the run holding `path`
    (ltaug.rundir.RunDir.find), else None (the embedded default)."""
    if recipe is not None:
        return recipe
    run = RunDir.find(path)
    return str(run.config) if run is not None and run.exists() else None


# Common options, written once.
RecipeOpt = Annotated[Optional[str], typer.Option("--recipe", "-r", help="built-in recipe name or YAML path (default "
                                                  "mnist_lt); a flag not given takes its recipe key's value: "
                                                  "`ltaug config -r R` shows them all")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s",
                                                     help="override any recipe key: --set generator.steps=2000")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o",
                                                help="run directory to create (default: runs/NNNNN-NAME)")]
DeviceOpt = key_option("device", "--device")
DatasetOpt = key_option("data.dataset", "--dataset", "-d")
