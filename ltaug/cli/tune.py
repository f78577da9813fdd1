"""`ltaug tune SWEEP.yaml`: Ray Tune sweeps over recipe keys."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ltaug.cli.app import app
from ltaug.cli.common import OUTPUT, JsonOpt, OutOpt, console, emit_json, handle_errors, json_output
from ltaug.errors import LtaugError
from ltaug.rundir import DEFAULT_ROOT, RunDir
from ltaug.space import require_writable


@app.command("tune", help="Sweep recipe keys (margin, tau schedule, synthetic ratio, ...) with Ray Tune; writes the "
                          "best configuration as a recipe.")
@handle_errors
def tune_cmd(
    sweep: Annotated[str, typer.Argument(help="sweep YAML (path, or a built-in name from recipes/sweeps/)")],
    out: OutOpt = None,
    address: Annotated[Optional[str], typer.Option(help="join an existing Ray cluster (auto or HOST:PORT)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted sweep in --out")] = False,
    num_cpus: Annotated[Optional[int], typer.Option(help="CPUs of the local Ray instance (default: all)")] = None,
    storage: Annotated[Optional[str], typer.Option(
        help="where Ray Tune keeps trial results and checkpoints (default OUT/ray); on a multi-node cluster a "
             "shared path or a cloud URI (s3://..., gs://...)")] = None,
    sets: Annotated[Optional[list[str]], typer.Option(
        "--set", "-s", help="KEY=VALUE, repeatable: a recipe key for every trial (generator.steps=200), a sweep key "
                            "(num_samples=1, metric=...) or space.RECIPE_KEY='{grid: [0, 1]}'")] = None,
    print_: Annotated[bool, typer.Option("--print", help="print the sweep file (with --set applied) and exit; "
                                                         "save it to edit a built-in sweep")] = False,
    json_: JsonOpt = False,
) -> None:
    json_output(json_)
    from ltaug.raycluster import check_address
    from ltaug.tune import check_resources, load_sweep, run_sweep, storage_path, sweep_yaml

    spec = load_sweep(sweep, sets)
    if print_:
        sys.stdout.write(sweep_yaml(spec))
        return
    if resume and out is None:
        raise LtaugError("--resume needs --out: the sweep directory to continue")
    check_address(address)  # nothing listening there: fail in seconds, before a sweep directory exists
    check_resources(spec, address, num_cpus)  # trials that could never start: likewise
    require_writable(out if out is not None else DEFAULT_ROOT, "--out")
    storage = storage_path(storage)  # before the sweep directory exists
    out_dir = out if out is not None else RunDir.create(None, f"tune-{spec.name}").path
    console.print(f"sweep directory: [bold]{escape(str(out_dir))}[/]")
    result = run_sweep(spec, out_dir, address=address, resume=resume, num_cpus=num_cpus, storage=storage,
                       progress=OUTPUT.progress)
    table = Table(title=escape(f"sweep {spec.name}: {spec.mode} {spec.metric}"))
    keys = list(spec.space)
    for k in keys + [spec.metric, "status"]:
        table.add_column(escape(k))
    for t in result["trials"]:
        m = t["metric"]
        table.add_row(*[escape(str(t["config"].get(k))) for k in keys], "–" if m is None else f"{m:.4g}",
                      t["status"] if not t["error"] else f"[red]{escape(t['error'][:60])}[/]")
    console.print(table)
    console.print(escape(f"best: {result['best']['config']} -> {spec.metric} = {result['best']['metric']:.4g}"))
    best = escape(str(result["best_recipe"]))
    console.print(f"best recipe: [bold]{best}[/] (ltaug run --recipe {best})")
    console.print(f"plot: {Path(out_dir) / 'sweep.png'}", markup=False, highlight=False)
    emit_json({**result, "sweep": spec.name, "metric": spec.metric, "mode": spec.mode, "out_dir": str(out_dir)})
