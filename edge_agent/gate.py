"""The health gate after a switch: the service comes up and stays healthy through its soak
(edge_agent/health.py), and the engines it loads are still the files their engine gate passed
(engine_builder's gate ran when they were built or first used for this release's golden set)."""

from __future__ import annotations

import os
from typing import Any, Dict

from edge_agent import engines as engines_mod
from edge_agent import health as health_mod
from edge_agent.layout import EDGE_DIR, Layout
from edge_common.fsutil import read_json


class GateStep(Layout):
    def gate(self, tag: str, golden: bool = True) -> Dict[str, Any]:
        manifest = self.manifest(tag)
        conf = health_mod.settings(manifest.get("health") or {}, self.cfg.health)
        result: Dict[str, Any] = {"settings": conf}
        if not self.cfg.systemd:
            result.update(passed=True, service={"passed": True, "skipped": "systemd disabled"})
            return result
        service = health_mod.service_gate(
            self.systemd,
            self.cfg.service,
            manifest.get("health") or {},
            self.release_dir(tag),
            conf,
            self.sleep,
            self.cfg.resources,
        )
        result["service"] = service
        if not service["passed"]:
            result.update(passed=False, reason=service["reason"])
            return result
        if golden:
            refs = read_json(os.path.join(self.release_dir(tag), EDGE_DIR, "engines.json"), {}) or {}
            problem = engines_mod.verify(refs)
            result["engines"] = {
                "passed": problem is None,
                "reason": problem,
                "checked": {name: ref.get("fingerprint") for name, ref in sorted(refs.items())},
            }
            if problem:
                result.update(passed=False, reason=problem)
                return result
        result["passed"] = True
        return result
