"""Sweeps: Ray Tune over any recipe keys, each trial running the pipeline stages it needs through the library.

A sweep file (recipes/sweeps/*.yaml):

    recipe: mnist_lt                # the base recipe (name or path)
    set: [generator.steps=600]      # fixed overrides for every trial
    metric: val_accuracy.few        # validation numbers only (never the test set): val_accuracy.<group> (max) of the
                                    #   real + synthetic classifier, or, for generator sweeps, val_agreement.<group>
                                    #   (max) / val_leakage_into_head.<group> (min): the judge on fresh samples at each
                                    #   checkpoint, which lets ASHA stop bad generators early
    mode: max
    scheduler: asha                 # asha (early stopping on the metric) or fifo
    num_samples: 1                  # repeats of the grid (random spaces: number of draws)
    max_concurrent: 2
    resources: {cpu: 1, gpu: 0}     # per trial
    space:                          # dotted recipe key -> {grid|choice: [...]} / {uniform|loguniform: [lo, hi]}
                                    #   / {randint: [lo, hi]}
      generator.diffrop.margin: {grid: [0.005, 0.02, 0.08]}

Which stages a trial runs follows from the swept keys: generator (or data) keys train one generator per trial;
synth keys share one generator trained once before the trials; classifier keys share the generator and its samples.
Trials choose on the validation split (data.val_dataset, or the images the long-tailed subset leaves out); their test
numbers are in their run folders for the final table of the chosen recipe only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import ray
import torch
import yaml
from matplotlib.figure import Figure
from ray import tune
from ray.tune import Checkpoint
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from ltaug import raycluster
from ltaug.config import RECIPE_DIR, as_sets, load_recipe
from ltaug.config.yamlsafe import read_yaml
from ltaug.errors import LtaugError
from ltaug.features.pipeline import prepare_features
from ltaug.files import atomic_savefig, atomic_write_json
from ltaug.locks import holds_lock
from ltaug.pipeline import prepare_shared, run_pipeline, train_judge
from ltaug.rundir import RunDir, save_recipe
from ltaug.space import require_writable

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
GROUP_KEYS = ("overall", "many", "medium", "few")
METRICS = {f"val_accuracy.{g}": "max" for g in GROUP_KEYS} | {f"val_agreement.{g}": "max" for g in GROUP_KEYS} | \
    {f"val_leakage_into_head.{g}": "min" for g in GROUP_KEYS}


@dataclass
class SweepSpec:
    recipe: str = "mnist_lt"
    set: list = field(default_factory=list)
    metric: str = "val_accuracy.few"
    mode: str = "max"
    scheduler: str = "asha"
    num_samples: int = 1
    max_concurrent: int = 2
    resources: dict = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    space: dict = field(default_factory=dict)
    grace_period: int = 1  # ASHA: reports a trial makes before it can be stopped
    name: str = ""


def load_sweep(path: str | os.PathLike, sets: Optional[list[str]] = None) -> SweepSpec:
    """Read and check a sweep file; every error names the key and the file. sets (`ltaug tune --set`): KEY=VALUE
    overrides applied first (see apply_sets)."""
    p = Path(path)
    if not p.is_file() and (RECIPE_DIR / "sweeps" / f"{path}.yaml").is_file():
        p = RECIPE_DIR / "sweeps" / f"{path}.yaml"
    if not p.is_file():
        names = ", ".join(sorted(x.stem for x in (RECIPE_DIR / "sweeps").glob("*.yaml")))
        raise LtaugError(f"sweep file '{path}' not found; built-in sweeps: {names}")
    raw = read_yaml(p, f"sweep file {p}") or {}
    if not isinstance(raw, dict):
        raise LtaugError(f"sweep file {p}: expected a mapping of keys (recipe, set, metric, space, ...), got a "
                         f"{type(raw).__name__}")
    raw = apply_sets(raw, sets or [])
    valid = {f.name for f in dataclasses.fields(SweepSpec)}
    unknown = sorted(set(map(str, raw)) - valid)
    if unknown:
        raise LtaugError(f"sweep file {p}: unknown key '{unknown[0]}'; valid keys: {', '.join(sorted(valid))}")
    spec = SweepSpec(**raw)
    spec.name = str(spec.name or p.stem)
    _check_fields(spec, p)
    if not spec.space:
        raise LtaugError(f"sweep file {p}: 'space' is empty; give at least one recipe key to sweep")
    if spec.mode not in ("max", "min"):
        raise LtaugError(f"sweep file {p}: mode '{spec.mode}' must be max or min")
    if spec.metric not in METRICS:
        hint = (f"; {spec.metric} is a test-set number and sweeps choose on validation data: use val_{spec.metric}"
                if spec.metric.startswith("accuracy.") else "")
        raise LtaugError(f"sweep file {p}: metric '{spec.metric}' is not one of {', '.join(METRICS)}{hint}")
    if spec.metric.startswith("val_agreement.") or spec.metric.startswith("val_leakage"):
        if stages_for(list(spec.space)) != "generator":
            raise LtaugError(f"sweep file {p}: metric '{spec.metric}' is measured while a generator trains; sweep "
                             "generator keys with it, or use val_accuracy.<group>")
    if spec.scheduler not in ("asha", "fifo"):
        raise LtaugError(f"sweep file {p}: scheduler '{spec.scheduler}' must be asha or fifo")
    for key, dist in spec.space.items():
        if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in SPACE_KINDS:
            raise LtaugError(f"sweep file {p}: space key '{key}' needs one of {', '.join(SPACE_KINDS)}, "
                             f"e.g. {{grid: [0.01, 0.1]}}")
        _check_dist(p, key, *next(iter(dist.items())))
    _check_points(spec, p)
    # the swept keys together: resolve the base recipe with a first value of each
    first = load_recipe(spec.recipe, list(spec.set) + as_sets({k: _first_value(v) for k, v in spec.space.items()}))
    _check_loss_keys(spec, p, first.generator.loss)
    return spec


def _check_points(spec: SweepSpec, p: Path) -> None:
    """Every value a trial can take is a valid recipe value, checked before any trial starts (a bad value in a later
    trial would otherwise fail that trial only, after the others ran): each grid / choice value and each range's
    bounds, one key at a time on the sweep's recipe (recipe checks are per key)."""
    for key, dist in spec.space.items():
        kind, arg = next(iter(dist.items()))
        values = arg if kind in ("grid", "choice") else \
            [int(arg[0]), int(arg[1]) - 1] if kind == "randint" else [float(arg[0]), float(arg[1])]
        for i, value in enumerate(values):
            try:
                load_recipe(spec.recipe, list(spec.set) + as_sets({key: value}))
            except LtaugError as e:
                which = f"value {i + 1} ({value!r})" if kind in ("grid", "choice") else \
                    f"{'lower' if i == 0 else 'upper'} bound {value!r}"
                raise LtaugError(f"sweep file {p}: space key '{key}' ({kind}), {which}: {e}") from None


