"""Where things live in an Edge Deploy checkout."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIM_DIR = REPO / "tests" / "sim"
SIM_PROFILES = SIM_DIR / "profiles"
CONTAINERS_CONF = SIM_DIR / "containers.conf"
SIM_STATE = REPO / ".sim"
SIM_INVENTORY = REPO / "inventory" / "sim"
REPORTS = REPO / "reports"
PLAYBOOKS = REPO / "playbooks"
