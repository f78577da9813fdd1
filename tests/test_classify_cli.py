"""`ltaug train-classifier`: bad input exits 2 with a message that names the fix; a real run with --compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ltaug.cli import app
from ltaug.data import load_dataset

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("args, message", [
    (["--model", "cifar_resnet33"], "cifar_resnet32"),  # close matches are listed
    (["--loss", "focal"], "classifier.loss"),
    (["--synthetic-ratio", "-1"], "--synthetic-ratio"),
    (["--synthetic-mode", "half"], "synthetic_mode"),
    (["--resume"], "--out"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, args, message):
    result = runner.invoke(app, ["train-classifier", "--out", str(tmp_path / "run"), *args]
                           if args != ["--resume"] else ["train-classifier", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_synthetic_set_with_other_classes_exits_2(tmp_path):
    cifar_like = np.zeros((10, 32, 32, 3), np.uint8)
    np.savez(tmp_path / "cifar.npz", images=cifar_like, labels=np.arange(10),
             classes=np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                               "truck"]))
    result = runner.invoke(app, ["train-classifier", "--out", str(tmp_path / "run"), "--synthetic",
                                 str(tmp_path / "cifar.npz"), "--synthetic-ratio", "1", "--model",
                                 "test_cifar_resnet", "--epochs", "1", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "differ from the dataset" in result.output
    assert not (tmp_path / "run" / "classifier-synth" / "checkpoint.pt").exists()


def test_cli_trains_with_synthetic_fill_and_compares(tmp_path):
    # small npz sets cut from the real digits keep this test quick: 40 down to 2 training images per class
    lt, pool = load_dataset("mnist-lt"), load_dataset("mnist-lt", "test")
    keep = np.concatenate([np.flatnonzero(lt.labels == c)[:n] for c, n in
                           enumerate([40, 30, 20, 15, 10, 8, 6, 4, 3, 2])])
    test_idx = np.concatenate([np.flatnonzero(pool.labels == c)[:20] for c in range(10)])
    synth_idx = np.setdiff1d(np.arange(len(pool)), test_idx)  # 80 per class, disjoint from the test images
    for name, ds, idx in (("train", lt, keep), ("test", pool, test_idx), ("s", pool, synth_idx)):
        np.savez(tmp_path / f"{name}.npz", images=ds.images[idx], labels=ds.labels[idx], classes=np.array(ds.classes))
    common = ["--out", str(tmp_path / "run"), "--model", "test_cifar_resnet", "--epochs", "1", "--device", "cpu",
              "--no-progress", "--dataset", f"npz:{tmp_path / 'train.npz'}",
              "--set", f"data.test_dataset=npz:{tmp_path / 'test.npz'}", "--set", "classifier.flip=false"]
    real = runner.invoke(app, ["train-classifier", *common])
    assert real.exit_code == 0, real.output
    first = json.loads((tmp_path / "run" / "classifier-real" / "results.json").read_text())
    assert first["train_counts_real"] == [40, 30, 20, 15, 10, 8, 6, 4, 3, 2] and first["test_images"] == 200
    again = runner.invoke(app, ["train-classifier", "--out", str(tmp_path / "run"), "--resume", "--no-progress"])
    assert again.exit_code == 0, again.output  # its own config.yaml: the same recipe, already finished
    assert json.loads((tmp_path / "run" / "classifier-real" / "results.json").read_text())["confusion"] == \
        first["confusion"]
    # --resume with more epochs extends the classifier (the schedule follows the new total); fewer is refused
    more = runner.invoke(app, ["train-classifier", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "-q",
                               "--json"])
    assert more.exit_code == 0, more.output
    out = json.loads(more.stdout)  # --json: one object on stdout, nothing else
    assert out["epochs"] == 2 and out["top1"] == out["accuracy"]["overall"] and out["out_dir"].endswith("real")
    records = [json.loads(line) for line in (tmp_path / "run" / "classifier-real" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records if "epoch" in r][-2:] == [1, 2]
    fewer = runner.invoke(app, ["train-classifier", "--out", str(tmp_path / "run"), "--resume", "--epochs", "1"])
    assert fewer.exit_code == 2 and "2 epochs already" in fewer.output
    synth = runner.invoke(app, ["train-classifier", *common, "--synthetic", str(tmp_path / "s.npz"),
                                "--synthetic-mode", "fill", "--compare",
                                str(tmp_path / "run" / "classifier-real" / "results.json")])
    assert synth.exit_code == 0, synth.output
    res = json.loads((tmp_path / "run" / "classifier-synth" / "results.json").read_text())
    assert res["train_counts_synthetic"] == [0, 10, 20, 25, 30, 32, 34, 36, 37, 38]
    assert res["synthetic"]["mode"] == "fill" and res["name"] == "classifier-synth"
    assert "gain" in synth.output and "overall" in synth.output
    assert (tmp_path / "run" / "classifier-synth" / "gain_vs_classifier-real.png").stat().st_size > 1000
    assert (tmp_path / "run" / "config.yaml").is_file()
