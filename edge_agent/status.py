"""What the robot runs (status) and how the service starts it (exec_app, the unit's ExecStart)."""

from __future__ import annotations

import os
from typing import Any, Dict

from edge_agent import containers, tufclient
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
        env = {
            "EDGE_APP": self.cfg.app,
            "EDGE_APP_ROOT": self.cfg.root,
            "EDGE_RELEASE": str(manifest.get("tag", "")),
            "EDGE_RELEASE_DIR": release,
            "EDGE_SHARED_DIR": self.cfg.shared_dir,
            "EDGE_CONFIG_DIR": self.cfg.config_dir,
            "EDGE_DATA_DIR": os.path.join(self.cfg.shared_dir, "data"),
            "EDGE_LOG_DIR": os.path.join(self.cfg.shared_dir, "logs"),
            "EDGE_ENGINES": self.cfg.active_engines,
        }
        if containers.is_container(manifest):
            self._exec_container(manifest, release, env)
            return
        argv = [
            str(a).replace("{python}", self.cfg.python).replace("{release}", release)
            for a in manifest["entry"]
        ]
        env = dict(os.environ, **env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self._pythonpath, os.environ.get("PYTHONPATH")) if p)
        os.chdir(release)
        os.execvpe(argv[0], argv, env)

    def _exec_container(self, manifest: Dict[str, Any], release: str, env: Dict[str, str]) -> None:
        """Run the release's container under this process (the unit's main PID) until it stops."""
        env = dict(env, **{str(k): str(v) for k, v in (manifest.get("environment") or {}).items()})
        paths = {
            "release": release,
            "config": self.cfg.config_dir,
            "engines_dir": os.path.dirname(self.cfg.active_engines),
            "engine_store": self.cfg.engine_store,
            "data": env["EDGE_DATA_DIR"],
            "logs": env["EDGE_LOG_DIR"],
        }
        if self.cfg.agent_path:  # engine_builder's runners for the engines built on this robot
            paths["agent"] = self.cfg.agent_path
            env["PYTHONPATH"] = self.cfg.agent_path
        code = containers.Supervisor(self.cfg.docker_host, self.cfg.app, manifest, env, paths).run()
        raise SystemExit(code)
