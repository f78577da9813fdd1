"""`synthesize` end to end on a real (tiny, briefly trained) MNIST-LT generator: the folder, manifest and npz agree
with each other and with `generate_images`; batch size and Ray workers never change an image; a kill -9 mid-run is
resumed to exactly the plan; other settings are refused; the filter keeps the plan's counts; bad CLI input exits 2."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ltaug.cli import app
from ltaug.errors import LtaugError
from ltaug.synth.folder import read_png

runner = CliRunner()
FAST = dict(steps=2, device="cpu", progress=False)
RUN_KW = ("device", "progress", "overwrite", "seed", "plan")


def synth_cfg(**kw):
    """A SynthConfig with the low-level defaults these tests were written against (w 0, DDIM-50, no plan mode)."""
    from ltaug.config import SynthConfig

    return SynthConfig(**{"w": 0.0, "steps": 50, "fill_to": 0, "per_class": 0, **kw})


def synthesize(run, out, **kw):
    """ltaug.synth.synthesize with the sampling / plan keys gathered into the recipe section it takes."""
    from ltaug.synth import synthesize as _synthesize

    run_kw = {k: kw.pop(k) for k in RUN_KW if k in kw}
    if "filter_classifier" in kw:
        kw["filter_classifier"] = str(kw["filter_classifier"])
    return _synthesize(run, synth_cfg(**kw), out, **run_kw)


def generate_images(gen, labels, seeds=None, device="cpu", **kw):
    from ltaug.synth import generate_images as _generate

    return _generate(gen, labels, synth_cfg(**kw), seeds, device=device)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory (config.yaml, generator/checkpoints/ckpt-*.pt in the generator stage's format) holding a real
    tiny-preset UNet trained for two DDPM-loss steps on MNIST-LT with the generator stage's own loss function."""
    import torch

    from ltaug.config import load_recipe
    from ltaug.data import load_dataset
    from ltaug.diffusion.checkpoint import save_checkpoint
    from ltaug.diffusion.losses import get_loss
    from ltaug.diffusion.schedule import NoiseSchedule
    from ltaug.diffusion.unet import build_unet
    from ltaug.rundir import RunDir

    run = RunDir(tmp_path_factory.mktemp("synth") / "run").init(load_recipe(None)).path
    ds = load_dataset("mnist-lt")
    torch.manual_seed(0)
    net = build_unet("tiny", 10, 1, 32)
    schedule = NoiseSchedule.linear(1000)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    x0_all = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    y_all = torch.from_numpy(ds.labels)
    loss_fn = get_loss("ddpm")
    steps = 2  # the synthesis tests need a real network in the real checkpoint format, not a good one
    for _ in range(steps):
        idx = torch.randint(len(y_all), (8,), generator=g)
        loss = loss_fn(net, schedule, x0_all[idx], y_all[idx], g, num_classes=10)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    meta = {"num_classes": 10, "classes": ds.classes, "counts": ds.counts, "channels": 1, "resolution": 32,
            "preset": "tiny", "T": 1000, "schedule": "linear"}
    save_checkpoint({"model": net.state_dict(), "ema": net.state_dict(), "step": steps, "config": {}, "meta": meta},
                    run / "generator" / "checkpoints", keep=1)
    return run


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_folder_manifest_npz_and_generate_images_agree(tiny_run, tmp_path):
    from ltaug.diffusion.checkpoint import load_generator

    gen = load_generator(tiny_run, device="cpu")
    out = tmp_path / "synth"
    res = synthesize(tiny_run, out, per_class=3, classes=["9", "2"], batch_size=4, w=0.5, npz=True, **FAST)
    assert res.counts == {2: 3, 9: 3} and res.generated == 6 and res.complete
    recs = _manifest(out)
    assert len(recs) == 6 and len({r["seed"] for r in recs}) == 6
    assert sorted(os.listdir(out)) == ["2", "9", "grid.png", "manifest.jsonl", "plan.json", "settings.json",
                                       "synthetic.npz"]
    pngs = sorted(str(p.relative_to(out)) for p in out.glob("*/*.png"))  # class folders (grid.png sits beside them)
    assert pngs == sorted(r["path"] for r in recs)
    sha = _sha256(gen.checkpoint_path)
    for r in recs:
        assert r["path"] == f"{r['class']}/{r['seed']:08d}.png" and gen.classes[r["label"]] == r["class"]
        assert r["seed"] == r["k"] * 10 + r["label"] and r["k"] in (0, 1, 2)
        assert (r["checkpoint_sha256"], r["sampler"], r["steps"], r["w"], r["s"]) == (sha, "ddim", 2, 0.5, 1.5)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["total_new"] == 6 and [row["label"] for row in plan["rows"]] == [2, 9]
    assert json.loads((out / "settings.json").read_text())["s"] == 1.5
    # the files are exactly what generate_images draws for those (label, seed) pairs
    labels, seeds = [r["label"] for r in recs], [r["seed"] for r in recs]
    again = generate_images(gen, labels, seeds, steps=2, w=0.5, device="cpu", batch_size=6)
    assert np.array_equal(again, np.stack([read_png(out / r["path"]) for r in recs]))
    with np.load(out / "synthetic.npz") as z:
        order = np.argsort(seeds)
        assert np.array_equal(z["images"], again[order]) and z["labels"].tolist() == np.array(labels)[order].tolist()
        assert z["classes"].tolist() == gen.classes and z["seeds"].tolist() == sorted(seeds)
    from ltaug.data import load_dataset

    ds = load_dataset(f"folder:{out}")
    assert ds.classes == ["2", "9"] and ds.counts == [3, 3]
    # running it again is a no-op; a bigger plan only adds
    assert synthesize(tiny_run, out, per_class=3, classes=["9", "2"], batch_size=4, w=0.5, **FAST).generated == 0
    more = synthesize(tiny_run, out, per_class=4, classes=["9", "2"], batch_size=3, w=0.5, **FAST)
    assert more.generated == 2 and more.already_done == 6 and len(_manifest(out)) == 8


