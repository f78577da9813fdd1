"""`ltaug data list` and `ltaug data info NAME`: what datasets exist, and what one looks like."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ltaug.cli.app import app
from ltaug.cli.common import JsonOpt, console, emit_json, handle_errors, json_output
from ltaug.config.data import BUILTIN_DATASETS, GROUP_NAMES, PROFILES
from ltaug.errors import LtaugError
from ltaug.space import require_writable

# `data info` looks at a dataset apart from any recipe: its options have their own defaults (shown), and name the
# recipe key that sets the same thing for training.
_AS = " (in a recipe: "

data_app = typer.Typer(help="List the datasets, and show one's classes, counts and groups.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("list", help="List the datasets and whether each can be loaded offline now.")
@handle_errors
def list_cmd(
    data_root: Annotated[Optional[Path], typer.Option(
        help=f"where CIFAR is looked for (default ~/.cache/ltaug/data){_AS}data.data_root)")] = None,
) -> None:
    from ltaug.data.sources import is_available

    table = Table(title="datasets")
    table.add_column("name")
    table.add_column("available offline")
    table.add_column("read from")
    for name in BUILTIN_DATASETS:
        ok, where = is_available(name, data_root)
        table.add_row(name, "[green]yes[/]" if ok else "[red]no[/]", where)
    table.add_row("npz:PATH", "-", "a packed npz (images, labels, classes)")
    table.add_row("folder:PATH", "-", "one sub-folder of images per class")
    console.print(table)


@data_app.command("info", help="Per-class counts and many/medium/few groups of a dataset, optionally a histogram PNG.")
@handle_errors
def info_cmd(
    name: Annotated[str, typer.Argument(
        help="mnist-lt, cifar10-lt, cifar100-lt, cifar10-test, cifar100-test, npz:PATH, folder:PATH")],
    split: Annotated[str, typer.Option(help="train (long-tailed) or test (balanced)")] = "train",
    imbalance_ratio: Annotated[float, typer.Option(help=f"n_max / n_min of the long-tail profile{_AS}"
                                                   "data.imbalance_ratio)")] = 100.0,
    profile: Annotated[str, typer.Option(help=f"exp or step{_AS}data.profile)")] = "exp",
    data_root: Annotated[Optional[Path], typer.Option(help="where CIFAR is read (default ~/.cache/ltaug/data)"
                                                           f"{_AS}data.data_root)")] = None,
    download: Annotated[bool, typer.Option("--download", help="download CIFAR into --data-root if missing"
                                                              f"{_AS}data.download)")] = False,
    resolution: Annotated[int, typer.Option(help=f"image side (folder: resize + center-crop){_AS}"
                                                 "data.resolution)")] = 32,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="write the class histogram (log scale) to this PNG")] = None,
    json_: JsonOpt = False,
) -> None:
    json_output(json_)
    from ltaug.data import group_of, load_dataset

    if profile not in PROFILES:
        raise LtaugError(f"--profile '{profile}': expected exp or step")
    if plot is not None:
        require_writable(plot.parent, "--plot")
    ds = load_dataset(name, split, data_root=data_root, download=download, imbalance_ratio=imbalance_ratio,
                      profile=profile, resolution=resolution)
    counts = ds.counts
    groups = group_of(counts)
    colors = {"many": "blue", "medium": "yellow", "few": "red"}
    table = Table(title=escape(f"{name} ({split}): {len(ds):,} images, {ds.num_classes} classes, "
                               f"{ds.resolution}x{ds.resolution}x{ds.channels}"))
    table.add_column("label", justify="right")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("group")
    for i, (cls, n, g) in enumerate(zip(ds.classes, counts, groups)):
        table.add_row(str(i), escape(cls), f"{n:,}", f"[{colors[g]}]{g}[/]")
    console.print(table)
    n_groups = {g: groups.count(g) for g in GROUP_NAMES}
    console.print(f"total {len(ds):,} images; imbalance ratio {ds.imbalance_ratio:.1f}; "
                  f"groups: many {n_groups['many']} / medium {n_groups['medium']} / few {n_groups['few']} classes")
    if plot is not None:
        from ltaug.data.plot import plot_class_histogram

        plot_class_histogram(counts, ds.classes, plot, title=f"{name} ({split})")
        console.print(f"histogram written to {plot}", markup=False, highlight=False)
    emit_json({"name": name, "split": split, "images": len(ds), "num_classes": ds.num_classes,
               "resolution": ds.resolution, "channels": ds.channels, "imbalance_ratio": ds.imbalance_ratio,
               "groups": n_groups, "classes": [{"label": i, "class": c, "images": int(n), "group": g}
                                               for i, (c, n, g) in enumerate(zip(ds.classes, counts, groups))],
               "plot": str(plot) if plot is not None else None})
