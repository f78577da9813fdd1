"""`ltaug`, `ltaug data list|info` and the CLI's handling of bad input (exit 2, a message, no traceback)."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from ltaug.cli import app

runner = CliRunner()
COMMANDS = ["train-generator", "synthesize", "train-classifier", "evaluate", "tune", "run", "data"]


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in result.output


def test_python_dash_m_and_fast_help_without_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, ltaug.cli; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "importing the CLI must not import torch (ltaug --help stays fast)"
    out = subprocess.run([sys.executable, "-m", "ltaug", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train-generator" in out.stdout


def test_data_info_mnist_lt_table_and_plot(tmp_path):
    plot = tmp_path / "hist.png"
    result = runner.invoke(app, ["data", "info", "mnist-lt", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "988 images" in result.output and "many 3 / medium 3 / few 4" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_info_shared_npz(shared_data):
    result = runner.invoke(app, ["data", "info", f"npz:{shared_data / 'cifar100_lt_r100_train.npz'}"])
    assert result.exit_code == 0, result.output
    assert "10,847 images" in result.output and "many 35 / medium 35 / few 30" in result.output


def test_data_list_shows_offline_availability(tmp_path):
    result = runner.invoke(app, ["data", "list", "--data-root", str(tmp_path)])
    assert result.exit_code == 0
    assert "mnist-lt" in result.output and "cifar10-lt" in result.output and "--download" in result.output


def test_bad_inputs_exit_2_with_a_message(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    cases = [
        (["data", "info", "imagenet-lt"], "valid: mnist-lt"),
        (["data", "info", "cifar10-lt", "--data-root", str(tmp_path)], "--download"),
        (["data", "info", f"npz:{bad}"], "bad.npz"),
        (["data", "info", "mnist-lt", "--imbalance-ratio", "0.5"], "must be >= 1"),
        (["data", "info", f"folder:{tmp_path / 'none'}"], "does not exist"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)


def test_real_process_prints_no_traceback():
    out = subprocess.run([sys.executable, "-m", "ltaug", "data", "info", "nope"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr + out.stdout and "unknown dataset 'nope'" in out.stderr


def test_a_failed_download_is_one_line_naming_the_url_the_folder_and_the_fix(tmp_path):
    """Offline (here: a proxy that refuses), `data info cifar10-lt --download` ends in one line and exit 1."""
    import os

    env = dict(os.environ, https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    root = tmp_path / "cifar"
    p = subprocess.run([sys.executable, "-m", "ltaug", "data", "info", "cifar10-lt", "--download", "--data-root",
                        str(root)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, lines
    for text in ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", str(root), "extract", "--download"):
        assert text in lines[0], text
    assert not root.exists()


def test_data_info_json_and_whole_lines_when_not_a_terminal():
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    p = subprocess.run([sys.executable, "-m", "ltaug", "data", "info", "mnist-lt"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    # a pipe is not a terminal: the summary line stays whole instead of wrapping at 80 columns
    assert any(line.startswith("total ") and line.rstrip().endswith("classes") and len(line) > 80
               for line in p.stdout.splitlines()), p.stdout
    r = runner.invoke(app, ["data", "info", "mnist-lt", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["num_classes"] == 10 and info["classes"][0] == {"label": 0, "class": "0", "images": 400,
                                                                "group": "many"}
    assert sum(c["images"] for c in info["classes"]) == info["images"]
