"""Agent errors, each with the exit code the CLI returns."""

from __future__ import annotations

from typing import Any, Dict, Optional

from edge_common import exitcodes

EXIT_OK = exitcodes.OK
EXIT_FAILED = exitcodes.FAILED
EXIT_USAGE = exitcodes.USAGE
EXIT_REFUSED = exitcodes.REFUSED  # verification refused the release: nothing changed
EXIT_ROLLED_BACK = exitcodes.ROLLED_BACK  # the health gate failed; the robot went back
EXIT_BUSY = exitcodes.BUSY  # another agent run holds the lock
EXIT_CLOCK = exitcodes.CLOCK  # the robot's clock contradicts the signed metadata


class AgentError(Exception):
    exit_code = EXIT_FAILED
    kind = "failed"

    def __init__(self, message: str, details: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def as_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "details": self.details}


class UsageError(AgentError):
    exit_code = EXIT_USAGE
    kind = "usage"


class Refused(AgentError):
    """Signature, hash, length, expiry or version checks failed."""

    exit_code = EXIT_REFUSED
    kind = "refused"


class Unverified(Refused):
    """The repository's metadata or files failed python-tuf's checks (signature, expiry, version,
    length, hash, format). A pull reports it as its outcome rather than as a release this robot
    merely cannot take (older, marked bad, outside its compatibility contract)."""


class Unreachable(AgentError):
    """The repository gave no usable answer (network, name lookup, TLS, timeout, server error, a
    download cut, stalled or longer than signed): nothing was verified or changed. Not the
    release's fault, so not a refusal; the next run tries again."""

    kind = "unreachable"


class ClockWrong(AgentError):
    """The robot's clock contradicts the repository's signed metadata: expired by the robot's
    clock while the server's clock says it is fresh, or signed later than the robot's now.
    Nothing was verified or changed; the clock must be fixed, so the OTA unit fails."""

    exit_code = EXIT_CLOCK
    kind = "clock"


class RolledBack(AgentError):
    exit_code = EXIT_ROLLED_BACK
    kind = "rolled_back"


class Busy(AgentError):
    exit_code = EXIT_BUSY
    kind = "busy"
