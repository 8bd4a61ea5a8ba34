"""What the release role would change on this robot, in one round trip (read-only).

The controller sends, on stdin, the state the role puts in place: files with their sha256, owner
and mode, folders, files that must be absent, the app user, modules python3 must import, commands
that must succeed and units that must be enabled or running. This prints {"stale": [keys],
"detail": {key: why}} (a folder's key is "dir:" and its path): the role then runs only the
install steps whose key is stale, so that a converge with nothing to do costs one round trip
instead of one per file.

It runs on the robot's python3 (3.6 on JetPack 4 up to 3.10 on JetPack 6): standard library only.
"""

import grp
import hashlib
import importlib.util
import json
import os
import pwd
import subprocess
import sys


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _owner(stat):
    try:
        user = pwd.getpwuid(stat.st_uid).pw_name
    except KeyError:
        user = str(stat.st_uid)
    try:
        group = grp.getgrgid(stat.st_gid).gr_name
    except KeyError:
        group = str(stat.st_gid)
    return user, group


def _attrs(path, want, is_dir):
    """Why `path` differs from `want` (owner, group, mode, sha256), or None when it does not."""
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    if is_dir != os.path.isdir(path):
        return "not a folder" if is_dir else "a folder"
    user, group = _owner(stat)
    if want.get("owner") and user != want["owner"]:
        return "owner %s, not %s" % (user, want["owner"])
    if want.get("group") and group != want["group"]:
        return "group %s, not %s" % (group, want["group"])
    if want.get("mode") and stat.st_mode & 0o7777 != int(str(want["mode"]), 8):
        return "mode %04o, not %s" % (stat.st_mode & 0o7777, want["mode"])
    if not is_dir and want.get("sha256"):
        try:
            found = _sha256(path)
        except OSError as exc:
            return "unreadable: %s" % exc
        if found != want["sha256"]:
            return "content differs"
    return None


def _user(want):
    try:
        user = pwd.getpwnam(want["name"])
        group = grp.getgrnam(want["group"])
    except KeyError:
        return "user %s or group %s missing" % (want["name"], want["group"])
    if user.pw_gid != group.gr_gid:
        return "primary group is not %s" % want["group"]
    if user.pw_shell != want["shell"] or user.pw_dir != want["home"]:
        return "shell %s, home %s" % (user.pw_shell, user.pw_dir)
    lacking = []
    for name in want.get("groups", []):
        try:
            if want["name"] not in grp.getgrnam(name).gr_mem:
                lacking.append(name)
        except KeyError:  # the robot has no such group: the role does not add it either
            pass
    return "not in %s" % ", ".join(lacking) if lacking else None


def _unit(want):
    def ask(verb):
        run = subprocess.run(
            ["systemctl", verb, want["name"]],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            check=False,  # is-enabled and is-active answer in their exit code too: the words say it
        )
        return run.stdout.strip()

    enabled, active = ask("is-enabled"), ask("is-active")
    if (enabled == "enabled") != bool(want["enabled"]) or (active == "active") != bool(want["active"]):
        return "%s, %s" % (enabled or "unknown", active or "unknown")
    return None


def probe(spec):
    detail = {}

    def note(key, why):
        if why and key not in detail:
            detail[key] = why

    for item in spec.get("dirs", []):
        note(item.get("key") or "dir:" + item["path"], _attrs(item["path"], item, True))
    for item in spec.get("files", []):
        if not item.get("wanted", True):  # a file this robot's settings do not call for
            continue
        note(item["key"], _attrs(item["path"], dict(spec.get("file_defaults", {}), **item), False))
    for item in spec.get("absent", []):
        note(item["key"], "present" if os.path.lexists(item["path"]) else None)
    if spec.get("user"):
        note(spec["user"]["key"], _user(spec["user"]))
    for item in spec.get("modules", []):
        note(item["key"], None if importlib.util.find_spec(item["name"]) else "cannot import " + item["name"])
    for item in spec.get("commands", []):
        if not os.path.exists(item["argv"][0]):
            note(item["key"], "no " + item["argv"][0])
            continue
        run = subprocess.run(
            item["argv"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
        )
        note(
            item["key"],
            "exit %d: %s" % (run.returncode, run.stderr.strip()[-200:]) if run.returncode else None,
        )
    for item in spec.get("units", []):
        note(item["key"], _unit(item))
    return {"stale": sorted(detail), "detail": detail}


if __name__ == "__main__":
    json.dump(probe(json.load(sys.stdin)), sys.stdout, sort_keys=True)
