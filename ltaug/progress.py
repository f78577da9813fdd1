"""Progress for long work: a rich bar in a terminal, plain periodic lines elsewhere (CI logs, Ray workers, files).

    with progress_bar(total=steps, desc="train", unit="img") as bar:
        bar.advance(n, loss=0.12, img_s=...)   # extra fields are shown after the bar

Library functions accept `progress: bool` and create the bar themselves; they never print otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

console = Console(stderr=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class _Bar:
    def __init__(self, total: int, desc: str, unit: str, enabled: bool, completed: int = 0):
        self.total, self.desc, self.unit = total, desc, unit
        self.completed = completed
        self.start_completed = completed
        self.fields: dict[str, Any] = {}
        self.enabled = enabled
        self.rich = enabled and console.is_terminal and not os.environ.get("LTAUG_PLAIN_PROGRESS")
        self.t0 = time.perf_counter()
        self._last_line = 0.0
        self._progress = None
        if self.rich:
            # At 80 columns the count, rate, elapsed time and ETA must stay whole: the description is capped, the
            # bar is short, and the extra fields (loss, ...) take what is left, cut with an ellipsis.
            self._progress = Progress(
                TextColumn("[bold]{task.description}", table_column=Column(max_width=22, no_wrap=True,
                                                                           overflow="ellipsis")),
                BarColumn(bar_width=12), MofNCompleteColumn(table_column=Column(no_wrap=True)),
                TextColumn("{task.fields[rate]}", table_column=Column(no_wrap=True)),
                TimeElapsedColumn(table_column=Column(no_wrap=True)), TextColumn("eta"),
                TimeRemainingColumn(table_column=Column(no_wrap=True)),
                TextColumn("{task.fields[info]}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis",
                                                                      min_width=1)),
                console=console, transient=False, expand=True,
            )
            self._progress.start()
            # the description and fields may hold user text (a folder or class name): never console markup
            self._task = self._progress.add_task(escape(desc), total=total, completed=completed, rate="", info="")

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return (self.completed - self.start_completed) / dt if dt > 0 else 0.0

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.completed += n
        self.fields.update(fields)
        if not self.enabled:
            return
        info = " ".join(f"{k}={_fmt(v)}" for k, v in self.fields.items())
        rate = f"{self.rate():.1f} {self.unit}/s"
        if self._progress is not None:
            self._progress.update(self._task, advance=n, rate=rate, info=escape(info))
            return
        now = time.perf_counter()
        if now - self._last_line >= 10.0 or self.completed >= self.total:
            self._last_line = now
            r = self.rate()
            eta = (self.total - self.completed) / r if r > 0 else float("nan")
            print(f"{self.desc}: {self.completed}/{self.total} {rate} eta {eta:.0f}s {info}", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextmanager
def progress_bar(total: int, desc: str = "", unit: str = "it", enabled: bool = True,
                 completed: int = 0) -> Iterator[_Bar]:
    bar = _Bar(total, desc, unit, enabled, completed)
    try:
        yield bar
    finally:
        bar.close()
