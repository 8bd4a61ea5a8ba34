"""`edge-agent.pyz`: the release agent and engine_builder in one zip the robot's Python runs
(edge_common's packer: reproducible, so the release role copies it only when the code changed).

Without an output path the zip goes to the user's cache under a name that carries its sha256
(`~/.cache/edge-deploy/edge-agent-<sha256[:16]>.pyz`): runs from two checkouts of different code,
or two runs at once, never write over each other's zip, and the release role can tell from the
name alone whether a robot holds it. Zips of other code older than a week are pruned."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Optional

from edge_common import pack as packer
from edge_common.fsutil import atomic_write

PACKAGES = ("edge_agent", "engine_builder", "edge_common")
MAIN = b"import sys\n\nfrom edge_agent.cli import main\n\nsys.exit(main())\n"
PRUNE_AFTER_S = 7 * 24 * 3600


def pack_bytes() -> bytes:
    return packer.zip_bytes(PACKAGES, MAIN)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-deploy"


def _prune(folder: Path, keep: Path) -> None:
    cutoff = time.time() - PRUNE_AFTER_S
    for old in folder.glob("edge-agent-*.pyz"):
        try:
            if old != keep and old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:  # another run pruned it first
            pass


def pack(output: Optional[str] = None) -> Dict[str, str]:
    data = pack_bytes()
    digest = packer.sha256(data)
    out = Path(output) if output else cache_dir() / ("edge-agent-%s.pyz" % digest[:16])
    if not out.exists() or out.read_bytes() != data:
        atomic_write(out, data)
    if not output:
        os.utime(out)  # in use: not pruned
        _prune(out.parent, out)
    return {"path": str(out), "sha256": digest, "size": str(len(data))}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(pack(sys.argv[1] if len(sys.argv) > 1 else None)))
