"""What the controller's signed repository (edge_deploy/release/repo.py) and the robot's client
(edge_agent/tufclient.py) agree on beyond the TUF specification."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

# Every role the controller signs carries, inside its signed part, when it was signed (UTC). TUF
# metadata says when it expires, not when it was made; a robot needs both to tell its own wrong
# clock from metadata nobody renewed.
SIGNED_AT = "edge_signed_at"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# What renews expired timestamp, snapshot and targets metadata on the controller.
REFRESH_COMMAND = "edge-deploy release refresh --repo <repository> --keys <keys>"


def stamp(moment: datetime) -> str:
    """2026-11-27T17:42:02Z (a naive datetime is taken as UTC, as python-tuf's are)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


def parse(value: Any) -> Optional[datetime]:
    """A stamp back as a UTC datetime; None where there is none (signed before stamps existed)."""
    try:
        return datetime.strptime(str(value), TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
