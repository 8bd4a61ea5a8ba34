"""The app's folder on the robot: paths, state.json, the run lock, kept releases and pruning.

`Layout` is the base of every step mixin (see edge_agent/agent.py): it holds what the facade sets
in its constructor (`cfg`, `systemd`, `sleep`, `log`) and the helpers every step shares.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Dict, List, Optional

from edge_agent import containers, tufclient
from edge_agent import engines as engines_mod
from edge_agent.config import Config
from edge_agent.errors import Busy, UsageError
from edge_agent.systemd import Systemd
from edge_agent.tags import TAG_RE, check_tag
from edge_common.fsutil import LockTimeout, locked, read_json, remove_tree, write_json

EDGE_DIR = ".edge"
HISTORY_KEEP = 30


class Layout:
    cfg: Config
    systemd: Systemd
    sleep: Callable[[float], None]
    log: Callable[[str], None]

    def release_dir(self, tag: str) -> str:
        return os.path.join(self.cfg.releases_dir, check_tag(tag))

    def current_tag(self) -> Optional[str]:
        try:
            return os.path.basename(os.readlink(self.cfg.current_link).rstrip("/"))
        except OSError:
            return None

    def is_staged(self, tag: str) -> bool:
        return os.path.isfile(os.path.join(self.release_dir(tag), EDGE_DIR, "staged.json"))

    def manifest(self, tag: str) -> Dict[str, Any]:
        data = read_json(os.path.join(self.release_dir(tag), tufclient.MANIFEST))
        if data is None:
            raise UsageError("release %s is not staged on this robot" % tag)
        return data

    def state(self) -> Dict[str, Any]:
        return read_json(self.cfg.state_file, {}) or {}

    def _record(self, state: Dict[str, Any], op: str, **fields: Any) -> None:
        entry = dict(fields, op=op, at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        state["history"] = [*(state.get("history") or [])[-(HISTORY_KEEP - 1) :], entry]
        state["last"] = entry
        write_json(self.cfg.state_file, state)

    @contextlib.contextmanager
    def _lock(self, timeout: Optional[float] = None):
        """One agent run at a time per app (push, pull timer and OnFailure share the lock)."""
        path = self.cfg.lock_file
        try:
            with locked(path, self.cfg.lock_timeout_seconds if timeout is None else timeout):
                yield
        except LockTimeout as exc:
            raise Busy("another release agent run holds %s" % path) from exc

    def _ensure_layout(self) -> None:
        for path in (
            self.cfg.releases_dir,
            self.cfg.snapshots_dir,
            self.cfg.engines_dir,
            self.cfg.config_dir,
        ):
            os.makedirs(path, exist_ok=True)

    @property
    def _pythonpath(self) -> str:
        if self.cfg.agent_path:
            return self.cfg.agent_path
        return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    # ------------------------------------------------------------------ keep N releases
    def kept(self) -> List[str]:
        if not os.path.isdir(self.cfg.releases_dir):
            return []
        tags = [
            name
            for name in os.listdir(self.cfg.releases_dir)
            if not name.startswith(".") and TAG_RE.match(name) and self.is_staged(name)
        ]
        return sorted(
            tags,
            key=lambda t: (
                read_json(os.path.join(self.release_dir(t), EDGE_DIR, "staged.json"), {}) or {}
            ).get("staged_at", ""),
        )

    def _prune(self, current: str, previous: Optional[str]) -> List[str]:
        kept = self.kept()
        keep = max(2, int(self.cfg.keep_releases))
        protected = {current, previous}
        removable = [t for t in kept if t not in protected]
        excess = len(kept) - keep
        pruned = []
        images = False  # a pruned container release leaves its image to remove
        for tag in removable[: max(0, excess)]:
            images = images or containers.is_container(self.manifest(tag))
            remove_tree(self.release_dir(tag))
            remove_tree(os.path.join(self.cfg.snapshots_dir, tag))
            pruned.append(tag)
        if pruned:
            self._prune_engines()
            if images:
                containers.prune(self.cfg.docker_host, self.cfg.app, [t for t in kept if t not in pruned])
        return pruned

    def _kept_engines(self) -> List[Dict[str, Any]]:
        """The engine references of every kept release (.edge/engines.json)."""
        return [
            read_json(os.path.join(self.release_dir(tag), EDGE_DIR, "engines.json"), {}) or {}
            for tag in self.kept()
        ]

    def _prune_engines(self) -> None:
        """Engines are the store's: tell it what the kept releases use, then let it prune."""
        kept = self._kept_engines()
        engines_mod.pin(self.cfg.engine_store, self.cfg.app, kept)
        names = [name for refs in kept for name in refs]
        engines_mod.prune(self.cfg.engine_store, names, self.cfg.keep_releases)
