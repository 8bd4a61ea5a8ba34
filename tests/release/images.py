"""Container-release sources for the tests: a Dockerfile over a base layer that stays the same and
an app layer that changes, built through a real Docker Engine API (the `engine` fixture of
conftest.py: podman's Docker-compatible service). `FROM scratch` unless a runnable base is asked
for (the simulated robots' base image, which has Python)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

from edge_deploy.release import bundle

# One app name per pytest-xdist worker: workers share the engine's image store, and a release's
# image is tagged <app>:<tag>.
APP = "ctr-%s" % os.environ.get("PYTEST_XDIST_WORKER", "main")
DOCKERFILE = """\
ARG BASE=scratch
FROM ${BASE}
COPY base/ /opt/base/
COPY app/ /opt/app/
"""


def source(tmp: Path, app_text: str, base: Optional[str] = None, **manifest) -> Path:
    src = tmp / "src"
    if src.exists():
        shutil.rmtree(src)
    (src / "base").mkdir(parents=True)
    (src / "app").mkdir()
    # the base layer: the same bytes in every release (a stand-in for an L4T base image's layers)
    (src / "base" / "runtime.bin").write_bytes(bytes(range(256)) * 512)
    (src / "app" / "app.py").write_text(app_text)
    (src / "app" / "healthz").write_text("ok\n")
    (src / "Dockerfile").write_text(DOCKERFILE)
    (src / "config").mkdir()
    (src / "config" / "app.json").write_text('{"threshold": 0.5}')
    container = {"dockerfile": "Dockerfile", "l4t_major": 36, "command": ["python3", "/opt/app/app.py"]}
    if base:
        container["build_args"] = {"BASE": base}
    data = {
        "name": APP,
        "health": {"http": {"port": 8080, "path": "/healthz"}},
        "ports": [8080],
        "compatible": {"jetpack_min": "6.0", "modules": ["orin_nx", "agx_orin"]},
        "container": container,
    }
    data.update(manifest)
    (src / "release.json").write_text(json.dumps(data))
    return src


def build(engine, tmp: Path, tag: str, app_text: str, **manifest) -> dict:
    return bundle.build(str(source(tmp, app_text, **manifest)), tag, str(tmp / "build"), engine[0])
