"""Errors that the CLI turns into a clear message, a JSON error object and an exit code."""

from __future__ import annotations

from typing import Any, Dict, Optional

from edge_common import exitcodes

EXIT_OK = exitcodes.OK
EXIT_FAILED = exitcodes.FAILED
EXIT_USAGE = exitcodes.USAGE
EXIT_REFUSED = exitcodes.REFUSED
EXIT_MISSING_DEPENDENCY = exitcodes.MISSING_DEPENDENCY


class EngineBuilderError(Exception):
    """Base error: `message` says what is wrong, `hint` how to fix it, `details` go into the JSON."""

    kind = "error"
    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: Optional[str] = None, details: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = dict(details or {})

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"kind": self.kind, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        out.update(self.details)
        return out

    def __str__(self) -> str:
        return self.message if not self.hint else "%s\nhint: %s" % (self.message, self.hint)


class UsageError(EngineBuilderError):
    """The command line or the options are wrong (unknown backend, bad shape string, ...)."""

    kind = "usage"
    exit_code = EXIT_USAGE


class MissingDependency(EngineBuilderError):
    """A library is not installed here; the message names the package to install."""

    kind = "missing_dependency"
    exit_code = EXIT_MISSING_DEPENDENCY

    def __init__(
        self, package: str, purpose: str, install_hint: str, cause: str = "", what: str = "the Python package"
    ):
        message = "%s needs %s '%s', which is not installed here" % (purpose, what, package)
        if cause:
            message += " (%s)" % cause
        super().__init__(message, hint=install_hint, details={"package": package})
        self.package = package


class ModelError(EngineBuilderError):
    """The ONNX file is missing, corrupt, truncated or invalid."""

    kind = "model"


class CalibrationError(EngineBuilderError):
    """Calibration data is empty or does not fit the model."""

    kind = "calibration"


class BuildError(EngineBuilderError):
    """A backend failed to build; details carry `log_tail` and `parser_errors` (by node name)."""

    kind = "build"


class GateFailed(EngineBuilderError):
    """A measured value missed its target (p99 latency, accuracy parity): the engine is refused."""

    kind = "gate"
    exit_code = EXIT_REFUSED
