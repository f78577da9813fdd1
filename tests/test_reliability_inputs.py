"""Hostile files and names, and bad input answered cleanly.

Real symbolic links, a real pickle that would write a marker file if it ran, a planted TorchScript network, class
names that are console markup, HTML and 300 characters long, a real decompression bomb, and usage errors found
after a run directory could have been created. Every usage error exits 2 with one message naming the key, flag or
file, and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from ltaug.cli import app
from ltaug.errors import LtaugError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["device=cpu", "generator.preset=tiny", "generator.batch_size=8", "generator.warmup=1", "generator.steps=1",
        "generator.grid_every=0", "generator.grid_cols=1", "generator.grid_steps=2", "generator.log_every=1"]
QUICK = [a for s in TINY if not s.startswith("device") for a in ("--set", s)] + ["--device", "cpu", "--no-progress"]


def invoke(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args])
    text = " ".join(r.output.split())
    assert "Traceback" not in r.output, r.output
    return r.exit_code, text


def snapshot(root: Path) -> dict:
    """Every path under root with its bytes (files) or None (folders): to prove nothing changed."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory) -> Path:
    """A real generator run (the tiny preset, one step of the generator stage on MNIST-LT)."""
    from ltaug.config import load_recipe
    from ltaug.diffusion.train import train_generator

    run = tmp_path_factory.mktemp("inputs") / "run"
    train_generator(load_recipe("mnist_lt", TINY), run, progress=False)
    return run


def fresh_copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, symlinks=True)
    return dest


# ----------------------------------------------------------------------------------------------- 2: symbolic links


def test_a_linked_class_folder_is_never_followed_not_even_by_overwrite(gen_run, tmp_path):
    run = fresh_copy(gen_run, tmp_path / "run")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "00000003.png").write_bytes(b"precious")
    (outside / "notes.txt").write_text("mine")
    before = snapshot(outside)
    synth = run / "synth"
    synth.mkdir()
    (synth / "3").symlink_to(outside, target_is_directory=True)
    for extra in ([], ["--overwrite"]):
        code, text = invoke("synthesize", run, "--per-class", 1, "--steps", 2, "--device", "cpu", *extra)
        assert code == 2 and "symbolic link" in text and str(synth / "3") in text, text
        assert snapshot(outside) == before  # nothing deleted, written or replaced there
    assert sorted(p.name for p in synth.iterdir()) == ["3"]  # and nothing written beside the link either


def test_a_linked_manifest_is_never_appended_to(gen_run, tmp_path):
    run = fresh_copy(gen_run, tmp_path / "run")
    outside = tmp_path / "victim.jsonl"
    outside.write_text('{"keep": 1}\n')
    synth = run / "synth"
    synth.mkdir()
    (synth / "manifest.jsonl").symlink_to(outside)
    code, text = invoke("synthesize", run, "--per-class", 1, "--steps", 2, "--device", "cpu")
    assert code == 2 and "manifest.jsonl is a symbolic link" in text, text
    assert outside.read_text() == '{"keep": 1}\n'
    # the appender itself refuses a link, whoever calls it
    from ltaug.files import append_jsonl

    with pytest.raises(LtaugError, match="symbolic link"):
        append_jsonl(synth / "manifest.jsonl", {"x": 1})
    assert outside.read_text() == '{"keep": 1}\n'


def test_a_linked_file_in_the_generator_folder_stops_a_resume(gen_run, tmp_path):
    run = fresh_copy(gen_run, tmp_path / "run")
    outside = tmp_path / "metrics-elsewhere.jsonl"
    outside.write_text("")
    metrics = run / "generator" / "metrics.jsonl"
    metrics.unlink()
    metrics.symlink_to(outside)
    code, text = invoke("train-generator", "--resume", run, "--steps", 2, "--no-progress")
    assert code == 2 and "metrics.jsonl is a symbolic link" in text, text
    assert outside.read_text() == ""


def test_an_output_folder_given_as_a_link_is_the_users_choice(gen_run, tmp_path):
    real = tmp_path / "real-synth"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    code, text = invoke("synthesize", gen_run, "--out", tmp_path / "link", "--per-class", 1, "--classes", "7",
                        "--steps", 2, "--device", "cpu", "--quiet")
    assert code == 0, text
    assert (real / "7").is_dir() and len((real / "manifest.jsonl").read_text().splitlines()) == 1


# ----------------------------------------------------------------------------------------------- 3: pickles


