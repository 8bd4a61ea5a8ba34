"""Fetch one release through python-tuf's ngclient: signatures, expiry, versions, lengths, hashes.

The repository is a TUF repository made by `edge-deploy release` on the controller:
    metadata/{N.root.json, timestamp.json, snapshot.json, targets.json}
    targets/<app>/<tag>/{release.json, ...every file of the bundle}
Pull mode reads it over HTTP(S); push mode copies it to the robot and reads it as a folder
(file:// URLs). Both go through the same Updater, the same checks and the same fetcher.

The fetcher (standard library only, the same on python-tuf 5 to 7) bounds every download: at most
the bytes ngclient allows (a target's signed length), no read waits longer than
`Limits.stall_seconds`, and one run's downloads end by `Limits.total_seconds`. A fault is named:
more bytes than signed, a connection cut after some bytes, a server that stalled. A download is
written beside its final name and renamed once python-tuf has verified it, into a staging folder
that is only renamed into place when every file is there: nothing partial is ever staged, and
nothing partial is kept for the next run either (it downloads the file again from its first byte).

The robot's clock decides what "expired" means. Metadata the controller signed later than the
robot's now, or expired by the robot's clock while the repository server's clock (its HTTP Date)
says otherwise, is the clock's fault, not the release's: `ClockWrong`, with both times in words.
"""

from __future__ import annotations

import contextlib
import http.client
import inspect
import json
import os
import posixpath
import socket
import ssl
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple
from urllib.parse import unquote, urlparse

from edge_agent import __version__, clock
from edge_agent.errors import AgentError, ClockWrong, Refused, Unreachable, Unverified
from edge_common import signing
from edge_common.fsutil import place_verified

MANIFEST = "release.json"
CHUNK = 1 << 16
# Clocks of a controller and a robot that both keep time agree far better than this; a robot
# whose clock is further off than this from the repository's is wrong (expiries last days).
CLOCK_SKEW = timedelta(hours=1)


class Limits(NamedTuple):
    """Bounds of one run's downloads (the agent config's download_* settings)."""

    stall_seconds: float = 30.0  # no byte for this long: the server stalled
    total_seconds: float = 3000.0  # every download of the run, together (the OTA unit allows an hour)

    @classmethod
    def of(cls, cfg: Any) -> Limits:
        return cls(float(cfg.download_stall_seconds), float(cfg.download_timeout_seconds))


DEFAULT_LIMITS = Limits()


class DownloadFault(Exception):
    """A download the server broke off, stalled or overran; the message names the fault."""

    def __init__(self, message: str, fault: str):
        super().__init__(message)
        self.message = message
        self.fault = fault


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


def _progress(got: int, declared: Optional[int]) -> str:
    return "%d of %d bytes" % (got, declared) if declared is not None else "%d bytes" % got