def test_batch_size_never_changes_an_image(tiny_run, tmp_path):

    kw = dict(per_class=1, classes=["0", "5", "9"], w=1.0, **FAST)
    synthesize(tiny_run, tmp_path / "a", batch_size=1, **kw)
    synthesize(tiny_run, tmp_path / "b", batch_size=2, **kw)
    files = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").glob("*/*.png"))
    assert len(files) == 3
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_bf16_autocast_draws_nearly_the_fp32_images_and_is_part_of_the_identity(tiny_run, tmp_path):
    import numpy as np
    from PIL import Image


    kw = dict(per_class=1, classes=["0", "5", "9"], w=1.0, **FAST)
    synthesize(tiny_run, tmp_path / "fp32", **kw)
    synthesize(tiny_run, tmp_path / "bf16", amp="bf16", **kw)
    files = sorted(str(p.relative_to(tmp_path / "fp32")) for p in (tmp_path / "fp32").glob("*/*.png"))
    a = np.stack([np.asarray(Image.open(tmp_path / "fp32" / f), np.float64) for f in files])
    b = np.stack([np.asarray(Image.open(tmp_path / "bf16" / f), np.float64) for f in files])
    assert 0 < np.abs(a - b).mean() < 6.0  # the same images up to bf16 rounding of the network's outputs
    assert all(r["amp"] == "bf16" for r in _manifest(tmp_path / "bf16"))
    assert all("amp" not in r for r in _manifest(tmp_path / "fp32"))
    with pytest.raises(LtaugError, match=r"amp.*--overwrite"):
        synthesize(tiny_run, tmp_path / "fp32", amp="bf16", **kw)


def test_a_diffusers_sampler_is_part_of_the_folder_identity_by_its_class_name(tiny_run, tmp_path):
    """`--sampler dpm++` reaches the sampling through synthesize (and equals generate_images, the evaluation path);
    the folder names the class, so the class name resumes it and another sampler is refused."""
    out = tmp_path / "d"
    kw = dict(per_class=1, classes=["3", "7"], w=0.5, steps=3, device="cpu", progress=False)
    res = synthesize(tiny_run, out, sampler="dpm++", **kw)
    settings = json.loads((out / "settings.json").read_text())
    assert res.generated == 2 and settings["sampler"] == "DPMSolverMultistepScheduler" and settings["eta"] is None
    assert synthesize(tiny_run, out, sampler="DPMSolverMultistepScheduler", **kw).generated == 0
    with pytest.raises(LtaugError, match=r'sampler: folder has "DPMSolverMu.*this run asks "ddim"'):
        synthesize(tiny_run, out, sampler="ddim", **kw)
    recs = _manifest(out)
    assert {r["sampler"] for r in recs} == {"DPMSolverMultistepScheduler"}
    from ltaug.diffusion.checkpoint import load_generator

    again = generate_images(load_generator(tiny_run, device="cpu"), [r["label"] for r in recs],
                            [r["seed"] for r in recs], sampler="dpm++", steps=3, w=0.5)
    assert np.array_equal(again, np.stack([read_png(out / r["path"]) for r in recs]))


