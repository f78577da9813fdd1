"""Ctrl-C and SIGTERM as a request to stop at the next safe point (after an optimizer step or an epoch), so a long
loop can write a checkpoint first and the run resumes where it stopped."""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional


class StopRequest:
    """`with StopRequest() as stop: ... if stop.requested: save and leave`. Handlers are installed in the main
    thread only (signals cannot be caught elsewhere) and restored on exit."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
