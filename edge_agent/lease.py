"""Rollout leases: one rollout at a time on a robot.

A push rollout (deploy.yml, from any controller or AWX job) holds a lease on every robot it targets,
kept on the robot (default /var/lib/edge-deploy/lease.json):

    {"owner": "alice@ctl-1", "run": "7f3a", "release": "v1.1.0",
     "acquired": 1764265200.0, "expires": 1764267000.0, "expires_at": "2025-11-27T18:40:00Z", ...}

Every read-modify-write happens under an exclusive flock on a lock file beside it (`lease.json.lock`;
the lease itself is replaced by a rename, so it cannot carry the lock), and the new lease is written
atomically (temp file, fsync, rename). Two controllers racing for one robot therefore cannot both
win: the second one to get the flock sees the first one's lease.

A lease is live until its expiry, on the robot's own clock (the clock that writes it is the clock
that reads it). The holder renews it during its waves (acquiring it again) and releases it at the end
of its rollout, failed or not; a holder that died stops renewing, and its lease expires: the next
rollout takes it over. Releasing someone else's lease takes `--force` (the operator's way out of a
long expiry).

The pull agent (the OTA timer) asks the same file before it starts (`refuse_while_held`): it does
not switch a robot that a push rollout holds.

Standard library only: the rollout role runs this from the controller's own agent zip before the
release agent is installed on the robot (`edge-agent lease` needs no agent config).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Dict, Iterator, Optional

from edge_agent.errors import EXIT_BUSY, AgentError, UsageError
from edge_common.fsutil import LockTimeout, locked, read_json, write_json

DEFAULT_FILE = "/var/lib/edge-deploy/lease.json"
# The flock is held for a read and a small write only: a longer wait means a stuck process.
LOCK_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 1.0


class LeaseHeld(AgentError):
    """Another run holds the robot's lease (or took it from this run)."""

    exit_code = EXIT_BUSY
    kind = "leased"


def describe(lease: Dict[str, Any], now: Optional[float] = None) -> str:
    """`rollout of v1.1.0 by alice@ctl-1 (run 7f3a), expires 18:40:00 UTC (in 412 s)`."""
    now = time.time() if now is None else now
    expires = float(lease.get("expires") or 0)
    left = expires - now
    when = "expires" if left > 0 else "expired"
    return "rollout of %s by %s (run %s), %s %s UTC (%s)" % (
        lease.get("release") or "?",
        lease.get("owner") or "?",
        lease.get("run") or "?",
        when,
        time.strftime("%H:%M:%S", time.gmtime(expires)),
        "in %d s" % round(left) if left > 0 else "%d s ago" % round(-left),
    )


def read(path: str) -> Optional[Dict[str, Any]]:
    """The lease in `path`, live or not; None when there is none.

    Leases are written atomically, so a file that does not parse was damaged by hand or by the disk:
    it protects nothing, and the next holder replaces it."""
    try:
        lease = read_json(path)
    except (OSError, ValueError):
        return None
    return lease if isinstance(lease, dict) and "run" in lease else None


def is_live(lease: Optional[Dict[str, Any]], now: float) -> bool:
    return lease is not None and float(lease.get("expires") or 0) > now