class _WritesMarker:
    """Unpickling this calls open(marker, "w"): the file appears if any code from the pickle runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _cifar_folder(root: Path, poisoned: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = np.zeros((10, 3072), np.uint8)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": rows, "labels": list(range(10))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    with open(folder / "data_batch_3", "wb") as f:  # a real CIFAR batch dict with the payload inside it
        pickle.dump({"batch_label": "x", "data": rows, "labels": list(range(10)), "filenames": _WritesMarker(poisoned)},
                    f)
    return folder


def test_a_crafted_cifar_batch_never_runs_code(tmp_path):
    marker = tmp_path / "MARKER"
    _cifar_folder(tmp_path / "root", marker)
    # the payload is live: plain pickle would run it
    with open(tmp_path / "root" / "cifar-10-batches-py" / "data_batch_3", "rb") as f:
        pickle.load(f).get("filenames").close()
    assert marker.exists()
    marker.unlink()
    code, text = invoke("data", "info", "cifar10-lt", "--data-root", tmp_path / "root")
    assert code == 2 and "corrupt or not CIFAR data" in text and "refused to load global" in text, text
    assert not marker.exists()
    from ltaug.data.sources import safe_unpickle

    with pytest.raises(pickle.UnpicklingError, match="refused"):
        safe_unpickle(tmp_path / "root" / "cifar-10-batches-py" / "data_batch_3")
    assert not marker.exists()


def test_a_crafted_checkpoint_never_runs_code(tmp_path):
    """Checkpoints are read with torch.load(weights_only=True): a crafted pickle never runs."""
    import torch

    marker = tmp_path / "MARKER"
    for path in (tmp_path / "run" / "generator" / "checkpoints" / "ckpt-0000001.pt",
                 tmp_path / "classifier" / "checkpoint.pt"):
        path.parent.mkdir(parents=True)
        torch.save({"model": {}, "step": 1, "meta": _WritesMarker(marker)}, path)
    code, text = invoke("synthesize", tmp_path / "run", "--per-class", 1, "--device", "cpu", "--out", tmp_path / "s")
    assert code == 2 and "not a readable ltaug checkpoint" in text, text
    from ltaug.classify.checkpoint import read_checkpoint

    with pytest.raises(LtaugError, match="not a readable ltaug classifier checkpoint"):
        read_checkpoint(tmp_path / "classifier")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------- 4: Inception weights


def _planted_network(path: Path) -> Path:
    """A valid TorchScript module with Inception's attribute layout: what a planted network would look like."""
    import torch

    class Layers(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2048)

    class Planted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Layers()

        def forward(self, x):
            return self.layers(x)

    torch.jit.script(Planted()).save(str(path))
    return path


