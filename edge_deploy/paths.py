"""Where Edge Deploy finds its own files and keeps the user's.

Its own files are package data, the same in a clone and in an installed wheel: the simulated
fleet (image recipe, simulators, profiles, the fleet's group_vars) and the examples the demo
releases. The user's files go to folders the user chooses, by flag or environment variable, with
defaults in the working directory; nothing is ever written into the package:

    EDGE_DEPLOY_STATE      ./.sim            simulated fleets (keys, known hosts), the demo's releases
    EDGE_DEPLOY_REPORTS    ./reports         run reports, engine reports, status snapshots
    EDGE_DEPLOY_INVENTORY  ./inventory/sim   the default simulated fleet's inventory
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SIM_DIR = PACKAGE / "simdata"
SIM_PROFILES = SIM_DIR / "profiles"
SIM_GROUP_VARS = SIM_DIR / "group_vars"
CONTAINERS_CONF = SIM_DIR / "containers.conf"
BUILD_IMAGE = SIM_DIR / "build-image"
EXAMPLES = PACKAGE / "examples"  # the repository's examples/ (package data, see pyproject.toml)


def _chosen(variable: str, default: str) -> Path:
    return Path(os.environ.get(variable) or default).resolve()


def state_dir() -> Path:
    return _chosen("EDGE_DEPLOY_STATE", ".sim")


def reports_dir() -> Path:
    return _chosen("EDGE_DEPLOY_REPORTS", "reports")


def sim_inventory() -> Path:
    return _chosen("EDGE_DEPLOY_INVENTORY", os.path.join("inventory", "sim"))
