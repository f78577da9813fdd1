"""The diffusers pipeline and `ltaug export`, on a real tiny generator (cosine schedule, T = 50, trained 2 steps):
ClassConditionalPipeline reproduces `ltaug synthesize` (DDIM with guidance, ancestral DDPM) for the same labels and
seeds; the exported scheduler is the training schedule exactly; the export folder is whole or absent; what
--push-to-hub would upload is exactly the folder that loads back; Hub ids are refused offline by name; a pipeline
folder is a generator source like its run."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltaug.cli import app
from ltaug.synth.folder import read_png

runner = CliRunner()
TINY = ["device=cpu", "generator.preset=tiny", "generator.batch_size=8", "generator.warmup=2", "generator.lr=0.001",
        "generator.grid_every=0", "generator.grid_cols=1", "generator.grid_steps=2", "generator.log_every=1",
        "generator.steps=2", "generator.T=50", "generator.schedule=cosine"]
SYNTH = ["--per-class", "1", "--classes", "0,7,9", "--device", "cpu", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from ltaug.config import load_recipe
    from ltaug.diffusion.train import train_generator

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("export") / "run"
    train_generator(load_recipe("mnist_lt", TINY), out, progress=False)
    return out


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def pipeline(folder, scheduler: str = "ddpm"):
    from diffusers import DDIMScheduler

    from ltaug import ClassConditionalPipeline

    pipe = ClassConditionalPipeline.from_pretrained(folder)
    if scheduler == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("sampler, w", [("ddim", 1.5), ("ddpm", 0.5)])
def test_pipeline_reproduces_synthesize(run, tmp_path, sampler, w):
    from ltaug.diffusion.checkpoint import load_generator
    from ltaug.diffusion.sampler import sample

    synth = tmp_path / "synth"
    r = cli("synthesize", run, "--out", synth, "--sampler", sampler, "--steps", 10, "--w", w, *SYNTH)
    assert r.exit_code == 0, r.output
    records = manifest(synth)
    labels, seeds = [int(x["label"]) for x in records], [int(x["seed"]) for x in records]
    assert sorted(labels) == [0, 7, 9]
    pipe = pipeline(run / "generator" / "diffusers", sampler)
    steps = 10 if sampler == "ddim" else 50  # DDPM: every step of the T = 50 schedule
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    pil = pipe(class_labels=labels, w=w, num_inference_steps=steps, generator=gens).images
    for rec, img in zip(records, pil):  # PNG against PNG: uint8, at most one level apart
        png = read_png(synth / rec["path"])
        diff = np.abs(png.astype(int).squeeze() - np.asarray(img).astype(int))
        assert diff.max() <= 1, rec
    # float images against ltaug's own sampler, and the class names and guidance_scale = 1 + w spellings
    gen = load_generator(run)
    ref = sample(gen.net, gen.schedule, torch.tensor(labels), seeds, num_classes=10, sampler=sampler, steps=10, w=w)
    names = [gen.classes[y] for y in labels]
    x = pipe(class_labels=names, guidance_scale=1 + w, num_inference_steps=steps, output_type="pt",
             generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    # diffusers' DDPMScheduler computes its coefficients in float32 (ltaug: float64); the cosine betas near 0.999
    # amplify that to ~2e-4 here (measured), DDIM stays below 1e-5
    torch.testing.assert_close(x * 2 - 1, ref, atol=1e-4 if sampler == "ddim" else 1e-3, rtol=0)
    # one image alone is the same image as in the batch (one generator per image)
    one = pipe(class_labels=labels[-1:], w=w, num_inference_steps=steps, output_type="pt",
               generator=[torch.Generator().manual_seed(seeds[-1])]).images
    torch.testing.assert_close(one[0], x[-1], atol=1e-5, rtol=0)


def test_exported_folder_is_a_diffusers_pipeline_with_the_exact_schedule(run):
    from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel

    from ltaug import ClassConditionalPipeline
    from ltaug.diffusion.schedule import NoiseSchedule

    d = run / "generator" / "diffusers"
    index = json.loads((d / "model_index.json").read_text())
    # diffusers' remote-code convention: (file, class) of the pipeline code the folder carries
    assert index["_class_name"] == ["pipeline", "ClassConditionalPipeline"]
    assert index["class_names"] == [str(i) for i in range(10)]
    sched = DDPMScheduler.from_pretrained(d, subfolder="scheduler")
    assert sched.config.num_train_timesteps == 50 and sched.config.variance_type == "fixed_large"
    cosine = NoiseSchedule.cosine(50).betas
    assert sched.config.trained_betas == cosine.tolist()  # float64 in the file, bit for bit
    torch.testing.assert_close(sched.alphas_cumprod, torch.cumprod(1 - cosine, 0).float())
    pipe = ClassConditionalPipeline.from_pretrained(d)
    assert isinstance(pipe, ClassConditionalPipeline) and pipe.num_classes == 10 and pipe.null_class == 10
    assert UNet2DModel.from_pretrained(d / "unet").config.num_class_embeds == 11
    assert type(pipe).__module__ == "ltaug.diffusion.pipeline"  # ltaug's own class, no remote code run
    # plain diffusers, through the copy of the pipeline code the folder carries
    plain = DiffusionPipeline.from_pretrained(d, trust_remote_code=True)
    assert type(plain).__name__ == "ClassConditionalPipeline" and plain.config.class_names == index["class_names"]
    with pytest.raises(ValueError, match="unknown class name"):
        pipe(class_labels=["cat"], num_inference_steps=2)
    with pytest.raises(ValueError, match="disagree"):
        pipe(class_labels=[0], w=1.0, guidance_scale=3.0, num_inference_steps=2)
    # `import ltaug` stays torch-free (the name above came through its module __getattr__, lazily)
    code = "import sys, ltaug; assert 'torch' not in sys.modules and 'ClassConditionalPipeline' not in vars(ltaug)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_plain_diffusers_loads_a_resaved_pipeline_without_ltaug_and_loading_is_quiet(run, tmp_path):
    """`pipe.save_pretrained(new)` keeps the pipeline code; a Python where ltaug cannot be imported loads both the
    export and the re-saved copy with plain `DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)`; ltaug's
    own loads print nothing (no accelerate notice)."""
    from ltaug import ClassConditionalPipeline

    d = run / "generator" / "diffusers"
    resaved = tmp_path / "resaved"
    ClassConditionalPipeline.from_pretrained(d).save_pretrained(resaved)
    assert (resaved / "pipeline.py").read_text() == (d / "pipeline.py").read_text()
    assert json.loads((resaved / "model_index.json").read_text())["_class_name"] == ["pipeline",
                                                                                     "ClassConditionalPipeline"]
    code = ("import sys; sys.modules['ltaug'] = None\n"  # ltaug is not importable in this process
            "import torch; from diffusers import DiffusionPipeline\n"
            "for d in sys.argv[1:]:\n"
            "    p = DiffusionPipeline.from_pretrained(d, trust_remote_code=True)\n"
            "    p.set_progress_bar_config(disable=True)\n"
            "    x = p(class_labels=[0, 9], num_inference_steps=2, output_type='pt',\n"
            "          generator=[torch.Generator().manual_seed(s) for s in (1, 2)]).images\n"
            "    print(type(p).__name__, tuple(x.shape))\n")
    r = subprocess.run([sys.executable, "-c", code, str(d), str(resaved)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == ["ClassConditionalPipeline (2, 1, 16, 16)"] * 2
    code = ("import sys; from ltaug import ClassConditionalPipeline as P; from ltaug.diffusion.pipeline_folder import "
            "read_pipeline; P.from_pretrained(sys.argv[1]); read_pipeline(sys.argv[1])")
    r = subprocess.run([sys.executable, "-c", code, str(resaved)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "accelerate" not in r.stderr + r.stdout


def test_export_cli_folder_card_classifiers_and_replacing(run, tmp_path):
    from ltaug.diffusion.checkpoint import load_checkpoint
    from ltaug.export import upload_files

    clf = run / "classifier-real"  # a classifier folder's timm files are copied byte for byte
    clf.mkdir(exist_ok=True)
    (clf / "config.json").write_text('{"architecture": "resnet32_cifar"}')
    (clf / "model.safetensors").write_bytes(b"weights")
    (run / "evaluate").mkdir(exist_ok=True)
    (run / "evaluate" / "results.json").write_text(json.dumps(
        {"protocol": {"sampler": "ddim", "steps": 10, "w": 1.0, "num_generated": 200}, "overall": {"fid": 12.5}}))
    out = tmp_path / "exp"
    r = cli("export", run, "--out", out)
    assert r.exit_code == 0, r.output
    files = upload_files(out)
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "pipeline.py",
            "scheduler/scheduler_config.json", "ltaug.json", "README.md", "grid.png", "classifier-real/config.json",
            "classifier-real/model.safetensors"} == set(files)
    assert (out / "classifier-real" / "model.safetensors").read_bytes() == b"weights"
    card = (out / "README.md").read_text()
    for text in ("mnist-lt", "| 0 | 400 |", "| 9 | 4 |", "fid", "12.5", '"sampler": "ddim"', "schedule: cosine",
                 "library_name: diffusers", "grid.png", "ClassConditionalPipeline.from_pretrained"):
        assert text in card, text
    assert (run / "config.yaml").read_text().strip() in card
    meta = json.loads((out / "ltaug.json").read_text())
    assert meta["ema"] is True and meta["counts"][0] == 400 and meta["checkpoint"].endswith("ckpt-0000002.pt")
    # --raw exports the raw weights; the previous export is replaced as a whole
    r = cli("export", run, "--out", out, "--raw")
    assert r.exit_code == 0, r.output
    from ltaug import ClassConditionalPipeline

    raw = ClassConditionalPipeline.from_pretrained(out).unet.state_dict()
    state = load_checkpoint(run)
    torch.testing.assert_close(raw["conv_in.weight"], state["model"]["unet.conv_in.weight"])
    assert not torch.equal(raw["conv_in.weight"], state["ema"]["unet.conv_in.weight"])
    assert not list(tmp_path.glob(".exp*"))  # no temporary sibling left
    # a folder that is not an export is refused; the default is RUN/export
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = cli("export", run, "--out", other)
    assert r.exit_code == 2 and "--out" in r.output and (other / "notes.txt").read_text() == "mine"
    r = cli("export", run, "--checkpoint", run / "generator" / "checkpoints" / "ckpt-0000002.pt")
    assert r.exit_code == 0 and (run / "export" / "model_index.json").is_file()


def test_model_card_carries_hub_metadata_and_model_index_results(run, tmp_path):
    """The card is huggingface_hub's: pipeline tag, license, datasets, base model for init_from runs, and every
    number as a model-index result; a run with overlap diagnostics only has no empty Metrics heading."""
    from huggingface_hub import ModelCard

    from ltaug.export import PIPELINE_TAG, card_data, model_card
    from ltaug.rundir import RunDir

    copy = shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("export", "classifier-*", "evaluate",
                                                                               "summary.json"))
    (copy / "evaluate").mkdir()
    (copy / "evaluate" / "results.json").write_text(json.dumps(
        {"protocol": {"sampler": "ddim", "steps": 10, "w": 1.0, "num_generated": 200, "reference": "mnist-lt",
                      "reference_split": "train"},
         "overall": {"fid": 12.5, "kid": 0.01}, "few": {"fid": 40.0, "classes": 3}}))
    (copy / "summary.json").write_text(json.dumps(
        {"accuracy_real": {"overall": 0.8, "few": 0.5}, "accuracy_synth": {"overall": 0.82, "few": 0.6},
         "stages": {"train": 1.0}}))
    out = tmp_path / "exp"
    r = cli("export", copy, "--out", out, "--license", "apache-2.0")
    assert r.exit_code == 0, r.output
    card = ModelCard.load(out / "README.md")
    d = card.data
    assert (d.library_name, d.pipeline_tag, d.license, d.datasets) == ("diffusers", PIPELINE_TAG, "apache-2.0",
                                                                        ["ylecun/mnist"])
    got = {(e.metric_type, e.metric_config): e.metric_value for e in d.eval_results}
    assert {e.dataset_type for e in d.eval_results} == {"ylecun/mnist"}
    assert got == {("fid", "overall"): 12.5, ("kid", "overall"): 0.01, ("fid", "few"): 40.0,
                   ("accuracy", "overall, real only"): 0.8, ("accuracy", "few, real only"): 0.5,
                   ("accuracy", "overall, real + synthetic"): 0.82, ("accuracy", "few, real + synthetic"): 0.6}
    assert "model-index:" in card.content and "## Metrics" in card.text
    assert cli("export", copy, "--out", tmp_path / "bad", "--license", "Not A License").exit_code == 2
    assert not (tmp_path / "bad").exists()
    # overlap diagnostics only: their table, no empty group table; nothing numeric: no Metrics heading at all
    rd = RunDir(copy)
    (copy / "summary.json").unlink()
    (copy / "evaluate" / "results.json").write_text(json.dumps(
        {"protocol": {"metrics": ["overlap"]}, "overlap": {"leakage": {"few": {"agreement": 0.75}}}}))
    text = model_card(rd, {"classes": ["0"]}, has_grid=False, classifiers=[])
    assert "## Metrics" in text and "agreement" in text and "0.75" in text
    (copy / "evaluate" / "results.json").write_text(json.dumps({"protocol": {"metrics": ["overlap"]}}))
    text = model_card(rd, {"classes": ["0"]}, has_grid=False, classifiers=[])
    assert "## Metrics" not in text and "model-index" not in text
    # a generator fine-tuned from a Hub model names it as base_model
    cfg = copy / "config.yaml"
    cfg.write_text(cfg.read_text().replace("init_from: ''", "init_from: google/ddpm-cifar10-32", 1))
    assert card_data(rd, {}).base_model == "google/ddpm-cifar10-32"


def test_export_without_checkpoint_and_failed_write_leave_nothing(run, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("config.yaml", "env.json"):
        (empty / name).write_text((run / name).read_text())
    r = cli("export", empty)
    assert r.exit_code == 2 and "no generator checkpoint" in r.output
    assert not (empty / "export").exists()
    # a write that fails half-way (the disk fills while the model card is written): no folder, no temporary one,
    # and a previous export stays whole
    import ltaug.export as E

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "exp"
    monkeypatch.setattr(E, "model_card", full)
    r = cli("export", run, "--out", out)
    assert r.exit_code == 1 and "space" in r.output
    assert not out.exists() and not list(tmp_path.glob(".exp*"))
    monkeypatch.undo()
    assert cli("export", run, "--out", out).exit_code == 0
    before = sorted((p.name, p.stat().st_size) for p in out.rglob("*"))
    monkeypatch.setattr(E, "model_card", full)
    assert cli("export", run, "--out", out).exit_code == 1
    assert sorted((p.name, p.stat().st_size) for p in out.rglob("*")) == before


def test_push_to_hub_uploads_exactly_the_folder_that_loads(run, tmp_path, monkeypatch):
    import huggingface_hub

    from ltaug import ClassConditionalPipeline
    from ltaug.export import upload_files

    out = tmp_path / "exp"
    r = cli("export", run, "--out", out, "--push-to-hub", "me/ltaug-mnist")  # conftest: HF_HUB_OFFLINE=1
    assert r.exit_code == 2 and "--push-to-hub" in r.output and "offline" in r.output
    assert (out / "model_index.json").is_file()  # the local folder is written first
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    r = cli("export", run, "--out", out, "--push-to-hub", "me/ltaug-mnist")
    assert r.exit_code == 2 and "--push-to-hub" in r.output and "token" in r.output
    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, folder_path, repo_id, **kw):  # what would be sent, read while the call happens
        calls["files"] = upload_files(folder_path)
        calls["loaded"] = ClassConditionalPipeline.from_pretrained(folder_path).config.class_names
        calls["upload"] = (Path(folder_path), repo_id, kw)

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    r = cli("export", run, "--out", out, "--push-to-hub", "me/ltaug-mnist", "--private")
    assert r.exit_code == 0, r.output
    assert calls["create"] == ("me/ltaug-mnist", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["upload"][0] == out and calls["upload"][1] == "me/ltaug-mnist"
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert calls["files"] == on_disk and "unet/diffusion_pytorch_model.safetensors" in on_disk
    assert calls["loaded"] == [str(i) for i in range(10)]
    assert cli("export", run, "--private").exit_code == 2  # --private without --push-to-hub
    assert cli("export", run, "--push-to-hub", "not-a-repo-id").exit_code == 2


def test_pipeline_folder_is_a_generator_source_and_hub_ids_are_refused_offline(run, tmp_path):
    a, b = tmp_path / "from_run", tmp_path / "from_export"
    export = tmp_path / "exp"
    assert cli("export", run, "--out", export).exit_code == 0
    args = ["--sampler", "ddim", "--steps", 4, "--w", 1.0, *SYNTH]
    assert cli("synthesize", run, "--out", a, *args).exit_code == 0
    r = cli("synthesize", export, "--out", b, *args)
    assert r.exit_code == 0, r.output
    ra, rb = manifest(a), manifest(b)
    assert [(x["label"], x["seed"]) for x in ra] == [(x["label"], x["seed"]) for x in rb]
    for x, y in zip(ra, rb):
        np.testing.assert_array_equal(read_png(a / x["path"]), read_png(b / y["path"]))
    r = cli("synthesize", "someone/ltaug-model", "--out", tmp_path / "c", *args)
    assert r.exit_code == 2 and "RUN_DIR" in r.output and "offline" in r.output
    assert not (tmp_path / "c").exists()
    r = cli("evaluate", "someone/ltaug-model", "--num-samples", 10, "--metrics", "overlap", "--out", tmp_path / "e")
    assert r.exit_code == 2 and "PATH" in r.output and "offline" in r.output
    r = cli("evaluate", "someone/ltaug-model", "--num-samples", 10, "--metrics", "overlap")  # never into the cache
    assert r.exit_code == 2 and "--out" in r.output and not (tmp_path / "e").exists()


def _mount(*args) -> bool:
    return subprocess.run(["mount", *map(str, args)], capture_output=True).returncode == 0


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_export_onto_a_read_only_or_full_disk_leaves_nothing(run, tmp_path, kind):
    """A real file system refusing the write: a read-only parent, or a tmpfs too small for the UNet's weights
    (needs mount rights: root, as CI; a non-root user gets the read-only case from a folder without write
    permission)."""
    import os

    parent = tmp_path / "disk"
    parent.mkdir()
    opts = "ro,size=1m" if kind == "read-only" else "size=64k"
    mounted = _mount("-t", "tmpfs", "-o", opts, "ltaug-export", parent)
    if not mounted:
        if kind == "full" or os.geteuid() == 0:
            pytest.skip("mounting a tmpfs needs mount rights")
        parent.chmod(0o500)
    try:
        r = cli("export", run, "--out", parent / "exp")
        assert r.exit_code == (2 if kind == "read-only" else 1), r.output  # read-only: refused before writing
        assert "read-only" in r.output or "space" in r.output or "permission" in r.output.lower()
        assert list(parent.iterdir()) == []  # no folder, no temporary sibling
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(parent)], capture_output=True)
        else:
            parent.chmod(0o700)


def test_pipeline_folder_feeds_evaluate_and_init_from(run, tmp_path):
    from ltaug.config import SynthConfig
    from ltaug.diffusion.init_from import load_init
    from ltaug.errors import LtaugError
    from ltaug.metrics.evaluate import load_generated

    export = run / "generator" / "diffusers"
    cfg = SynthConfig(sampler="ddim", steps=3, w=1.0, per_class=0, fill_to=0)
    a = load_generated(run, 4, cfg, seed=0)
    b = load_generated(export, 4, cfg, seed=0)
    np.testing.assert_array_equal(a["images"], b["images"])
    outside = shutil.copytree(export, tmp_path / "exp")  # an export outside any run: results beside it, not in it
    assert load_generated(outside, 2, cfg, seed=0)["default_out"] == tmp_path / "exp-evaluate"
    # inside a run, beside the run's own evaluate/ (which the report and the model card read), never over it
    assert b["default_out"] == run / "evaluate-diffusers" and a["default_out"] == run / "evaluate"
    assert b["classes"] == a["classes"] and b["train_counts"] == a["train_counts"]
    # generator.init_from reads the exact betas of the scheduler: cosine T = 50 is recognised as such
    net, record = load_init(str(export), 10, 1, 16, 50, "cosine")
    assert record["class_embedding"] == "kept"
    with pytest.raises(LtaugError, match="generator.schedule=cosine"):
        load_init(str(export), 10, 1, 16, 50, "linear")


# ------------------------------------------------------------------------------- hostile runs, crashes, two writers


def _link_run(run: Path, tmp_path: Path) -> Path:
    """A copy of the run (links kept as links) to plant links in."""
    return Path(shutil.copytree(run, tmp_path / "run", symlinks=True, ignore=shutil.ignore_patterns("export")))


@pytest.mark.parametrize("planted", ["grid", "classifier"])
def test_export_never_copies_a_file_through_a_link(run, tmp_path, planted):
    copy = _link_run(run, tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"private key material")
    if planted == "grid":  # the newest class grid, a link to a file outside the run
        grid = sorted((copy / "generator" / "grids").glob("grid-*.png"))[-1]
        grid.unlink()
        link = grid
    else:  # a classifier's timm weights, a link to a file outside the run
        clf = copy / "classifier-x"
        clf.mkdir(exist_ok=True)
        (clf / "config.json").write_text('{"architecture": "resnet32_cifar"}')
        link = clf / "model.safetensors"
    link.symlink_to(secret)
    out = tmp_path / "exp"
    r = cli("export", copy, "--out", out)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    text = " ".join(r.output.split())
    assert "symbolic link" in text and link.name in text, text
    assert not out.exists() and not list(tmp_path.glob(".exp*"))  # nothing written, nothing copied
    assert secret.read_bytes() == b"private key material"


def test_a_rerun_repairs_what_a_killed_export_left(run, tmp_path):
    out = tmp_path / "exp"
    assert cli("export", run, "--out", out).exit_code == 0
    # killed between moving the previous export aside and renaming the new one in: .exp.old (the previous export)
    # and .exp.tmp (the new one, whole or half-built), and no exp
    old, tmp = tmp_path / ".exp.old", tmp_path / ".exp.tmp"
    out.rename(old)
    shutil.copytree(old, tmp)
    (tmp / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"torn")
    r = cli("export", run, "--out", out)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # nothing left beside it
    from ltaug import ClassConditionalPipeline

    assert ClassConditionalPipeline.from_pretrained(out).num_classes == 10
    # links planted under the names an export uses beside OUT are removed, never followed or written through
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    old.symlink_to(victim, target_is_directory=True)
    tmp.symlink_to(victim, target_is_directory=True)
    r = cli("export", run, "--out", out)
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "victim"]
    assert [p.name for p in victim.iterdir()] == ["keep.txt"] and (victim / "keep.txt").read_text() == "mine"


def test_an_export_killed_mid_write_is_completed_by_a_rerun(run, tmp_path):
    """A real kill -9 of `ltaug export` while it builds the new folder beside a previous export; the same command
    again leaves exactly one whole export and nothing beside it."""
    import os
    import signal
    import time

    out = tmp_path / "exp"
    assert cli("export", run, "--out", out).exit_code == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "ltaug", "export", str(run), "--out", str(out), "--raw"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (tmp_path / ".exp.tmp").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = cli("export", run, "--out", out)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    from ltaug import ClassConditionalPipeline

    assert ClassConditionalPipeline.from_pretrained(out).num_classes == 10


def test_an_export_folder_has_one_writer(run, tmp_path):
    """While another process holds OUT (a second export, here a real process holding its lock), an export refuses
    at once naming it; two real exports started together each finish or refuse, and one whole export remains."""
    import os
    import time

    out = tmp_path / "exp"
    assert cli("export", run, "--out", out).exit_code == 0
    before = sorted((str(p.relative_to(out)), p.stat().st_mtime_ns) for p in out.rglob("*"))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ltaug.locks import FolderLock; "
                               f"FolderLock({str(out)!r}, 'ltaug export').acquire(); print('held', flush=True); "
                               "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = cli("export", run, "--out", out)
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and "in use by pid" in text and str(holder.pid) in text, r.output
        assert sorted((str(p.relative_to(out)), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    finally:
        holder.kill()
        holder.wait()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-m", "ltaug", "export", str(run), "--out", str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    t0 = time.time()
    results = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
    assert time.time() - t0 < 300
    for code, text in results:
        assert "Traceback" not in text and (code == 0 or (code == 2 and "in use by" in text)), text
    assert any(code == 0 for code, _ in results)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    from ltaug import ClassConditionalPipeline

    assert ClassConditionalPipeline.from_pretrained(out).num_classes == 10