def make_fetcher(base: str, limits: Limits = DEFAULT_LIMITS):
    """A python-tuf FetcherInterface for the repository at `base` (file://, http:// or https://)."""
    _, FetcherInterface, exceptions = _tuf()

    class Fetcher(FetcherInterface):
        def __init__(self) -> None:
            self.deadline = time.monotonic() + limits.total_seconds
            self.url: Optional[str] = None  # the file being read last (named when something fails)
            self.max_length: Optional[int] = None  # ngclient's bound for it
            self.server_date: Optional[datetime] = None  # the server's clock (HTTP Date), last heard

        def name(self, url: Optional[str] = None) -> str:
            """A file of the repository by its place in it: edge-app/v1/model.onnx, metadata/x.json."""
            url = url or self.url or ""
            rel = url[len(base) :] if url.startswith(base) else url
            return rel[len("targets/") :] if rel.startswith("targets/") else rel

        def download_file(self, url: str, max_length: int):
            self.max_length = max_length
            return super().download_file(url, max_length)

        def _fetch(self, url: str) -> Iterator[bytes]:
            self.url = url
            scheme = urlparse(url).scheme
            if scheme == "file":
                return self._file(url)
            if scheme not in ("http", "https"):
                raise exceptions.DownloadError("cannot read %s: only file, http and https URLs" % url)
            return self._http(url)

        def _file(self, url: str) -> Iterator[bytes]:
            path = unquote(urlparse(url).path)
            if not os.path.isfile(path):
                # ngclient reads 404 as "no such version" (how it learns the newest root)
                raise exceptions.DownloadHTTPError("%s not found" % path, 404)

            def chunks() -> Iterator[bytes]:
                with open(path, "rb") as fh:
                    yield from iter(lambda: fh.read(CHUNK), b"")

            return chunks()

        def _over_time(self, got: int, declared: Optional[int]) -> DownloadFault:
            return DownloadFault(
                "downloads took longer than %g s in all (download_timeout_seconds), with %s of %s read"
                % (limits.total_seconds, _progress(got, declared), self.name()),
                "timeout",
            )

        def _stalled(self, got: int, declared: Optional[int]) -> DownloadFault:
            return DownloadFault(
                "server stalled: no data for %g s (download_stall_seconds) after %s of %s"
                % (limits.stall_seconds, _progress(got, declared), self.name()),
                "stalled",
            )

        def _http(self, url: str) -> Iterator[bytes]:
            if time.monotonic() > self.deadline:
                raise self._over_time(0, None)
            request = urllib.request.Request(url, headers={"User-Agent": "edge-agent/%s" % __version__})
            try:
                # the timeout holds for the connection and for every read after it
                response = urllib.request.urlopen(request, timeout=limits.stall_seconds)
            except urllib.error.HTTPError as exc:
                self._heard(exc.headers)
                exc.close()
                message = "HTTP %d %s for %s" % (exc.code, exc.reason, url)
                raise exceptions.DownloadHTTPError(message, exc.code) from None
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, socket.timeout):
                    raise self._stalled(0, None) from exc
                reason = exc.reason if isinstance(exc.reason, BaseException) else exc
                raise exceptions.DownloadError("cannot read %s: %s" % (url, exc.reason)) from reason
            except socket.timeout as exc:
                raise self._stalled(0, None) from exc
            self._heard(response.headers)
            declared: Optional[int] = None
            with contextlib.suppress(TypeError, ValueError):
                declared = int(response.headers.get("Content-Length"))
            if declared is not None and self.max_length is not None and declared > self.max_length:
                response.close()  # not one byte of it is read
                raise DownloadFault(self.too_long(self.max_length), "too long")
            return self._chunks(response, declared)

        def _chunks(self, response: Any, declared: Optional[int]) -> Iterator[bytes]:
            got = 0
            try:
                while True:
                    if time.monotonic() > self.deadline:
                        raise self._over_time(got, declared)
                    try:
                        block = response.read1(CHUNK)  # one receive: the deadline is checked between them
                    except socket.timeout as exc:
                        raise self._stalled(got, declared) from exc
                    except (http.client.IncompleteRead, OSError) as exc:  # reset, TLS broken off
                        raise self._cut(got, declared) from exc
                    if not block:
                        break
                    got += len(block)
                    yield block
            finally:
                response.close()
            if declared is not None and got < declared:
                raise self._cut(got, declared)

        def _cut(self, got: int, declared: Optional[int]) -> DownloadFault:
            return DownloadFault(
                "connection cut after %s of %s" % (_progress(got, declared), self.name()), "cut"
            )

        def too_long(self, limit: int) -> str:
            name = self.name()
            if self.url and self.url.startswith(base + "targets/"):
                what = "the signed metadata declares for %s" % name
            else:
                what = "allowed for %s" % name
            return "the server sent more than the %d bytes %s" % (limit, what)

        def _heard(self, headers: Any) -> None:
            with contextlib.suppress(KeyError, TypeError, ValueError, IndexError):
                self.server_date = parsedate_to_datetime(headers["Date"]).astimezone(timezone.utc)

    return Fetcher()


def repository_url(location: str) -> str:
    """Accept a URL or a local directory; return a URL ending in '/'."""
    if "://" not in location:
        location = "file://" + os.path.abspath(location)
    return location.rstrip("/") + "/"


