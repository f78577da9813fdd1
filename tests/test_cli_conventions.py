"""CLI conventions: `ltaug --version` (no torch), shell completion, `ltaug config` (a commented recipe that loads back
as the same Recipe), and help that names the recipe key behind every flag that has one."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import typing

import typer
import yaml
from typer.testing import CliRunner

import ltaug
from ltaug.cli import app
from ltaug.cli.options import field_of
from ltaug.config import Recipe, load_recipe

runner = CliRunner()


def ltaug_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ltaug", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


def test_version_prints_the_package_version_without_torch():
    p = ltaug_cli("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"ltaug {ltaug.__version__}", p.stdout + p.stderr
    code = ("import sys\nfrom ltaug.cli import main\nsys.argv = ['ltaug', '--version']\ntry:\n    main()\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.split() == ["ltaug", ltaug.__version__, "False"]


def test_shell_completion_script_and_completions():
    # typer finds the shell from the parent processes (shellingham): run it from a bash, so the test does not
    # depend on what started pytest
    p = subprocess.run(["bash", "-c", f"'{sys.executable}' -m ltaug --show-completion; exit $?"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "_LTAUG_COMPLETE=complete_bash" in p.stdout, p.stdout + p.stderr
    assert "--install-completion" in runner.invoke(app, ["--help"]).output

    def complete(words):
        env = {"_LTAUG_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
        return ltaug_cli(env=env).stdout.split()

    assert complete("ltaug train-gen") == ["train-generator"]
    assert complete("ltaug train-generator --loss cb") == ["cbdm", "cbdm+diffrop"]  # a recipe field's choices
    assert complete("ltaug synthesize run --sampler dd") == ["ddpm", "ddim"]


def test_config_prints_a_commented_recipe_that_loads_back_the_same(tmp_path):
    sets = ["--set", "seed=7", "--set", "logging.backends=[jsonl, tensorboard]", "--set", "synth.classes=[a, 'b #c']"]
    r = runner.invoke(app, ["config", "--recipe", "cifar10_lt", *sets])
    assert r.exit_code == 0, r.output
    text = r.stdout
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    expected = load_recipe("cifar10_lt", sets[1::2])
    assert load_recipe(path) == expected and expected.seed == 7 and expected.synth.classes == ["a", "b #c"]
    assert runner.invoke(app, ["config", "--recipe", str(path)]).stdout == text  # a fixed point
    assert all(len(line) <= 120 for line in text.splitlines())
    # Every key carries its field's help as a comment (the words of the help, wrapped, appear in order).
    comments = " ".join(m.group(1) for m in re.finditer(r"#\s?(.*)$", text, re.M))
    for key in _leaf_keys(Recipe):
        help_ = field_of(key)[0].metadata["help"]
        assert " ".join(help_.split()) in comments, key
    assert re.search(r"^  backends: \[jsonl, tensorboard\] +# where training curves go", text, re.M)
    assert yaml.safe_load(text)["seed"] == 7


def test_config_bad_input_exits_2_naming_the_key():
    r = runner.invoke(app, ["config", "--set", "generator.stepz=3"])
    assert r.exit_code == 2 and "generator.stepz" in r.output and "valid keys" in r.output
    r = runner.invoke(app, ["config", "--recipe", "nope"])
    assert r.exit_code == 2 and "built-in recipes" in r.output


def _leaf_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield prefix + f.name


# Options of the recipe-driven commands that are not recipe keys (where the output goes, what to resume, ...).
NOT_RECIPE = {"--recipe", "--set", "--out", "--resume", "--no-progress", "--progress", "--name", "--synthetic",
              "--compare", "--overwrite", "--quiet", "--verbose", "--json", "--train-dataset", "--help"}


def test_help_names_the_recipe_key_of_every_flag_that_sets_one():
    root = typer.main.get_command(app)
    seen = 0
    for name, cmd in root.commands.items():
        options = [p for p in getattr(cmd, "params", []) if isinstance(p, typer.core.TyperOption)]
        if "--recipe" not in {o for p in options for o in p.opts}:
            continue  # `data`, `tune`: no recipe behind their options
        for p in options:
            keys = re.findall(r"\[recipe key ([\w.]+)\]", p.help or "")
            if not keys:
                assert set(p.opts) & NOT_RECIPE, f"{name} {p.opts}: its help names no recipe key"
                continue
            f, _ = field_of(keys[0])  # a key that exists
            for c in f.metadata.get("choices") or ():
                assert str(c) in p.help, (name, p.opts, c)
            seen += 1
        shown = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        assert "recipe key" in shown or name == "config", name
    assert seen > 40


def _commands(group=None, prefix=""):
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield prefix + name, cmd


def test_every_command_has_one_quiet_and_one_verbose_and_the_table_commands_json():
    seen = set()
    for name, cmd in _commands():
        opts = {o: p for p in cmd.params for o in p.opts}
        assert {"-q", "--quiet", "-v", "--verbose"} <= set(opts), name
        visible = [o for p in cmd.params if not getattr(p, "hidden", False) for o in p.opts]
        assert not {"--no-progress", "--progress/--no-progress"} & set(visible), name  # one name for quiet
        if "--json" in opts:
            seen.add(name)
    assert {"run", "evaluate", "train-classifier", "data info", "tune"} <= seen


def test_progress_bars_keep_the_count_and_eta_whole_at_80_columns(monkeypatch):
    import io

    from rich.console import Console

    import ltaug.progress as P

    monkeypatch.delenv("LTAUG_PLAIN_PROGRESS", raising=False)
    for width in (80, 160):
        buf = io.StringIO()
        monkeypatch.setattr(P, "console", Console(file=buf, width=width, force_terminal=True, color_system=None))
        with P.progress_bar(total=12000, desc="classifier classifier-synth", unit="step") as bar:
            bar.advance(1234, loss=0.123456, acc=0.5, img_s=1234.5)
        last = [line for line in buf.getvalue().replace("\r", "\n").splitlines() if "1234/12000" in line][-1]
        assert re.search(r"1234/12000 [\d.]+ step/s \d:\d\d:\d\d eta \S+", last), last
        assert len(last.replace("\x1b[2K", "").rstrip()) <= width
    assert "loss=0.1235" in last  # wider terminals show the fields too
