"""May this robot take a verified release? Its version against the installed one, and the
manifest's JetPack and module ranges against the jetson_facts local fact."""

from __future__ import annotations

from typing import Any, Dict

from edge_agent.errors import Refused, UsageError
from edge_agent.layout import Layout
from edge_common.fsutil import read_json
from edge_common.versions import version_key

JETSON_FACT = "/etc/ansible/facts.d/jetson.fact"  # written by the jetson_facts role


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
        """JetPack and module ranges from the manifest, against the jetson_facts local fact."""
        compat = manifest.get("compatible") or {}
        facts = read_json(JETSON_FACT) if compat else None
        if not compat or not facts:
            return
        jetpack = facts.get("jetpack")
        if (
            jetpack
            and compat.get("jetpack_min")
            and version_key(jetpack) < version_key(compat["jetpack_min"])
        ):
            raise Refused(
                "release %s needs JetPack >= %s; this robot runs %s"
                % (manifest["tag"], compat["jetpack_min"], jetpack)
            )
        if (
            jetpack
            and compat.get("jetpack_max")
            and version_key(jetpack) > version_key(compat["jetpack_max"])
        ):
            raise Refused(
                "release %s needs JetPack <= %s; this robot runs %s"
                % (manifest["tag"], compat["jetpack_max"], jetpack)
            )
        modules = compat.get("modules")
        if modules and facts.get("module_class") and facts["module_class"] not in modules:
            raise Refused(
                "release %s supports modules %s, not %s"
                % (manifest["tag"], ", ".join(modules), facts["module_class"])
            )
