"""The agent's per-app configuration (/etc/edge-agent/<app>.json, written by the release role)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Optional

from edge_agent.errors import UsageError
from edge_common.resources import check_budget
from engine_builder.store import DEFAULT_ROOT as DEFAULT_STORE

DEFAULTS: Dict[str, Any] = {
    "app": "edge-app",
    "root": None,  # default /opt/<app>
    "state_dir": None,  # default /var/lib/edge-agent/<app> (trusted TUF metadata lives here)
    "service": None,  # default <app>.service
    "user": None,
    "group": None,
    "systemd_dir": "/etc/systemd/system",
    "keep_releases": 3,
    "engine_backend": "auto",  # or tensorrt / trtexec / onnxruntime
    "engine_store": DEFAULT_STORE,  # engine_builder's store, shared with the trt_engine plugin
    "python": None,  # interpreter for the app, engine_builder and the agent (default: this one)
    "agent_path": None,  # the edge-agent.pyz (or package dir) on PYTHONPATH for apps
    "repository_url": None,  # pull mode: base URL of the TUF repository
    "ca_file": None,  # HTTPS repository signed by a private CA: the CA bundle to trust (PEM)
    "mission_lock_file": None,  # default /run/<app>/mission-lock.json, written by the robot app
    "min_battery": 0.3,  # below this charge (0..1) no update starts
    "require_docked": False,
    # A lock older than this holds nothing: the update goes ahead and says so (0: never stale).
    "mission_lock_max_age_hours": 6,
    "lock_timeout_seconds": 600,
    "command_timeout_seconds": 1800,  # per engine build and gate
    # Downloads from the repository: no byte for this long is a stalled server; all of one run's
    # downloads end by the timeout (under the hour the OTA unit allows beyond the service start).
    "download_stall_seconds": 30,
    "download_timeout_seconds": 3000,
    # Pull: the longest wait for a running time sync service to synchronize the clock (clock.py).
    "time_sync_wait_seconds": 120,
    # The module class's resource budget (edge_common.resources.BUDGETS; release_resource_budget
    # in group_vars): checked during the engine gate's benchmark and the health gate's soak.
    "resources": None,
    # Health gate overrides (None: use the release manifest's values)
    "health": {"soak_seconds": None, "interval_seconds": None, "start_timeout_seconds": None},
    # Container releases: the Docker Engine API that loads and runs their images (Docker Engine on
    # a Jetson; podman's service, unix:///run/podman/podman.sock, on a simulated robot).
    "docker_host": "unix:///var/run/docker.sock",
    "systemd": True,  # False only in unit tests
    "config_path": None,  # this file; the unit's boot-time `recover` step is called with it
}


class Config:
    def __init__(self, data: Dict[str, Any]):
        merged = dict(DEFAULTS)
        merged.update({k: v for k, v in data.items() if v is not None})
        health = dict(DEFAULTS["health"])
        health.update(data.get("health") or {})
        merged["health"] = health
        try:
            merged["resources"] = check_budget(merged["resources"]) or None
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        app = merged["app"]
        if not app or "/" in app or app.startswith("."):
            raise UsageError("app name %r is not a plain name" % app)
        merged["root"] = merged["root"] or "/opt/%s" % app
        merged["state_dir"] = merged["state_dir"] or "/var/lib/edge-agent/%s" % app
        merged["service"] = merged["service"] or "%s.service" % app
        merged["mission_lock_file"] = merged["mission_lock_file"] or "/run/%s/mission-lock.json" % app
        merged["python"] = merged["python"] or sys.executable
        self.data = merged

    def __getattr__(self, name: str) -> Any:
        try:
            return self.data[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    # ----- layout: /opt/<app>/{releases/<tag>, current, shared/{config,data,logs,engines}, snapshots}
    # (shared/engines holds active.json, the engines in use; the engines live in engine_store)
    @property
    def releases_dir(self) -> str:
        return os.path.join(self.root, "releases")

    @property
    def current_link(self) -> str:
        return os.path.join(self.root, "current")

    @property
    def shared_dir(self) -> str:
        return os.path.join(self.root, "shared")

    @property
    def engines_dir(self) -> str:
        return os.path.join(self.shared_dir, "engines")

    @property
    def active_engines(self) -> str:
        return os.path.join(self.engines_dir, "active.json")

    @property
    def config_dir(self) -> str:
        return os.path.join(self.shared_dir, "config")

    @property
    def snapshots_dir(self) -> str:
        return os.path.join(self.root, "snapshots")

    @property
    def state_file(self) -> str:
        return os.path.join(self.root, "state.json")

    @property
    def lock_file(self) -> str:
        return os.path.join(self.state_dir, "agent.lock")

    @property
    def tuf_dir(self) -> str:
        return os.path.join(self.state_dir, "tuf")

    @property
    def dropin_path(self) -> str:
        return os.path.join(self.systemd_dir, self.service + ".d", "50-release.conf")


def load(path: Optional[str], overrides: Optional[Dict[str, Any]] = None) -> Config:
    data: Dict[str, Any] = {}
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise UsageError("cannot read agent config %s: %s" % (path, exc)) from exc
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if path:
        data.setdefault("config_path", os.path.abspath(path))
    return Config(data)
