"""Switch the live release: activate, rollback, recover after an interrupted move, roll back
after a crash loop (on_failure). A move snapshots the outside state, applies the new release's
(or restores its snapshot), swaps `current`, restarts and runs the health gate."""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, Optional

from edge_agent import containers
from edge_agent.errors import AgentError, Busy, Refused, RolledBack, UsageError
from edge_agent.gate import GateStep
from edge_agent.layout import EDGE_DIR
from edge_agent.snapshots import SnapshotStep
from edge_agent.tags import check_tag
from edge_common.fsutil import atomic_symlink, atomic_write, read_json, tree_files, write_json

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A release whose activation was cut short this many times is marked bad: something on the robot
# (memory, a watchdog of its own) kills every try, and pull mode would otherwise retry it forever.
INTERRUPTIONS_BEFORE_BAD = 3


class SwitchStep(SnapshotStep, GateStep):
    # ------------------------------------------------------------------ applying a release's outside state
    def _dropin(self, tag: str, manifest: Dict[str, Any]) -> str:
        lines = [
            "# Written by the edge release agent for %s %s; restored from snapshots on rollback."
            % (self.cfg.app, tag),
            "[Service]",
        ]
        env = {"EDGE_RELEASE": tag, "EDGE_RELEASE_VERSION": str(manifest.get("version", ""))}
        env.update({str(k): str(v) for k, v in (manifest.get("environment") or {}).items()})
        for key, value in sorted(env.items()):
            if not ENV_KEY_RE.match(key) or "\n" in value:
                raise Refused("release %s sets an unusable environment variable %r" % (tag, key))
            quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
            lines.append('Environment="%s=%s"' % (key, quoted))
        if manifest.get("watchdog_seconds"):
            lines.append("WatchdogSec=%s" % float(manifest["watchdog_seconds"]))
        group = containers.socket_group(self.cfg.docker_host) if containers.is_container(manifest) else None
        if group:  # the app's user reaches the engine's socket through its group (docker on a Jetson)
            lines.append("SupplementaryGroups=%s" % group)
        if self.cfg.agent_path and self.cfg.config_path:
            # Before every start (boot included), as root: a switch that a power loss or crash
            # interrupted is finished first, so the app never starts a release that did not pass
            # its gate. It returns at once when nothing is pending or an agent run is under way.
            lines.append(
                "ExecStartPre=+%s %s --config %s --json recover"
                % (self.cfg.python, self.cfg.agent_path, self.cfg.config_path)
            )
        return "\n".join(lines) + "\n"

    def _apply_release(self, tag: str) -> None:
        manifest = self.manifest(tag)
        release = self.release_dir(tag)
        atomic_write(self.cfg.dropin_path, self._dropin(tag, manifest).encode("utf-8"), 0o644)
        refs = read_json(os.path.join(release, EDGE_DIR, "engines.json"), {}) or {}
        write_json(self.cfg.active_engines, {"release": tag, "engines": refs})
        shipped = os.path.join(release, "config")
        if os.path.isdir(shipped):  # overlay: robot-local files the release does not ship are kept
            for rel in tree_files(shipped):
                with open(os.path.join(shipped, rel), "rb") as fh:
                    atomic_write(os.path.join(self.cfg.config_dir, rel), fh.read(), 0o644)

    def _switch(self, tag: str, restore: bool) -> str:
        """Outside state + symlink to `tag`; returns how the outside state was produced."""
        record = self._snapshot_ok(tag) if restore else None
        if record is not None:
            self._restore_snapshot(tag, record)
            how = "snapshot"
        else:
            self._apply_release(tag)
            how = "release"
        if self.cfg.systemd:
            self.systemd.daemon_reload()
        atomic_symlink(os.path.join("releases", tag), self.cfg.current_link)
        return how

    def _restart(self) -> None:
        if self.cfg.systemd:
            if not self.systemd.is_enabled(self.cfg.service):
                self.systemd.enable([self.cfg.service])
            self.systemd.restart(self.cfg.service)

    # ------------------------------------------------------------------ activate / rollback
    def activate(self, tag: str, gate: bool = True, dry_run: bool = False) -> Dict[str, Any]:
        check_tag(tag)
        if not self.is_staged(tag):
            raise UsageError("release %s is not staged on this robot: stage it first" % tag)
        with self._lock():
            current = self.current_tag()
            if not dry_run:
                self._recover_locked(restart=True)
            current = self.current_tag()
            if current == tag:
                return {"changed": False, "tag": tag, "current": tag}
            if dry_run:
                return {"changed": True, "tag": tag, "current": current, "dry_run": True}
            return self._move(current, tag, restore=False, gate=gate, op="activate")

    def rollback(
        self, tag: Optional[str] = None, gate: bool = True, dry_run: bool = False, reason: str = "requested"
    ) -> Dict[str, Any]:
        with self._lock():
            return self._rollback_locked(tag, gate, dry_run, reason)

    def _rollback_locked(self, tag: Optional[str], gate: bool, dry_run: bool, reason: str) -> Dict[str, Any]:
        if not dry_run:
            self._recover_locked(restart=True)
        state = self.state()
        current = self.current_tag()
        target = tag or state.get("previous")
        if not target:
            raise UsageError("no previous release to roll back to (current: %s)" % current)
        if not self.is_staged(target):
            raise UsageError(
                "release %s is not kept on this robot (kept: %s)" % (target, ", ".join(self.kept()) or "none")
            )
        if target == current:
            return {"changed": False, "tag": target, "current": current}
        if dry_run:
            return {"changed": True, "tag": target, "current": current, "dry_run": True}
        return self._move(current, target, restore=True, gate=gate, op="rollback", reason=reason)

    def _move(
        self,
        current: Optional[str],
        tag: str,
        restore: bool,
        gate: bool,
        op: str,
        reason: Optional[str] = None,
    ) -> Dict[str, Any]:
        state = self.state()
        started = time.monotonic()
        if current:
            self.snapshot(current)
        # Until the gate has spoken, the move is pending: `recover` finishes it after a crash.
        state["pending"] = {
            "op": op,
            "from": current,
            "to": tag,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(self.cfg.state_file, state)
        how = self._switch(tag, restore)
        self._restart()
        verdict = self.gate(tag) if gate else {"passed": True, "skipped": True}
        result: Dict[str, Any] = {
            "changed": True,
            "op": op,
            "tag": tag,
            "from": current,
            "outside_state": how,
            "health": verdict,
        }
        state.pop("pending", None)
        if verdict["passed"]:
            state.update(current=tag, previous=current if current != tag else state.get("previous"))
            (state.setdefault("bad", {})).pop(tag, None)
            (state.setdefault("interrupted", {})).pop(tag, None)
            result["pruned"] = self._prune(tag, state.get("previous"))
            result["seconds"] = round(time.monotonic() - started, 2)
            self._record(state, op, **{"from": current, "to": tag, "result": "ok", "reason": reason})
            return result
        # The gate failed: back to where we were, on the robot, with no controller needed.
        state.setdefault("bad", {})[tag] = verdict.get("reason")
        if not current:
            if self.cfg.systemd:
                self.systemd.stop(self.cfg.service)
            self._record(
                state, op, **{"from": None, "to": tag, "result": "failed", "reason": verdict.get("reason")}
            )
            raise AgentError(
                "release %s failed its health gate and there is no previous release: the "
                "service is stopped: %s" % (tag, verdict.get("reason")),
                result,
            )
        self._switch(current, restore=True)
        self._restart()
        back = self.gate(current, golden=False)
        result["rolled_back_to"] = current
        result["rollback_health"] = back
        result["seconds"] = round(time.monotonic() - started, 2)
        state.update(current=current)
        self._record(
            state,
            op,
            **{"from": current, "to": tag, "result": "rolled_back", "reason": verdict.get("reason")},
        )
        raise RolledBack(
            "release %s failed its health gate (%s); rolled back to %s%s"
            % (
                tag,
                verdict.get("reason"),
                current,
                "" if back["passed"] else ", which is not healthy either: %s" % back.get("reason"),
            ),
            result,
        )

    def recover(self, restart: bool = False) -> Dict[str, Any]:
        """Finish nothing, undo an interrupted move: put the robot back on its last gated release.

        Runs before the app starts (ExecStartPre=+ in the release drop-in, boot included), and from
        <app>-recover.timer while the robot stays up (`restart`: the app is running, so it is
        restarted on the release it goes back to). A move (activate or rollback) that a power loss,
        a killed container or a killed agent cut short leaves the robot between two releases: the
        symlink or the outside state may already point at a release whose health gate never
        passed. Put the robot back on the release that last passed it (the `from` of an
        activation, the target of a rollback). Returns at once when another agent run holds the
        lock: that run is alive, owns the switch and restarts the app itself; the run lock is an
        flock, so an agent that was killed holds nothing.
        """
        try:
            with self._lock(0):
                return self._recover_locked(restart=restart)
        except Busy:
            return {"changed": False, "reason": "an agent run is under way"}

    def _recover_locked(self, restart: bool) -> Dict[str, Any]:
        state = self.state()
        pending = state.get("pending")
        if not pending:
            return {"changed": False}
        current = self.current_tag()
        good = pending.get("from") if pending.get("op") == "activate" else pending.get("to")
        interrupted = pending.get("to") if pending.get("op") == "activate" else pending.get("from")
        why = "%s of %s interrupted before its health gate passed (the robot or the agent stopped)" % (
            pending.get("op"),
            pending.get("to"),
        )
        if not good or not self.is_staged(good):
            # A first install has nothing to go back to: keep what is there, say so.
            state.pop("pending", None)
            state["current"] = current
            self._record(
                state, "recover", **{"from": current, "to": current, "result": "kept", "reason": why}
            )
            return {"changed": False, "tag": current, "reason": why}
        how = self._switch(good, restore=True)
        state.pop("pending", None)
        retry = None
        if interrupted and interrupted != good:
            # Its gate never ran, so it is not bad: the next deploy or pull may try it again. Only a
            # release that is interrupted again and again is given up on.
            tries = state.setdefault("interrupted", {})
            tries[interrupted] = int(tries.get(interrupted) or 0) + 1
            if tries[interrupted] >= INTERRUPTIONS_BEFORE_BAD:
                state.setdefault("bad", {})[interrupted] = "%s (%d times)" % (why, tries[interrupted])
                retry = "given up after %d interrupted tries" % tries[interrupted]
            else:
                retry = "may be tried again"
            why = "%s; %s %s" % (why, interrupted, retry)
        state["current"] = good
        if state.get("previous") == good:
            state["previous"] = None
        fields = {"from": current, "to": good, "result": "ok", "reason": why, "pending": pending}
        self._record(state, "recover", **fields)
        if restart:
            self._restart()
        self.log("recovered: %s; back on %s" % (why, good))
        return {
            "changed": True,
            "tag": good,
            "from": current,
            "outside_state": how,
            "pending": pending,
            "reason": why,
            "interrupted": interrupted if interrupted != good else None,
            "retry": retry,
        }

    def on_failure(self) -> Dict[str, Any]:
        """Run by <app>-rollback.service (OnFailure= of the app unit): a crash loop after activation."""
        with self._lock():
            current = self.current_tag()
            state = self.state()
            service = self.systemd.show(self.cfg.service) if self.cfg.systemd else {}
            if service.get("ActiveState") in ("active", "activating", "reloading"):
                return {
                    "changed": False,
                    "reason": "%s is %s again" % (self.cfg.service, service["ActiveState"]),
                }
            previous = state.get("previous")
            if not previous or previous == current or not self.is_staged(previous):
                self._record(
                    state, "on-failure", **{"from": current, "to": None, "result": "no previous release"}
                )
                return {"changed": False, "reason": "no previous release to go back to", "service": service}
            why = "crash loop (%s)" % (service.get("Result") or "failed")
            state.setdefault("bad", {})[current] = why
            write_json(self.cfg.state_file, state)
            result = self._rollback_locked(previous, gate=True, dry_run=False, reason=why)
            state = self.state()
            state["previous"] = None  # the failed release is not a place to go back to
            write_json(self.cfg.state_file, state)
            return result
