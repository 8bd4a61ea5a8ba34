"""`edge-agent.pyz`: the release agent and engine_builder in one zip the robot's Python runs
(edge_common's packer: reproducible, so the release role copies it only when the code changed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

from edge_common import pack as packer

PACKAGES = ("edge_agent", "engine_builder", "edge_common")
MAIN = b"import sys\n\nfrom edge_agent.cli import main\n\nsys.exit(main())\n"


def pack_bytes() -> bytes:
    return packer.zip_bytes(PACKAGES, MAIN)


def pack(output: str) -> Dict[str, str]:
    data = pack_bytes()
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_bytes() != data:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return {"path": str(out), "sha256": packer.sha256(data), "size": str(len(data))}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(pack(sys.argv[1])))