def make_updater(tuf_dir: str, location: str, target_dir: str, limits: Limits = DEFAULT_LIMITS):
    """An ngclient Updater for the repository at `location` and its fetcher."""
    Updater, _, _ = _tuf()
    base = repository_url(location)
    if not os.path.exists(os.path.join(tuf_dir, "root.json")):
        raise AgentError(
            "no trusted root metadata at %s/root.json: the release role installs it (release_trusted_root)"
            % tuf_dir
        )
    fetcher = make_fetcher(base, limits)
    kwargs: Dict[str, Any] = {
        "metadata_dir": tuf_dir,
        "metadata_base_url": base + "metadata/",
        "target_dir": target_dir,
        "target_base_url": base + "targets/",
        "fetcher": fetcher,
    }
    if "bootstrap" in inspect.signature(Updater.__init__).parameters:
        # python-tuf >= 6: bootstrap=None trusts the root cached in tuf_dir (installed by the role)
        kwargs["bootstrap"] = None
    return Updater(**kwargs), fetcher


def safe_relpath(path: str) -> str:
    norm = posixpath.normpath(path)
    if path != norm or norm.startswith(("/", "../")) or norm in (".", "..") or "\\" in path:
        raise Unverified("release manifest lists an unsafe path %r" % path)
    return norm


# ---------------------------------------------------------------------------------- the clock
def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _trusted(updater: Any, role: str) -> Any:
    """python-tuf's verified metadata of `role` in this run (loaded even where it is expired)."""
    try:
        return updater._trusted_set.get(role)  # no public accessor (python-tuf 5 to 7)
    except (AttributeError, KeyError):
        return None


def _robot_now(updater: Any) -> datetime:
    """The time python-tuf checked expiry against: this robot's clock."""
    found = getattr(getattr(updater, "_trusted_set", None), "reference_time", None)
    return _utc(found) if isinstance(found, datetime) else datetime.now(timezone.utc)


def _signed_at(updater: Any) -> Optional[datetime]:
    """When the newest metadata python-tuf verified in this run was signed (None: not stamped)."""
    stamps = []
    for role in ("timestamp", "snapshot", "targets", "root"):
        fields = getattr(_trusted(updater, role), "unrecognized_fields", None) or {}
        stamps.append(signing.parse(fields.get(signing.SIGNED_AT)))
    return max((s for s in stamps if s is not None), default=None)


def _clock_facts(now: datetime) -> str:
    return "this robot's clock says %s (%s)" % (signing.stamp(now), clock.describe(clock.sync_state()))


def _check_signed_before_now(updater: Any) -> None:
    """Metadata signed later than the robot's now: the robot's clock is behind (a reset RTC), and
    with it every expiry check means nothing (frozen metadata would pass)."""
    now, signed = _robot_now(updater), _signed_at(updater)
    if signed is not None and signed - now > CLOCK_SKEW:
        raise ClockWrong(
            "clock wrong: this robot says %s, but the repository's metadata was signed %s (by the "
            "controller's clock), later than that: its clock is behind, and with it the robot cannot "
            "tell fresh metadata from expired. Nothing was verified or changed. Fix the robot's clock "
            "(%s), then pull again"
            % (signing.stamp(now), signing.stamp(signed), clock.describe(clock.sync_state())),
            {"robot_time": signing.stamp(now), "signed_at": signing.stamp(signed)},
        )


