"""Files written atomically (temp file, fsync, rename: a kill leaves the old or the new content),
hashed, linked and locked. Used by the agent, engine_builder and the controller alike."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


class LockTimeout(OSError):
    """Another process held the lock for the whole wait."""


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: PathLike) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: PathLike, data: bytes, mode: int = 0o644) -> None:
    path = str(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def write_json(path: PathLike, data: Any, mode: int = 0o644) -> None:
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"), mode)


def read_json(path: PathLike, default: Any = None) -> Any:
    """The JSON in `path`; `default` when the file does not exist (a damaged file raises ValueError)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default


@contextlib.contextmanager
def atomic_path(destination: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `destination` for a writer that wants a path (a backend's
    build); rename it over `destination` on success only, so a failed write never replaces it."""
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


def atomic_symlink(target: str, link: str) -> None:
    """Point `link` at `target` in one rename: readers see the old or the new target, never none."""
    tmp = "%s.tmp-%d" % (link, os.getpid())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(os.path.dirname(link) or ".")


def remove_tree(path: PathLike) -> None:
    path = str(path)
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def place_verified(src: str, dest: str, sha256: str) -> bool:
    """Put a file with content `sha256` at `dest` from `src`: a hard link where the file system
    allows one, else a copy; atomically, and only when `src` really has that content."""
    if not os.path.isfile(src) or sha256_file(src) != sha256:
        return False
    directory = os.path.dirname(dest) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".seed-%d-%s" % (os.getpid(), os.path.basename(dest)))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or links refused
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def locked(path: str, timeout: float) -> Iterator[None]:
    """An exclusive flock on `path`, waited for at most `timeout` seconds (LockTimeout after)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockTimeout(errno.EAGAIN, "another run holds %s" % path) from exc
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def tree_files(root: str) -> Dict[str, str]:
    """Relative path -> sha256 for every regular file under `root`."""
    out: Dict[str, str] = {}
    for base, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(base, name)
            if os.path.isfile(full) and not os.path.islink(full):
                out[os.path.relpath(full, root)] = sha256_file(full)
    return out
