"""verify / stage / activate / rollback / status: the one on-robot code path for push and pull.

Layout under /opt/<app>:
    releases/<tag>/            the verified bundle, plus .edge/{staged.json, engines.json}
    current -> releases/<tag>  swapped atomically (one rename)
    shared/{config,data,logs,engines}   kept across releases; engines is the fingerprint cache
    snapshots/<tag>/           what was outside releases/<tag> while <tag> was live, with checksums
    state.json                 current, previous, bad tags, history

`Agent` is a thin facade: one mixin per step of the pipeline, each in its own module (the way
ansistrano keeps one task file per step), each importing only the steps it calls:

    tags           TAG_RE, check_tag
    layout         Layout: paths, state.json, the run lock, kept releases, prune
    compatibility  CompatibilityCheck(Layout): the manifest's version and JetPack/module ranges
    stage          StageStep(CompatibilityCheck): verify, seed, stage, leftovers, engines
    snapshots      SnapshotStep(Layout): take, check and restore the outside state
    gate           GateStep(Layout): the health gate (edge_agent/health.py)
    switch         SwitchStep(SnapshotStep, GateStep): activate, rollback, recover, on_failure
    pull           PullStep(StageStep, SwitchStep): the OTA timer's pull
    status         StatusStep(Layout): status, exec_app (the service's ExecStart)

Why mixins rather than functions taking the agent: the steps call each other through `self`
(`_move` calls `self.gate`, `_pull` calls `self.stage` and `self.activate`), so a test or a caller
that replaces a method on one Agent (`monkeypatch.setattr(agent, "gate", ...)`) changes every step
that uses it, exactly as before the split, and the code of each step reads as it did in one class.
The inheritance says which step uses which; no step module imports this facade, so there are no
import cycles (`make lint` checks that).
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from edge_agent.config import Config
from edge_agent.pull import PullStep
from edge_agent.status import StatusStep
from edge_agent.systemd import Systemd
from edge_agent.tags import TAG_RE, check_tag

__all__ = ["TAG_RE", "Agent", "check_tag"]


class Agent(PullStep, StatusStep):
    def __init__(
        self,
        cfg: Config,
        systemd: Optional[Systemd] = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda _m: None,
    ):
        self.cfg = cfg
        self.systemd = systemd or Systemd()
        self.sleep = sleep
        self.log = log
