"""verify / stage / activate / rollback / status: the one on-robot code path for push and pull.

Layout under /opt/<app>:
    releases/<tag>/            the verified bundle, plus .edge/{staged.json, engines.json}
    current -> releases/<tag>  swapped atomically (one rename)
    shared/{config,data,logs,engines}   kept across releases; engines is the fingerprint cache
    snapshots/<tag>/           what was outside releases/<tag> while <tag> was live, with checksums
    state.json                 current, previous, bad tags, history
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from typing import Any, Callable, Dict, List, Optional

from edge_agent import engines as engines_mod
from edge_agent import health as health_mod
from edge_agent import mission, tufclient
from edge_agent.config import Config
from edge_agent.errors import AgentError, Busy, Refused, RolledBack, UsageError
from edge_common.fsutil import (
    LockTimeout,
    atomic_symlink,
    atomic_write,
    is_disk_full,
    locked,
    place_verified,
    read_json,
    remove_tree,
    sha256_file,
    tree_files,
    write_json,
)
from edge_agent.systemd import Systemd
from edge_common.versions import version_key

TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EDGE_DIR = ".edge"
JETSON_FACT = "/etc/ansible/facts.d/jetson.fact"  # written by the jetson_facts role
HISTORY_KEEP = 30


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag or ""):
        raise UsageError("release tag %r is not a plain name (letters, digits, . _ + -)" % tag)
    return tag


class Agent:
    def __init__(
        self,
        cfg: Config,
        systemd: Optional[Systemd] = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda _m: None,
    ):
        self.cfg = cfg
        self.systemd = systemd or Systemd()
        self.sleep = sleep
        self.log = log

    # ------------------------------------------------------------------ small helpers
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

    def release_dir(self, tag: str) -> str:
        return os.path.join(self.cfg.releases_dir, check_tag(tag))

    def current_tag(self) -> Optional[str]:
        try:
            return os.path.basename(os.readlink(self.cfg.current_link).rstrip("/"))
        except OSError:
            return None

    def is_staged(self, tag: str) -> bool:
        return os.path.isfile(os.path.join(self.release_dir(tag), EDGE_DIR, "staged.json"))

    def manifest(self, tag: str) -> Dict[str, Any]:
        data = read_json(os.path.join(self.release_dir(tag), tufclient.MANIFEST))
        if data is None:
            raise UsageError("release %s is not staged on this robot" % tag)
        return data

    def state(self) -> Dict[str, Any]:
        return read_json(self.cfg.state_file, {}) or {}

    def _record(self, state: Dict[str, Any], op: str, **fields: Any) -> None:
        entry = dict(fields, op=op, at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        state["history"] = [*(state.get("history") or [])[-(HISTORY_KEEP - 1) :], entry]
        state["last"] = entry
        write_json(self.cfg.state_file, state)

    @contextlib.contextmanager
    def _lock(self, timeout: Optional[float] = None):
        """One agent run at a time per app (push, pull timer and OnFailure share the lock)."""
        path = self.cfg.lock_file
        try:
            with locked(path, self.cfg.lock_timeout_seconds if timeout is None else timeout):
                yield
        except LockTimeout as exc:
            raise Busy("another release agent run holds %s" % path) from exc

    def _ensure_layout(self) -> None:
        for path in (
            self.cfg.releases_dir,
            self.cfg.snapshots_dir,
            self.cfg.engines_dir,
            self.cfg.config_dir,
        ):
            os.makedirs(path, exist_ok=True)

    @property
    def _pythonpath(self) -> str:
        if self.cfg.agent_path:
            return self.cfg.agent_path
        return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    # ------------------------------------------------------------------ checks on a verified manifest
    def _check_version(self, manifest: Dict[str, Any], allow_downgrade: bool) -> None:
        current = self.current_tag()
        if not current or current == manifest["tag"] or allow_downgrade:
            return
        try:
            installed = self.manifest(current).get("version", current)
        except UsageError:
            return
        if version_key(manifest["version"]) < version_key(installed):
            raise Refused(
                "release %s (version %s) is older than the installed %s (version %s); use rollback, "
                "or stage with --allow-downgrade"
                % (manifest["tag"], manifest["version"], current, installed),
                {"installed": installed, "offered": manifest["version"]},
            )

    def _check_compatible(self, manifest: Dict[str, Any]) -> None:
        """JetPack and module ranges from the manifest, against the jetson_facts local fact."""
        compat = manifest.get("compatible") or {}
        facts = read_json(JETSON_FACT) if compat else None
        if not compat or not facts:
            return
        jetpack = facts.get("jetpack")
        if (
            jetpack
            and compat.get("jetpack_min")
            and version_key(jetpack) < version_key(compat["jetpack_min"])
        ):
            raise Refused(
                "release %s needs JetPack >= %s; this robot runs %s"
                % (manifest["tag"], compat["jetpack_min"], jetpack)
            )
        if (
            jetpack
            and compat.get("jetpack_max")
            and version_key(jetpack) > version_key(compat["jetpack_max"])
        ):
            raise Refused(
                "release %s needs JetPack <= %s; this robot runs %s"
                % (manifest["tag"], compat["jetpack_max"], jetpack)
            )
        modules = compat.get("modules")
        if modules and facts.get("module_class") and facts["module_class"] not in modules:
            raise Refused(
                "release %s supports modules %s, not %s"
                % (manifest["tag"], ", ".join(modules), facts["module_class"])
            )

    # ------------------------------------------------------------------ verify
    def verify(self, repo: str, tag: str, allow_downgrade: bool = False) -> Dict[str, Any]:
        check_tag(tag)
        self._ensure_layout()
        with self._lock():
            scratch = os.path.join(self.cfg.releases_dir, ".verify-%s-%d" % (tag, os.getpid()))
            try:
                manifest = tufclient.fetch_release(self.cfg.tuf_dir, repo, self.cfg.app, tag, scratch)
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
                    self.cfg.tuf_dir, repo, self.cfg.app, tag, staging, self._kept_files(self.kept()), counts
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
        models = manifest.get("models") or []
        if not models:
            return {}
        if dry_run:
            return read_json(os.path.join(release_dir, EDGE_DIR, "engines.json"), {}) or {}
        builder = engines_mod.EngineBuilder(
            self.cfg.python, self._pythonpath, self.cfg.command_timeout_seconds
        )
        return engines_mod.build_all(
            builder, self.cfg.engine_backend, release_dir, self.cfg.engines_dir, models
        )

    # ------------------------------------------------------------------ pull (the OTA timer)
    def mission_lock(self) -> Optional[str]:
        """None when the robot app's mission lock lets an update start; else why not."""
        return mission.check(self.cfg.mission_lock_file, self.cfg.min_battery, self.cfg.require_docked)

    def pull(self, repo: Optional[str], dry_run: bool = False) -> Dict[str, Any]:
        """Take the newest signed release that is newer than the current one, not marked bad and
        accepted by this robot: stage it (kept releases' files are reused, not downloaded), then,
        when the mission lock allows, activate it behind the health gate. A release that fails
        its gate is rolled back and marked bad, so the next pull does not take it again.
        Each pull's outcome is kept in the state (`status` shows it as `pull`)."""
        try:
            result = self._pull(repo, dry_run)
        except Busy:
            raise  # another run holds the lock: it records its own outcome
        except AgentError as exc:
            self._note_pull(exc.kind, exc.details.get("tag"), exc.message)
            raise
        if not dry_run:
            if result.get("deferred"):
                self._note_pull("deferred", result["tag"], result["deferred"])
            elif result.get("activate"):
                self._note_pull("updated", result["tag"], "from %s" % (result["activate"].get("from") or "-"))
            else:
                self._note_pull("up to date", result.get("current"), result["reason"])
        return result

    def _note_pull(self, outcome: str, tag: Optional[str], message: str) -> None:
        with self._lock():
            state = self.state()
            state["pull"] = {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "result": outcome,
                "tag": tag,
                "message": message,
            }
            write_json(self.cfg.state_file, state)

    def _pull(self, repo: Optional[str], dry_run: bool) -> Dict[str, Any]:
        repo = repo or self.cfg.repository_url
        if not repo:
            raise UsageError("no repository to pull from: set repository_url in the agent config")
        self._ensure_layout()
        self._trust_repository_ca()
        with self._lock():
            tags = tufclient.signed_tags(self.cfg.tuf_dir, repo, self.cfg.app)
            current = self.current_tag()
            bad = self.state().get("bad") or {}
        newer = sorted(
            (t for t in tags if TAG_RE.match(t) and (not current or version_key(t) > version_key(current))),
            key=version_key,
            reverse=True,
        )
        skipped: Dict[str, str] = {}
        for tag in newer:
            if tag in bad:
                skipped[tag] = "marked bad: %s" % bad[tag]
                continue
            if dry_run:
                return {"changed": True, "dry_run": True, "tag": tag, "current": current, "skipped": skipped}
            try:
                staged = self.stage(repo, tag)
            except Refused as exc:
                skipped[tag] = exc.message
                continue
            locked_by = self.mission_lock()
            if locked_by:
                self.log("%s staged; the mission lock defers its activation: %s" % (tag, locked_by))
                return {
                    "changed": staged["changed"],
                    "tag": tag,
                    "current": current,
                    "deferred": locked_by,
                    "stage": staged,
                    "skipped": skipped,
                }
            activated = self.activate(tag)
            return {
                "changed": True,
                "tag": tag,
                "current": self.current_tag(),
                "stage": staged,
                "activate": activated,
                "skipped": skipped,
            }
        newest = max(tags, key=version_key) if tags else None
        reason = (
            "up to date: %s is the newest signed release" % current
            if current and current == newest
            else "no newer release this robot can take"
        )
        return {"changed": False, "current": current, "reason": reason, "skipped": skipped}

    # ------------------------------------------------------------------ snapshots
    def _outside_files(self) -> Dict[str, str]:
        """What a release changes outside its folder: snapshot name -> live path."""
        files = {"unit/50-release.conf": self.cfg.dropin_path, "engines/active.json": self.cfg.active_engines}
        for rel in tree_files(self.cfg.config_dir):
            files["config/" + rel] = os.path.join(self.cfg.config_dir, rel)
        return files

    def snapshot(self, tag: str) -> Dict[str, Any]:
        """Record the outside state while `tag` is live, replacing any older snapshot of that tag."""
        target = os.path.join(self.cfg.snapshots_dir, check_tag(tag))
        work = target + ".new"
        remove_tree(work)
        os.makedirs(work)
        checksums: Dict[str, str] = {}
        for name, live in sorted(self._outside_files().items()):
            if os.path.isfile(live):
                dest = os.path.join(work, "files", name)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy2(live, dest)
                checksums[name] = sha256_file(dest)
        unit = os.path.join(self.cfg.systemd_dir, self.cfg.service)
        record = {
            "tag": tag,
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": checksums,
            "unit_sha256": sha256_file(unit) if os.path.isfile(unit) else None,
        }
        write_json(os.path.join(work, "snapshot.json"), record)
        old = target + ".old"
        remove_tree(old)
        if os.path.exists(target):
            os.rename(target, old)
        os.rename(work, target)
        remove_tree(old)
        return record

    def _snapshot_ok(self, tag: str) -> Optional[Dict[str, Any]]:
        base = os.path.join(self.cfg.snapshots_dir, tag)
        record = read_json(os.path.join(base, "snapshot.json"))
        if not record:
            return None
        for name, digest in record["files"].items():
            path = os.path.join(base, "files", name)
            if not os.path.isfile(path) or sha256_file(path) != digest:
                self.log("snapshot of %s is damaged (%s): rebuilding from the release instead" % (tag, name))
                return None
        return record

    def _restore_snapshot(self, tag: str, record: Dict[str, Any]) -> None:
        base = os.path.join(self.cfg.snapshots_dir, tag, "files")
        live = self._outside_files()
        wanted = {name for name in record["files"]}
        for name, path in live.items():  # files the newer release added
            if name not in wanted and os.path.isfile(path):
                os.unlink(path)
        for name in sorted(wanted):
            dest = self._live_path(name)
            with open(os.path.join(base, name), "rb") as fh:
                atomic_write(dest, fh.read(), 0o644)

    def _live_path(self, name: str) -> str:
        kind, _, rel = name.partition("/")
        rel = tufclient.safe_relpath(rel)
        if kind == "unit":
            return self.cfg.dropin_path
        if kind == "engines":
            return self.cfg.active_engines
        return os.path.join(self.cfg.config_dir, rel)

    # ------------------------------------------------------------------ applying a release's outside state
    def _dropin(self, tag: str, manifest: Dict[str, Any]) -> str:
        lines = [
            "# Written by the edge release agent for %s %s; restored from snapshots on rollback."
            % (self.cfg.app, tag),
            "[Service]",
        ]
        env = {"EDGE_RELEASE": tag, "EDGE_RELEASE_VERSION": str(manifest.get("version", ""))}
        env.update({str(k): str(v) for k, v in (manifest.get("environment") or {}).items()})
        for key, value in sorted(env.items()):
            if not ENV_KEY_RE.match(key) or "\n" in value:
                raise Refused("release %s sets an unusable environment variable %r" % (tag, key))
            quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
            lines.append('Environment="%s=%s"' % (key, quoted))
        if manifest.get("watchdog_seconds"):
            lines.append("WatchdogSec=%s" % float(manifest["watchdog_seconds"]))
        if self.cfg.agent_path and self.cfg.config_path:
            # Before every start (boot included), as root: a switch that a power loss or crash
            # interrupted is finished first, so the app never starts a release that did not pass
            # its gate. It returns at once when nothing is pending or an agent run is under way.
            lines.append(
                "ExecStartPre=+%s %s --config %s --json recover"
                % (self.cfg.python, self.cfg.agent_path, self.cfg.config_path)
            )
        return "\n".join(lines) + "\n"

    def _apply_release(self, tag: str) -> None:
        manifest = self.manifest(tag)
        release = self.release_dir(tag)
        atomic_write(self.cfg.dropin_path, self._dropin(tag, manifest).encode("utf-8"), 0o644)
        refs = read_json(os.path.join(release, EDGE_DIR, "engines.json"), {}) or {}
        write_json(self.cfg.active_engines, {"release": tag, "engines": refs})
        shipped = os.path.join(release, "config")
        if os.path.isdir(shipped):  # overlay: robot-local files the release does not ship are kept
            for rel in tree_files(shipped):
                with open(os.path.join(shipped, rel), "rb") as fh:
                    atomic_write(os.path.join(self.cfg.config_dir, rel), fh.read(), 0o644)

    def _switch(self, tag: str, restore: bool) -> str:
        """Outside state + symlink to `tag`; returns how the outside state was produced."""
        record = self._snapshot_ok(tag) if restore else None
        if record is not None:
            self._restore_snapshot(tag, record)
            how = "snapshot"
        else:
            self._apply_release(tag)
            how = "release"
        if self.cfg.systemd:
            self.systemd.daemon_reload()
        atomic_symlink(os.path.join("releases", tag), self.cfg.current_link)
        return how

    # ------------------------------------------------------------------ health gate
    def gate(self, tag: str, golden: bool = True) -> Dict[str, Any]:
        manifest = self.manifest(tag)
        conf = health_mod.settings(manifest.get("health") or {}, self.cfg.health)
        result: Dict[str, Any] = {"settings": conf}
        if not self.cfg.systemd:
            result.update(passed=True, service={"passed": True, "skipped": "systemd disabled"})
            return result
        service = health_mod.service_gate(
            self.systemd,
            self.cfg.service,
            manifest.get("health") or {},
            self.release_dir(tag),
            conf,
            self.sleep,
        )
        result["service"] = service
        if not service["passed"]:
            result.update(passed=False, reason=service["reason"])
            return result
        if golden:
            refs = read_json(os.path.join(self.release_dir(tag), EDGE_DIR, "engines.json"), {}) or {}
            inference = health_mod.golden_gate(
                self.cfg.python,
                self._pythonpath,
                self.release_dir(tag),
                manifest.get("models") or [],
                refs,
                self.cfg.command_timeout_seconds,
            )
            result["inference"] = inference
            if not inference["passed"]:
                result.update(passed=False, reason="golden inference: %s" % inference["reason"])
                return result
        result["passed"] = True
        return result

    def _restart(self) -> None:
        if self.cfg.systemd:
            if not self.systemd.is_enabled(self.cfg.service):
                self.systemd.enable([self.cfg.service])
            self.systemd.restart(self.cfg.service)

    # ------------------------------------------------------------------ activate / rollback
    def activate(self, tag: str, gate: bool = True, dry_run: bool = False) -> Dict[str, Any]:
        check_tag(tag)
        if not self.is_staged(tag):
            raise UsageError("release %s is not staged on this robot: stage it first" % tag)
        with self._lock():
            current = self.current_tag()
            if not dry_run:
                self._recover_locked(restart=True)
            current = self.current_tag()
            if current == tag:
                return {"changed": False, "tag": tag, "current": tag}
            if dry_run:
                return {"changed": True, "tag": tag, "current": current, "dry_run": True}
            return self._move(current, tag, restore=False, gate=gate, op="activate")

    def rollback(
        self, tag: Optional[str] = None, gate: bool = True, dry_run: bool = False, reason: str = "requested"
    ) -> Dict[str, Any]:
        with self._lock():
            return self._rollback_locked(tag, gate, dry_run, reason)

    def _rollback_locked(self, tag: Optional[str], gate: bool, dry_run: bool, reason: str) -> Dict[str, Any]:
        if not dry_run:
            self._recover_locked(restart=True)
        state = self.state()
        current = self.current_tag()
        target = tag or state.get("previous")
        if not target:
            raise UsageError("no previous release to roll back to (current: %s)" % current)
        if not self.is_staged(target):
            raise UsageError(
                "release %s is not kept on this robot (kept: %s)" % (target, ", ".join(self.kept()) or "none")
            )
        if target == current:
            return {"changed": False, "tag": target, "current": current}
        if dry_run:
            return {"changed": True, "tag": target, "current": current, "dry_run": True}
        return self._move(current, target, restore=True, gate=gate, op="rollback", reason=reason)

    def _move(
        self,
        current: Optional[str],
        tag: str,
        restore: bool,
        gate: bool,
        op: str,
        reason: Optional[str] = None,
    ) -> Dict[str, Any]:
        state = self.state()
        started = time.monotonic()
        if current:
            self.snapshot(current)
        # Until the gate has spoken, the move is pending: `recover` finishes it after a crash.
        state["pending"] = {
            "op": op,
            "from": current,
            "to": tag,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(self.cfg.state_file, state)
        how = self._switch(tag, restore)
        self._restart()
        verdict = self.gate(tag) if gate else {"passed": True, "skipped": True}
        result: Dict[str, Any] = {
            "changed": True,
            "op": op,
            "tag": tag,
            "from": current,
            "outside_state": how,
            "health": verdict,
        }
        state.pop("pending", None)
        if verdict["passed"]:
            state.update(current=tag, previous=current if current != tag else state.get("previous"))
            (state.setdefault("bad", {})).pop(tag, None)
            result["pruned"] = self._prune(tag, state.get("previous"))
            result["seconds"] = round(time.monotonic() - started, 2)
            self._record(state, op, **{"from": current, "to": tag, "result": "ok", "reason": reason})
            return result
        # The gate failed: back to where we were, on the robot, with no controller needed.
        state.setdefault("bad", {})[tag] = verdict.get("reason")
        if not current:
            if self.cfg.systemd:
                self.systemd.stop(self.cfg.service)
            self._record(
                state, op, **{"from": None, "to": tag, "result": "failed", "reason": verdict.get("reason")}
            )
            raise AgentError(
                "release %s failed its health gate and there is no previous release: the "
                "service is stopped: %s" % (tag, verdict.get("reason")),
                result,
            )
        self._switch(current, restore=True)
        self._restart()
        back = self.gate(current, golden=False)
        result["rolled_back_to"] = current
        result["rollback_health"] = back
        result["seconds"] = round(time.monotonic() - started, 2)
        state.update(current=current)
        self._record(
            state,
            op,
            **{"from": current, "to": tag, "result": "rolled_back", "reason": verdict.get("reason")},
        )
        raise RolledBack(
            "release %s failed its health gate (%s); rolled back to %s%s"
            % (
                tag,
                verdict.get("reason"),
                current,
                "" if back["passed"] else ", which is not healthy either: %s" % back.get("reason"),
            ),
            result,
        )

    def recover(self) -> Dict[str, Any]:
        """Run before the app starts (ExecStartPre=+ in the release drop-in), boot included.

        A move (activate or rollback) that a power loss, a killed container or a killed agent cut
        short leaves the robot between two releases: the symlink or the outside state may already
        point at a release whose health gate never passed. Put the robot back on the release that
        last passed it (the `from` of an activation, the target of a rollback). Returns at once when
        another agent run holds the lock: that run owns the switch and restarts the app itself.
        """
        try:
            with self._lock(0):
                return self._recover_locked(restart=False)
        except Busy:
            return {"changed": False, "reason": "an agent run is under way"}

    def _recover_locked(self, restart: bool) -> Dict[str, Any]:
        state = self.state()
        pending = state.get("pending")
        if not pending:
            return {"changed": False}
        current = self.current_tag()
        good = pending.get("from") if pending.get("op") == "activate" else pending.get("to")
        interrupted = pending.get("to") if pending.get("op") == "activate" else pending.get("from")
        why = "interrupted during %s (the robot or the agent stopped before its health gate passed)" % (
            pending.get("op")
        )
        if not good or not self.is_staged(good):
            # A first install has nothing to go back to: keep what is there, say so.
            state.pop("pending", None)
            state["current"] = current
            self._record(
                state, "recover", **{"from": current, "to": current, "result": "kept", "reason": why}
            )
            return {"changed": False, "tag": current, "reason": why}
        how = self._switch(good, restore=True)
        state.pop("pending", None)
        if interrupted and interrupted != good:
            state.setdefault("bad", {})[interrupted] = why
        state["current"] = good
        if state.get("previous") == good:
            state["previous"] = None
        fields = {"from": current, "to": good, "result": "ok", "reason": why, "pending": pending}
        self._record(state, "recover", **fields)
        if restart:
            self._restart()
        self.log("recovered from an interrupted %s: back on %s" % (pending.get("op"), good))
        return {"changed": True, "tag": good, "from": current, "outside_state": how, "pending": pending}

    def on_failure(self) -> Dict[str, Any]:
        """Run by <app>-rollback.service (OnFailure= of the app unit): a crash loop after activation."""
        with self._lock():
            current = self.current_tag()
            state = self.state()
            service = self.systemd.show(self.cfg.service) if self.cfg.systemd else {}
            if service.get("ActiveState") in ("active", "activating", "reloading"):
                return {
                    "changed": False,
                    "reason": "%s is %s again" % (self.cfg.service, service["ActiveState"]),
                }
            previous = state.get("previous")
            if not previous or previous == current or not self.is_staged(previous):
                self._record(
                    state, "on-failure", **{"from": current, "to": None, "result": "no previous release"}
                )
                return {"changed": False, "reason": "no previous release to go back to", "service": service}
            why = "crash loop (%s)" % (service.get("Result") or "failed")
            state.setdefault("bad", {})[current] = why
            write_json(self.cfg.state_file, state)
            result = self._rollback_locked(previous, gate=True, dry_run=False, reason=why)
            state = self.state()
            state["previous"] = None  # the failed release is not a place to go back to
            write_json(self.cfg.state_file, state)
            return result

    # ------------------------------------------------------------------ keep N releases
    def kept(self) -> List[str]:
        if not os.path.isdir(self.cfg.releases_dir):
            return []
        tags = [
            name
            for name in os.listdir(self.cfg.releases_dir)
            if not name.startswith(".") and TAG_RE.match(name) and self.is_staged(name)
        ]
        return sorted(
            tags,
            key=lambda t: (
                read_json(os.path.join(self.release_dir(t), EDGE_DIR, "staged.json"), {}) or {}
            ).get("staged_at", ""),
        )

    def _prune(self, current: str, previous: Optional[str]) -> List[str]:
        kept = self.kept()
        keep = max(2, int(self.cfg.keep_releases))
        protected = {current, previous}
        removable = [t for t in kept if t not in protected]
        excess = len(kept) - keep
        pruned = []
        for tag in removable[: max(0, excess)]:
            remove_tree(self.release_dir(tag))
            remove_tree(os.path.join(self.cfg.snapshots_dir, tag))
            pruned.append(tag)
        if pruned:
            self._prune_engines()
        return pruned

    def _prune_engines(self) -> None:
        used = set()
        for tag in self.kept():
            refs = read_json(os.path.join(self.release_dir(tag), EDGE_DIR, "engines.json"), {}) or {}
            used.update(os.path.dirname(ref["artifact"]) for ref in refs.values())
        for name in os.listdir(self.cfg.engines_dir):
            path = os.path.join(self.cfg.engines_dir, name)
            if os.path.isdir(path) and path not in used:
                remove_tree(path)

    # ------------------------------------------------------------------ status
    def status(self) -> Dict[str, Any]:
        state = self.state()
        releases = []
        for tag in self.kept():
            staged = read_json(os.path.join(self.release_dir(tag), EDGE_DIR, "staged.json"), {}) or {}
            releases.append(
                {
                    "tag": tag,
                    "version": staged.get("version"),
                    "staged_at": staged.get("staged_at"),
                    "snapshot": os.path.isdir(os.path.join(self.cfg.snapshots_dir, tag)),
                }
            )
        service = self.systemd.show(self.cfg.service) if self.cfg.systemd else {}
        engines = (read_json(self.cfg.active_engines, {}) or {}).get("engines", {})
        return {
            "app": self.cfg.app,
            "root": self.cfg.root,
            "current": self.current_tag(),
            "previous": state.get("previous"),
            "releases": releases,
            "bad": state.get("bad") or {},
            "last": state.get("last"),
            "pull": state.get("pull"),
            "pending": state.get("pending"),
            "service": service,
            "engines": {
                name: {k: ref.get(k) for k in ("backend", "precision", "fingerprint", "sha256")}
                for name, ref in engines.items()
            },
        }

    # ------------------------------------------------------------------ the service's ExecStart
    def exec_app(self) -> None:
        """Replace this process with the current release's entry command (same PID: sd_notify works)."""
        release = os.path.realpath(self.cfg.current_link)
        manifest = read_json(os.path.join(release, tufclient.MANIFEST))
        if not manifest:
            raise AgentError("no current release under %s" % self.cfg.root)
        argv = [
            str(a).replace("{python}", self.cfg.python).replace("{release}", release)
            for a in manifest["entry"]
        ]
        env = dict(os.environ)
        env.update(
            {
                "EDGE_APP": self.cfg.app,
                "EDGE_APP_ROOT": self.cfg.root,
                "EDGE_RELEASE_DIR": release,
                "EDGE_SHARED_DIR": self.cfg.shared_dir,
                "EDGE_CONFIG_DIR": self.cfg.config_dir,
                "EDGE_DATA_DIR": os.path.join(self.cfg.shared_dir, "data"),
                "EDGE_LOG_DIR": os.path.join(self.cfg.shared_dir, "logs"),
                "EDGE_ENGINES": self.cfg.active_engines,
                "PYTHONPATH": os.pathsep.join(p for p in (self._pythonpath, env.get("PYTHONPATH")) if p),
            }
        )
        os.chdir(release)
        os.execvpe(argv[0], argv, env)
