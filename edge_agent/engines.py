"""Engines for a staged release, built (or reused by fingerprint) through engine_builder on the robot.

Engines live in the shared cache `shared/engines/<fingerprint>/`, so a release that ships the same
model, or a rollback, never rebuilds. engine_builder runs as a subprocess of the same interpreter
with the agent's zip on PYTHONPATH (it ships inside edge-agent.pyz; nothing is pip-installed).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Dict, List, Optional

from edge_agent.errors import AgentError

DEFAULT_PREFERENCE = ["tensorrt", "trtexec", "onnxruntime"]


class EngineBuilder:
    def __init__(self, python: str, pythonpath: str, timeout: float):
        self.python = python
        self.env = dict(os.environ, PYTHONPATH=pythonpath)
        self.timeout = timeout
        self._available: Optional[List[str]] = None

    def run(self, *args: str) -> Dict[str, Any]:
        argv = [self.python, "-m", "engine_builder", *args, "--json", "--quiet"]
        try:
            proc = subprocess.run(
                argv,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AgentError("engine_builder %s timed out after %.0f s" % (args[0], self.timeout)) from exc
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            result = {"ok": False, "error": {"message": (proc.stderr or proc.stdout).strip()[-600:]}}
        if not result.get("ok"):
            message = (result.get("error") or {}).get("message", "failed")
            raise AgentError("engine_builder %s failed: %s" % (args[0], message), {"engine_builder": result})
        return result

    def available(self) -> List[str]:
        if self._available is None:
            self._available = list(self.run("probe").get("available_backends") or [])
        return self._available

    def pick_backend(self, configured: str, model: Dict[str, Any]) -> str:
        if configured and configured != "auto":
            return configured
        preference = model.get("backends") or DEFAULT_PREFERENCE
        for name in preference:
            if name in self.available():
                return name
        raise AgentError(
            "no engine backend for model %s: wanted one of %s, this robot has %s"
            % (model.get("name"), preference, self.available())
        )


def build_all(
    builder: EngineBuilder,
    configured_backend: str,
    release_dir: str,
    engines_dir: str,
    models: List[Dict[str, Any]],
) -> Dict[str, Any]:
    """Build or reuse every model's engine; return name -> reference (artifact path, fingerprint, ...)."""
    refs: Dict[str, Any] = {}
    for model in models:
        onnx = os.path.join(release_dir, model["onnx"])
        backend = builder.pick_backend(configured_backend, model)
        precision = model.get("precision", "fp32")
        options = ["--backend", backend, "--precision", precision]
        for key, flag in (("workspace_mib", "--workspace-mib"), ("dla_core", "--dla-core")):
            if model.get("build", {}).get(key) is not None:
                options += [flag, str(model["build"][key])]
        fingerprint = builder.run("fingerprint", onnx, *options)["fingerprint"]
        folder = os.path.join(engines_dir, fingerprint[:32])
        os.makedirs(folder, exist_ok=True)
        artifact = os.path.join(folder, "%s.%s.%s.engine" % (model["name"], precision, backend))
        built = builder.run("build", onnx, *options, "--output", artifact, "--cache-dir", engines_dir)
        refs[model["name"]] = {
            "artifact": artifact,
            "backend": backend,
            "precision": precision,
            "fingerprint": built.get("fingerprint", fingerprint),
            "sha256": (built.get("artifact") or {}).get("sha256"),
            "built": bool(built.get("changed")),
            "onnx": model["onnx"],
        }
    return refs
