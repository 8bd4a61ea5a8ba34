"""The release role's probe (roles/release/files/probe.py), run as the role runs it on a robot:
python3 with the wanted state on stdin. Files and folders under tmp_path, owned by whoever runs
the tests; units are left to the fleet tests (tests/fleet/test_release_fleet.py)."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import subprocess
import sys

from tests.repo import REPO

PROBE = REPO / "roles" / "release" / "files" / "probe.py"
ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def probe(spec: dict) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", PROBE.read_text()],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_what_is_in_place_is_not_stale(tmp_path):
    unit = tmp_path / "app.service"
    unit.write_bytes(b"[Service]\n")
    unit.chmod(0o644)
    folder = tmp_path / "data"
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    found = probe(
        {
            "file_defaults": {"owner": ME, "group": MY_GROUP, "mode": "0644"},
            "files": [{"key": "unit", "path": str(unit), "sha256": sha(b"[Service]\n")}],
            "dirs": [{"path": str(folder), "owner": ME, "group": MY_GROUP, "mode": "0750"}],
            "absent": [{"key": "ca", "path": str(tmp_path / "none.pem")}],
            "modules": [{"key": "venv_module", "name": "json"}],
            "commands": [{"key": "tuf", "argv": [sys.executable, "-c", "import json"]}],
        }
    )
    assert found == {"stale": [], "detail": {}}


def test_each_kind_of_drift_is_named_with_its_key(tmp_path):
    unit = tmp_path / "app.service"
    unit.write_bytes(b"[Service]\n# edited by hand\n")
    unit.chmod(0o644)
    loose = tmp_path / "loose.json"
    loose.write_bytes(b"{}")
    loose.chmod(0o666)
    folder = tmp_path / "data"
    folder.mkdir()
    folder.chmod(0o777)
    (tmp_path / "left.pem").write_text("old CA")
    found = probe(
        {
            "file_defaults": {"owner": ME, "group": MY_GROUP, "mode": "0644"},
            "files": [
                {"key": "unit", "path": str(unit), "sha256": sha(b"[Service]\n")},
                {"key": "config", "path": str(loose), "sha256": sha(b"{}")},
                {"key": "agent_zip", "path": str(tmp_path / "missing.pyz"), "sha256": sha(b"zip")},
                {"key": "folder_not_file", "path": str(folder)},
                {"key": "pip", "path": str(tmp_path / "missing-too"), "wanted": False},
            ],
            "dirs": [
                {"path": str(folder), "owner": ME, "group": MY_GROUP, "mode": "0750"},
                {"path": str(unit), "owner": ME, "group": MY_GROUP, "mode": "0755"},
            ],
            "absent": [{"key": "ca", "path": str(tmp_path / "left.pem")}],
            "modules": [{"key": "venv_module", "name": "no_such_module_here"}],
            "commands": [
                {"key": "tuf", "argv": [sys.executable, "-c", "import no_such_module_here"]},
                {"key": "venv", "argv": [str(tmp_path / "venv/bin/python"), "-V"]},
            ],
        }
    )
    detail = found["detail"]
    assert detail["unit"] == "content differs"
    assert detail["config"] == "mode 0666, not 0644"
    assert detail["agent_zip"] == "missing"
    assert detail["folder_not_file"] == "a folder"
    assert detail["dir:" + str(folder)] == "mode 0777, not 0750"
    assert detail["dir:" + str(unit)] == "not a folder"
    assert detail["ca"] == "present"
    assert detail["venv_module"] == "cannot import no_such_module_here"
    assert detail["tuf"].startswith("exit 1:") and "no_such_module_here" in detail["tuf"]
    assert detail["venv"] == "no " + str(tmp_path / "venv/bin/python")
    assert "pip" not in detail  # not wanted by this robot's settings
    assert found["stale"] == sorted(detail)


def test_owner_and_user_drift(tmp_path):
    held = tmp_path / "root.json"
    held.write_text("{}")
    held.chmod(0o644)
    found = probe(
        {
            "files": [{"key": "root", "path": str(held), "owner": "nobody-here", "group": "", "mode": ""}],
            "user": {
                "key": "user",
                "name": "edge-probe-no-such-user",
                "group": MY_GROUP,
                "home": "/",
                "shell": "/bin/sh",
            },
        }
    )
    assert found["detail"] == {
        "root": "owner %s, not nobody-here" % ME,
        "user": "user edge-probe-no-such-user or group %s missing" % MY_GROUP,
    }
    me = pwd.getpwuid(os.getuid())
    in_place = probe(
        {
            "user": {
                "key": "user",
                "name": ME,
                "group": MY_GROUP,
                "home": me.pw_dir,
                "shell": me.pw_shell,
                "groups": ["edge-probe-no-such-group"],
            }
        }
    )
    assert in_place["stale"] == []  # a GPU group the robot lacks is not asked for
    moved = probe(
        {"user": {"key": "user", "name": ME, "group": MY_GROUP, "home": "/elsewhere", "shell": me.pw_shell}}
    )
    assert moved["detail"]["user"] == "shell %s, home %s" % (me.pw_shell, me.pw_dir)
