"""What the TensorRT builder (trt_backend) and runner (trt_runtime) share: the lazy tensorrt import,
version parsing and the API branch, and the logger. Both import this module and never each other's
helpers (Polygraphy's backend/trt/util.py)."""

from __future__ import annotations

import collections
from typing import List, Tuple

from engine_builder._deps import require
from engine_builder.errors import BuildError

SUPPORTED = "8.5, 8.6 and 10.x"


def load_tensorrt():
    """The tensorrt module, imported on first use (the controller has none)."""
    return require("tensorrt", "the tensorrt backend")


def parse_version(text: str) -> Tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def api_branch(version: str) -> str:
    """'8.5', '8.6' or '10': the API branch to use; other versions are refused, not guessed."""
    v = parse_version(version)
    if len(v) >= 2 and v[0] == 8 and v[1] in (5, 6):
        return "8.%d" % v[1]
    if v and v[0] == 10:
        return "10"
    raise BuildError(
        "TensorRT %s is not supported; this backend is written for TensorRT %s" % (version, SUPPORTED),
        hint="use JetPack 5.1.x (TensorRT 8.5), 6.0 (8.6) or 6.1/6.2 (10.3)",
    )


def make_logger(trt, keep: int = 200):
    """An ILogger that keeps the last `keep` messages (INFO and worse) for error reports."""
    severity = trt.ILogger.Severity

    class TailLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: collections.deque[str] = collections.deque(maxlen=keep)

        def log(self, sev, msg) -> None:
            if int(sev) <= int(severity.INFO):
                self.lines.append("[%s] %s" % (getattr(sev, "name", str(sev)), msg))

        def tail(self, n: int = 40) -> List[str]:
            return list(self.lines)[-n:]

    return TailLogger()
