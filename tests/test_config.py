"""Recipes: typed keys, --set overrides, clear errors, and a resolved recipe that round-trips."""

from __future__ import annotations

import pytest
import yaml

from ltaug.config import Recipe, apply_set, from_dict, load_recipe, recipe_names, to_yaml
from ltaug.errors import LtaugError
from ltaug.rundir import save_recipe


def test_builtin_recipes_all_resolve():
    names = recipe_names()
    assert {"mnist_lt", "cifar10_lt", "cifar100_lt"} <= set(names)
    for name in names:
        r = load_recipe(name)
        assert isinstance(r, Recipe) and r.name == name


def test_set_overrides_and_yaml_types():
    r = load_recipe("mnist_lt", ["seed=7", "data.imbalance_ratio=10", "data.dataset=npz:/x/y.npz",
                                 "evaluate.metrics=[fid, pr]"])
    assert r.seed == 7 and r.data.imbalance_ratio == 10.0 and isinstance(r.data.imbalance_ratio, float)
    assert r.data.dataset == "npz:/x/y.npz" and r.evaluate.metrics == ["fid", "pr"]


@pytest.mark.parametrize("assignment, message", [
    ("data.nope=1", "unknown recipe key 'data.nope'.*valid keys:.*dataset"),
    ("nope.x=1", "unknown recipe key 'nope'"),
    ("seed=abc", "recipe key 'seed': expected int"),
    ("data.profile=linear", "'linear' is not one of exp, step"),
    ("data.imbalance_ratio=0.5", "must be >= 1"),
    ("seed", "expected key=value"),
    ("=3", "the key is empty"),
    ("data=3", "must be a mapping"),
])
def test_bad_keys_and_values_name_the_key(assignment, message):
    with pytest.raises(LtaugError, match=message):
        load_recipe("mnist_lt", [assignment])


def test_resolved_recipe_round_trips_and_is_commented(tmp_path):
    r = load_recipe("cifar10_lt", ["seed=3"])
    path = tmp_path / "config.yaml"
    save_recipe(r, path)
    text = path.read_text()
    # every key line carries a comment
    key_lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all("  # " in line for line in key_lines), [line for line in key_lines if "  # " not in line]
    assert load_recipe(path) == r
    assert from_dict(Recipe, yaml.safe_load(to_yaml(r))) == r


def test_unknown_recipe_name_lists_builtins():
    with pytest.raises(LtaugError, match="built-in recipes: .*mnist_lt"):
        load_recipe("does_not_exist")


def test_apply_set_builds_nested_sections():
    d = {}
    apply_set(d, "a.b.c=[1, 2]")
    assert d == {"a": {"b": {"c": [1, 2]}}}


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from ltaug.files import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    assert not list(tmp_path.glob(".a.txt.*"))  # no temporary file left behind


def test_set_reads_exponent_floats_yaml_leaves_as_text():
    """YAML 1.1 reads `1e-9` (no dot) as a string; a float key takes it as the number, a text key keeps it."""
    from ltaug.config import load_recipe

    r = load_recipe("mnist_lt", ["generator.lr=1e-9", "generator.diffrop.margin=5e-3", "classifier.model=1e3"])
    assert r.generator.lr == 1e-9 and r.generator.diffrop.margin == 0.005 and r.classifier.model == "1e3"
    with pytest.raises(LtaugError, match="generator.lr.*expected float"):
        load_recipe("mnist_lt", ["generator.lr=1e-9x"])
