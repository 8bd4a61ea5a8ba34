"""Pull mode (the OTA timer): the newest signed release this robot can take, staged, then
activated when the mission lock allows.

Outcomes, each kept in the state for `status` (and `edge-deploy status`): updated, up to date,
deferred (mission lock), rolled_back (gate), refused (the repository's metadata or files failed
verification: exit 3, a handled outcome for the unit), unreachable (network, or a download cut,
stalled or longer than signed: the unit fails, the next run tries again from the first byte), clock
(the robot's clock contradicts the signed metadata: exit 7, the unit fails until it is fixed)."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

from edge_agent import clock, lease, mission, tufclient
from edge_agent.errors import AgentError, Busy, Refused, Unverified, UsageError
from edge_agent.stage import StageStep
from edge_agent.switch import SwitchStep
from edge_agent.tags import TAG_RE
from edge_common.fsutil import write_json
from edge_common.versions import version_key


class PullStep(StageStep, SwitchStep):
    def mission_lock(self) -> Optional[str]:
        """None when the robot app's mission lock lets an update start; else why not. A stale
        lock lets it start, and the agent log says so."""
        lock = mission.read(
            self.cfg.mission_lock_file,
            self.cfg.min_battery,
            self.cfg.require_docked,
            self.cfg.mission_lock_max_age_hours,
        )
        if lock.stale:
            self.log(lock.stale)
        return lock.reason

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
                message = "from %s" % (result["activate"].get("from") or "-")
                if result.get("restarted"):
                    message += (
                        "; the last pull's downloads of it had failed (%s), this one started them "
                        "again from the first byte" % result["restarted"]
                    )
                self._note_pull("updated", result["tag"], message)
            elif result.get("declined"):  # newer releases this robot refused (engine gate, contract)
                tag = max(result["declined"], key=version_key)
                self._note_pull("refused", tag, result["declined"][tag])
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
        lease.refuse_while_held(self.cfg)  # a push rollout holds the robot: not now (exit 5, noted)
        self._ensure_layout()
        self._trust_repository_ca()
        # Expiry is checked against this robot's clock: give a time sync service a (bounded) moment.
        synced = None if dry_run else clock.wait_for_sync(self.cfg.time_sync_wait_seconds, self.sleep)
        if synced and synced["waited_seconds"]:
            self.log("waited %g s for the clock: %s" % (synced["waited_seconds"], synced["time_sync"]))
        with self._lock():
            tags = tufclient.signed_tags(self.cfg.tuf_dir, repo, self.cfg.app, tufclient.Limits.of(self.cfg))
            current = self.current_tag()
            state = self.state()
            bad = state.get("bad") or {}
            last = state.get("pull") or {}
        newer = sorted(
            (t for t in tags if TAG_RE.match(t) and (not current or version_key(t) > version_key(current))),
            key=version_key,
            reverse=True,
        )
        skipped: Dict[str, str] = {}
        refused: Dict[str, str] = {}  # failed verification, as opposed to not for this robot
        declined: Dict[str, str] = {}  # verified, but this robot refused it (contract, engine gate)
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
                if isinstance(exc, Unverified):
                    refused[tag] = exc.message
                else:
                    declined[tag] = exc.message
                continue
            except AgentError as exc:  # unreachable, clock, disk full: the pull's outcome, for this tag
                exc.details.setdefault("tag", tag)
                raise
            restarted = (
                last.get("message") if (last.get("result"), last.get("tag")) == ("unreachable", tag) else None
            )
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
                "restarted": restarted,
                "clock": synced,
            }
        if refused:  # nothing taken, and the newest refused: the repository is damaged, say how
            newest_refused = max(refused, key=version_key)
            raise Unverified(refused[newest_refused], {"tag": newest_refused, "skipped": skipped})
        newest = max(tags, key=version_key) if tags else None
        reason = (
            "up to date: %s is the newest signed release" % current
            if current and current == newest
            else "no newer release this robot can take"
        )
        return {
            "changed": False,
            "current": current,
            "reason": reason,
            "skipped": skipped,
            "declined": declined,
            "clock": synced,
        }
