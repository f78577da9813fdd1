"""Live training curves: one object that takes a stage's records and fans them out to the recipe's backends.

    with Curves(recipe.logging, run.generator, jsonl=run.generator_metrics, name="00003-mnist_lt/generator") as c:
        c.log(record, step_key="step", tags={"loss": "loss/loss"})   # metrics.jsonl line + the numbers as scalars
        c.image("samples/class_grid", grid_png, step)

metrics.jsonl is the source of truth and always written (as before this module existed); TensorBoard
(tensorboardX's SummaryWriter, event files in STAGE/tb/) and Weights & Biases (imported only when chosen) get the
same numbers under grouped tags. wandb keeps its files where its own settings say (WANDB_DIR, default ./wandb), not
in the run directory: it writes symbolic links there (latest-run, debug.log), and an output folder of ltaug holds
none (ltaug.files.check_no_links refuses them, so the stage could not resume). Only the main process writes anything
(ltaug.device): under torchrun the other ranks hold a Curves that does nothing.
"""

from __future__ import annotations

import importlib
import os
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
from PIL import Image

from ltaug.config.logging import LoggingConfig
from ltaug.device import is_main_process
from ltaug.errors import LtaugError
from ltaug.files import append_jsonl, atomic_write_json, read_json

TB_DIR = "tb"
WANDB_ID = "wandb-run.json"  # the stage's wandb run id, so that a resumed stage continues the same wandb run