def _expired(exc: BaseException, updater: Any, fetcher: Any, what: str) -> AgentError:
    """An expiry refusal in words: the robot's clock and, where it is known, the server's clock and
    the signing time. A server whose clock disagrees with the robot's makes it the clock's fault."""
    now = _robot_now(updater)
    text = str(exc)
    role = next((r for r in ("timestamp", "snapshot", "targets", "root") if r in text), None)
    signed = _trusted(updater, role) if role else None
    expires = getattr(signed, "expires", None)
    signed_at = _signed_at(updater)
    known = []
    if expires is not None:
        known.append("%s.json expired %s" % (role, signing.stamp(_utc(expires))))
    if signed_at is not None:
        known.append("the repository's metadata was signed %s" % signing.stamp(signed_at))
    server = fetcher.server_date
    if server is not None and abs(server - now) > CLOCK_SKEW:
        return ClockWrong(
            "clock wrong: this robot says %s, the repository server says %s%s: by the robot's clock "
            "the metadata has expired. Nothing was verified or changed. Fix the robot's clock (%s), "
            "then pull again"
            % (
                signing.stamp(now),
                signing.stamp(server),
                "".join(", " + fact for fact in known),
                clock.describe(clock.sync_state()),
            ),
            {"robot_time": signing.stamp(now), "server_time": signing.stamp(server)},
        )
    renew = "renew it on the controller with `%s`%s, then copy or serve the repository again" % (
        signing.REFRESH_COMMAND,
        " (the root key must be in <keys>)" if role == "root" else "",
    )
    if server is None:  # nothing to tell the robot's clock from the repository's
        renew += "; if this robot's clock is wrong, fix the clock instead"
    return Unverified(
        "%s refused: %s: %s (%s; %s): %s"
        % (what, type(exc).__name__, exc, "; ".join(known) or "no signing time", _clock_facts(now), renew),
        {"error": type(exc).__name__, "robot_time": signing.stamp(now)},
    )


# ---------------------------------------------------------------------------------- failures
def _causes(exc: BaseException) -> List[BaseException]:
    """`exc` and what it was raised from. Explicit causes only: ngclient downloads inside its
    handler of a local file's failure, so the implicit context is often an unrelated error."""
    causes = []
    cause: Optional[BaseException] = exc
    while cause is not None and len(causes) < 8:
        causes.append(cause)
        cause = cause.__cause__
    return causes


def _failure(
    exc: BaseException, what: str, location: str, updater: Any = None, fetcher: Any = None
) -> AgentError:
    """A failed check refuses the release; a repository that gave no usable answer (network, name
    lookup, TLS, a timeout, a server error, a download broken off or overrun) is unreachable, which
    is not the release's fault; a clock that contradicts the metadata is the clock's."""
    _, _, exceptions = _tuf()
    from tuf.api.serialization import DeserializationError

    causes = _causes(exc)
    where = repository_url(location)
    fault = next((c for c in causes if isinstance(c, DownloadFault)), None)
    if fault is None and isinstance(exc, exceptions.DownloadLengthMismatchError) and fetcher is not None:
        fault = DownloadFault(fetcher.too_long(fetcher.max_length or 0), "too long")
    if fault is not None:
        return Unreachable(
            "%s: %s from %s. Nothing partial was kept: the next run downloads it again from its "
            "first byte" % (what, fault.message, where),
            {"error": "download", "fault": fault.fault},
        )
    if isinstance(exc, exceptions.ExpiredMetadataError):
        return _expired(exc, updater, fetcher, what)
    if (
        type(exc) is exceptions.DownloadError
        or isinstance(exc, exceptions.SlowRetrievalError)  # tuf also files refused connections here
        or (isinstance(exc, exceptions.DownloadHTTPError) and exc.status_code >= 500)
    ):
        message = "cannot read the release repository at %s (%s): %s" % (where, what, causes[-1])
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
    name = fetcher.name() if fetcher is not None and fetcher.url else None
    if isinstance(exc, DeserializationError):
        cause = exc.__cause__ or exc
        detail = "a required field is missing: %s" % cause if isinstance(cause, KeyError) else str(cause)
        source = "%s from %s" % (name, where) if name else "the trusted metadata in the agent's state"
        return Unverified(
            "%s refused: DeserializationError: %s is not valid TUF metadata (%s)" % (what, source, detail),
            {"error": "DeserializationError", "file": name},
        )
    if isinstance(exc, exceptions.LengthOrHashMismatchError) and name:
        return Unverified(
            "%s refused: LengthOrHashMismatchError: %s (%s from %s is not the file the metadata "
            "signs: truncated, replaced or damaged)" % (what, exc, name, where),
            {"error": "LengthOrHashMismatchError", "file": name},
        )
    return Unverified("%s refused: %s: %s" % (what, type(exc).__name__, exc), {"error": type(exc).__name__})


