"""Concurrent writers, kills and clusters, with real processes.

Two writers on one folder (the second refuses at once, naming the first), a checkpoint half-written by a process
killed with SIGKILL (cleaned on resume), empty and truncated PNGs that have their manifest line (redrawn on resume),
the driver of a Ray synthesis killed with SIGKILL (no Ray process of it survives), and `--address` of a port where
nothing listens (refused within seconds, naming the address).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ltaug.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["generator.preset=tiny", "generator.batch_size=8", "generator.warmup=1", "generator.grid_every=0",
        "generator.grid_cols=1", "generator.grid_steps=2", "generator.log_every=1", "generator.ckpt_every=1000"]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", LTAUG_PLAIN_PROGRESS="1", OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")


def invoke(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r.exit_code, " ".join(r.output.split())


def ltaug(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ltaug", *map(str, args)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory) -> Path:
    from ltaug.config import load_recipe
    from ltaug.diffusion.train import train_generator

    run = tmp_path_factory.mktemp("procs") / "run"
    train_generator(load_recipe("mnist_lt", ["device=cpu", "generator.steps=1", *TINY]), run, progress=False)
    return run


# ----------------------------------------------------------------------------------------------- 1: one writer


def test_two_synthesize_processes_on_one_folder(gen_run, tmp_path):
    out = tmp_path / "synth"
    first = ltaug("synthesize", gen_run, "--out", out, "--per-class", 40, "--steps", 20, "--batch-size", 1,
                  "--device", "cpu", "--quiet")
    try:
        wait_for(lambda: len(lines(out / "manifest.jsonl")) >= 1, 240, first)
        code, text = invoke("synthesize", gen_run, "--out", out, "--per-class", 40, "--steps", 20, "--batch-size",
                            1, "--device", "cpu", "--quiet")
        assert first.poll() is None, "the first process should still be drawing"
        assert code == 2 and f"{out} is in use by pid {first.pid}" in text and "synthesize" in text, text
    finally:
        first.kill()
        first.wait()
    records = lines(out / "manifest.jsonl")
    assert len({r["seed"] for r in records}) == len(records)  # one writer: no duplicate seed, no second stream


def test_two_generator_resumes_on_one_run(gen_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(gen_run, run)
    first = ltaug("train-generator", "--resume", run, "--steps", 100000, "--no-progress")
    try:
        wait_for(lambda: any(r.get("step", 0) >= 2 for r in lines(run / "generator" / "metrics.jsonl")), 240, first)
        code, text = invoke("train-generator", "--resume", run, "--steps", 3, "--no-progress")  # bounded if it ran
        assert code == 2 and f"is in use by pid {first.pid}" in text and "train-generator" in text, text
        steps_before = len(lines(run / "generator" / "metrics.jsonl"))
        first.send_signal(signal.SIGTERM)  # saves a checkpoint, then stops
        assert first.wait(timeout=120) == 130, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    recs = lines(run / "generator" / "metrics.jsonl")
    assert len(recs) >= steps_before and [r["step"] for r in recs] == sorted({r["step"] for r in recs})  # one writer
    from ltaug.diffusion.checkpoint import load_checkpoint

    assert load_checkpoint(run)["step"] == recs[-1]["step"]


# ----------------------------------------------------------------------------------------------- 6: killed mid-write

STALLED_WRITE = """
import sys, time
from ltaug.files import atomic_write

def stalled(f):
    f.write(b"PK" + bytes(200_000))  # part of a checkpoint
    f.flush()
    print("writing", flush=True)
    time.sleep(600)