def _number(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


class Curves:
    """Records of one training stage to metrics.jsonl and to the extra backends of `cfg` (LoggingConfig).

    stage_dir: the stage's folder (RUN/generator, RUN/classifier-NAME); jsonl: its metrics.jsonl; name: the run
    name shown by wandb (logging.wandb_name overrides it); config: the resolved recipe as a mapping (wandb's run
    config); resume_step: the step a resumed stage continues from (TensorBoard drops the events a killed run wrote
    after it, so a curve has one value per step); main: whether this process writes (default: rank 0)."""

    def __init__(self, cfg: LoggingConfig, stage_dir: str | os.PathLike, *, jsonl: str | os.PathLike, name: str,
                 config: Optional[dict] = None, resume_step: int = 0, main: Optional[bool] = None) -> None:
        self.cfg, self.stage_dir, self.jsonl = cfg, Path(stage_dir), Path(jsonl)
        self.main = is_main_process() if main is None else main
        self.tb: Any = None  # tensorboardX's SummaryWriter, when chosen
        self.wandb: Any = None  # the wandb module, when chosen
        self.wandb_run: Any = None
        if not self.main:
            return
        self.wandb = require_backends(cfg)  # first: a missing package fails before anything is written
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        if self.wandb is not None:  # before TensorBoard: a wandb that cannot start fails before any event file
            self.wandb_run = self._start_wandb(name, config or {}, resume_step > 0)
        if "tensorboard" in cfg.extra:
            # An event file is an append-only stream (TFRecord), not a file that can be written whole then renamed.
            # Its name holds the start time in whole seconds: a resume within the same second would reopen (and
            # truncate) the first session's file, so each session's file also carries its sequence number.
            tb_dir = self.stage_dir / TB_DIR
            session = len(list(tb_dir.glob("events.out.tfevents.*"))) if tb_dir.is_dir() else 0
            self.tb = _tensorboard().SummaryWriter(logdir=str(tb_dir), filename_suffix=f".{session:04d}",
                                    purge_step=resume_step + 1 if resume_step > 0 else None)

    # ---------------------------------------------------------------------------------------------------- records
    def log(self, record: dict, *, step_key: str, tags: Optional[Mapping[str, str]] = None,
            group: str = "train") -> None:
        """Append `record` to metrics.jsonl, and each of its numbers but `step_key` (the x axis) as a scalar named
        tags[key], or GROUP/key for a key not in `tags`. None values (a margin not in use) are not curves."""
        if not self.main:
            return
        append_jsonl(self.jsonl, record)
        step = int(record[step_key])
        self.scalars({k: v for k, v in record.items() if k != step_key}, step, tags=tags, group=group)

    def scalars(self, values: dict, step: int, *, tags: Optional[Mapping[str, str]] = None,
                group: str = "train") -> None:
        """Numbers as scalars of the extra backends only (values that metrics.jsonl does not hold, e.g. the final
        test accuracy that results.json keeps)."""
        if not self.main or (self.tb is None and self.wandb_run is None):
            return
        named = {(tags or {}).get(k, f"{group}/{k}"): float(v) for k, v in values.items() if _number(v)}
        if self.tb is not None:
            for tag, v in named.items():
                self.tb.add_scalar(tag, v, step)
            self.tb.flush()  # live: TensorBoard shows the point now, not at the writer's next timed flush
        if self.wandb_run is not None and named:
            self.wandb_run.log(named, step=step)

    def image(self, tag: str, png: Optional[str | os.PathLike], step: int) -> None:
        """An image file written by the stage (a class grid) as an image of the extra backends."""
        if not self.main or png is None or (self.tb is None and self.wandb_run is None):
            return
        with Image.open(png) as im:
            pixels = np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
        if self.tb is not None:
            self.tb.add_image(tag, pixels, step, dataformats="HWC")
            self.tb.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({tag: self.wandb.Image(pixels, caption=Path(png).name)}, step=step)

    # ---------------------------------------------------------------------------------------------------- lifetime
    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None

    def __enter__(self) -> "Curves":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start_wandb(self, name: str, config: dict, resume: bool) -> Any:
        """wandb.init; a resumed stage continues the run it started (its id is kept in STAGE/wandb-run.json).
        WANDB_MODE (offline, disabled) and WANDB_DIR are wandb's own settings and are left to it."""
        saved = (read_json(self.stage_dir / WANDB_ID) or {}) if resume else {}
        run_id = saved.get("id") or uuid.uuid4().hex[:16]
        try:
            run = self.wandb.init(project=self.cfg.wandb_project, entity=self.cfg.wandb_entity or None,
                                  name=self.cfg.wandb_name or name, id=run_id, resume="allow", config=config)
        except Exception as e:  # wandb's own errors (not logged in, no network): one message that says what to do
            raise LtaugError(f"logging.backends has wandb, but wandb could not start a run: {e}. Run `wandb login`, "
                             "or set WANDB_MODE=offline to keep the run on this machine (`wandb sync` uploads it "
                             "later), or drop wandb from logging.backends") from e
        atomic_write_json(self.stage_dir / WANDB_ID, {"id": run_id, "project": self.cfg.wandb_project})
        return run


def require_backends(cfg: LoggingConfig) -> Any:
    """Check that the chosen backends can be used, before a stage writes anything; return the wandb module when
    chosen (an optional dependency: imported only when a recipe asks for it), else None."""
    if "tensorboard" in cfg.extra:
        _tensorboard()
    if "wandb" not in cfg.extra:
        return None
    try:
        return importlib.import_module("wandb")
    except ModuleNotFoundError as e:
        if e.name != "wandb":
            raise
        raise LtaugError("logging.backends has wandb, but the wandb package is not installed: pip install "
                         "'ltaug[wandb]' (or drop wandb from logging.backends, e.g. --set "
                         "'logging.backends=[jsonl, tensorboard]')") from None


def _tensorboard() -> Any:
    """tensorboardX, imported when a recipe chooses it (so a missing package is one message, not an ImportError)."""
    try:
        return importlib.import_module("tensorboardX")
    except ModuleNotFoundError as e:
        if e.name != "tensorboardX":
            raise
        raise LtaugError("logging.backends has tensorboard, but the tensorboardX package is not installed: pip "
                         "install tensorboardX (or drop tensorboard from logging.backends, e.g. --set "
                         "'logging.backends=[jsonl]')") from None
