"""The TUF repository releases are signed into (python-tuf's Metadata API and `tuf.repository`).

    <repo>/metadata/{1.root.json, root.json, targets.json, snapshot.json, timestamp.json}
    <repo>/targets/<app>/<tag>/{release.json, ...every file of the bundle}
    <keys>/{root,targets,snapshot,timestamp}.pem      (PKCS#8 ed25519, mode 0600; keep root offline)

Every bundle file is a TUF target (length and sha256). Metadata versions only go up, each role
expires, and robots refuse anything that fails those checks (ngclient). Every role also says when
it was signed (edge_common/signing.py), so a robot can tell its own wrong clock from metadata
nobody renewed; `refresh` renews what expires. Consistent snapshots are off: release targets never
change once signed (a tag is immutable), and the robot copy of a repository is written in one go.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Optional

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.repository import Repository

from edge_common import signing
from edge_common.fsutil import sha256_file
from edge_common.versions import version_key as _version_key

ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
# A role's key may come from the environment instead of the keys folder (a CI job's secret): the
# PEM text itself, or the path of a file holding it (GitLab's File variables). The root key has
# none: it signs only `init` and key changes, offline.
KEY_ENV = {role: "EDGE_DEPLOY_%s_KEY" % role.upper() for role in ROLES if role != Root.type}
DEFAULT_EXPIRY_DAYS = {Root.type: 365, Targets.type: 90, Snapshot.type: 30, Timestamp.type: 7}
SPEC_VERSION = "1.0.31"


class RepoError(Exception):
    pass


def _load_signer(path: Path) -> CryptoSigner:
    return _signer_from_pem(path.read_bytes(), str(path))


def _signer_from_pem(pem: bytes, where: str) -> CryptoSigner:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        return CryptoSigner(load_pem_private_key(pem, None))
    except (ValueError, TypeError) as exc:
        raise RepoError("%s is not an unencrypted PEM private key (%s)" % (where, exc)) from exc


def root_key_within_reach(keys_dir: str) -> Optional[str]:
    """Where a root key sits that this process could read (None: nowhere). A CI job must not hold
    one: whoever has it can replace every other key."""
    path = Path(keys_dir) / ("%s.pem" % Root.type)
    if path.exists():
        return str(path)
    if os.environ.get("EDGE_DEPLOY_ROOT_KEY"):
        return "$EDGE_DEPLOY_ROOT_KEY"
    return None


class ReleaseRepository(Repository):
    """A file-backed TUF repository with one key per top-level role."""

    def __init__(self, repo_dir: str, keys_dir: str, expiry: Optional[Dict[str, timedelta]] = None):
        self.repo = Path(repo_dir)
        self.keys = Path(keys_dir)
        self.metadata_dir = self.repo / "metadata"
        self.targets_dir = self.repo / "targets"
        self.expiry = {role: timedelta(days=days) for role, days in DEFAULT_EXPIRY_DAYS.items()}
        self.expiry.update(expiry or {})
        self._new: set = set()

    # ----------------------------------------------------------------- tuf.repository.Repository
    def _path(self, role: str) -> Path:
        return self.metadata_dir / ("%s.json" % role)

    def open(self, role: str) -> Metadata:
        path = self._path(role)
        if path.exists():
            return Metadata.from_file(str(path))
        self._new.add(role)
        signed = {Root.type: Root, Targets.type: Targets, Snapshot.type: Snapshot, Timestamp.type: Timestamp}[
            role
        ]
        return Metadata(signed(expires=self._expires(role)))

    def close(self, role: str, md: Metadata) -> None:
        if role in self._new:
            self._new.discard(role)  # version 1 as created
        else:
            md.signed.version += 1
        now = self._now()
        md.signed.expires = now + self.expiry[role]
        md.signed.unrecognized_fields[signing.SIGNED_AT] = signing.stamp(now)
        md.signatures.clear()
        md.sign(self.signer(role), append=True)
        self._write(role, md)

    @property
    def targets_infos(self) -> Dict[str, MetaFile]:
        return {"targets.json": MetaFile(version=self.targets().version)}

    @property
    def snapshot_info(self) -> MetaFile:
        return MetaFile(version=self.snapshot().version)

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _now() -> datetime:
        return datetime.now(timezone.utc).replace(microsecond=0)

    def _expires(self, role: str) -> datetime:
        return self._now() + self.expiry[role]

    def _write(self, role: str, md: Metadata) -> None:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        data = md.to_bytes(JSONSerializer(compact=False))
        names = ["%s.json" % role]
        if role == Root.type:
            names.insert(0, "%d.root.json" % md.signed.version)  # ngclient fetches roots by version
        for name in names:
            tmp = self.metadata_dir / (".%s.tmp" % name)
            tmp.write_bytes(data)
            os.replace(tmp, self.metadata_dir / name)

    def signer(self, role: str) -> CryptoSigner:
        variable = KEY_ENV.get(role)
        value = os.environ.get(variable or "", "").strip()
        if value.startswith("-----BEGIN"):
            return _signer_from_pem(value.encode(), "$" + variable)
        if value:
            if not os.path.isfile(value):
                raise RepoError("$%s is neither a PEM key nor the path of a file holding one" % variable)
            return _signer_from_pem(Path(value).read_bytes(), "%s ($%s)" % (value, variable))
        path = self.keys / ("%s.pem" % role)
        if not path.exists():
            hint = " (or set %s to the key's PEM)" % variable if variable else ""
            raise RepoError("no %s key at %s%s: run `edge-deploy release init` first" % (role, path, hint))
        return _load_signer(path)

    # ----------------------------------------------------------------- operations
    def init(self) -> Dict[str, Any]:
        if self._path(Root.type).exists():
            raise RepoError("%s already holds a TUF repository" % self.repo)
        self.keys.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys, 0o700)
        signers = {}
        for role in ROLES:
            path = self.keys / ("%s.pem" % role)
            if path.exists():
                signers[role] = _load_signer(path)
                continue
            signer = CryptoSigner.generate_ed25519()
            fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(signer.private_bytes)
            signers[role] = signer
        with self.edit_root() as root:
            root.consistent_snapshot = False
            for role, signer in signers.items():
                root.add_key(signer.public_key, role)
        with self.edit_targets():
            pass
        self.do_snapshot(force=True)
        self.do_timestamp(force=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        return {
            "repository": str(self.repo),
            "keys": str(self.keys),
            "root": str(self.metadata_dir / "1.root.json"),
            "keyids": {role: signer.public_key.keyid for role, signer in signers.items()},
        }

    def add_release(self, bundle_dir: str) -> Dict[str, Any]:
        bundle = Path(bundle_dir)
        try:
            release = json.loads((bundle / "release.json").read_text(encoding="utf-8"))
            app, tag, files = release["name"], release["tag"], release["files"]
            _version_key(release["version"])
            listed = {f["path"]: f for f in files}
            for entry in listed.values():  # every file with its length and hash, as targets need
                if not entry["sha256"] or int(entry["length"]) < 0:
                    raise ValueError("%s has no sha256 or length" % entry["path"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RepoError(
                "%s/release.json is not a bundle manifest (%s: %s): build the bundle again with "
                "`edge-deploy release build`" % (bundle, type(exc).__name__, exc)
            ) from exc
        prefix = "%s/%s/" % (app, tag)
        existing = {path for path in self.targets().targets if path.startswith(prefix)}
        if existing:
            raise RepoError("%s %s is already signed: tags are immutable, build a new tag" % (app, tag))
        newest = self.newest_version(app)
        if newest is not None and _version_key(release["version"]) <= _version_key(newest):
            raise RepoError(
                "%s %s: version %s is not newer than the newest signed version %s"
                % (app, tag, release["version"], newest)
            )
        dest = self.targets_dir / app / tag
        if dest.exists():
            shutil.rmtree(dest)
        with self.edit_targets() as targets:
            for rel in [*sorted(listed), "release.json"]:
                src = bundle / rel
                if rel != "release.json" and (
                    not src.is_file()
                    or src.stat().st_size != int(listed[rel]["length"])
                    or sha256_file(str(src)) != listed[rel]["sha256"]
                ):
                    raise RepoError("%s is missing or changed since the bundle was built" % src)
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out)
                custom = (
                    {"edge_release": {"app": app, "tag": tag, "version": release["version"]}}
                    if rel == "release.json"
                    else None
                )
                info = TargetFile.from_file(prefix + rel, str(out), ["sha256"])
                if custom:
                    info.unrecognized_fields["custom"] = custom
                targets.targets[info.path] = info
        self.do_snapshot()
        self.do_timestamp()
        return {
            "app": app,
            "tag": tag,
            "version": release["version"],
            "targets": len(listed) + 1,
            "targets_version": self.targets().version,
            "timestamp_version": self.timestamp().version,
        }

    def newest_version(self, app: str) -> Optional[str]:
        versions = [
            t.unrecognized_fields.get("custom", {}).get("edge_release", {}).get("version")
            for path, t in self.targets().targets.items()
            if path.startswith(app + "/") and path.endswith("/release.json")
        ]
        versions = [v for v in versions if v]
        return max(versions, key=_version_key) if versions else None

    def refresh(self) -> Dict[str, Any]:
        """Re-sign snapshot and timestamp with fresh expiry, and targets and root too where they
        expire before the new snapshot would (root only with its key in the keys folder). Run it on
        a schedule for a live repository; robots that find metadata expired name this command."""
        horizon = self._now() + self.expiry[Snapshot.type]
        renewed = []
        if self.root().expires <= horizon:
            if not (self.keys / ("%s.pem" % Root.type)).exists():
                raise RepoError(
                    "root.json expires %s: renewing it needs the root key, which is not in %s"
                    % (signing.stamp(self.root().expires), self.keys)
                )
            with self.edit_root():
                pass
            renewed.append(Root.type)
        if self.targets().expires <= horizon:
            with self.edit_targets():
                pass
            renewed.append(Targets.type)
        self.do_snapshot(force=True)
        self.do_timestamp(force=True)
        renewed += [Snapshot.type, Timestamp.type]
        return {
            "renewed": renewed,
            "expires": self.expiries(),
            "snapshot_version": self.snapshot().version,
            "timestamp_version": self.timestamp().version,
        }

    def expiries(self) -> Dict[str, str]:
        """When each role expires (UTC)."""
        return {role: signing.stamp(getattr(self, role)().expires) for role in ROLES}  # self.root(), ...

    def releases(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for _path, target in sorted(self.targets().targets.items()):
            meta = target.unrecognized_fields.get("custom", {}).get("edge_release")
            if meta:
                out.setdefault(meta["app"], []).append(meta["tag"])
        return out