atomic_write(sys.argv[1], stalled)
"""


def kill_mid_write(target: Path) -> list[Path]:
    """A real process writing `target` through ltaug's atomic writer, killed with SIGKILL mid-write: what is left."""
    proc = subprocess.Popen([sys.executable, "-c", STALLED_WRITE, str(target)], env=ENV, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    left = sorted(target.parent.glob(f".{target.name}.*.tmp"))
    assert left and left[0].stat().st_size > 200_000
    return left


def test_a_checkpoint_half_written_by_a_killed_process_is_cleaned_on_resume(gen_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(gen_run, run)
    left = kill_mid_write(run / "generator" / "checkpoints" / "ckpt-0000002.pt")
    code, text = invoke("train-generator", "--resume", run, "--steps", 2, "--no-progress")
    assert code == 0, text
    assert not any(p.exists() for p in left) and not list(run.rglob("*.tmp"))
    assert (run / "generator" / "checkpoints" / "ckpt-0000002.pt").is_file()


def test_a_classifier_checkpoint_half_written_by_a_killed_process_is_cleaned_on_resume(tmp_path):
    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(1)
    np.savez(npz, images=rng.integers(0, 255, (24, 16, 16, 1), dtype=np.uint8), labels=np.arange(24) % 3,
             classes=np.array(["x", "y", "z"]))
    cmd = ["train-classifier", "--out", tmp_path / "run", "--model", "test_cifar_resnet", "--epochs", 1,
           "--batch-size", 8, "--device", "cpu", "--no-progress", "--set", f"data.dataset=npz:{npz}", "--set",
           f"data.test_dataset=npz:{npz}", "--set", "data.resolution=16"]
    assert invoke(*cmd)[0] == 0
    cls = tmp_path / "run" / "classifier-real"
    before = (cls / "checkpoint.pt").read_bytes()
    left = kill_mid_write(cls / "checkpoint.pt")  # killed while writing the next epoch's checkpoint
    assert (cls / "checkpoint.pt").read_bytes() == before  # the last whole one is untouched
    code, text = invoke(*cmd, "--resume")
    assert code == 0, text
    assert not any(p.exists() for p in left)


# ----------------------------------------------------------------------------------------------- 5: damaged PNGs


def test_empty_and_truncated_pngs_with_their_lines_are_redrawn(gen_run, tmp_path):
    from PIL import Image

    from ltaug.config import SynthConfig
    from ltaug.synth import generate_images, synthesize
    from ltaug.synth.folder import read_png

    def png_ok(path: Path) -> bool:
        try:
            with Image.open(path) as img:
                img.load()
            return True
        except Exception:  # noqa: BLE001 - anything that does not decode
            return False

    cfg = SynthConfig(per_class=2, fill_to=0, steps=2, classes=["3", "8"])
    out = tmp_path / "synth"
    synthesize(gen_run, cfg, out, device="cpu", progress=False)
    records = lines(out / "manifest.jsonl")
    empty, cut = out / records[0]["path"], out / records[1]["path"]
    empty.write_bytes(b"")  # what a power cut after the rename can leave
    cut.write_bytes(cut.read_bytes()[:40])
    res = synthesize(gen_run, cfg, out, device="cpu", progress=False)
    assert res.generated == 2 and res.repaired.get("missing_png") == 2, res.repaired  # lines dropped, redrawn
    assert all(png_ok(out / r["path"]) for r in lines(out / "manifest.jsonl"))
    assert sorted(r["seed"] for r in lines(out / "manifest.jsonl")) == sorted(r["seed"] for r in records)
    for r in records[:2]:  # redrawn identically from their seeds
        again = generate_images(gen_run, [r["label"]], cfg, [r["seed"]], device="cpu")[0]
        assert np.array_equal(read_png(out / r["path"]), again)


# ----------------------------------------------------------------------------------------------- 7: Ray ends with us


def _descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every living descendant of `pid` (from /proc)."""
    children: dict[int, list] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            f = stat[stat.rfind(")") + 2:].split()
            children.setdefault(int(f[1]), []).append((int(d), int(f[19])))
    out, stack = {}, [pid]
    while stack:
        for c, start in children.get(stack.pop(), []):
            out[c] = start
            stack.append(c)
    return out


def _alive(pid: int, start: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    f = stat[stat.rfind(")") + 2:].split()
    return int(f[19]) == start and f[0] != "Z"


@pytest.mark.slow
def test_a_killed_ray_synthesis_leaves_no_ray_process_behind(gen_run, tmp_path):
    out = tmp_path / "synth"
    driver = ltaug("synthesize", gen_run, "--out", out, "--per-class", 50, "--steps", 20, "--batch-size", 1,
                   "--workers", 2, "--device", "cpu", "--quiet", start_new_session=True)
    ray_procs: dict[int, int] = {}
    try:
        wait_for(lambda: len(lines(out / "manifest.jsonl")) >= 2, 300, driver)
        ray_procs = _descendants(driver.pid)
        assert len(ray_procs) >= 4, ray_procs  # raylet, gcs, two workers, agents, ...
        driver.kill()
        driver.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(p, s) for p, s in ray_procs.items()):
            time.sleep(0.25)
        survivors = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p, s in ray_procs.items() if _alive(p, s)}
        assert not survivors, survivors
    finally:
        if driver.poll() is None:
            driver.kill()
        for p, start in {**ray_procs, **_descendants(driver.pid)}.items():  # whatever a failure left: by pid
            if _alive(p, start):
                os.kill(p, signal.SIGKILL)


# ----------------------------------------------------------------------------------------------- 12: dead address


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once this socket is closed


def test_an_address_where_nothing_listens_fails_within_seconds(gen_run, tmp_path):
    from ltaug.errors import LtaugError
    from ltaug.raycluster import check_address

    port = _closed_port()
    t0 = time.perf_counter()
    with pytest.raises(LtaugError, match=f"127.0.0.1:{port}"):
        check_address(f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 4
    t0 = time.perf_counter()
    code, text = invoke("synthesize", gen_run, "--out", tmp_path / "s", "--per-class", 1, "--workers", 2,
                        "--address", f"127.0.0.1:{port}", "--device", "cpu")
    assert code == 2 and f"--address 127.0.0.1:{port}" in text and "no Ray cluster answers" in text, text
    assert time.perf_counter() - t0 < 15 and not (tmp_path / "s").exists()
    t0 = time.perf_counter()
    code, text = invoke("tune", "margin", "--out", tmp_path / "t", "--address", f"ray://127.0.0.1:{port}")
    assert code == 2 and f"127.0.0.1:{port}" in text, text
    assert time.perf_counter() - t0 < 15 and not (tmp_path / "t").exists()
