"""Progress for long work (builds, benchmarks).

On a controller terminal it draws `rich` bars; elsewhere (a robot, a pipe, Ansible) it writes plain,
throttled lines to stderr so stdout stays free for the JSON result. rich is optional. Methods are
thread-safe because TensorRT calls its progress monitor from builder threads.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Dict, Optional, TextIO

from engine_builder._deps import optional


class Progress:
    """No-op progress; the base of the two real ones."""

    def phase_start(self, name: str, total: Optional[int] = None) -> None:
        """A phase (parse, build, a TensorRT builder phase, timed runs) begins."""

    def step(self, name: str, completed: int) -> None:
        """`completed` steps of phase `name` are done."""

    def phase_finish(self, name: str) -> None:
        """Phase `name` is over."""

    def message(self, text: str) -> None:
        """A one-off line for the user."""

    def close(self) -> None:
        """Release the terminal."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainProgress(Progress):
    """`engine-builder: <phase> 3/10` lines on stderr, at most one per phase per `interval` seconds."""

    def __init__(self, stream: Optional[TextIO] = None, interval: float = 2.0):
        self._stream = stream or sys.stderr
        self._interval = interval
        self._lock = threading.Lock()
        self._totals: Dict[str, Optional[int]] = {}
        self._last: Dict[str, float] = {}

    def _write(self, text: str) -> None:
        self._stream.write("engine-builder: %s\n" % text)
        self._stream.flush()

    def phase_start(self, name: str, total: Optional[int] = None) -> None:
        with self._lock:
            self._totals[name] = total
            self._last[name] = time.monotonic()
            self._write("%s ..." % name)

    def step(self, name: str, completed: int) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last.get(name, 0.0) < self._interval:
                return
            self._last[name] = now
            total = self._totals.get(name)
            self._write("%s %d/%s" % (name, completed, total if total else "?"))

    def phase_finish(self, name: str) -> None:
        with self._lock:
            self._totals.pop(name, None)
            self._write("%s done" % name)

    def message(self, text: str) -> None:
        with self._lock:
            self._write(text)


class RichProgress(Progress):
    """rich progress bars on a terminal (controller side)."""

    def __init__(self, rich_progress_module, stream: TextIO):
        console = optional("rich.console").Console(file=stream)
        self._bars = rich_progress_module.Progress(
            rich_progress_module.TextColumn("{task.description}"),
            rich_progress_module.BarColumn(),
            rich_progress_module.MofNCompleteColumn(),
            rich_progress_module.TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._tasks: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._bars.start()

    def phase_start(self, name: str, total: Optional[int] = None) -> None:
        with self._lock:
            self._tasks[name] = self._bars.add_task(name, total=total)

    def step(self, name: str, completed: int) -> None:
        with self._lock:
            if name in self._tasks:
                self._bars.update(self._tasks[name], completed=completed)

    def phase_finish(self, name: str) -> None:
        with self._lock:
            task = self._tasks.pop(name, None)
            if task is not None:
                self._bars.remove_task(task)

    def message(self, text: str) -> None:
        self._bars.console.print(text)

    def close(self) -> None:
        self._bars.stop()


def make_progress(enabled: bool = True, stream: Optional[TextIO] = None) -> Progress:
    """The right progress for where we run: rich on a TTY when installed, plain lines otherwise."""
    if not enabled:
        return Progress()
    stream = stream or sys.stderr
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    rich_progress = optional("rich.progress") if is_tty else None
    if rich_progress is not None:
        return RichProgress(rich_progress, stream)
    return PlainProgress(stream)
