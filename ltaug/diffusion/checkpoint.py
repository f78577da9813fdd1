"""Generator checkpoints: written atomically, the newest K kept, read back with `torch.load(weights_only=True)`.

A checkpoint `generator/checkpoints/ckpt-NNNNNNN.pt` (N = optimizer steps done) is a dict of tensors and plain data:
  model, ema        state dicts of the ClassConditionalUNet (raw and EMA weights)
  optimizer, scaler optimizer and GradScaler state
  step              optimizer steps done
  rng               torch CPU (and CUDA) RNG states (the loop reseeds from (seed, rank, step), so these are informative)
  config            the resolved recipe as a plain dict
  meta              num_classes, classes, counts, channels, resolution, preset, T, schedule, margin, calibration,
                    and init_from (ref, path, sha256, unet_config) when it started from a pretrained UNet
  version           ltaug version
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ltaug.config.generator import GeneratorConfig
from ltaug.diffusion.init_from import build_from_config
from ltaug.diffusion.mlp import ClassConditionalMLP
from ltaug.diffusion.pipeline_folder import is_pipeline_folder, read_pipeline, write_pipeline
from ltaug.diffusion.schedule import NoiseSchedule
from ltaug.diffusion.unet import build_unet
from ltaug.errors import LtaugError
from ltaug.files import atomic_write, remove_temporaries, sha256_file
from ltaug.rundir import RunDir

CKPT_RE = re.compile(r"^ckpt-(\d{7,})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:07d}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Checkpoint files in a folder, oldest (lowest step) first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def state_nbytes(obj) -> int:
    """The bytes of every tensor in a (nested) checkpoint dict: about the size of its file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_nbytes(v) for v in obj)
    return 0


def save_checkpoint(state: dict, ckpt_dir: str | Path, keep: int) -> Path:
    """Write `state` as ckpt-<step>.pt (temporary name, then rename) and delete all but the newest `keep`. A full
    disk raises ltaug.space.WriteFault naming the checkpoint's size; the temporary file is gone and the previous
    checkpoints are untouched (so the run resumes from the last one)."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / checkpoint_name(int(state["step"]))
    atomic_write(path, lambda f: torch.save(state, f), size_hint=state_nbytes(state) + 64 * 1024)
    for old in list_checkpoints(d)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def clean_partial(generator_dir: str | Path) -> list[Path]:
    """Delete what a generator run killed mid-write leaves (temporary checkpoints, grids, metrics; a half-exported
    diffusers folder). Called by train_generator while it holds the generator folder's lock."""
    g = Path(generator_dir)
    removed = remove_temporaries(g / "checkpoints") + remove_temporaries(g / "grids") + remove_temporaries(g)
    for name in (".diffusers.tmp", ".diffusers.old"):
        p = g / name
        if p.is_symlink():
            p.unlink()
            removed.append(p)
        elif p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# What a resumed generator run may change: how long it trains, how often it logs, draws and saves, and how the same
# arithmetic runs (device, compile, memory format). Everything else changes what is trained and is refused.
RESUMABLE = {"generator": ("steps", "log_every", "grid_every", "grid_cols", "grid_steps", "grid_w", "ckpt_every",
                           "keep_ckpts", "compile", "channels_last"),
             "data": ("data_root", "download")}
CHECKED_SECTIONS = ("generator", "data")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_recipe(saved: dict, recipe: dict, ckpt: Path) -> None:
    """Refuse to resume `ckpt` with a recipe that changes what is trained (the loss or any of its options, the
    learning rate, the batch, the schedule, the data, the seed): the classifier's rule too. saved: the checkpoint's
    `config` (the resolved recipe it was trained with; checks nothing when absent, as in checkpoints older than
    it). Only the keys in RESUMABLE (steps, logging, grids, checkpoint cadence, compile, memory format) may differ."""
    if not saved:
        return
    allowed = {f"{section}.{k}" for section, keys in RESUMABLE.items() for k in keys}
    a = {k: v for k, v in _flat({s: saved.get(s, {}) for s in CHECKED_SECTIONS}).items() if k not in allowed}
    b = {k: v for k, v in _flat({s: recipe.get(s, {}) for s in CHECKED_SECTIONS}).items() if k not in allowed}
    if "seed" in saved:
        a["seed"], b["seed"] = saved.get("seed"), recipe.get("seed")
    diff = [k for k in sorted(set(a) | set(b)) if k in a and k in b and a[k] != b[k]]
    if diff:
        k = diff[0]
        more = f" (and {len(diff) - 1} more: {', '.join(diff[1:4])}{', ...' if len(diff) > 4 else ''})" \
            if len(diff) > 1 else ""
        raise LtaugError(f"--resume: recipe key '{k}' is {b[k]!r} but checkpoint {ckpt} was trained with "
                         f"{a[k]!r}{more}; a resumed run continues the same training (only the number of steps, "
                         f"logging, grids and checkpoint cadence may change): resume without that change, or "
                         f"start a new run with --out")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from: the file itself, a checkpoints folder, a generator folder, or a run folder."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise LtaugError(f"{p}: no such file or directory (expected a run dir, its generator/ dir or a ckpt-*.pt)")
    for d in (p, p / "checkpoints", RunDir(p).checkpoints):
        found = list_checkpoints(d)
        if found:
            return found[-1]
    raise LtaugError(f"{p}: no generator checkpoint found (looked for generator/checkpoints/ckpt-*.pt); "
                     f"train one with `ltaug train-generator --out {p}`")


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint dict safely (weights_only=True); errors name the file."""
    p = resolve_checkpoint(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file
        raise LtaugError(f"{p}: not a readable ltaug checkpoint ({type(e).__name__}: {e})") from None


def architecture(g: GeneratorConfig, num_classes: int, shape: tuple[int, ...]) -> dict:
    """What must match between a checkpoint and the run that resumes or loads it (stored in its meta). shape: one
    sample's, (C, H, W) for images or (D,) for feature vectors."""
    if g.space == "features":
        return {"space": "features", "dim": int(shape[0]), "mlp": {"width": g.mlp.width, "depth": g.mlp.depth,
                "dropout": g.mlp.dropout}, "num_classes": num_classes, "T": g.T, "schedule": g.schedule}
    arch = {"preset": g.preset, "num_classes": num_classes, "channels": int(shape[0]), "resolution": int(shape[1]),
            "T": g.T, "schedule": g.schedule}
    if g.init_from:  # the source's architecture replaces the preset
        arch["init_from_ref"] = g.init_from
    return arch


