"""Run directories: the one place that knows their layout.

A run directory is append-only and numbered like EDM's (`runs/00003-mnist_lt-diffrop/`):

    config.yaml  env.json  log.txt      the resolved recipe (itself a valid recipe), versions and host, a stage log
    stages/<stage>.json                 finished pipeline stages and their wall time
    generator/                          checkpoints/, metrics.jsonl, grids/, diffusers/, calibration.json
    features/                           cached backbone features (generator.space features: ltaug.features.store)
    synth/                              the synthetic folder (ltaug.data.synthetic)
    classifier-NAME/                    one per classifier (its own config.yaml, checkpoint.pt, results.json, ...)
    head-NAME/                          features space: a linear head on the features (head.pt, results.json)
    evaluate/                           results.json and plots
    summary.json  report.html  report/  what `ltaug run` prints, and the self-contained report

`RunDir.find(path)` finds the run that holds any path inside it (a checkpoint, `generator/`, `synth/`, a
classifier folder), and `RunDir.recipe()` is that run's recipe: the one rule for "which recipe does this path
belong to".
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ltaug import __version__
from ltaug.config import Recipe, load_recipe, recipe_text
from ltaug.errors import LtaugError
from ltaug.files import append_text, atomic_write_json, atomic_write_text, read_json

DEFAULT_ROOT = Path("runs")
CONFIG, ENV, LOG = "config.yaml", "env.json", "log.txt"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "run"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser().absolute())  # Ray Tune changes the cwd

    # ------------------------------------------------------------------------------------------- the layout
    config = property(lambda self: self.path / CONFIG)
    env = property(lambda self: self.path / ENV)
    log_file = property(lambda self: self.path / LOG)
    stages = property(lambda self: self.path / "stages")
    generator = property(lambda self: self.path / "generator")
    checkpoints = property(lambda self: self.generator / "checkpoints")
    grids = property(lambda self: self.generator / "grids")
    generator_metrics = property(lambda self: self.generator / "metrics.jsonl")
    diffusers = property(lambda self: self.generator / "diffusers")
    calibration = property(lambda self: self.generator / "calibration.json")
    features = property(lambda self: self.path / "features")
    synth = property(lambda self: self.path / "synth")
    evaluate = property(lambda self: self.path / "evaluate")
    summary = property(lambda self: self.path / "summary.json")
    report = property(lambda self: self.path / "report.html")
    report_dir = property(lambda self: self.path / "report")

    def classifier(self, name: str) -> Path:
        return self.path / f"classifier-{name}"

    def head(self, name: str) -> Path:
        """A classifier head on features (generator.space features): head-real, head-synth."""
        return self.path / f"head-{name}"

    def stage_marker(self, stage: str) -> Path:
        return self.stages / f"{stage}.json"

    def relative(self, path: str | os.PathLike) -> str:
        """`path` relative to the run (for records that must not depend on the caller's working directory)."""
        p = Path(path).absolute()
        try:
            return str(p.relative_to(self.path))
        except ValueError:
            return str(p)

    def resolve(self, stored: str) -> Path:
        """The inverse of `relative`: a path as stored in a record, made absolute against the run."""
        p = Path(stored)
        return p if p.is_absolute() else self.path / p

    # ------------------------------------------------------------------------------------------- the files
    def exists(self) -> bool:
        return self.config.is_file()

    def recipe(self) -> Recipe:
        """The run's resolved recipe (config.yaml)."""
        if not self.config.is_file():
            raise LtaugError(f"{self.path} is not a run directory (no {CONFIG})")
        return load_recipe(self.config)

    def init(self, recipe: Recipe) -> "RunDir":
        """Write config.yaml (the resolved recipe) and env.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, self.config)
        atomic_write_json(self.env, env_info())
        return self

    def log(self, message: str) -> None:
        """Append a timestamped line to log.txt."""
        append_text(self.log_file, time.strftime("%Y-%m-%d %H:%M:%S ") + message.rstrip() + "\n")  # no torn line

    def stage_done(self, stage: str) -> bool:
        return self.stage_marker(stage).is_file()

    def stage_info(self, stage: str) -> dict:
        return read_json(self.stage_marker(stage)) or {}

    def finish_stage(self, stage: str, seconds: float, info: Optional[dict] = None) -> None:
        atomic_write_json(self.stage_marker(stage), {"stage": stage, "seconds": seconds, **(info or {})})
        self.log(f"stage {stage} finished in {seconds:.1f}s")

    # ------------------------------------------------------------------------------------------- finding runs
    @classmethod
    def create(cls, root: str | os.PathLike | None = None, desc: str = "run") -> "RunDir":
        """Create `root/NNNNN-desc` with the next free number (root defaults to ./runs)."""
        root = Path(root) if root is not None else DEFAULT_ROOT
        root.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
        n = max(numbers, default=-1) + 1
        while True:
            path = root / f"{n:05d}-{_slug(desc)}"
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:  # another process took this number
                n += 1

    @classmethod
    def find(cls, path: str | os.PathLike) -> Optional["RunDir"]:
        """The run directory holding `path` (the path itself or one of its parents), or None.

        A run directory has both config.yaml and env.json; a classifier folder has its own config.yaml but no
        env.json, so a path inside RUN/classifier-NAME/ finds RUN."""
        p = Path(path).expanduser().absolute()
        if not p.is_dir():
            p = p.parent
        for d in [p, *p.parents][:6]:
            if (d / CONFIG).is_file() and (d / ENV).is_file():
                return cls(d)
        return None


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write a resolved recipe as commented YAML (a valid --recipe file), atomically."""
    atomic_write_text(Path(path), recipe_text(recipe))


def env_info() -> dict:
    """What produced a run: versions, host, devices. Written as env.json."""
    info: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "argv": sys.argv,
        "ltaug": __version__,
    }
    torch = sys.modules.get("torch")  # described when loaded (every stage loads it); never imported for this
    if torch is not None:
        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cpu_threads"] = torch.get_num_threads()
    return info