def apply_sets(raw: dict, sets: list[str]) -> dict:
    """`ltaug tune --set` on a sweep file's mapping: a sweep key (metric, num_samples, max_concurrent, ...) is
    replaced, `space.RECIPE_KEY={grid: [...]}` replaces (or adds) one swept key, and any other KEY=VALUE is a recipe
    override appended to the sweep's `set` (for every trial: generator.steps=200 shrinks a built-in sweep).
    Values are YAML."""
    raw = dict(raw)
    fields = {f.name for f in dataclasses.fields(SweepSpec)} - {"set", "space"}
    for item in sets:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise LtaugError(f"--set {item!r}: expected KEY=VALUE (a sweep key, space.RECIPE_KEY or a recipe key)")
        if key in fields:
            try:
                raw[key] = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise LtaugError(f"--set {item}: the value is not YAML ({' '.join(str(e).split())})") from None
        elif key.startswith("space."):
            try:
                dist = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise LtaugError(f"--set {item}: the value is not YAML ({' '.join(str(e).split())})") from None
            raw["space"] = {**(raw.get("space") or {}), key[len("space."):]: dist}
        else:
            raw["set"] = [*(raw.get("set") or []), f"{key}={value}"]
    return raw


def sweep_yaml(spec: SweepSpec) -> str:
    """The sweep as a sweep file (what `ltaug tune NAME --print` shows; it loads back as the same sweep)."""
    data = {f.name: getattr(spec, f.name) for f in dataclasses.fields(SweepSpec)}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=118)


