"""Zips of this project's pure-Python packages, the way robots receive them.

One packer for the release agent's `edge-agent.pyz` and the engine_builder zip the trt_engine
action plugin ships: byte-for-byte reproducible (sorted entries, fixed timestamps, no bytecode), so
a robot gets a new copy only when the code changed, and no compiler or package index is needed there.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from typing import Dict, Iterable, Optional

FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def package_root(package: str) -> str:
    """The folder of an importable package of this project (from the clone or the installed wheel)."""
    module = __import__(package)
    return os.path.dirname(os.path.abspath(module.__file__))


def entries(packages: Iterable[str], main: Optional[bytes] = None) -> Dict[str, bytes]:
    found: Dict[str, bytes] = {"__main__.py": main} if main is not None else {}
    for package in packages:
        root = package_root(package)
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                arcname = "/".join([package, *os.path.relpath(path, root).split(os.sep)])
                with open(path, "rb") as handle:
                    found[arcname] = handle.read()
    return found


def zip_bytes(packages: Iterable[str], main: Optional[bytes] = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(entries(packages, main).items()):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
