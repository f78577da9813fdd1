"""What every recipe section is made of: fields with a default, a help string (the YAML comment), choices and a lower
bound, checked when the section is built, however it is built (from YAML, `--set`, or `GeneratorConfig(...)` in
Python), so that each value is checked in exactly one place.

A section is a dataclass deriving from `Section` with a class attribute `KEY` (its dotted place in the recipe,
e.g. "generator.diffrop"), so every error names the recipe key at fault. A section may add a `validate()` for
checks that involve several fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import yaml

from ltaug.errors import LtaugError

# Upper bounds of sizes every section shares (a batch is allocated at once; an image side squared per image)
MAX_BATCH = 65_536
MAX_RESOLUTION = 1024


def opt(default: Any, help: str, choices: tuple | None = None, min: float | None = None, flag: str | None = None,
        why: str | None = None, open_choices: bool = False, max: float | None = None) -> Any:
    """A recipe field: its default, a one-line help (written as the YAML comment), optional choices / bounds.

    flag: the command-line option that sets it, named first in its errors; why: the sentence an out-of-bound
    value gets instead of "must be >= min" (e.g. what the value means); open_choices: the choices are the ones shown
    and completed, other values are the section's `validate()` to check (e.g. any diffusers scheduler class name);
    max: an upper bound on a size the program allocates for (images, samples, steps), so a mistyped 10^9 is refused
    by name before anything is allocated or written."""
    meta = {"help": help, "choices": choices, "min": min, "flag": flag, "why": why, "open_choices": open_choices,
            "max": max}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
    """A nested recipe section (a dataclass with defaults for every field)."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "choices": None, "min": None})


def field_flag(section: type, name: str) -> str | None:
    """The command-line option of a recipe field (None when it has none)."""
    return {f.name: f for f in dataclasses.fields(section)}[name].metadata.get("flag")


def yaml_scalar(value: Any) -> str:
    """One value as inline YAML (what `--set key=VALUE` and a recipe line hold): 0.02, auto, [fid, kid], ..."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


class Section:
    """Base of every recipe section: checks choices and lower bounds of its own fields, then `validate()`."""

    KEY: ClassVar[str] = ""

    def key(self, name: str) -> str:
        return f"{self.KEY}.{name}" if self.KEY else name

    def _where(self, f: dataclasses.Field, value: Any) -> str:
        """How an error names the value: "--flag VALUE (recipe key 'a.b')" or "recipe key 'a.b': VALUE"."""
        flag = f.metadata.get("flag")
        shown = value if isinstance(value, (int, float)) else repr(value)
        return f"{flag} {shown} (recipe key '{self.key(f.name)}')" if flag else \
            f"recipe key '{self.key(f.name)}': {shown}"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices, low = f.metadata.get("choices"), f.metadata.get("min")
            if choices and value not in choices and not f.metadata.get("open_choices"):
                raise LtaugError(f"{self._where(f, value)} is not one of {', '.join(map(str, choices))}")
            if low is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                if value != value:  # NaN compares false with everything: refuse it explicitly
                    raise LtaugError(f"{self._where(f, value)}: nan is not a number")
                if value < low:
                    flag, why = f.metadata.get("flag"), f.metadata.get("why") or f"must be >= {low}"
                    if flag:  # the flag's own words first: "--w -0.5: the guidance weight must be >= 0"
                        raise LtaugError(f"{flag} {value}: {why} (recipe key '{self.key(f.name)}')")
                    raise LtaugError(f"recipe key '{self.key(f.name)}': {value!r} {why}")
            high = f.metadata.get("max")
            if high is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and value > high:
                flag = f.metadata.get("flag")
                shown = f"{flag} {value} (recipe key '{self.key(f.name)}')" if flag else \
                    f"recipe key '{self.key(f.name)}': {value!r}"
                raise LtaugError(f"{shown}: at most {high:,} is accepted (a bound on what is allocated for it); "
                                 "use a smaller value")
        self.validate()

    def validate(self) -> None:
        """Checks across fields (override)."""
