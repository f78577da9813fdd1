"""Command-line options that set a recipe key: their type, help and flag come from the key's field in
ltaug.config, so a knob is described once, and `--help` says which recipe key each flag sets (its default is that
key's value in the recipe in use: the run's own config.yaml, or `--recipe`)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any, Optional, get_origin

import typer
from rich.markup import escape

from ltaug.config import Recipe


def field_of(key: str) -> tuple[dataclasses.Field, Any]:
    """The dataclass field and its type annotation for a dotted recipe key ("synth.w")."""
    cls: Any = Recipe
    parts = key.split(".")
    for i, name in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        if name not in fields:
            raise KeyError(f"no recipe key {key}")
        if i == len(parts) - 1:
            return fields[name], hints[name]
        cls = hints[name]
    raise KeyError(key)


def _cli_type(tp: Any) -> Any:
    if get_origin(tp) is typing.Union:  # Union[float, str] (a margin that may be "auto"): take it as text
        return str
    if get_origin(tp) in (list, tuple):
        return str  # comma-separated on the command line
    return tp


def key_option(key: str, *flags: str, panel: Optional[str] = None, help: Optional[str] = None,
               type_: Any = None) -> Any:
    """`Annotated[Optional[T], typer.Option(...)]` for recipe key `key` (None = not given: the recipe decides)."""
    f, tp = field_of(key)
    names = flags or ((f.metadata.get("flag"),) if f.metadata.get("flag") else (f"--{f.name.replace('_', '-')}",))
    text = help or f.metadata.get("help", "")
    if f.metadata.get("choices") and not help:
        text += f": {' | '.join(map(str, f.metadata['choices']))}"
    text = escape(text) + f" \\[recipe key {key}]"  # rich markup: the brackets are text
    cli_tp = type_ or _cli_type(tp)
    if cli_tp is bool and len(names) == 1 and "/" not in names[0]:
        names = (f"{names[0]}/--no-{names[0].lstrip('-')}",)
    choices = tuple(map(str, f.metadata.get("choices") or ()))
    complete = (lambda incomplete: [c for c in choices if c.startswith(incomplete)]) if choices else None  # <TAB>
    return Annotated[Optional[cli_tp], typer.Option(*names, help=text, rich_help_panel=panel, show_default=False,
                                                    autocompletion=complete)]