def test_inception_weights_never_come_from_a_shared_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    from ltaug.metrics import inception

    _planted_network(tmp_path / "inception-2015-12-05.pt")  # where clean-fid caches it, in a shared /tmp
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("LTAUG_CACHE", str(tmp_path / "my-cache"))
    monkeypatch.setenv("LTAUG_OFFLINE", "1")
    monkeypatch.delenv("LTAUG_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(inception, "_fid_helper_weights", lambda: None)
    with pytest.raises(LtaugError, match="no Inception weights found"):
        inception.find_weights()


def test_inception_weights_are_checked_by_sha256_before_they_are_loaded(tmp_path, monkeypatch, inception_weights):
    from ltaug.files import sha256_file
    from ltaug.metrics import inception

    planted = _planted_network(tmp_path / "weights.pt")
    digest = sha256_file(planted)
    monkeypatch.delenv("LTAUG_INCEPTION_SHA256", raising=False)
    monkeypatch.delenv("LTAUG_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(LtaugError, match=f"sha256 {digest} is not a known Inception file.*LTAUG_INCEPTION_SHA256"):
        inception.load_feature_net(planted)
    monkeypatch.setenv("LTAUG_INCEPTION_SHA256", digest)  # vouched for by the user: checked, then loaded
    assert inception.verify_weights(planted) == digest
    # the known file: accepted, and its sha256 goes into every result's protocol
    assert sha256_file(inception_weights) in inception.KNOWN_SHA256
    net = inception.load_feature_net(inception_weights)
    assert net.protocol()["inception_weights_sha256"] == sha256_file(inception_weights)
    # the user's own cache is a source; a file planted there is refused all the same
    monkeypatch.delenv("LTAUG_INCEPTION_SHA256")
    monkeypatch.setenv("LTAUG_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    shutil.copy(planted, tmp_path / "cache" / "inception-2015-12-05.pt")
    assert inception.find_weights() == tmp_path / "cache" / "inception-2015-12-05.pt"
    with pytest.raises(LtaugError, match="not a known Inception file"):
        inception.load_feature_net(None)


# ----------------------------------------------------------------------------------------------- 10: names


HOSTILE = ["[/bold]", "<b>&x</b>", "a" * 300]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> dict:
    """A dataset whose class names are console markup, HTML and 300 characters; a generator trained on it."""
    root = tmp_path_factory.mktemp("names")
    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 8 + [2] * 4)
    np.savez(root / "data.npz", images=rng.integers(0, 255, (len(labels), 16, 16, 1), dtype=np.uint8), labels=labels,
             classes=np.array(HOSTILE))
    data = [f"data.dataset=npz:{root / 'data.npz'}", f"data.test_dataset=npz:{root / 'data.npz'}",
            "data.resolution=16"]
    code, text = invoke("train-generator", "--out", root / "run", *QUICK, *[a for s in data for a in ("--set", s)])
    assert code == 0, text
    return {"root": root, "run": root / "run", "sets": [a for s in data for a in ("--set", s)]}


def test_markup_in_class_names_is_printed_as_text(hostile_run):
    code, text = invoke("data", "info", f"npz:{hostile_run['root'] / 'data.npz'}", "--resolution", 16)
    assert code == 0 and "[/bold]" in text and "<b>&x</b>" in text, text
    code, text = invoke("synthesize", hostile_run["run"], "--per-class", 1, "--steps", 2, "--device", "cpu")
    assert code == 0 and "[/bold]" in text, text
    code, text = invoke("synthesize", hostile_run["run"], "--per-class", 1, "--classes", "[/bold]zz", "--device", "cpu")
    assert code == 2 and "unknown class name '[/bold]zz'" in text, text  # an error naming markup, printed as text


def test_long_class_names_get_safe_folders_and_keep_their_names(hostile_run):
    from ltaug.data.synthetic import MAX_DIR_BYTES, load_synthetic

    synth = hostile_run["run"] / "synth"
    if not (synth / "manifest.jsonl").is_file():
        assert invoke("synthesize", hostile_run["run"], "--per-class", 1, "--steps", 2, "--device", "cpu")[0] == 0
    records = [json.loads(line) for line in (synth / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["class"] for r in records) == sorted(HOSTILE)  # the real names, in the manifest
    dirs = [p.name for p in synth.iterdir() if p.is_dir()]
    assert len(dirs) == 3 and all(len(d.encode()) <= MAX_DIR_BYTES for d in dirs)
    ds = load_synthetic(synth, classes=HOSTILE)
    assert sorted(ds.labels.tolist()) == [0, 1, 2]
    # a classifier on real + these images, and the report: names HTML-escaped there
    code, text = invoke("train-classifier", "--out", hostile_run["run"], "--synthetic", synth, "--model",
                        "test_cifar_resnet", "--epochs", 1, "--batch-size", 16, "--device", "cpu", "--no-progress",
                        *hostile_run["sets"], "--set", "classifier.flip=false")
    assert code == 0, text
    from ltaug.report import build_report

    page = build_report(hostile_run["run"]).read_text()
    assert "&lt;b&gt;&amp;x&lt;/b&gt;" in page and "<b>&x</b>" not in page and "[/bold]" in page


# ----------------------------------------------------------------------------------------------- 11: bad inputs


def test_a_decompression_bomb_in_a_folder_dataset(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "data" / cls / "0.png")
    Image.new("1", (14000, 14000)).save(tmp_path / "data" / "b" / "bomb.png")  # 196 Mpixels in 24 KB
    code, text = invoke("data", "info", f"folder:{tmp_path / 'data'}")
    assert code == 2 and "bomb.png" in text and "decompression bomb" in text, text
    code, text = invoke("train-generator", "--out", tmp_path / "run", "--dataset", f"folder:{tmp_path / 'data'}",
                        *QUICK)
    assert code == 2 and "bomb.png" in text and not (tmp_path / "run").exists(), text


@pytest.mark.parametrize("args,names", [
    (["data", "info", "mnist-lt", "--resolution", "0"], "--resolution 0"),
    (["train-generator", "--set", "data.resolution=0"], "data.resolution"),
    (["train-generator", "--set", "generator.lr=.nan"], "generator.lr"),
    (["train-generator", "--set", "generator.lr=nan"], "generator.lr"),
])
def test_bad_values_name_their_key(tmp_path, args, names):
    extra = ["--out", str(tmp_path / "run"), *QUICK] if args[0] == "train-generator" else []
    code, text = invoke(*args, *extra)
    assert code == 2 and names in text, text
    assert not (tmp_path / "run").exists()


def test_a_dataset_with_no_images(tmp_path):
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 16, 16, 1), np.uint8), labels=np.zeros(0, np.int64),
             classes=np.array(["a", "b"]))
    code, text = invoke("train-generator", "--out", tmp_path / "run", "--dataset", f"npz:{tmp_path / 'empty.npz'}",
                        *QUICK)
    assert code == 2 and "empty.npz holds no images" in text and not (tmp_path / "run").exists(), text


