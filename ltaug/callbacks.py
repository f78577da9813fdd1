"""The report callback every training loop takes (architecture contract).

`report(metrics, checkpoint_dir)`: called by rank 0 with one metrics record (a flat dict of numbers, the same that
is appended to the loop's metrics.jsonl) and the folder of a checkpoint written just before it, or None. Standalone
runs pass nothing (the loops write metrics.jsonl and drive the progress bar themselves); Ray Tune trials pass a
function that calls `tune.report(metrics, checkpoint=...)`.
"""

from __future__ import annotations

from typing import Callable, Optional

ReportFn = Callable[[dict, Optional[str]], None]