# The loss options each generator loss reads: a sweep over the others would train identical generators.
LOSS_SECTIONS = {"generator.diffrop.": ("diffrop", "cbdm+diffrop"), "generator.cbdm.": ("cbdm", "cbdm+diffrop")}


def _check_loss_keys(spec: SweepSpec, p: Path, loss: str) -> None:
    if "generator.loss" in spec.space:
        return
    for key in spec.space:
        for prefix, losses in LOSS_SECTIONS.items():
            if key.startswith(prefix) and loss not in losses:
                raise LtaugError(f"sweep file {p}: '{key}' is read only by generator.loss {' or '.join(losses)}, but "
                                 f"the sweep's recipe trains with '{loss}' (every trial would be the same); add "
                                 f"generator.loss={losses[0]} to the sweep's 'set'")


def _check_fields(spec: SweepSpec, p: Path) -> None:
    """The types of a sweep file's keys (each error names the key and the file)."""
    def bad(key: str, want: str) -> LtaugError:
        return LtaugError(f"sweep file {p}: '{key}' must be {want}, got {getattr(spec, key)!r}")

    if not isinstance(spec.recipe, str) or not spec.recipe:
        raise bad("recipe", "a recipe name or path")
    if not isinstance(spec.set, list) or not all(isinstance(x, str) for x in spec.set):
        raise bad("set", "a list of key=value strings")
    if not isinstance(spec.metric, str) or not spec.metric:
        raise bad("metric", "a metric name such as val_accuracy.few or val_agreement.few")
    for key in ("num_samples", "max_concurrent", "grace_period"):
        v = getattr(spec, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise bad(key, "a whole number >= 1")
    res = spec.resources
    if (not isinstance(res, dict) or set(res) - {"cpu", "gpu"}
            or any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in res.values())):
        raise bad("resources", "a mapping {cpu: N, gpu: N} of numbers >= 0")
    if not isinstance(spec.space, dict):
        raise bad("space", "a mapping of recipe keys to {grid|choice|uniform|loguniform|randint: [...]}")


def _check_dist(p: Path, key: str, kind: str, arg: Any) -> None:
    """One space entry's values: a non-empty list for grid / choice, two bounds lo < hi for the ranges."""
    where = f"sweep file {p}: space key '{key}' ({kind})"
    if kind in ("grid", "choice"):
        if not isinstance(arg, list) or not arg:
            raise LtaugError(f"{where} needs a non-empty list of values, e.g. {{{kind}: [0.01, 0.1]}}")
        return
    numbers = isinstance(arg, list) and len(arg) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in arg)
    if not numbers:
        raise LtaugError(f"{where} needs two bounds [lo, hi], e.g. {{{kind}: [0.001, 0.1]}}; got {arg!r}")
    lo, hi = arg
    if not lo < hi:
        raise LtaugError(f"{where}: the lower bound {lo} must be below the upper bound {hi}")
    if kind == "loguniform" and lo <= 0:
        raise LtaugError(f"{where}: loguniform bounds must be > 0, got {lo}")
    if kind == "randint" and not (float(lo).is_integer() and float(hi).is_integer()):
        raise LtaugError(f"{where}: randint bounds must be whole numbers, got {arg!r}")


def _first_value(dist: dict) -> Any:
    kind, arg = next(iter(dist.items()))
    if kind in ("grid", "choice"):
        return arg[0]
    if kind == "randint":
        return int(arg[0])
    return float(arg[0])


