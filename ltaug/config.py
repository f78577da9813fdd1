"""Recipes: typed configuration defined once, read from YAML, overridden with `--set a.b=value`.

A recipe is a tree of dataclasses (`Recipe` below; each stage owns its section in its own torch-free `config.py`).
Every field carries a help string in its metadata, so a resolved recipe can be written back as commented YAML that
is itself a valid recipe. Unknown keys, wrong types and values outside a field's `choices` are `LtaugError`s that
name the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml

from ltaug.errors import LtaugError

RECIPE_DIR = Path(__file__).parent / "recipes"


from ltaug.config_fields import opt, section  # noqa: E402,F401


# Sections are imported here, not in the stage packages' __init__, so that reading a recipe never imports torch.
from ltaug.data.config import DataConfig  # noqa: E402
from ltaug.diffusion.config import GeneratorConfig  # noqa: E402
from ltaug.synth.config import SynthConfig  # noqa: E402
from ltaug.classify.config import ClassifierConfig  # noqa: E402
from ltaug.metrics.config import EvalConfig  # noqa: E402


@dataclass
class Recipe:
    name: str = opt("mnist_lt", "name of the recipe; used in run directory names")
    seed: int = opt(0, "global seed: data order, initialisation, sampling")
    device: str = opt("auto", "auto picks cuda when available, else cpu", choices=("auto", "cpu", "cuda"))
    data: DataConfig = section(DataConfig, "the long-tailed training set and its balanced test set")
    generator: GeneratorConfig = section(GeneratorConfig, "class-conditional diffusion model and its training")
    synth: SynthConfig = section(SynthConfig, "sampling the synthetic images")
    classifier: ClassifierConfig = section(ClassifierConfig, "timm classifier on real plus synthetic data")
    evaluate: EvalConfig = section(EvalConfig, "generator metrics (FID, KID, IS, precision/recall, overlap)")


# ----------------------------------------------------------------------------------------------- type checking


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints are accepted for floats)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except LtaugError:
                pass
        raise LtaugError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise LtaugError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")
        (inner,) = get_args(tp)[:1] or (Any,)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise LtaugError(f"recipe key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise LtaugError(f"recipe key '{key}': unsupported field type {tp!r}")
    raise LtaugError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (partial) mapping, checking every key, type, choice and bound."""
    if not isinstance(data, dict):
        raise LtaugError(f"recipe section '{prefix or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"in section '{prefix}'" if prefix else "at the top level"
        raise LtaugError(
            f"unknown recipe key '{(prefix + '.' if prefix else '') + unknown[0]}' {where}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value if value is not None else {}, key)
            continue
        value = _coerce(value, tp, key)
        meta = fields[name].metadata
        choices = meta.get("choices")
        if choices and value not in choices:
            raise LtaugError(f"recipe key '{key}': {value!r} is not one of {', '.join(map(str, choices))}")
        low = meta.get("min")
        if low is not None and isinstance(value, (int, float)) and value < low:
            raise LtaugError(f"recipe key '{key}': {value!r} must be >= {low}")
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


# ----------------------------------------------------------------------------------------------- overrides


def apply_set(data: dict, assignment: str) -> dict:
    """Apply one `a.b.c=value` override to a nested mapping (in place). The value is parsed as YAML."""
    if "=" not in assignment:
        raise LtaugError(f"--set '{assignment}': expected key=value, e.g. --set generator.steps=2000")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise LtaugError(f"--set '{assignment}': the key is empty; expected key=value, e.g. --set seed=1")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise LtaugError(f"--set '{assignment}': the value is not valid YAML ({e.problem})") from None
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise LtaugError(f"--set '{assignment}': '{p}' is a value, not a section")
        node = child
    node[parts[-1]] = value
    return data


# ----------------------------------------------------------------------------------------------- files


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def read_recipe_file(recipe: str | os.PathLike | None) -> dict:
    """The raw mapping of a recipe given by name (`mnist_lt`) or path; None means the embedded default."""
    if recipe is None:
        recipe = "mnist_lt"
    path = Path(recipe)
    if not path.suffix and not path.exists():
        path = RECIPE_DIR / f"{recipe}.yaml"
    if not path.is_file():
        raise LtaugError(
            f"--recipe '{recipe}': no such file or built-in recipe; built-in recipes: {', '.join(recipe_names())}"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise LtaugError(f"recipe file {path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise LtaugError(f"recipe file {path}: the top level must be a mapping of keys")
    return data


def load_recipe(recipe: str | os.PathLike | dict | None = None, sets: list[str] | tuple = ()) -> Recipe:
    """Resolve a recipe: built-in name, YAML path or mapping (None = `mnist_lt`), then each `--set` in order."""
    data = dict(recipe) if isinstance(recipe, dict) else read_recipe_file(recipe)
    for s in sets:
        apply_set(data, s)
    return from_dict(Recipe, data)


def _yaml_scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def to_yaml(obj: Any, indent: int = 0) -> str:
    """Commented YAML of a resolved recipe (or section). Parsing it back gives the same recipe."""
    lines = []
    pad = "  " * indent
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        help_ = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            help_ += f" [{' | '.join(map(str, choices))}]"
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:  # {help_}" if help_ else f"{pad}{f.name}:")
            lines.append(to_yaml(value, indent + 1))
        else:
            comment = f"  # {help_}" if help_ else ""
            lines.append(f"{pad}{f.name}: {_yaml_scalar(value)}{comment}")
    return "\n".join(lines)


def save_recipe(recipe: Any, path: str | os.PathLike) -> None:
    from ltaug.rundir import atomic_write_text

    atomic_write_text(Path(path), "# resolved ltaug recipe: a valid recipe for --recipe\n" + to_yaml(recipe) + "\n")
