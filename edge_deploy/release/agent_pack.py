"""`edge-agent.pyz`: the release agent and engine_builder in one zip the robot's Python runs.

Byte-for-byte reproducible (sorted entries, fixed timestamps, no bytecode), so the release role
copies it only when the code changed, and no compiler or package index is needed on the robot.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Dict

from edge_deploy import paths

PACKAGES = ("edge_agent", "engine_builder")
MAIN = b"import sys\n\nfrom edge_agent.cli import main\n\nsys.exit(main())\n"
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def _entries(repo: Path) -> Dict[str, bytes]:
    entries = {"__main__.py": MAIN}
    for package in PACKAGES:
        root = repo / package
        if not (root / "__init__.py").is_file():
            raise FileNotFoundError("package %s not found under %s" % (package, repo))
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            entries[path.relative_to(repo).as_posix()] = path.read_bytes()
    return entries


def pack_bytes(repo: Path = paths.REPO) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(_entries(repo).items()):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def pack(output: str, repo: Path = paths.REPO) -> Dict[str, str]:
    data = pack_bytes(repo)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_bytes() != data:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return {"path": str(out), "sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data))}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(pack(sys.argv[1])))