def stages_for(space_keys: list[str]) -> str:
    """'generator' if any generator/data/seed key is swept, else 'synth' if synth keys, else 'classifier'."""
    if any(k.startswith(("generator.", "data.")) or k in ("seed",) for k in space_keys):
        return "generator"
    if any(k.startswith("synth.") for k in space_keys):
        return "synth"
    return "classifier"


def trial_stages(spec: SweepSpec, space: str = "image") -> Optional[set[str]]:
    """The stages a trial runs: up to the last report its metric needs, and none that the sweep shares (prepared
    once) or that no report reads (the real-only classifier, evaluate, report.html): a judge metric ends with the
    generator, val_accuracy with the real + synthetic classifier. space: the base recipe's generator.space; a
    feature-space trial runs its own stages (features, heads: ltaug.features.pipeline), all of them (None)."""
    if space != "image":
        return None
    if spec.metric.startswith(("val_agreement.", "val_leakage")):
        return {"generator"}
    return {"generator": {"generator", "synth", "classifier-synth"}, "synth": {"synth", "classifier-synth"},
            "classifier": {"classifier-synth"}}[stages_for(list(spec.space))]


def restore_checkpoint(checkpoint: Optional[Checkpoint], run_dir: Path, *, classifier: bool = True) -> Optional[Path]:
    """A restored trial (Tuner.restore, on this node or another) continues from its last reported checkpoint: the
    generator's checkpoints folder or (with classifier: its synthetic set is the sweep's shared one, the same path
    on every node) the classifier folder goes back into the trial's run folder, unless that folder is already there
    (then it is at least as new). Returns where it was put, or None."""
    if checkpoint is None:
        return None
    run = RunDir(run_dir)
    with checkpoint.as_directory() as d:
        d = Path(d)
        if any(d.glob("ckpt-*.pt")):
            target = run.checkpoints
        elif classifier and (d / "checkpoint.pt").is_file():
            target = run.classifier("synth")
        else:
            return None
        if target.exists():
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(d, target, ignore=shutil.ignore_patterns(".*"))
    return target


def _param_space(spec: SweepSpec) -> dict:
    make = {"grid": tune.grid_search, "choice": tune.choice,
            "uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(*a)}
    return {key: make[kind](arg) for key, dist in spec.space.items() for kind, arg in dist.items()}


def make_trainable(spec: SweepSpec, sweep_dir: Path, shared: dict):
    """The function trainable: resolve the trial's recipe, run the stages it needs, report through tune.report."""
    base_sets = list(spec.set)
    stages = trial_stages(spec, load_recipe(spec.recipe, base_sets).generator.space)

    # Tuner.restore takes the trainable of the original Tuner by its name, "trainable": `ltaug tune --resume`
    # passes this one again.
    def trainable(config: dict) -> None:
        trial_dir = Path(tune.get_context().get_trial_dir()) if hasattr(tune, "get_context") else Path.cwd()
        trial_dir = Path(os.path.abspath(trial_dir)) / "run"
        recipe = load_recipe(spec.recipe, base_sets + as_sets(config))
        restore_checkpoint(tune.get_checkpoint(), trial_dir, classifier=stages is not None and "synth" not in stages)

        def report(metrics: dict, checkpoint_dir: Optional[str] = None) -> None:
            ckpt = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
            tune.report(metrics, checkpoint=ckpt)

        run_pipeline(recipe, trial_dir, progress=False, report=report,
                     reuse_generator=shared.get("generator"), reuse_synth=shared.get("synth"),
                     tune_metric=spec.metric, judge=shared.get("judge"), stages=stages,
                     shared_features=shared.get("features"))

    return trainable


# The URI schemes pyarrow's FileSystem.from_uri (what Ray Tune uses for storage_path) understands.
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "mock")