def _refreshed(updater: Any) -> None:
    """ngclient's refresh (every signature, version and expiry), then the signing time against
    the robot's clock."""
    updater.refresh()
    _check_signed_before_now(updater)


def fetch_release(
    tuf_dir: str,
    location: str,
    app: str,
    tag: str,
    dest: str,
    reuse: Optional[Dict[str, str]] = None,
    counts: Optional[Dict[str, int]] = None,
    limits: Limits = DEFAULT_LIMITS,
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
    what = "release %s %s" % (app, tag)
    updater = fetcher = None
    try:
        updater, fetcher = make_updater(tuf_dir, location, dest, limits)
        _refreshed(updater)
        info = updater.get_targetinfo(prefix + MANIFEST)
        if info is None:
            raise Refused("the signed repository has no release %s %s" % (app, tag))
        _download(updater, info, os.path.join(dest, MANIFEST))
        counts["downloaded_bytes"] += info.length
        with open(os.path.join(dest, MANIFEST), encoding="utf-8") as fh:
            try:  # signed as it is: a broken manifest is the controller's bundle
                manifest = json.load(fh)
                files: List[str] = [safe_relpath(f["path"]) for f in manifest.get("files", [])]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                message = "%s refused: its signed release.json is not a release manifest (%s: %s)" % (
                    what,
                    type(exc).__name__,
                    exc,
                )
                raise Unverified(message) from exc
        if manifest.get("name") != app or manifest.get("tag") != tag:
            raise Unverified(
                "release.json names %s %s, expected %s %s"
                % (manifest.get("name"), manifest.get("tag"), app, tag)
            )
        for rel in files:
            if rel == MANIFEST:
                continue
            target = updater.get_targetinfo(prefix + rel)
            if target is None:
                raise Unverified("%s is listed in release.json but not signed" % rel)
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
            _download(updater, target, path)
    except (exceptions.RepositoryError, exceptions.DownloadError, DownloadFault) as exc:
        raise _failure(exc, what, location, updater, fetcher) from exc
    except ValueError as exc:  # malformed metadata python-tuf did not file as a RepositoryError
        raise _failure(exc, what, location, updater, fetcher) from exc
    return manifest


def _download(updater: Any, info: Any, path: str) -> None:
    """ngclient downloads and verifies (length, hashes) into a name beside `path`; renamed when verified."""
    part = os.path.join(os.path.dirname(path), ".part-%s" % os.path.basename(path))
    try:
        updater.download_target(info, part)
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.unlink(part)


def _trusted_targets(
    tuf_dir: str, location: str, what: str, limits: Limits = DEFAULT_LIMITS
) -> Dict[str, Any]:
    """Refresh the trusted metadata from `location` (every signature and expiry checked) and return
    the verified top-level targets (path -> TargetFile). Nothing is downloaded but metadata."""
    _, _, exceptions = _tuf()
    from tuf.api.metadata import Metadata

    os.makedirs(tuf_dir, exist_ok=True)
    updater = fetcher = None
    try:
        updater, fetcher = make_updater(tuf_dir, location, tuf_dir, limits)
        _refreshed(updater)
        # refresh() stored the verified top-level targets metadata in tuf_dir
        return dict(Metadata.from_file(os.path.join(tuf_dir, "targets.json")).signed.targets)
    except (exceptions.RepositoryError, exceptions.DownloadError, DownloadFault, ValueError) as exc:
        raise _failure(exc, what, location, updater, fetcher) from exc


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


def signed_tags(tuf_dir: str, location: str, app: str, limits: Limits = DEFAULT_LIMITS) -> List[str]:
    """Every release tag the repository signs for `app` (each has a signed release.json)."""
    tags = []
    for path in _trusted_targets(tuf_dir, location, "releases of %s" % app, limits):
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == app and parts[2] == MANIFEST:
            tags.append(parts[1])
    return sorted(tags)
