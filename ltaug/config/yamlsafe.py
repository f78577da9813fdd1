"""The one YAML reader for user files (recipes, sweep files, `--set` values): safe_load with bounds.

YAML aliases let a few hundred bytes stand for billions of nodes (an "alias bomb"): PyYAML shares the objects, so
loading is cheap, but anything that walks the result (checking a recipe, writing config.yaml, building a sweep's
grid) expands it. The composed node graph is therefore measured before anything is built from it: its size counted
with every alias expanded, its nesting depth, and the text's length, each against a bound named in the message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ltaug.errors import LtaugError

MAX_BYTES = 1 << 20  # a recipe or sweep file is a few KiB; 1 MiB is far beyond any real one
MAX_NODES = 100_000  # values after expanding aliases (the packaged recipes hold about 200)
MAX_DEPTH = 32  # nesting of mappings and lists (recipes nest 3 deep)


def _measure(root: yaml.Node, where: str) -> None:
    """Refuse a node graph whose alias-expanded size or depth passes the bounds (or that refers to itself)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    active: set[int] = set()

    def visit(node: yaml.Node, level: int) -> None:
        if level > MAX_DEPTH:
            raise LtaugError(f"{where}: nested more than {MAX_DEPTH} levels deep; a recipe nests a few levels, so "
                             "flatten the file")
        key = id(node)
        if key in size:
            return
        if key in active:
            raise LtaugError(f"{where}: a YAML alias refers to a value that contains it (a recursive structure); "
                             "write the values out instead")
        active.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        for child in children:
            visit(child, level + 1)
        active.discard(key)
        size[key] = 1 + sum(size[id(c)] for c in children)
        depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
        if size[key] > MAX_NODES:
            raise LtaugError(f"{where}: holds more than {MAX_NODES:,} values once its YAML aliases (*name) are "
                             "expanded; write the values out instead of repeating aliases")
        if level + depth[key] > MAX_DEPTH + 1:
            raise LtaugError(f"{where}: nested more than {MAX_DEPTH} levels deep; a recipe nests a few levels, so "
                             "flatten the file")

    visit(root, 1)


def parse_yaml(text: str, where: str) -> Any:
    """yaml.safe_load(text) within the bounds; where: how a message names the text ("recipe file X", "--set ...")."""
    if len(text) > MAX_BYTES:
        raise LtaugError(f"{where}: {len(text):,} characters; at most {MAX_BYTES:,} are read (a recipe is a few KiB)")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        _measure(node, where)
        return yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as e:
        raise LtaugError(f"{where}: not valid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise LtaugError(f"{where}: nested too deeply; at most {MAX_DEPTH} levels are read") from None


def read_yaml(path: str | os.PathLike, where: str) -> Any:
    """A YAML file's content within the bounds (the size is checked before the file is read whole)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise LtaugError(f"{where}: {size:,} bytes; at most {MAX_BYTES:,} are read (a recipe is a few KiB)")
        text = p.read_text()
    except UnicodeDecodeError:
        raise LtaugError(f"{where}: not a text file (not UTF-8)") from None
    except OSError as e:
        raise LtaugError(f"{where}: cannot be read ({e.strerror})") from None
    return parse_yaml(text, where)
