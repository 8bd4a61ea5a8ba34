"""Bring a release onto the robot without touching the live one: verify, seed (push mode), stage
(fetch into a staging folder, check, build engines, rename into releases/<tag>)."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Dict, List

from edge_agent import containers, tufclient
from edge_agent import engines as engines_mod
from edge_agent.compatibility import CompatibilityCheck
from edge_agent.errors import AgentError, Refused, UsageError
from edge_agent.layout import EDGE_DIR
from edge_agent.tags import check_tag
from edge_common.fsutil import (
    is_disk_full,
    place_verified,
    read_json,
    remove_tree,
    sha256_file,
    write_json,
)


class StageStep(CompatibilityCheck):
    def _trust_repository_ca(self) -> None:
        """HTTPS repositories signed by a private CA: the agent trusts the CA bundle `ca_file`
        (instead of the system's store) for its own connections; python-tuf's fetchers read it
        through OpenSSL's SSL_CERT_FILE (urllib3, tuf >= 6) and REQUESTS_CA_BUNDLE (tuf 5)."""
        ca_file = self.cfg.ca_file
        if not ca_file:
            return
        if not os.path.isfile(ca_file):
            raise UsageError(
                "ca_file %s in the agent config does not exist: install the repository's CA there "
                "(release_pull_ca_certificate in the release role) or remove the setting" % ca_file
            )
        os.environ["SSL_CERT_FILE"] = ca_file
        os.environ["REQUESTS_CA_BUNDLE"] = ca_file

    # ------------------------------------------------------------------ verify
    def verify(self, repo: str, tag: str, allow_downgrade: bool = False) -> Dict[str, Any]:
        check_tag(tag)
        self._ensure_layout()
        with self._lock():
            scratch = os.path.join(self.cfg.releases_dir, ".verify-%s-%d" % (tag, os.getpid()))
            try:
                manifest = tufclient.fetch_release(
                    self.cfg.tuf_dir, repo, self.cfg.app, tag, scratch, limits=tufclient.Limits.of(self.cfg)
                )
                self._check_version(manifest, allow_downgrade)
                self._check_compatible(manifest)
            finally:
                remove_tree(scratch)
        return {
            "changed": False,
            "tag": tag,
            "version": manifest["version"],
            "verified": True,
            "files": len(manifest.get("files", [])),
        }

    # ------------------------------------------------------------------ seed (push mode)
    def _kept_files(self, kept: List[str]) -> Dict[str, str]:
        """sha256 -> a file of one of the `kept` releases with that content (from their manifests)."""
        found: Dict[str, str] = {}
        for tag in kept:
            base = self.release_dir(tag)
            for entry in self.manifest(tag).get("files") or []:
                if entry.get("sha256"):
                    path = os.path.join(base, tufclient.safe_relpath(entry["path"]))
                    found.setdefault(entry["sha256"], path)
        return found

    def seed(self, repo: str, tag: str, dry_run: bool = False) -> Dict[str, Any]:
        """Before the controller copies release `tag` into the local repository `repo` (push mode):
        put into <repo>/targets/<app>/<tag>/ every file of it that a kept release already holds
        with the signed sha256 (a hard link, else a copy), so the copy sends only the rest; drop
        the folders of tags this robot does not keep. `missing_bytes` is what is left to send."""
        check_tag(tag)
        if "://" in repo:
            raise UsageError("seed fills a repository folder on this robot, not %s" % repo)
        self._ensure_layout()
        app_dir = os.path.join(repo, "targets", self.cfg.app)
        with self._lock():
            signed = tufclient.signed_files(self.cfg.tuf_dir, repo, self.cfg.app, tag)
            kept = self.kept()
            local = self._kept_files(kept)
            result: Dict[str, Any] = {"present_bytes": 0, "seeded_bytes": 0, "missing_bytes": 0}
            seeded: List[str] = []
            missing: List[str] = []
            try:
                for rel, (length, digest) in sorted(signed.items()):
                    dest = os.path.join(app_dir, tag, rel)
                    if (
                        os.path.isfile(dest)
                        and os.path.getsize(dest) == length
                        and sha256_file(dest) == digest
                    ):
                        result["present_bytes"] += length
                    elif digest in local and (
                        (dry_run and sha256_file(local[digest]) == digest)
                        or (not dry_run and place_verified(local[digest], dest, digest))
                    ):
                        result["seeded_bytes"] += length
                        seeded.append(rel)
                    else:
                        result["missing_bytes"] += length
                        missing.append(rel)
            except OSError as exc:
                if is_disk_full(exc):
                    raise AgentError(
                        "disk full while preparing %s under %s; the current release is untouched"
                        % (tag, app_dir)
                    ) from exc
                raise
            stale = sorted(
                name
                for name in (os.listdir(app_dir) if os.path.isdir(app_dir) else [])
                if name != tag and name not in kept
            )
            if not dry_run:
                for name in stale:
                    remove_tree(os.path.join(app_dir, name))
        result.update(
            changed=bool(seeded or stale) and not dry_run,
            tag=tag,
            seeded=seeded,
            missing=missing,
            removed=stale,
            dry_run=dry_run,
        )
        return result

    # ------------------------------------------------------------------ stage
    def _clean_leftovers(self) -> List[str]:
        """Staging folders of a run that was killed (we hold the lock, so none is in use)."""
        removed = []
        for name in sorted(os.listdir(self.cfg.releases_dir)):
            if name.startswith((".staging-", ".verify-")):
                remove_tree(os.path.join(self.cfg.releases_dir, name))
                removed.append(name)
        return removed

    def stage(
        self, repo: str, tag: str, allow_downgrade: bool = False, dry_run: bool = False
    ) -> Dict[str, Any]:
        check_tag(tag)
        self._ensure_layout()
        self._trust_repository_ca()
        with self._lock():
            leftovers = self._clean_leftovers()
            final = self.release_dir(tag)
            staging = os.path.join(self.cfg.releases_dir, ".staging-%s-%d" % (tag, os.getpid()))
            counts: Dict[str, int] = {}
            try:
                manifest = tufclient.fetch_release(
                    self.cfg.tuf_dir,
                    repo,
                    self.cfg.app,
                    tag,
                    staging,
                    self._kept_files(self.kept()),
                    counts,
                    tufclient.Limits.of(self.cfg),
                )
                self._check_version(manifest, allow_downgrade)
                self._check_compatible(manifest)
                if self.is_staged(tag):
                    staged_sha = sha256_file(os.path.join(final, tufclient.MANIFEST))
                    if staged_sha != sha256_file(os.path.join(staging, tufclient.MANIFEST)):
                        raise Refused(
                            "release %s is already staged with different content; tags are "
                            "immutable, publish a new tag" % tag
                        )
                    refs = self._engines(final, manifest, dry_run)
                    changed = any(ref.get("built") for ref in refs.values())
                    if containers.is_container(manifest) and not dry_run:  # the engine may have lost it
                        counts["image"] = containers.load(self.cfg.docker_host, self.cfg.app, final, manifest)
                        changed = changed or counts["image"]["loaded"]
                    if changed and not dry_run:
                        write_json(os.path.join(final, EDGE_DIR, "engines.json"), refs)
                    return {
                        "changed": changed,
                        "tag": tag,
                        "staged": True,
                        "engines": refs,
                        "leftovers_removed": leftovers,
                        **counts,
                    }
                if dry_run:
                    return {
                        "changed": True,
                        "tag": tag,
                        "staged": False,
                        "dry_run": True,
                        "leftovers_removed": leftovers,
                    }
                refs = self._engines(staging, manifest, dry_run=False)
                if containers.is_container(manifest):
                    counts["image"] = containers.load(self.cfg.docker_host, self.cfg.app, staging, manifest)
                # engine references point at the release's final location
                write_json(os.path.join(staging, EDGE_DIR, "engines.json"), refs)
                write_json(
                    os.path.join(staging, EDGE_DIR, "staged.json"),
                    {
                        "tag": tag,
                        "version": manifest["version"],
                        "repository": repo,
                        "staged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "manifest_sha256": sha256_file(os.path.join(staging, tufclient.MANIFEST)),
                    },
                )
                if os.path.exists(final):  # an unmarked folder (not from this agent): replace it
                    remove_tree(final)
                os.rename(staging, final)
            except BaseException as exc:
                if is_disk_full(exc):
                    remove_tree(staging)
                    free = shutil.disk_usage(self.cfg.releases_dir).free
                    raise AgentError(
                        "disk full while staging %s (%d KiB free under %s); the current "
                        "release is untouched" % (tag, free // 1024, self.cfg.releases_dir),
                        {"free_bytes": free},
                    ) from exc
                raise
            finally:
                remove_tree(staging)
        return {
            "changed": True,
            "tag": tag,
            "staged": True,
            "engines": refs,
            "leftovers_removed": leftovers,
            **counts,
        }

    def _engines(self, release_dir: str, manifest: Dict[str, Any], dry_run: bool) -> Dict[str, Any]:
        """The release's engines from the robot's engine store (engine_builder's one engine path)."""
        models = manifest.get("models") or []
        if not models:
            return {}
        if dry_run:
            return read_json(os.path.join(release_dir, EDGE_DIR, "engines.json"), {}) or {}
        # The kept releases' engines first: a build for this one must not prune theirs.
        engines_mod.pin(self.cfg.engine_store, self.cfg.app, self._kept_engines())
        refs = engines_mod.ensure_all(
            self.cfg.python,
            self._pythonpath,
            self.cfg.engine_store,
            self.cfg.engine_backend,
            release_dir,
            models,
            self.cfg.command_timeout_seconds,
            manifest["tag"],
            self.cfg.resources,
        )
        engines_mod.pin(self.cfg.engine_store, self.cfg.app, [*self._kept_engines(), refs])
        return refs