def storage_path(storage: str | None) -> str | None:
    """Ray Tune's storage_path from --storage: a URI (s3://, gs://, file://, ...) as given; a local path made
    absolute (pyarrow refuses a relative one) and checked writable, so a bad one fails before anything is written."""
    uri = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", storage or "")
    if uri and uri.group(1).lower() not in STORAGE_SCHEMES:
        raise LtaugError(f"--storage {storage}: '{uri.group(1)}://' is not a storage Ray Tune can write; give a "
                         f"local or shared path, or a URI with one of {', '.join(s + '://' for s in STORAGE_SCHEMES)}")
    if storage is None or uri:
        return storage
    require_writable(storage, "--storage")
    return str(Path(storage).expanduser().absolute())


def run_sweep(spec: SweepSpec, out_dir: str | os.PathLike, *, address: str | None = None, resume: bool = False,
              num_cpus: int | None = None, progress: bool = True, storage: str | None = None) -> dict:
    """Run (or resume) a sweep in out_dir. Returns {"trials": [...], "best": {...}, "best_recipe": path}.

    address: a Ray cluster to join (checked first: where nothing answers, this fails within seconds, before
    anything is written); without it a local Ray is started and ended with this process (ltaug.raycluster). The
    sweep folder is locked while the sweep runs (ltaug.locks). storage: where Ray Tune keeps the trials' results and
    checkpoints (default OUT/ray); on a multi-node cluster a path every node can reach (a shared filesystem) or a
    cloud URI such as s3://bucket/sweeps."""
    raycluster.check_address(address)
    check_resources(spec, address, num_cpus)
    return _run_sweep(spec, out_dir, address=address, resume=resume, num_cpus=num_cpus, progress=progress,
                      storage=storage_path(storage))


def check_resources(spec: SweepSpec, address: str | None, num_cpus: int | None,
                    cluster: Optional[dict] = None) -> None:
    """Refuse a sweep whose trials ask more CPUs or GPUs than the cluster has: Ray would wait for them forever.
    cluster: ray.cluster_resources() once connected; before that, a local Ray's own (CPUs: --num-cpus or this
    machine's, GPUs: torch's count); a cluster at --address is checked once joined."""
    if cluster is None:
        if address:
            return
        cluster = {"CPU": num_cpus or os.cpu_count() or 1, "GPU": torch.cuda.device_count()}
    has = {"cpu": float(cluster.get("CPU", 0)), "gpu": float(cluster.get("GPU", 0))}
    for key, value in spec.resources.items():
        if value > has[key]:
            where = f"the Ray cluster at {address}" if address else "this machine's Ray"
            hint = "; lower it, or use a machine or cluster with GPUs" if key == "gpu" else \
                "; lower it, or give more with --num-cpus" if not address else "; lower it"
            raise LtaugError(f"sweep '{spec.name}': resources.{key} {value:g} per trial, but {where} has "
                             f"{has['cpu']:g} CPU(s) and {has['gpu']:g} GPU(s): no trial could ever start{hint}")


@holds_lock(lambda a: Path(os.path.abspath(a["out_dir"])), "ltaug tune", refuse_links=False)
def _run_sweep(spec: SweepSpec, out_dir: str | os.PathLike, *, address: str | None, resume: bool,
               num_cpus: int | None, progress: bool, storage: str | None = None) -> dict:
    out = Path(os.path.abspath(out_dir))  # Ray changes a trial's working directory: absolute paths only
    out.mkdir(parents=True, exist_ok=True)
    stage = stages_for(list(spec.space))
    shared: dict = {}
    base = load_recipe(spec.recipe, list(spec.set))
    if base.generator.space == "features":
        if not any(k.startswith(("data.", "features.backbone", "features.resolution"))
                   or (k.startswith("classifier.") and base.features.backbone == "run") for k in spec.space):
            shared["features"] = str(prepare_features(base, RunDir(out / "shared"), progress=progress))
    elif stage in ("synth", "classifier"):
        shared = prepare_shared(base, out / "shared", upto=stage, progress=progress)
    if spec.metric.startswith(("val_agreement.", "val_leakage")):  # the judge, trained once for every trial
        shared["judge"] = str(train_judge(base, RunDir(out / "shared"), progress=progress))

    started = raycluster.connect(address, num_cpus=num_cpus)
    try:
        check_resources(spec, address, num_cpus, ray.cluster_resources())
        return _tune(spec, out, shared, resume, progress, storage)
    finally:
        if started:
            raycluster.disconnect()