def _sweep(path: Path, space) -> Path:
    path.write_text(yaml.safe_dump({"recipe": "mnist_lt", "metric": "val_accuracy.few", "space": space}))
    return path


@pytest.mark.parametrize("space,message", [
    ({"classifier.lr": {"grid": []}}, "space key 'classifier.lr' (grid) needs a non-empty list"),
    (["classifier.lr", "classifier.epochs"], "'space' must be a mapping"),
    ({"classifier.lr": {"uniform": [0.1]}}, "space key 'classifier.lr' (uniform) needs two bounds"),
    ({"classifier.lr": {"loguniform": [0.0, 0.1]}}, "loguniform bounds must be > 0"),
    ({"classifier.lr": {"uniform": [0.2, 0.1]}}, "lower bound 0.2 must be below the upper bound 0.1"),
])
def test_bad_sweep_files_exit_2_naming_the_key_and_create_nothing(tmp_path, space, message):
    sweep = _sweep(tmp_path / "s.yaml", space)
    code, text = invoke("tune", sweep, "--out", tmp_path / "out")
    assert code == 2 and message in text and str(sweep) in text, text
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- 13: nothing created


@pytest.mark.parametrize("args", [
    ["train-classifier", "--synthetic", "/nonexistent/synth"],
    ["train-classifier", "--dataset", "npz:/nonexistent.npz"],
    ["train-classifier", "--device", "cuda"],
    ["run", "--set", "data.dataset=npz:/nonexistent.npz"],
    ["run", "--device", "cuda"],
    ["train-generator", "--device", "cuda"],
])
def test_usage_errors_leave_no_run_directory(tmp_path, args):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is not an error here")
    out = tmp_path / "new-run"
    code, text = invoke(*args, "--out", out)
    assert code == 2 and ("nonexistent" in text or "CUDA" in text), text
    assert not out.exists(), sorted(out.rglob("*"))


def test_a_classifier_name_is_never_a_path(tmp_path):
    code, text = invoke("train-classifier", "--out", tmp_path / "run", "--name", "../../escaped")
    assert code == 2 and "--name '../../escaped'" in text, text
    assert not (tmp_path / "run").exists() and not (tmp_path.parent / "classifier-..").exists()


def test_synthesize_with_a_device_that_is_not_here_writes_nothing(gen_run, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, text = invoke("synthesize", gen_run, "--out", tmp_path / "s", "--per-class", 1, "--device", "cuda")
    assert code == 2 and "--device cuda" in text and not (tmp_path / "s").exists(), text


def test_a_classifier_resume_with_another_recipe_changes_nothing(tmp_path):
    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(1)
    np.savez(npz, images=rng.integers(0, 255, (24, 16, 16, 1), dtype=np.uint8), labels=np.arange(24) % 3,
             classes=np.array(["x", "y", "z"]))
    base = ["--out", tmp_path / "run", "--model", "test_cifar_resnet", "--epochs", 1, "--batch-size", 8, "--device",
            "cpu", "--no-progress", "--set", f"data.dataset=npz:{npz}", "--set", f"data.test_dataset=npz:{npz}",
            "--set", "data.resolution=16"]
    assert invoke("train-classifier", *base)[0] == 0
    before = snapshot(tmp_path / "run")
    code, text = invoke("train-classifier", *base, "--resume", "--lr", 0.5)
    assert code == 2 and "classifier.lr" in text, text
    assert snapshot(tmp_path / "run") == before  # not even a log line


# ----------------------------------------------------------------------------------------------- 14: generator resume


@pytest.mark.parametrize("change,key", [
    (["--loss", "cbdm"], "generator.loss"),
    (["--set", "generator.lr=0.01"], "generator.lr"),
    (["--set", "generator.diffrop.margin=0.1"], "generator.diffrop.margin"),
    (["--set", "seed=3"], "seed"),
])
def test_a_generator_resume_refuses_another_loss_or_learning_rate(gen_run, tmp_path, change, key):
    run = fresh_copy(gen_run, tmp_path / "run")
    before = {str(p): p.stat().st_mtime_ns for p in run.rglob("*")}
    code, text = invoke("train-generator", "--resume", run, "--steps", 2, "--no-progress", *change)
    assert code == 2 and f"'{key}'" in text and "--out" in text, text
    assert {str(p): p.stat().st_mtime_ns for p in run.rglob("*")} == before
    # what a resume may change: the number of steps (and logging, grids, checkpoint cadence)
    if key == "seed":
        code, text = invoke("train-generator", "--resume", run, "--steps", 2, "--no-progress", "--set",
                            "generator.log_every=5")
        assert code == 0, text
        assert os.path.exists(run / "generator" / "checkpoints" / "ckpt-0000002.pt")