def holder(path: str, now: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """The live lease in `path`, or None when the robot is free."""
    lease = read(path)
    return lease if is_live(lease, time.time() if now is None else now) else None


def refuse_while_held(cfg: Any) -> None:
    """For the pull agent: raise LeaseHeld while a push rollout holds this robot.

    The file is the agent config's `lease_file` when it names one, else DEFAULT_FILE."""
    path = cfg.data.get("lease_file") or DEFAULT_FILE
    live = holder(path)
    if live:
        raise LeaseHeld(
            "held by %s: no pull while a push rollout holds the robot" % describe(live),
            {"holder": live, "file": path},
        )


class Leases:
    """Acquire, renew and release the lease in one file (clock and sleep injectable for tests)."""

    def __init__(
        self,
        path: str = DEFAULT_FILE,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.path = path
        self.clock = clock
        self.sleep = sleep

    @contextlib.contextmanager
    def _compare(self) -> Iterator[Optional[Dict[str, Any]]]:
        """The lease as it is, under the flock: whatever the caller writes before leaving is the
        compare-and-set's outcome."""
        try:
            with locked(self.path + ".lock", LOCK_TIMEOUT_SECONDS):
                yield read(self.path)
        except LockTimeout as exc:
            raise LeaseHeld(
                "the lease lock %s.lock stayed taken for %d s" % (self.path, LOCK_TIMEOUT_SECONDS)
            ) from exc

    def _write(
        self, owner: str, run: str, release: str, ttl: float, now: float, acquired: Optional[float] = None
    ) -> Dict[str, Any]:
        expires = now + ttl
        lease = {
            "owner": owner,
            "run": run,
            "release": release,
            "acquired": now if acquired is None else acquired,
            "renewed": now,
            "expires": expires,
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
        }
        write_json(self.path, lease)
        return lease

    def acquire(self, owner: str, run: str, release: str, ttl: float, wait: float = 0.0) -> Dict[str, Any]:
        """Take the lease for `run` when it is free, expired or already this run's. While another
        run holds it, ask again every second for `wait` seconds, then raise LeaseHeld naming it.

        The holder renews its lease the same way (its run takes it again, with a new expiry). A
        lease it lost is taken back only while nobody else holds it: whoever took it in between
        has released it, so no other rollout is under way on the robot."""
        if not run or not owner or ttl <= 0:
            raise UsageError("a lease needs an owner, a run id and a positive ttl")
        started = self.clock()
        while True:
            with self._compare() as current:
                now = self.clock()
                if not is_live(current, now) or current["run"] == run:
                    mine = current is not None and current["run"] == run
                    lease = self._write(
                        owner, run, release, ttl, now, current.get("acquired") if mine else None
                    )
                    result = {
                        "changed": True,
                        "lease": lease,
                        "file": self.path,
                        "waited_s": round(now - started, 1),
                    }
                    if current is not None and not mine:
                        result["took_over"] = describe(current, now)  # a dead holder's lease
                    return result
            waited = now - started
            if waited >= wait:
                raise LeaseHeld(
                    "held by %s%s"
                    % (describe(current, now), "; waited %d s" % round(waited) if wait > 0 else ""),
                    {"holder": current, "file": self.path, "waited_s": round(waited, 1)},
                )
            self.sleep(min(POLL_SECONDS, wait - waited))

    def release(self, run: Optional[str], force: bool = False) -> Dict[str, Any]:
        """Remove the lease when it is this run's (or, with `force`, whoever's). Another run's lease
        is left alone, and that is no error: the holder's always step must not fail."""
        with self._compare() as current:
            if current is None and not os.path.exists(self.path):
                return {"changed": False, "file": self.path, "note": "no lease"}
            if current is not None and current["run"] != run and not force:
                return {
                    "changed": False,
                    "file": self.path,
                    "note": "held by %s: left as it is" % describe(current, self.clock()),
                }
            os.unlink(self.path)  # this run's lease, or a damaged file that protects nothing
            return {"changed": True, "file": self.path, "released": current}

    def show(self) -> Dict[str, Any]:
        current = read(self.path)
        now = self.clock()
        return {
            "changed": False,
            "file": self.path,
            "lease": current,
            "live": is_live(current, now),
            "holder": describe(current, now) if current else None,
        }


def command(args: Any) -> Dict[str, Any]:
    """`edge-agent lease show|acquire|release` (see edge_agent/cli.py)."""
    leases = Leases(args.file or DEFAULT_FILE)
    if args.action == "show":
        return leases.show()
    if args.action == "release":
        if not args.run and not args.force:
            raise UsageError("lease release needs --run (the holder's run id) or --force")
        return leases.release(args.run, args.force)
    if not args.run or not args.owner or not args.release:
        raise UsageError("lease acquire needs --owner, --run and --release")
    return leases.acquire(args.owner, args.run, args.release, args.ttl, args.wait)
