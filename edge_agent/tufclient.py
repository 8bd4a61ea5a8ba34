"""Fetch one release through python-tuf's ngclient: signatures, expiry, versions, lengths, hashes.

The repository is a TUF repository made by `edge-deploy release` on the controller:
    metadata/{N.root.json, timestamp.json, snapshot.json, targets.json}
    targets/<app>/<tag>/{release.json, ...every file of the bundle}
Pull mode reads it over HTTP(S); push mode copies it to the robot and reads it through
`LocalFetcher` (file:// URLs), so both go through the same Updater and the same checks.
"""

from __future__ import annotations

import inspect
import json
import os
import posixpath
import ssl
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import unquote, urlparse

from edge_agent.errors import AgentError, Refused, Unreachable
from edge_common.fsutil import place_verified

MANIFEST = "release.json"
CHUNK = 1 << 16


def _tuf():
    try:
        from tuf.api import exceptions
        from tuf.ngclient import Updater
        from tuf.ngclient.fetcher import FetcherInterface
    except ImportError as exc:  # the role installs it; say so if it is missing
        raise AgentError(
            "python-tuf is not importable (%s): re-run the release role, or pip install tuf "
            "into the agent's environment" % exc
        ) from exc
    return Updater, FetcherInterface, exceptions


def local_fetcher():
    """A FetcherInterface for file:// URLs (a repository copied onto the robot)."""
    _, FetcherInterface, exceptions = _tuf()

    class LocalFetcher(FetcherInterface):
        def _fetch(self, url: str) -> Iterator[bytes]:
            parsed = urlparse(url)
            if parsed.scheme != "file":
                raise exceptions.DownloadError("LocalFetcher reads file:// URLs only, not %s" % url)
            path = unquote(parsed.path)
            if not os.path.isfile(path):
                # ngclient reads 404 as "no such version" (how it learns the newest root)
                raise exceptions.DownloadHTTPError("%s not found" % path, 404)

            def chunks() -> Iterator[bytes]:
                with open(path, "rb") as fh:
                    yield from iter(lambda: fh.read(CHUNK), b"")

            return chunks()

    return LocalFetcher()


def repository_url(location: str) -> str:
    """Accept a URL or a local directory; return a URL ending in '/'."""
    if "://" not in location:
        location = "file://" + os.path.abspath(location)
    return location.rstrip("/") + "/"


def make_updater(tuf_dir: str, location: str, target_dir: str):
    Updater, _, _ = _tuf()
    base = repository_url(location)
    if not os.path.exists(os.path.join(tuf_dir, "root.json")):
        raise AgentError(
            "no trusted root metadata at %s/root.json: the release role installs it (release_trusted_root)"
            % tuf_dir
        )
    kwargs: Dict[str, Any] = {
        "metadata_dir": tuf_dir,
        "metadata_base_url": base + "metadata/",
        "target_dir": target_dir,
        "target_base_url": base + "targets/",
    }
    if base.startswith("file://"):
        kwargs["fetcher"] = local_fetcher()
    if "bootstrap" in inspect.signature(Updater.__init__).parameters:
        # python-tuf >= 6: bootstrap=None trusts the root cached in tuf_dir (installed by the role)
        kwargs["bootstrap"] = None
    return Updater(**kwargs)


def safe_relpath(path: str) -> str:
    norm = posixpath.normpath(path)
    if path != norm or norm.startswith(("/", "../")) or norm in (".", "..") or "\\" in path:
        raise Refused("release manifest lists an unsafe path %r" % path)
    return norm