def _tune(spec: SweepSpec, out: Path, shared: dict, resume: bool, progress: bool, storage: str | None) -> dict:
    """The Tuner over the trials (new, or restored with resume), then the best recipe, the results and the plot."""
    trainable = tune.with_resources(make_trainable(spec, out, shared),
                                    {"cpu": spec.resources.get("cpu", 1), "gpu": spec.resources.get("gpu", 0)})
    storage = storage or str(out / "ray")
    if resume and tune.Tuner.can_restore(os.path.join(storage, spec.name)):
        tuner = tune.Tuner.restore(os.path.join(storage, spec.name), trainable, resume_errored=False,
                                   restart_errored=False, resume_unfinished=True)
    else:
        scheduler = (ASHAScheduler(grace_period=spec.grace_period, reduction_factor=2) if spec.scheduler == "asha"
                     else FIFOScheduler())
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(spec),
            tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler,
                                        num_samples=spec.num_samples, max_concurrent_trials=spec.max_concurrent),
            run_config=tune.RunConfig(name=spec.name, storage_path=storage, verbose=1 if progress else 0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
    t0 = time.perf_counter()
    grid = tuner.fit()
    trials = []
    for r in grid:
        row = {"config": _trial_config(r), "metric": (r.metrics or {}).get(spec.metric),
               "status": "ERROR" if r.error else "OK", "error": _error_line(r.error),
               "path": r.path}
        trials.append(row)
    ok = [t for t in trials if t["status"] == "OK" and isinstance(t["metric"], (int, float))]
    if not ok:
        raise LtaugError(f"every trial of sweep '{spec.name}' failed; see {storage}/{spec.name} for their errors")
    best = (max if spec.mode == "max" else min)(ok, key=lambda t: t["metric"])
    best_recipe = load_recipe(spec.recipe, list(spec.set) + as_sets(best["config"]))
    best_path = out / "best_recipe.yaml"
    save_recipe(best_recipe, best_path)
    result = {"sweep": dataclasses.asdict(spec), "trials": trials, "best": best, "best_recipe": str(best_path),
              "wall_s": time.perf_counter() - t0}
    atomic_write_json(out / "sweep_results.json", result)
    plot_sweep(spec, trials, out / "sweep.png")
    return result


def _trial_config(result) -> dict:
    """A trial's swept values. A trial that failed before a restored sweep carries no config in its Result, so
    fall back to the params.json Ray wrote in its folder when it started."""
    if result.config:
        return dict(result.config)
    try:
        return json.loads((Path(result.path) / "params.json").read_text())
    except (OSError, TypeError, ValueError):
        return {}


def _error_line(error: BaseException | None) -> str:
    """The message a failed trial ended with (Ray wraps it in its own traceback text)."""
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    return last.split("LtaugError: ", 1)[-1]


def plot_sweep(spec: SweepSpec, trials: list[dict], path: Path) -> None:
    """The metric against each swept key (one panel per key); failed trials marked on the axis."""
    keys = list(spec.space)
    fig = Figure(figsize=(4 * len(keys), 3.2), dpi=120)
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        xs = [t["config"].get(key) for t in trials if isinstance(t["metric"], (int, float))]
        ys = [t["metric"] for t in trials if isinstance(t["metric"], (int, float))]
        numeric = all(isinstance(x, (int, float)) for x in xs)
        labels = xs if numeric else [str(x) for x in xs]
        ax.scatter(labels, ys, color="#1f77b4", zorder=3)
        failed = [t["config"].get(key) for t in trials if t["status"] == "ERROR"]
        for f in failed:
            ax.axvline(f if numeric and isinstance(f, (int, float)) else str(f), color="#d62728", ls=":", lw=1)
        if numeric and xs and min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(spec.metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"sweep {spec.name} ({spec.mode} {spec.metric}; dotted red = failed trial)", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path)