def test_other_settings_are_refused_and_overwrite_starts_over(tiny_run, tmp_path):

    out = tmp_path / "s"
    synthesize(tiny_run, out, per_class=1, classes=["3"], **FAST)
    with pytest.raises(LtaugError, match=r"w: folder has 0.0, this run asks 0.8.*--overwrite"):
        synthesize(tiny_run, out, per_class=1, classes=["3"], w=0.8, **FAST)
    with pytest.raises(LtaugError, match=r"steps: folder has 2, this run asks 3"):
        synthesize(tiny_run, out, per_class=1, classes=["3"], steps=3, device="cpu", progress=False)
    res = synthesize(tiny_run, out, per_class=1, classes=["4"], w=0.8, overwrite=True, **FAST)
    assert res.generated == 1 and [r["class"] for r in _manifest(out)] == ["4"]
    assert not (out / "3").exists()
    with pytest.raises(LtaugError, match="holds 1 images of class '4' but the plan asks"):
        synthesize(tiny_run, out, fill_to=1, classes=["4"], w=0.8, **FAST)  # class 4 has many real images: 0 asked


def test_kill_minus_9_then_resume_gives_exactly_the_plan(tiny_run, tmp_path):
    out = tmp_path / "synth"
    cmd = [sys.executable, "-m", "ltaug", "synthesize", str(tiny_run), "--out", str(out), "--per-class", "2",
           "--steps", "2", "--batch-size", "1", "--device", "cpu", "--quiet", "--no-npz"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", LTAUG_PLAIN_PROGRESS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(manifest.read_text().splitlines())
    assert 3 <= done_at_kill < 20, f"the kill should land mid-run ({done_at_kill} of 20 images done)"
    result = runner.invoke(app, cmd[3:])
    assert result.exit_code == 0, result.output
    recs = _manifest(out)
    seeds = sorted(r["seed"] for r in recs)
    assert seeds == list(range(20))  # 2 per class, k = 0, 1, seed = k * 10 + label: exactly the plan
    assert sorted(str(p.relative_to(out)) for p in out.glob("*/*.png")) == sorted(r["path"] for r in recs)
    assert not list(out.rglob("*.tmp"))
    # a resumed image equals the one an uninterrupted run draws

    last = recs[-1]
    img = generate_images(tiny_run, [last["label"]], [last["seed"]], steps=last["steps"], w=last["w"], device="cpu")
    assert np.array_equal(img[0], read_png(out / last["path"]))


def test_two_ray_workers_draw_the_same_images_as_one(tiny_run, tmp_path):
    import ray
    import torch

    kw = dict(per_class=2, classes=["1", "6", "8"], batch_size=2, w=0.3, **FAST)
    # Each CPU worker gets cpus // workers = 1 thread here. CPU kernels round differently with another thread count
    # (rarely one uint8 level), so the 1-worker reference runs with 1 thread too: then equality is exact.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = synthesize(tiny_run, tmp_path / "one", **kw)
    finally:
        torch.set_num_threads(threads)
    # "local": a new Ray, never a cluster some earlier `ray start` on this machine left in /tmp/ray/ray_current_cluster
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        two = synthesize(tiny_run, tmp_path / "two", workers=2, **kw)
    finally:
        ray.shutdown()
    assert "2 Ray workers" in two.engine and one.counts == two.counts == {1: 2, 6: 2, 8: 2}
    a, b = _manifest(tmp_path / "one"), _manifest(tmp_path / "two")
    assert sorted(r["seed"] for r in a) == sorted(r["seed"] for r in b)
    for r in a:
        assert np.array_equal(read_png(tmp_path / "one" / r["path"]), read_png(tmp_path / "two" / r["path"])), r


def test_joining_a_separately_started_ray_cluster_with_address(tiny_run, tmp_path):
    """`ltaug synthesize --address`: a Ray head started as its own process (`ray start --head`, as on a cluster,
    with token authentication, Ray's default from 2.59 on) and the CLI in another process, as a user runs them; the
    checkpoint travels through the object store and the images equal those drawn in this process."""
    import secrets
    import socket

    import torch


    ray_cli = Path(sys.executable).with_name("ray")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the head and the client share the cluster's token, as every node and client of a secured cluster must
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each worker gets one thread (2 CPUs / 2 workers): the same rounding
    try:
        local = synthesize(tiny_run, tmp_path / "local", per_class=1, classes=["2", "7"], batch_size=1, w=0.5,
                           **FAST)
    finally:
        torch.set_num_threads(threads)
    subprocess.run([str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True, timeout=180)
    try:
        cli = subprocess.run([sys.executable, "-m", "ltaug", "synthesize", str(tiny_run), "--out",
                              str(tmp_path / "joined"), "--per-class", "1", "--classes", "2,7", "--batch-size", "1",
                              "--w", "0.5", "--steps", "2", "--device", "cpu", "--workers", "2", "--address",
                              f"127.0.0.1:{port}"], env=dict(env, COLUMNS="200"), capture_output=True, text=True,
                             timeout=600)
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"2 Ray workers on cluster 127.0.0.1:{port}" in " ".join(cli.stdout.split()), cli.stdout
    joined = _manifest(tmp_path / "joined")
    assert sorted(r["seed"] for r in joined) == sorted(r["seed"] for r in _manifest(tmp_path / "local"))
    assert local.counts == {2: 1, 7: 1}
    for r in joined:
        assert np.array_equal(read_png(tmp_path / "local" / r["path"]), read_png(tmp_path / "joined" / r["path"])), r


def test_cli_prints_the_plan_and_w_with_s(tiny_run, tmp_path):
    out = tmp_path / "cli"
    result = runner.invoke(app, ["synthesize", str(tiny_run), "--out", str(out), "--fill-to", "5", "--steps", "2",
                                 "--w", "0.8", "--device", "cpu", "--classes", "8,9"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "synthesis plan (--fill-to 5)" in text and "guidance w = 0.8 (scale s = 1 + w = 1.8)" in text
    counts = {json.loads(line)["class"] for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert counts <= {"8", "9"}


def test_cli_zero_turns_the_other_mode_off(tiny_run, tmp_path):
    # 0 is how the recipe turns a mode off; beside the other flag it is accepted and changes nothing
    result = runner.invoke(app, ["synthesize", str(tiny_run), "--out", str(tmp_path / "pc"), "--per-class", "1",
                                 "--fill-to", "0", "--steps", "2", "--device", "cpu", "--classes", "9"])
    assert result.exit_code == 0, result.output
    assert "synthesis plan (--per-class 1)" in " ".join(result.output.split())
    rows = (tmp_path / "pc" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(r)["class"] for r in rows] == ["9"]


@pytest.mark.parametrize("args,msg", [
    (["--per-class", "0"], "--per-class 0: must be a positive number (0 turns it off only beside --fill-to N)"),
    (["--per-class", "0", "--fill-to", "0"], "--per-class 0: must be a positive number"),
    (["--per-class", "2", "--fill-to", "3"], "--per-class 2 and --fill-to 3: choose one"),
    (["--per-class", "3", "--classes", "7,unicorn"], "unknown class name 'unicorn'"),
    (["--per-class", "3", "--w", "-0.5"], "--w -0.5: the guidance weight must be >= 0"),
    (["--fill-to", "-2"], "--fill-to -2: must be a positive number"),
    (["--per-class", "1", "--amp", "fp16"], "--amp fp16 needs a GPU"),
    (["--per-class", "1", "--amp", "fp8"], "synth.amp"),
    (["--per-class", "1", "--sampler", "dpm+"], "--sampler 'dpm+' (recipe key 'synth.sampler') is not one of ddpm, "
                                                "ddim, dpm++, unipc, euler or a diffusers scheduler class name"),
    (["--per-class", "1", "--sampler", "unipc", "--steps", "5000"], "--steps 5000: unipc cannot take more steps"),
])
def test_cli_bad_input_exits_2(tiny_run, tmp_path, args, msg):
    result = runner.invoke(app, ["synthesize", str(tiny_run), "--out", str(tmp_path / "x"), "--device", "cpu", *args])
    assert result.exit_code == 2, result.output
    assert msg in " ".join(result.output.split()) and "Traceback" not in result.output


def test_cli_run_dir_without_checkpoint_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["synthesize", str(tmp_path / "empty"), "--per-class", "2", "--device", "cpu"])
    assert result.exit_code == 2 and "checkpoint" in result.output.lower() and "Traceback" not in result.output


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> Path:
    """A real classifier (ltaug's test CIFAR ResNet) trained for one epoch on MNIST-LT."""
    from ltaug.classify import train_classifier
    from ltaug.config import load_recipe

    recipe = load_recipe(None, ["classifier.model=test_cifar_resnet", "classifier.epochs=1", "classifier.flip=false",
                                "classifier.crop_padding=0", "device=cpu"])
    out = tmp_path_factory.mktemp("clf") / "classifier-real"
    train_classifier(recipe, out, progress=False, device="cpu")
    return out


def test_filter_keeps_the_plans_counts_and_reports_rejections(tiny_run, tiny_classifier, tmp_path):
    from ltaug.classify import load_classifier, predict_proba
    from ltaug.synth.plan import image_seed

    label, n = 7, 3
    pool = [image_seed(label, k, 10) for k in range(8)]
    images = generate_images(tiny_run, [label] * 8, pool, steps=2, device="cpu")
    model, meta = load_classifier(tiny_classifier)
    conf = predict_proba(model, meta, images)[:, label]
    top = np.sort(conf[:6])[::-1]
    p = float((top[2] + top[3]) / 2)  # exactly 3 of the first 6 candidates pass
    accepted = [k for k in range(8) if conf[k] >= p][:n]
    tried = accepted[-1] + 1  # candidates are tried in k order until n pass
    assert tried > n, "these seeds should include a rejection"
    res = synthesize(tiny_run, tmp_path / "f", per_class=n, classes=[str(label)], filter_classifier=tiny_classifier,
                     min_confidence=p, batch_size=2, **FAST)
    recs = _manifest(tmp_path / "f")
    assert res.counts == {label: n} and sorted(r["k"] for r in recs) == accepted
    assert all(r["confidence"] >= p for r in recs)
    rejected = [json.loads(line) for line in (tmp_path / "f" / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["k"] for r in rejected) == [k for k in range(tried) if k not in accepted]
    assert res.rejection[label] == {"class": str(label), "tried": tried, "rejected": tried - n,
                                    "rate": (tried - n) / tried}
    assert json.loads((tmp_path / "f" / "settings.json").read_text())["filter"]["min_confidence"] == p
    again = synthesize(tiny_run, tmp_path / "f", per_class=n, classes=[str(label)], filter_classifier=tiny_classifier,
                       min_confidence=p, batch_size=2, **FAST)
    assert again.generated == 0 and again.rejection[label]["tried"] == tried
    # a threshold nothing passes: the filter gives up after filter_max_tries x the plan, and says what is missing
    res = synthesize(tiny_run, tmp_path / "g", per_class=1, classes=[str(label)], filter_classifier=tiny_classifier,
                     min_confidence=1.0, filter_max_tries=3, **FAST)
    assert res.shortfall == {label: 1} and res.rejection[label]["tried"] == 3 and not res.complete


def test_a_filter_that_gives_up_fails_the_command_saying_what_is_missing(tiny_run, tiny_classifier, tmp_path):
    """A plan that is not met is a failure: exit 1, the classes and counts missing, and how to go on."""
    from typer.testing import CliRunner

    from ltaug.cli import app

    out = tmp_path / "h"
    r = CliRunner().invoke(app, ["synthesize", str(tiny_run), "--out", str(out), "--per-class", "1", "--classes", "7",
                                 "--filter-classifier", str(tiny_classifier), "--min-confidence", "1.0",
                                 "--set", "synth.filter_max_tries=3", "--steps", "2", "--device", "cpu", "-q"])
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert "still missing 7: 1" in text and "--min-confidence" in text and "filter_max_tries" in text
    assert "Traceback" not in r.output
