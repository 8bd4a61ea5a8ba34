"""What the robot runs (status) and how the service starts it (exec_app, the unit's ExecStart)."""

from __future__ import annotations

import os
from typing import Any, Dict

from edge_agent import tufclient
from edge_agent.errors import AgentError
from edge_agent.layout import EDGE_DIR, Layout
from edge_common.fsutil import read_json


class StatusStep(Layout):
    # ------------------------------------------------------------------ status
    def status(self) -> Dict[str, Any]:
        state = self.state()
        releases = []
        for tag in self.kept():
            staged = read_json(os.path.join(self.release_dir(tag), EDGE_DIR, "staged.json"), {}) or {}
            releases.append(
                {
                    "tag": tag,
                    "version": staged.get("version"),
                    "staged_at": staged.get("staged_at"),
                    "snapshot": os.path.isdir(os.path.join(self.cfg.snapshots_dir, tag)),
                }
            )
        service = self.systemd.show(self.cfg.service) if self.cfg.systemd else {}
        engines = (read_json(self.cfg.active_engines, {}) or {}).get("engines", {})
        return {
            "app": self.cfg.app,
            "root": self.cfg.root,
            "current": self.current_tag(),
            "previous": state.get("previous"),
            "releases": releases,
            "bad": state.get("bad") or {},
            "last": state.get("last"),
            "pull": state.get("pull"),
            "pending": state.get("pending"),
            "service": service,
            "engines": {
                name: {k: ref.get(k) for k in ("backend", "precision", "fingerprint", "sha256")}
                for name, ref in engines.items()
            },
        }

    # ------------------------------------------------------------------ the service's ExecStart
    def exec_app(self) -> None:
        """Replace this process with the current release's entry command (same PID: sd_notify works)."""
        release = os.path.realpath(self.cfg.current_link)
        manifest = read_json(os.path.join(release, tufclient.MANIFEST))
        if not manifest:
            raise AgentError("no current release under %s" % self.cfg.root)
        argv = [
            str(a).replace("{python}", self.cfg.python).replace("{release}", release)
            for a in manifest["entry"]
        ]
        env = dict(os.environ)
        env.update(
            {
                "EDGE_APP": self.cfg.app,
                "EDGE_APP_ROOT": self.cfg.root,
                "EDGE_RELEASE_DIR": release,
                "EDGE_SHARED_DIR": self.cfg.shared_dir,
                "EDGE_CONFIG_DIR": self.cfg.config_dir,
                "EDGE_DATA_DIR": os.path.join(self.cfg.shared_dir, "data"),
                "EDGE_LOG_DIR": os.path.join(self.cfg.shared_dir, "logs"),
                "EDGE_ENGINES": self.cfg.active_engines,
                "PYTHONPATH": os.pathsep.join(p for p in (self._pythonpath, env.get("PYTHONPATH")) if p),
            }
        )
        os.chdir(release)
        os.execvpe(argv[0], argv, env)
