"""Recipes: the tree of typed sections, read from YAML and overridden with `--set a.b=value`, written back as
commented YAML that is itself a valid recipe.

Unknown keys and wrong types are `LtaugError`s that name the key (here); choices and bounds are checked by each
section when it is built (`ltaug.config.fields.Section`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import textwrap
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from ltaug.config.classifier import ClassifierConfig
from ltaug.config.data import DataConfig
from ltaug.config.evaluate import EvaluateConfig
from ltaug.config.features import FeaturesConfig
from ltaug.config.fields import Section, opt, section, yaml_scalar
from ltaug.config.generator import GeneratorConfig
from ltaug.config.logging import LoggingConfig
from ltaug.config.synth import SynthConfig
from ltaug.config.yamlsafe import parse_yaml, read_yaml
from ltaug.errors import LtaugError

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
HEADER = "# resolved ltaug recipe: a valid recipe for --recipe\n"


@dataclass
class Recipe(Section):
    name: str = opt("mnist_lt", "name of the recipe; used in run directory names")
    seed: int = opt(0, "global seed: data order, initialisation, sampling")
    device: str = opt("auto", "auto (cuda when available, else cpu), cpu, cuda, cuda:N or mps")
    data: DataConfig = section(DataConfig, "the long-tailed training set and its balanced test set")
    generator: GeneratorConfig = section(GeneratorConfig, "class-conditional diffusion model and its training")
    synth: SynthConfig = section(SynthConfig, "sampling the synthetic images")
    classifier: ClassifierConfig = section(ClassifierConfig, "timm classifier on real plus synthetic data")
    evaluate: EvaluateConfig = section(EvaluateConfig, "generator metrics (FID, KID, IS, precision/recall, overlap)")
    features: FeaturesConfig = section(FeaturesConfig, "the feature-space mode (generator.space: features): backbone "
                                       "and classifier head")
    logging: LoggingConfig = section(LoggingConfig, "training curves: metrics.jsonl, TensorBoard, Weights & Biases")

    def validate(self) -> None:
        if not DEVICE_RE.match(self.device):
            raise LtaugError(f"recipe key 'device' (--device): '{self.device}' is not a device; expected auto, cpu, "
                             "cuda, cuda:N or mps")


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


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


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
        if isinstance(value, str) and _FLOAT.match(value.strip()):  # YAML 1.1 reads 1e-9 (no dot) as a string
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise LtaugError(f"recipe key '{key}': unsupported field type {tp!r}")
    raise LtaugError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build section `cls` from a (partial) mapping, checking every key and type; the section checks its values."""
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
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


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
    value = parse_yaml(raw, f"--set '{assignment}'") if raw.strip() else ""
    set_key(data, key, value, f"--set '{assignment}'")
    return data


def set_key(data: dict, key: str, value: Any, where: str = "") -> None:
    """data[a][b][c] = value for key 'a.b.c', making (or replacing empty) sections on the way."""
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise LtaugError(f"{where or key}: '{p}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def as_sets(values: dict) -> list[str]:
    """{"a.b": v} -> ["a.b=v"] (the inverse of apply_set, e.g. for a sweep trial's values)."""
    return [f"{k}={yaml_scalar(v)}" for k, v in values.items()]


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
    data = read_yaml(path, f"recipe file {path}") or {}
    if not isinstance(data, dict):
        raise LtaugError(f"recipe file {path}: the top level must be a mapping of keys")
    return data


def load_recipe(recipe: str | os.PathLike | dict | None = None, sets: list[str] | tuple = (),
                values: dict | None = None) -> Recipe:
    """Resolve a recipe: built-in name, YAML path or mapping (None = `mnist_lt`), then `values` (dotted key ->
    value, None = not given: what command-line flags hold), then each `--set` in order."""
    data = dict(recipe) if isinstance(recipe, dict) else read_recipe_file(recipe)
    for key, value in (values or {}).items():
        if value is not None:
            set_key(data, key, value)
    for s in sets:
        apply_set(data, s)
    return from_dict(Recipe, data)


WIDTH = 120  # the line length of the written recipe (the project's own)
COMMENT_COLUMN = 30  # comments start here unless a line is longer (as in the packaged recipes)


def _help_of(f: dataclasses.Field) -> tuple[str, str]:
    """A field's comment: its help, and its choices as "[a | b]" (kept on one line when wrapped)."""
    choices = f.metadata.get("choices")
    return f.metadata.get("help", ""), f"[{' | '.join(map(str, choices))}]" if choices else ""


def _commented(lines: list[tuple[str, tuple[str, str]]]) -> list[str]:
    """(text, comment) pairs of one block as lines whose comments start in one column (COMMENT_COLUMN, or further
    right when a line of the block is longer); a comment too long for the line goes on in lines below, in the same
    column; a line too long to share stands under its comment. Comment-only lines are valid YAML anywhere, so the
    text stays a recipe."""
    col = max([COMMENT_COLUMN] + [len(t) + 2 for t, c in lines if any(c) and len(t) + 2 <= WIDTH // 2])
    out = []
    for text, (help_, choices) in lines:
        if not (help_ or choices):
            out.append(text)
            continue
        long = len(text) + 2 > col
        at = len(text) - len(text.lstrip()) if long else col
        width = max(WIDTH - at - 2, 30)
        parts = textwrap.wrap(help_, width=width, break_long_words=False, break_on_hyphens=False) or [""]
        if choices and len(parts[-1]) + 1 + len(choices) <= width:
            parts[-1] = f"{parts[-1]} {choices}".strip()
        elif choices:
            parts.append(choices)
        if long:
            out.extend([f"{' ' * at}# {p}" for p in parts] + [text])
        else:
            out.append(f"{text.ljust(at)}# {parts[0]}")
            out.extend(f"{' ' * at}# {p}" for p in parts[1:])
    return out


def to_yaml(obj: Any, indent: int = 0) -> str:
    """Commented YAML of a resolved recipe (or section): every key with its help (the field's) as the comment,
    aligned and wrapped as in the packaged recipes. Parsing it back gives the same recipe."""
    pad = "  " * indent
    out: list[str] = []
    block: list[tuple[str, tuple[str, str]]] = []  # the values between two sub-sections share a comment column
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += _commented(block) + _commented([(f"{pad}{f.name}:", _help_of(f))])
            out.append(to_yaml(value, indent + 1))
            block = []
        else:
            block.append((f"{pad}{f.name}: {yaml_scalar(value)}", _help_of(f)))
    return "\n".join(out + _commented(block))


def recipe_text(recipe: Recipe) -> str:
    """The text of a resolved recipe file (config.yaml): a header line and the commented YAML."""
    return HEADER + to_yaml(recipe) + "\n"


__all__ = ["Recipe", "RECIPE_DIR", "from_dict", "to_dict", "apply_set", "set_key", "as_sets", "recipe_names",
           "read_recipe_file", "load_recipe", "to_yaml", "recipe_text", "Section", "opt", "section"]
