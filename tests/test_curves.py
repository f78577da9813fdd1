"""Live curves (ltaug.curves): real TensorBoard event files from short runs of both training loops, read back record
by record (TFRecord framing and CRCs checked) and compared with metrics.jsonl; wandb through a stand-in module."""

from __future__ import annotations

import io
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from ltaug.config import load_recipe
from ltaug.config.logging import LoggingConfig
from ltaug.curves import Curves
from ltaug.errors import LtaugError
from ltaug.files import read_jsonl

TB = "logging.backends=[jsonl, tensorboard]"
GEN = ["device=cpu", "generator.preset=tiny", "generator.batch_size=8", "generator.warmup=2", "generator.lr=0.001",
       "generator.ema_decay=0.9", "generator.grid_every=2", "generator.grid_cols=1", "generator.grid_steps=2",
       "generator.log_every=1", "generator.ckpt_every=2", TB]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def events(folder: Path) -> list:
    """Every Event of every event file in `folder`, in file order (TFRecord: length, its CRC, data, its CRC)."""
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    out = []
    for f in files:
        data, i = f.read_bytes(), 0
        while i < len(data):
            header = data[i:i + 8]
            (n,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[i + 8:i + 12])[0] == masked_crc32c(header)
            body = data[i + 12:i + 12 + n]
            assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == masked_crc32c(body)
            ev = event_pb2.Event()
            ev.ParseFromString(body)
            out.append(ev)
            i += 16 + n
    return out


def scalars(evs) -> dict:
    """{tag: {step: value}} (a later event at the same step wins, as TensorBoard shows it)."""
    out: dict = {}
    for ev in evs:
        for v in ev.summary.value:
            if v.HasField("simple_value"):
                out.setdefault(v.tag, {})[ev.step] = v.simple_value
    return out


def images(evs) -> dict:
    return {(v.tag, ev.step): v.image for ev in evs for v in ev.summary.value if v.HasField("image")}


def test_generator_curves_in_tensorboard_match_metrics_jsonl_across_a_resume(tmp_path):
    from ltaug.diffusion.train import train_generator
    from ltaug.rundir import RunDir

    train_generator(load_recipe("mnist_lt", GEN + ["generator.steps=2"]), tmp_path, progress=False)
    train_generator(load_recipe("mnist_lt", GEN + ["generator.steps=3"]), tmp_path, resume=True, progress=False)
    run = RunDir(tmp_path)
    records = read_jsonl(run.generator_metrics)
    assert [r["step"] for r in records] == [1, 2, 3]
    evs = events(run.generator / "tb")
    got = scalars(evs)
    terms = [k for k in ("loss", "dm") if k in records[0]]
    assert terms == ["loss", "dm"]
    for r in records:
        for key, tag in [(k, f"loss/{k}") for k in terms] + [("lr", "train/lr"), ("img_s", "train/img_s")]:
            assert got[tag][r["step"]] == pytest.approx(r[key], rel=1e-6), (tag, r["step"])
    assert sorted(got["loss/loss"]) == [1, 2, 3]
    assert "train/margin" not in got  # None (no overlap term) is not a curve
    # The resumed run purges what a killed run might have logged after its checkpoint (step 2): events from 3 on.
    starts = [ev.step for ev in evs if ev.HasField("session_log") and ev.session_log.status == 1]
    assert starts == [3]
    # The class grids as images, pixel for pixel the PNGs of generator/grids/.
    pics = images(evs)
    assert sorted(pics) == [("samples/class_grid", 2), ("samples/class_grid", 3)]
    for (_, step), pic in pics.items():
        shown = np.asarray(Image.open(io.BytesIO(pic.encoded_image_string)).convert("RGB"))
        png = np.asarray(Image.open(run.grids / f"grid-{step:07d}.png").convert("RGB"))
        assert (pic.height, pic.width) == png.shape[:2] and np.array_equal(shown, png)


def test_classifier_validation_accuracy_per_group_in_tensorboard(tmp_path):
    from ltaug.classify.train import train_classifier

    r = load_recipe(None, ["device=cpu", "classifier.model=test_cifar_resnet", "classifier.epochs=2",
                           "classifier.batch_size=128", "classifier.eval_every=1", TB])
    train_classifier(r, tmp_path / "classifier-real", progress=False)
    records = read_jsonl(tmp_path / "classifier-real" / "metrics.jsonl")
    got = scalars(events(tmp_path / "classifier-real" / "tb"))
    assert [rec["epoch"] for rec in records] == [1, 2]
    for rec in records:
        for key, tag in [("val_many", "val/many"), ("val_medium", "val/medium"), ("val_few", "val/few"),
                         ("val_overall", "val/overall"), ("loss", "train/loss"), ("lr", "train/lr")]:
            assert got[tag][rec["epoch"]] == pytest.approx(rec[key], rel=1e-6), (tag, rec["epoch"])


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(LtaugError, match=r"logging.backends.*'tensorbord'.*jsonl, tensorboard, wandb"):
        load_recipe(None, ["logging.backends=[jsonl, tensorbord]"])


