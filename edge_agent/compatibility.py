"""May this robot take a verified release? Its version against the installed one, and the
manifest's compatibility contract against the robot's saved identity (edge_common.compat)."""

from __future__ import annotations

import socket
from typing import Any, Dict

from edge_agent.errors import Refused, UsageError
from edge_agent.layout import Layout
from edge_common import compat
from edge_common.versions import version_key

JETSON_FACT = compat.JETSON_FACT  # written by the jetson_facts role


class CompatibilityCheck(Layout):
    def _check_version(self, manifest: Dict[str, Any], allow_downgrade: bool) -> None:
        current = self.current_tag()
        if not current or current == manifest["tag"] or allow_downgrade:
            return
        try:
            installed = self.manifest(current).get("version", current)
        except UsageError:
            return
        if version_key(manifest["version"]) < version_key(installed):
            raise Refused(
                "release %s (version %s) is older than the installed %s (version %s); use rollback, "
                "or stage with --allow-downgrade"
                % (manifest["tag"], manifest["version"], current, installed),
                {"installed": installed, "offered": manifest["version"]},
            )

    def _check_compatible(self, manifest: Dict[str, Any]) -> None:
        """The release's contract against this robot's saved identity: edge_common.compat, the rule
        the rollout's refusal before staging uses too. It fails closed (no facts, no release)."""
        try:
            why = compat.refusal(
                compat.read_robot(JETSON_FACT),
                manifest.get("compatible"),
                "%s %s" % (manifest.get("name") or self.cfg.app, manifest["tag"]),
                socket.gethostname(),
            )
        except ValueError as exc:
            raise Refused(
                "release %s has a malformed compatibility contract: %s" % (manifest["tag"], exc)
            ) from exc
        if why:
            raise Refused(why, {"compatible": manifest.get("compatible")})