def check_compatible(meta: dict, arch: dict, ckpt: Path) -> None:
    """Refuse to resume `ckpt` with a recipe that builds another network or schedule (the key and the fix named)."""
    for key, want in arch.items():
        have = meta.get(key)
        if have != want:
            where = {"num_classes": "the dataset (data.dataset)", "channels": "data.channels", "dim": "the features "
                     "(features.backbone)", "space": "generator.space", "mlp": "generator.mlp",
                     "resolution": "data.resolution", "init_from_ref": "generator.init_from"}.get(key,
                                                                                                 f"generator.{key}")
            raise LtaugError(f"--resume: checkpoint {ckpt} was trained with {key}={have!r}, but {where} gives "
                             f"{want!r}; resume with the recipe of that run, or start a new run with --out")


@dataclass
class LoadedGenerator:
    net: torch.nn.Module  # eval mode, on `device`
    schedule: NoiseSchedule
    num_classes: int
    classes: list[str]
    channels: int
    resolution: int
    step: int
    checkpoint_path: Path
    checkpoint_sha256: str
    config: dict = field(default_factory=dict)
    counts: list[int] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def space(self) -> str:
        return self.meta.get("space", "image")

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape: (C, H, W), or (D,) for a feature-space generator."""
        return (int(self.meta["dim"]),) if self.space == "features" else (self.channels, self.resolution,
                                                                          self.resolution)


def load_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> LoadedGenerator:
    """The trained network of a run dir / generator dir / checkpoints dir / ckpt file (EMA weights by default), or
    of a pipeline folder (`generator/diffusers`, an `ltaug export`, a Hub download: the weights it holds, whatever
    `ema` says; its `checkpoint_path` is the folder and its sha256 the UNet weights')."""
    if is_pipeline_folder(path):
        got = read_pipeline(path, device)
        return LoadedGenerator(net=got["net"], schedule=got["schedule"], num_classes=len(got["classes"]),
                               classes=got["classes"], channels=got["channels"], resolution=got["resolution"],
                               step=got["step"], checkpoint_path=Path(path), checkpoint_sha256=got["sha256"],
                               config={}, counts=got["counts"], meta=got["meta"])
    ckpt_path = resolve_checkpoint(path)
    state = load_checkpoint(ckpt_path)
    meta = state.get("meta") or {}
    try:
        if meta.get("space") == "features":
            net = ClassConditionalMLP(int(meta["dim"]), int(meta["num_classes"]), **meta["mlp"])
        elif meta.get("init_from"):  # started from a pretrained UNet: its architecture, not a preset
            net = build_from_config(meta["init_from"]["unet_config"], int(meta["num_classes"]))
        else:
            net = build_unet(meta["preset"], int(meta["num_classes"]), int(meta["channels"]),
                             int(meta["resolution"]))
        net.load_state_dict(state["ema" if ema else "model"])
    except (KeyError, RuntimeError) as e:
        raise LtaugError(f"{ckpt_path}: checkpoint does not match its own architecture record ({e})") from None
    net = net.to(device).eval().requires_grad_(False)
    schedule = NoiseSchedule.make(meta.get("schedule", "linear"), int(meta.get("T", 1000)))
    return LoadedGenerator(net=net, schedule=schedule, num_classes=int(meta["num_classes"]),
                           classes=list(meta.get("classes", [])), channels=int(meta.get("channels", 0)),
                           resolution=int(meta.get("resolution", 0)), step=int(state.get("step", 0)),
                           checkpoint_path=ckpt_path, checkpoint_sha256=sha256_file(ckpt_path),
                           config=dict(state.get("config") or {}), counts=list(meta.get("counts", [])), meta=meta)


def export_diffusers(net, meta: dict, out_dir: str | Path, *, variance: str = "large") -> Path:
    """Write the pipeline folder of `net` (ltaug.diffusion.pipeline_folder: model_index.json, unet/, scheduler/,
    class names, ltaug.json) into a temporary folder first, then swap it in, so out_dir is never half-written."""
    return write_pipeline(net, meta, out_dir, variance=variance)