def test_missing_wandb_names_the_key_and_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails as when it is not installed
    with pytest.raises(LtaugError, match=r"logging.backends.*pip install 'ltaug\[wandb\]'"):
        Curves(LoggingConfig(backends=["jsonl", "tensorboard", "wandb"]), tmp_path, jsonl=tmp_path / "m.jsonl",
               name="run/generator", main=True)
    assert not any(tmp_path.iterdir())  # failed before any event file or record


class FakeWandb(types.ModuleType):
    """What ltaug calls of wandb: init (returning a run with log / finish) and Image."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logs, self.finished = [], [], 0

    def init(self, **kw):
        self.inits.append(kw)
        return types.SimpleNamespace(log=lambda d, step: self.logs.append((step, d)), finish=self._finish)

    def _finish(self):
        self.finished += 1

    class Image:
        def __init__(self, pixels, caption=""):
            self.shape, self.caption = pixels.shape, caption


def test_wandb_gets_the_same_records_and_a_resume_continues_its_run(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = LoggingConfig(backends=["wandb"], wandb_project="lt", wandb_name="")
    png = tmp_path / "grid.png"
    Image.new("RGB", (6, 4)).save(png)
    with Curves(cfg, tmp_path, jsonl=tmp_path / "metrics.jsonl", name="00001-x/generator", config={"seed": 3},
                main=True) as c:
        c.log({"step": 5, "loss": 0.25, "margin": None, "lr": 1e-3}, step_key="step", tags={"loss": "loss/loss"})
        c.image("samples/class_grid", png, 5)
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 5, "loss": 0.25, "margin": None, "lr": 1e-3}]
    (init,) = fake.inits
    assert init["project"] == "lt" and init["name"] == "00001-x/generator" and init["config"] == {"seed": 3}
    assert "mode" not in init and "dir" not in init  # WANDB_MODE, WANDB_DIR: wandb's own settings (its links stay out)
    assert fake.logs[0] == (5, {"loss/loss": 0.25, "train/lr": 1e-3})
    assert fake.logs[1][1]["samples/class_grid"].shape == (4, 6, 3) and fake.finished == 1
    Curves(cfg, tmp_path, jsonl=tmp_path / "metrics.jsonl", name="other", resume_step=5, main=True).close()
    assert fake.inits[1]["id"] == init["id"] and fake.inits[1]["resume"] == "allow"


def test_a_resume_in_the_same_second_keeps_the_first_sessions_events(tmp_path, monkeypatch):
    # tensorboardX names an event file by the start time in whole seconds; a fast resume (CI failed on it) must not
    # reopen and truncate the first session's file.
    import tensorboardX.event_file_writer as efw

    # Only the event writer's clock stops (its module's `time`), not the process's.
    monkeypatch.setattr(efw, "time", types.SimpleNamespace(time=lambda: 1_700_000_000.25))
    cfg = LoggingConfig(backends=["jsonl", "tensorboard"])
    with Curves(cfg, tmp_path, jsonl=tmp_path / "m.jsonl", name="x", main=True) as c:
        for step in (1, 2):
            c.log({"step": step, "loss": float(step)}, step_key="step")
    with Curves(cfg, tmp_path, jsonl=tmp_path / "m.jsonl", name="x", resume_step=2, main=True) as c:
        c.log({"step": 3, "loss": 3.0}, step_key="step")
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2
    assert scalars(events(tmp_path / "tb"))["train/loss"] == {1: 1.0, 2: 2.0, 3: 3.0}


def test_other_ranks_write_nothing(tmp_path):
    with Curves(LoggingConfig(backends=["tensorboard"]), tmp_path / "s", jsonl=tmp_path / "s" / "m.jsonl",
                name="x", main=False) as c:
        c.log({"step": 1, "loss": 1.0}, step_key="step")
    assert not (tmp_path / "s").exists()


def test_cli_without_wandb_exits_2_and_leaves_no_run(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ltaug.cli import app

    monkeypatch.setitem(sys.modules, "wandb", None)
    for cmd in ("train-generator", "train-classifier", "run"):
        out = tmp_path / cmd
        r = CliRunner().invoke(app, [cmd, "--out", str(out), "--device", "cpu", "--set", "logging.backends=[wandb]"])
        assert r.exit_code == 2 and "pip install 'ltaug[wandb]'" in r.output, (cmd, r.output)
        assert not out.exists(), cmd
