"""Pull mode (the OTA timer): the newest signed release this robot can take, staged, then
activated when the mission lock allows."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

from edge_agent import mission, tufclient
from edge_agent.errors import AgentError, Busy, Refused, UsageError
from edge_agent.stage import StageStep
from edge_agent.switch import SwitchStep
from edge_agent.tags import TAG_RE
from edge_common.fsutil import write_json
from edge_common.versions import version_key


class PullStep(StageStep, SwitchStep):
    def mission_lock(self) -> Optional[str]:
        """None when the robot app's mission lock lets an update start; else why not."""
        return mission.check(self.cfg.mission_lock_file, self.cfg.min_battery, self.cfg.require_docked)

    def pull(self, repo: Optional[str], dry_run: bool = False) -> Dict[str, Any]:
        """Take the newest signed release that is newer than the current one, not marked bad and
        accepted by this robot: stage it (kept releases' files are reused, not downloaded), then,
        when the mission lock allows, activate it behind the health gate. A release that fails
        its gate is rolled back and marked bad, so the next pull does not take it again.
        Each pull's outcome is kept in the state (`status` shows it as `pull`)."""
        try:
            result = self._pull(repo, dry_run)
        except Busy:
            raise  # another run holds the lock: it records its own outcome
        except AgentError as exc:
            self._note_pull(exc.kind, exc.details.get("tag"), exc.message)
            raise
        if not dry_run:
            if result.get("deferred"):
                self._note_pull("deferred", result["tag"], result["deferred"])
            elif result.get("activate"):
                self._note_pull("updated", result["tag"], "from %s" % (result["activate"].get("from") or "-"))
            else:
                self._note_pull("up to date", result.get("current"), result["reason"])
        return result

    def _note_pull(self, outcome: str, tag: Optional[str], message: str) -> None:
        with self._lock():
            state = self.state()
            state["pull"] = {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "result": outcome,
                "tag": tag,
                "message": message,
            }
            write_json(self.cfg.state_file, state)

    def _pull(self, repo: Optional[str], dry_run: bool) -> Dict[str, Any]:
        repo = repo or self.cfg.repository_url
        if not repo:
            raise UsageError("no repository to pull from: set repository_url in the agent config")
        self._ensure_layout()
        self._trust_repository_ca()
        with self._lock():
            tags = tufclient.signed_tags(self.cfg.tuf_dir, repo, self.cfg.app)
            current = self.current_tag()
            bad = self.state().get("bad") or {}
        newer = sorted(
            (t for t in tags if TAG_RE.match(t) and (not current or version_key(t) > version_key(current))),
            key=version_key,
            reverse=True,
        )
        skipped: Dict[str, str] = {}
        for tag in newer:
            if tag in bad:
                skipped[tag] = "marked bad: %s" % bad[tag]
                continue
            if dry_run:
                return {"changed": True, "dry_run": True, "tag": tag, "current": current, "skipped": skipped}
            try:
                staged = self.stage(repo, tag)
            except Refused as exc:
                skipped[tag] = exc.message
                continue
            locked_by = self.mission_lock()
            if locked_by:
                self.log("%s staged; the mission lock defers its activation: %s" % (tag, locked_by))
                return {
                    "changed": staged["changed"],
                    "tag": tag,
                    "current": current,
                    "deferred": locked_by,
                    "stage": staged,
                    "skipped": skipped,
                }
            activated = self.activate(tag)
            return {
                "changed": True,
                "tag": tag,
                "current": self.current_tag(),
                "stage": staged,
                "activate": activated,
                "skipped": skipped,
            }
        newest = max(tags, key=version_key) if tags else None
        reason = (
            "up to date: %s is the newest signed release" % current
            if current and current == newest
            else "no newer release this robot can take"
        )
        return {"changed": False, "current": current, "reason": reason, "skipped": skipped}