def _failure(exc: BaseException, what: str, location: str) -> AgentError:
    """A failed check refuses the release; a repository that gave no usable answer (network,
    name lookup, TLS, a timeout, a server error) is unreachable, which is not the release's fault."""
    _, _, exceptions = _tuf()
    if (
        type(exc) is exceptions.DownloadError
        or isinstance(exc, exceptions.SlowRetrievalError)  # tuf also files refused connections here
        or (isinstance(exc, exceptions.DownloadHTTPError) and exc.status_code >= 500)
    ):
        causes = []
        cause: Optional[BaseException] = exc
        while cause is not None and len(causes) < 8:
            causes.append(cause)
            cause = cause.__cause__ or cause.__context__
        message = "cannot read the release repository at %s (%s): %s" % (
            repository_url(location),
            what,
            causes[-1],
        )
        if any(
            isinstance(c, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(c)
            for c in causes
        ):
            message += (
                "; the server's HTTPS certificate is not signed by a CA this robot trusts: if it comes "
                "from a private CA, give that CA to the robot (release_pull_ca_certificate in the "
                "release role, ca_file in the agent config)"
            )
        return Unreachable(message, {"error": type(causes[-1]).__name__})
    return Refused("%s refused: %s: %s" % (what, type(exc).__name__, exc), {"error": type(exc).__name__})


def fetch_release(
    tuf_dir: str,
    location: str,
    app: str,
    tag: str,
    dest: str,
    reuse: Optional[Dict[str, str]] = None,
    counts: Optional[Dict[str, int]] = None,
) -> Dict[str, Any]:
    """Verify and download every file of <app>/<tag> into `dest`; return the verified manifest.

    `reuse` maps a sha256 to a local file with that content (a kept release's): such a file is
    taken from there (after checking its hash) instead of being downloaded. From a repository
    folder on this robot (push mode), a file whose signed hash checks out is hard-linked rather
    than copied, so the release costs its disk space once. `counts` receives downloaded_bytes
    (read from the repository) and reused_bytes (taken from kept releases)."""
    counts = counts if counts is not None else {}
    counts.update(downloaded_bytes=0, reused_bytes=0)
    url = repository_url(location)
    folder = unquote(urlparse(url).path) if url.startswith("file://") else None
    _, _, exceptions = _tuf()
    os.makedirs(tuf_dir, exist_ok=True)
    os.makedirs(dest, exist_ok=True)
    prefix = "%s/%s/" % (app, tag)
    try:
        updater = make_updater(tuf_dir, location, dest)
        updater.refresh()
        info = updater.get_targetinfo(prefix + MANIFEST)
        if info is None:
            raise Refused("the signed repository has no release %s %s" % (app, tag))
        updater.download_target(info, os.path.join(dest, MANIFEST))
        counts["downloaded_bytes"] += info.length
        with open(os.path.join(dest, MANIFEST), encoding="utf-8") as fh:
            manifest = json.load(fh)
        if manifest.get("name") != app or manifest.get("tag") != tag:
            raise Refused(
                "release.json names %s %s, expected %s %s"
                % (manifest.get("name"), manifest.get("tag"), app, tag)
            )
        files: List[str] = [safe_relpath(f["path"]) for f in manifest.get("files", [])]
        for rel in files:
            if rel == MANIFEST:
                continue
            target = updater.get_targetinfo(prefix + rel)
            if target is None:
                raise Refused("%s is listed in release.json but not signed" % rel)
            path = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            digest = target.hashes.get("sha256")
            if reuse and digest in reuse and place_verified(reuse[digest], path, digest):
                counts["reused_bytes"] += target.length
                continue
            counts["downloaded_bytes"] += target.length
            source = os.path.join(folder, "targets", prefix + rel) if folder else ""
            if (
                os.path.isfile(source)
                and os.path.getsize(source) == target.length
                and place_verified(source, path, digest)
            ):
                continue
            updater.download_target(target, path)
    except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
        raise _failure(exc, "release %s %s" % (app, tag), location) from exc
    except ValueError as exc:  # malformed metadata or manifest
        raise _failure(exc, "release %s %s" % (app, tag), location) from exc
    return manifest


def _trusted_targets(tuf_dir: str, location: str, what: str) -> Dict[str, Any]:
    """Refresh the trusted metadata from `location` (every signature and expiry checked) and return
    the verified top-level targets (path -> TargetFile). Nothing is downloaded but metadata."""
    _, _, exceptions = _tuf()
    from tuf.api.metadata import Metadata

    os.makedirs(tuf_dir, exist_ok=True)
    try:
        make_updater(tuf_dir, location, tuf_dir).refresh()
        # refresh() stored the verified top-level targets metadata in tuf_dir
        return dict(Metadata.from_file(os.path.join(tuf_dir, "targets.json")).signed.targets)
    except (exceptions.RepositoryError, exceptions.DownloadError, ValueError) as exc:
        raise _failure(exc, what, location) from exc


def signed_files(tuf_dir: str, location: str, app: str, tag: str) -> Dict[str, Tuple[int, str]]:
    """What the repository signs for <app>/<tag>: {path in the release: (length, sha256)}."""
    prefix = "%s/%s/" % (app, tag)
    targets = _trusted_targets(tuf_dir, location, "release %s %s" % (app, tag))
    if prefix + MANIFEST not in targets:
        raise Refused("the signed repository has no release %s %s" % (app, tag))
    files = {}
    for path, info in targets.items():
        if path.startswith(prefix) and "sha256" in info.hashes:
            files[safe_relpath(path[len(prefix) :])] = (info.length, info.hashes["sha256"])
    return files


def signed_tags(tuf_dir: str, location: str, app: str) -> List[str]:
    """Every release tag the repository signs for `app` (each has a signed release.json)."""
    tags = []
    for path in _trusted_targets(tuf_dir, location, "releases of %s" % app):
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == app and parts[2] == MANIFEST:
            tags.append(parts[1])
    return sorted(tags)
