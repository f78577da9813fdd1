"""Recipe field helpers shared by every section: a default, a help string (the YAML comment), choices, a bound."""

from __future__ import annotations

import dataclasses
from typing import Any


def opt(default: Any, help: str, choices: tuple | None = None, min: float | None = None) -> Any:
    """A recipe field: its default, a one-line help (written as the YAML comment), optional choices / lower bound."""
    meta = {"help": help, "choices": choices, "min": min}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda d=default: dataclasses.replace(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
    """A nested recipe section (a dataclass with defaults for every field)."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "choices": None, "min": None})
