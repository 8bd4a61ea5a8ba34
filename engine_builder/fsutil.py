"""Atomic file writes and hashing.

A build writes next to its destination and renames over it only once everything succeeded, so a failed
or interrupted build never replaces a previous good engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(destination: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `destination`; rename it over `destination` on success only."""
    dest = Path(destination)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".%s." % dest.name, suffix=suffix + ".tmp", dir=str(dest.parent))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError("nothing was written to %s" % tmp)
        # mkstemp creates 0600; give the file the mode a plain open() would (services must read engines)
        os.chmod(str(tmp), 0o666 & ~_umask())
        os.replace(str(tmp), str(dest))
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(destination: PathLike, data: bytes) -> None:
    with atomic_path(destination) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(destination: PathLike, obj: Any) -> None:
    atomic_write_bytes(destination, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))
