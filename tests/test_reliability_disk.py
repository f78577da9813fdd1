"""Full disks and read-only folders: one message naming the folder and the space needed,
exit status 1, nothing torn, and a later run with space resumes cleanly; a read-only output folder is refused by
name before anything is written.

The full disk is real: a small tmpfs mounted on the output folder (`mount -t tmpfs -o size=...`, which needs root
or CAP_SYS_ADMIN; CI runs as root in its container), grown afterwards with `mount -o remount,size=...` for the run
that resumes. Where mounting is not allowed, the same tests run under a file-size limit (RLIMIT_FSIZE, the kernel's
`ulimit -f`: writes past it fail with EFBIG, which ltaug treats as a full disk), lifted for the run that resumes.
LTAUG_TEST_DISK=rlimit forces that fallback. Read-only folders are a read-only tmpfs, or (without mount rights) a
folder without write permission (as a non-root user, where permissions bind).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import subprocess
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltaug.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["generator.preset=tiny", "generator.batch_size=8", "generator.warmup=1", "generator.grid_every=0",
        "generator.grid_cols=1", "generator.grid_steps=2", "generator.log_every=1", "generator.ckpt_every=1"]
QUICK = [a for s in TINY for a in ("--set", s)] + ["--device", "cpu", "--no-progress"]
SHAPE = (16, 16, 1)  # the mnist_lt recipe's images


def invoke(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r.exit_code, " ".join(r.output.split())


def _mount(*args: str) -> bool:
    if os.environ.get("LTAUG_TEST_DISK") == "rlimit":
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


class SmallDisk:
    """A folder with little space: a tmpfs of `size` bytes mounted there, or a limit of `file_limit` bytes per file
    on the commands run through `invoke` (kind "tmpfs" or "rlimit"). `make_room()` gives it 64 MiB / lifts the
    limit."""

    def __init__(self, path: Path, size: int, file_limit: int):
        self.path, self.size, self.file_limit = path, size, file_limit
        path.mkdir(parents=True, exist_ok=True)
        self.kind = "tmpfs" if _mount("-t", "tmpfs", "-o", f"size={size}", "ltaug-small", str(path)) else "rlimit"
        self.limited = True

    def invoke(self, *args) -> tuple[int, str]:
        if self.kind == "tmpfs" or not self.limited:
            return invoke(*args)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_limit, hard))  # this process's writes (soft limit)
        try:
            return invoke(*args)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    def make_room(self) -> None:
        if self.kind == "tmpfs":
            assert _mount("-o", "remount,size=64m", str(self.path))
        self.limited = False

    def close(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@contextlib.contextmanager
def small_disk(path: Path, size: int, file_limit: int) -> Iterator[SmallDisk]:
    disk = SmallDisk(path, size, file_limit)
    try:
        yield disk
    finally:
        disk.close()


def tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def jsonl_whole(path: Path) -> list[dict]:
    """Every line of a JSONL file, each parsed: fails on a torn line (a file not written yet: no lines)."""
    text = path.read_text() if path.exists() else ""
    assert text == "" or text.endswith("\n"), "torn last line"
    return [json.loads(line) for line in text.splitlines()]


def fault_message(text: str, folder: Path, kind: str) -> None:
    assert ("no space left on the device" if kind == "tmpfs" else "file size limit") in text, text
    assert str(folder) in text and "run the same command again" in text, text


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory) -> Path:
    from ltaug.config import load_recipe
    from ltaug.diffusion.train import train_generator

    run = tmp_path_factory.mktemp("disk") / "run"
    train_generator(load_recipe("mnist_lt", ["device=cpu", "generator.steps=1", *TINY]), run, progress=False)
    return run


# ----------------------------------------------------------------------------------------------- 8: full disk


def test_synthesize_on_a_full_disk_then_resume_with_space(gen_run, tmp_path):
    from ltaug.synth.folder import png_ok

    out = tmp_path / "synth"
    cmd = ["synthesize", gen_run, "--out", out, "--per-class", 8, "--steps", 2, "--batch-size", 4, "--device", "cpu",
           "--no-npz"]
    with small_disk(out, 48 * 1024, 12 * 1024) as disk:  # a third of the plan's PNGs and manifest lines fit
        code, text = disk.invoke(*cmd)
        assert code == 1, text
        fault_message(text, out, disk.kind)
        assert "space: this plan writes about" in text  # the estimate, printed with the plan
        assert "needs about" in text
        records = jsonl_whole(out / "manifest.jsonl")  # nothing torn
        assert 0 < len(records) < 80 and not tmp_files(out)
        assert all(png_ok(out / r["path"], SHAPE) for r in records)
        disk.make_room()
        code, text = disk.invoke(*cmd)
        assert code == 0, text
        records = jsonl_whole(out / "manifest.jsonl")
        assert sorted(r["seed"] for r in records) == list(range(80))  # exactly the plan: 8 per class, no duplicate
        assert all(png_ok(out / r["path"], SHAPE) for r in records) and not tmp_files(out)


def test_train_generator_on_a_full_disk_then_resume_with_space(tmp_path):
    run = tmp_path / "run"
    cmd = ["train-generator", "--out", run, "--steps", 3, "--set", "generator.keep_ckpts=2", *QUICK]
    with small_disk(run, 4608 * 1024, 1024 * 1024) as disk:  # the first 3 MB checkpoint fits, the second not
        code, text = disk.invoke(*cmd)
        assert code == 1, text
        fault_message(text, run / "generator" / "checkpoints", disk.kind)
        need = float(re.search(r"needs about ([0-9.]+) MiB", text).group(1)) * 2**20
        ckpt = run / "generator" / "checkpoints" / "ckpt-0000001.pt"
        assert 0.8 < need / (ckpt.stat().st_size if ckpt.exists() else 3.07e6) < 1.25, text  # one checkpoint's size
        assert not tmp_files(run)
        jsonl_whole(run / "generator" / "metrics.jsonl")
        disk.make_room()
        if disk.kind == "tmpfs":  # the first checkpoint was written: continue from it
            from ltaug.diffusion.checkpoint import list_checkpoints, load_checkpoint

            assert [p.name for p in list_checkpoints(run / "generator" / "checkpoints")] == ["ckpt-0000001.pt"]
            assert load_checkpoint(run)["step"] == 1
            code, text = disk.invoke("train-generator", "--resume", run, "--no-progress")
            assert code == 0, text
            assert "generator: resume at step 1" in (run / "log.txt").read_text()
        else:  # under the size limit no checkpoint fits: the same command starts over cleanly
            code, text = disk.invoke(*cmd)
            assert code == 0, text
        assert (run / "generator" / "checkpoints" / "ckpt-0000003.pt").is_file() and not tmp_files(run)
        assert [r["step"] for r in jsonl_whole(run / "generator" / "metrics.jsonl")][-1] == 3


def test_train_classifier_on_a_full_disk_then_resume_with_space(tmp_path):
    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(1)
    np.savez(npz, images=rng.integers(0, 255, (24, 16, 16, 1), dtype=np.uint8), labels=np.arange(24) % 3,
             classes=np.array(["x", "y", "z"]))
    run = tmp_path / "run"
    cmd = ["train-classifier", "--out", run, "--model", "test_cifar_resnet", "--epochs", 2, "--batch-size", 8,
           "--device", "cpu", "--no-progress", "--set", f"data.dataset=npz:{npz}", "--set",
           f"data.test_dataset=npz:{npz}", "--set", "data.resolution=16"]
    with small_disk(run, 128 * 1024, 32 * 1024) as disk:  # two configs and one 62 KB checkpoint fit, not two
        code, text = disk.invoke(*cmd)
        assert code == 1, text
        fault_message(text, run / "classifier-real", disk.kind)
        assert not tmp_files(run)
        jsonl_whole(run / "classifier-real" / "metrics.jsonl")
        disk.make_room()
        code, text = disk.invoke(*cmd, "--resume")
        assert code == 0, text
        results = json.loads((run / "classifier-real" / "results.json").read_text())
        assert results["epochs"] == 2 and [r["epoch"] for r in jsonl_whole(run / "classifier-real" /
                                                                            "metrics.jsonl")] == [1, 2]
        assert torch.load(run / "classifier-real" / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_a_failed_append_leaves_no_torn_line(tmp_path):
    """The writer under every manifest and metrics file: a full disk mid-append cuts the file back."""
    from ltaug.files import append_text
    from ltaug.space import WriteFault

    folder = tmp_path / "f"
    with small_disk(folder, 8 * 1024, 8 * 1024) as disk:
        append_text(folder / "m.jsonl", '{"a": 1}\n')
        with pytest.raises(WriteFault, match="needs about") as info:
            if disk.kind == "tmpfs":
                append_text(folder / "m.jsonl", "x" * 64 * 1024 + "\n")
            else:
                soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
                resource.setrlimit(resource.RLIMIT_FSIZE, (disk.size, hard))
                try:
                    append_text(folder / "m.jsonl", "x" * 64 * 1024 + "\n")
                finally:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert info.value.folder == folder.absolute()
        assert (folder / "m.jsonl").read_text() == '{"a": 1}\n'


# ----------------------------------------------------------------------------------------------- 9: read-only


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Optional[str]]:
    path.mkdir(parents=True, exist_ok=True)
    if _mount("-t", "tmpfs", "-o", "ro,size=1m", "ltaug-ro", str(path)):
        try:
            yield "read-only file system"
        finally:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
    elif os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield "not writable by this user"
        finally:
            path.chmod(0o755)
    else:
        yield None


@pytest.mark.parametrize("command", ["train-generator", "synthesize", "train-classifier", "data-info-plot"])
def test_a_read_only_output_folder_is_refused_by_name(gen_run, tmp_path, command):
    ro = tmp_path / "ro"
    with read_only_folder(ro) as why:
        if why is None:
            pytest.skip("running as root where mounting is not allowed: no folder can be made read-only for root")
        args = {"train-generator": ["train-generator", "--out", ro / "run", "--steps", 1, *QUICK],
                "synthesize": ["synthesize", gen_run, "--out", ro, "--per-class", 1, "--device", "cpu"],
                "train-classifier": ["train-classifier", "--out", ro / "run", "--model", "test_cifar_resnet",
                                     "--epochs", 1, "--device", "cpu"],
                "data-info-plot": ["data", "info", "mnist-lt", "--plot", ro / "hist.png"]}[command]
        code, text = invoke(*args)
        assert code == 2 and str(ro) in text and why in text, text
        assert list(ro.iterdir()) == []
