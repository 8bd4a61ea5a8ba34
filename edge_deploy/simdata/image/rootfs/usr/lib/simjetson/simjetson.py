"""Shared state for the SIMULATED Jetson tools of Edge Deploy's test fleet.

Nothing here is NVIDIA software. These simulators stand in for nvpmodel,
jetson_clocks and tegrastats inside podman containers so that roles can be
converged for real; they keep state across restarts and print the formats
recorded from real devices (tests/fleet/test_simulators.py holds them to those formats).
"""

import json
import os
import sys

PROFILE_FILE = "/etc/simjetson/profile.json"
NVPMODEL_CONF = "/etc/nvpmodel.conf"
NVPMODEL_STATUS = "/var/lib/nvpmodel/status"
CLOCKS_STATE = "/var/lib/simjetson/clocks.json"


def profile():
    with open(PROFILE_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def modes():
    return {mode["id"]: mode for mode in profile()["nvpmodel"]["modes"]}


def current_mode_id():
    try:
        with open(NVPMODEL_STATUS, encoding="utf-8") as handle:
            for field in handle.read().split():
                if field.startswith("pmode:"):
                    return int(field.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return profile()["nvpmodel"]["default"]


def write_atomic(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def set_mode_id(mode_id):
    write_atomic(NVPMODEL_STATUS, "pmode:%04d fmode:quiet\n" % mode_id)


def clocks_state():
    try:
        with open(CLOCKS_STATE, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {"locked": False, "fan": "auto"}


def save_clocks_state(state):
    write_atomic(CLOCKS_STATE, json.dumps(state, sort_keys=True) + "\n")


def require_root(tool):
    if os.geteuid() != 0:
        sys.stderr.write("%s: must be run as root (sudo %s ...)\n" % (tool, tool))
        sys.exit(1)
