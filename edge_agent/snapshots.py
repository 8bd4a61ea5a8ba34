"""Snapshots: what was outside releases/<tag> (drop-in, active engines, config) while <tag> was
live, with checksums, so a rollback restores it exactly."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Dict, Optional

from edge_agent import tufclient
from edge_agent.layout import Layout
from edge_agent.tags import check_tag
from edge_common.fsutil import atomic_write, read_json, remove_tree, sha256_file, tree_files, write_json


class SnapshotStep(Layout):
    def _outside_files(self) -> Dict[str, str]:
        """What a release changes outside its folder: snapshot name -> live path."""
        files = {"unit/50-release.conf": self.cfg.dropin_path, "engines/active.json": self.cfg.active_engines}
        for rel in tree_files(self.cfg.config_dir):
            files["config/" + rel] = os.path.join(self.cfg.config_dir, rel)
        return files

    def snapshot(self, tag: str) -> Dict[str, Any]:
        """Record the outside state while `tag` is live, replacing any older snapshot of that tag."""
        target = os.path.join(self.cfg.snapshots_dir, check_tag(tag))
        work = target + ".new"
        remove_tree(work)
        os.makedirs(work)
        checksums: Dict[str, str] = {}
        for name, live in sorted(self._outside_files().items()):
            if os.path.isfile(live):
                dest = os.path.join(work, "files", name)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy2(live, dest)
                checksums[name] = sha256_file(dest)
        unit = os.path.join(self.cfg.systemd_dir, self.cfg.service)
        record = {
            "tag": tag,
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": checksums,
            "unit_sha256": sha256_file(unit) if os.path.isfile(unit) else None,
        }
        write_json(os.path.join(work, "snapshot.json"), record)
        old = target + ".old"
        remove_tree(old)
        if os.path.exists(target):
            os.rename(target, old)
        os.rename(work, target)
        remove_tree(old)
        return record

    def _snapshot_ok(self, tag: str) -> Optional[Dict[str, Any]]:
        base = os.path.join(self.cfg.snapshots_dir, tag)
        record = read_json(os.path.join(base, "snapshot.json"))
        if not record:
            return None
        for name, digest in record["files"].items():
            path = os.path.join(base, "files", name)
            if not os.path.isfile(path) or sha256_file(path) != digest:
                self.log("snapshot of %s is damaged (%s): rebuilding from the release instead" % (tag, name))
                return None
        return record

    def _restore_snapshot(self, tag: str, record: Dict[str, Any]) -> None:
        base = os.path.join(self.cfg.snapshots_dir, tag, "files")
        live = self._outside_files()
        wanted = {name for name in record["files"]}
        for name, path in live.items():  # files the newer release added
            if name not in wanted and os.path.isfile(path):
                os.unlink(path)
        for name in sorted(wanted):
            dest = self._live_path(name)
            with open(os.path.join(base, name), "rb") as fh:
                atomic_write(dest, fh.read(), 0o644)

    def _live_path(self, name: str) -> str:
        kind, _, rel = name.partition("/")
        rel = tufclient.safe_relpath(rel)
        if kind == "unit":
            return self.cfg.dropin_path
        if kind == "engines":
            return self.cfg.active_engines
        return os.path.join(self.cfg.config_dir, rel)
