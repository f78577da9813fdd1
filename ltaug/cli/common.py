"""What every command shares: error handling (exit 2, no traceback), recipe resolution, common options."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from ltaug.errors import LtaugError

console = Console()
err_console = Console(stderr=True)

USAGE_EXIT = 2


def fail(message: str, code: int = USAGE_EXIT) -> None:
    """Print an error (naming the flag/file and the fix) and exit; 2 = usage error."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
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


def not_built(command: str, issue: str) -> None:
    fail(f"`ltaug {command}` is not built yet ({issue}); see the README for what works today")


def resolve_recipe(recipe: Optional[str], sets: Optional[list[str]], **direct: Any):
    """Recipe by name/path, then direct flags (dotted keys -> value, None = not given), then --set overrides."""
    from ltaug.config import apply_set, from_dict, read_recipe_file, Recipe

    data = read_recipe_file(recipe)
    for key, value in direct.items():
        if value is not None:
            node = data
            parts = key.split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):  # absent or empty (`evaluate:` with no keys) section
                    node[p] = {}
                node = node[p]
            node[parts[-1]] = value
    for s in sets or []:
        apply_set(data, s)
    return from_dict(Recipe, data)


# Common options, written once.
RecipeOpt = Annotated[Optional[str], typer.Option("--recipe", "-r", help="built-in recipe name or YAML path (default mnist_lt)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override any recipe key: --set generator.steps=2000")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="run directory to create (default: runs/NNNNN-NAME)")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda")]
DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", "-d", help="mnist-lt, cifar10-lt, cifar100-lt, npz:PATH, folder:PATH")]
