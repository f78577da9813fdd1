"""What every command shares: error handling (exit 2, no traceback), recipe resolution, common options.

This module and the command modules import no torch at the top, so `ltaug --help` stays fast; each command imports
the library it shells over when it runs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from ltaug.cli.options import key_option
from ltaug.config import Recipe, load_recipe
from ltaug.errors import LtaugError
from ltaug.rundir import RunDir

console = Console()
err_console = Console(stderr=True)

USAGE_EXIT = 2


def fail(message: str, code: int = USAGE_EXIT) -> None:
    """Print an error (naming the flag/file and the fix) and exit; 2 = usage error."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn LtaugError into a clear message and exit status 2 (typer reads the wrapped signature)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LtaugError as e:
            fail(str(e))
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130)

    return wrapper


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
RecipeOpt = Annotated[Optional[str], typer.Option("--recipe", "-r",
                                                  help="built-in recipe name or YAML path (default mnist_lt)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s",
                                                     help="override any recipe key: --set generator.steps=2000")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o",
                                                help="run directory to create (default: runs/NNNNN-NAME)")]
DeviceOpt = key_option("device", "--device")
DatasetOpt = key_option("data.dataset", "--dataset", "-d")
