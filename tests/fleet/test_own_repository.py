"""Edge Deploy used from a robot team's own repository, outside this clone: the built collection
tarball and the built wheel installed into an empty folder, an inventory for a simulated robot, a
release source and an ansible.cfg written there, then provision, release build and sign, deploy
and rollback, run from that folder over real SSH.

The folder's virtualenv gets the wheel itself (pip, --no-deps); the wheel's dependencies (Ansible
and its collections, python-tuf, ...) are the test run's, made visible through a .pth file, so the
test needs no package index. Nothing of the clone is on its paths: a path into the clone in any
output would mean the installed product still leans on the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from tests.repo import REPO

ROBOT = "nx-01"
WINDOWS = {
    "release_health_soak_seconds": 1,
    "release_health_interval_seconds": 0.5,
    "release_health_start_timeout_seconds": 30,
    "rollout_waves": [1],
    "rollout_wave_soak_seconds": 0,
}


def run(argv, cwd, env, timeout=900):
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, "%s failed (rc=%d):\n%s\n%s" % (
        " ".join(map(str, argv)), proc.returncode, proc.stdout[-5000:], proc.stderr[-3000:]
    )
    assert str(REPO) not in proc.stdout + proc.stderr, "the installed product reached into the clone"
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """An empty folder outside the clone with Edge Deploy installed from its built artefacts."""
    work = tmp_path_factory.mktemp("own-repository")
    dist = work / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(dist), str(REPO)], work, os.environ.copy())  # fmt: skip
    run([str(Path(sys.executable).parent / "ansible-galaxy"), "collection", "build", str(REPO),
         "--output-path", str(dist)], work, os.environ.copy())  # fmt: skip
    wheel = next(dist.glob("edge_deploy-*.whl"))
    tarball = next(dist.glob("edge_deploy-jetson-*.tar.gz"))

    home = work / "robot-team"
    venv = home / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", purelib], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    # The run's own dependencies, after the folder's own site-packages (so the wheel wins).
    (site / "zz-test-run-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "EDGE_", "PYTHONPATH"))}
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), env.get("PATH", "")]),
        ANSIBLE_NOCOLOR="1",
        HOME=str(home),
        CONTAINERS_CONF=os.environ.get("CONTAINERS_CONF", ""),
    )
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], home, env)
    # (its dependencies, ansible.posix and friends, come with the `ansible` package the run has)
    run(["ansible-galaxy", "collection", "install", "--no-deps", "-p", "collections", str(tarball)],
        home, env)  # fmt: skip
    return home, env


@pytest.fixture(scope="module")
def robot(project):
    """One simulated robot, started by the installed package's CLI (its image recipe, profiles and
    the fleet's settings are package data), into the folder's own inventory."""
    home, env = project
    name = "o%d" % os.getpid()
    run(["edge-deploy", "--sim-inventory", "inventory", "sim", "up", "--fleet", name, "--robots", "1",
         "--profiles", "orin-nx-16gb-jp60"], home, env)  # fmt: skip
    try:
        yield name
    finally:
        down = ["edge-deploy", "--sim-inventory", "inventory", "sim", "down", "--fleet", name]
        subprocess.run(down, cwd=home, env=env, timeout=300)


def test_a_robot_team_runs_edge_deploy_from_its_own_repository(project, robot):
    home, env = project
    # The inventory `sim up` wrote, its group_vars linked from the installed package, not the clone.
    assert (home / "inventory" / "hosts.yml").is_file()
    shipped = (home / "inventory" / "group_vars").resolve()
    assert shipped.is_dir() and str(REPO) not in str(shipped), shipped
    (home / "ansible.cfg").write_text(
        "[defaults]\ninventory = inventory\ncollections_path = collections\n"
        "callbacks_enabled = edge_deploy.jetson.rollout_report\nhost_key_checking = true\n"
        "[ssh_connection]\npipelining = true\n"
    )
    # Its own app: the sample app's source with its model files beside it.
    app = home / "app"
    shutil.copytree(REPO / "examples" / "sample_app", app)
    models = app / "models"
    models.mkdir()
    for name in ("digits_int8_qdq.onnx", "digits_golden.npz"):
        shutil.copy(REPO / "examples" / "digits" / name, models / name)
    manifest = yaml.safe_load((app / "release.yaml").read_text())
    manifest.pop("assets", None)
    manifest["models"][0]["golden"]["p99_ms"] = 5000
    (app / "release.yaml").write_text(yaml.safe_dump(manifest))

    keys = ["--repo", "releases/repo", "--keys", "releases/keys"]
    run(["edge-deploy", "release", "init", *keys], home, env)
    for tag, golden_index in (("v1.0.0", 0), ("v1.1.0", 1)):
        config = json.loads((app / "config" / "app.json").read_text())
        (app / "config" / "app.json").write_text(json.dumps(dict(config, golden_index=golden_index)))
        run(["edge-deploy", "release", "build", "app", "--tag", tag, "--out", "build"], home, env)
        run(["edge-deploy", "release", "sign", "build/edge-app-%s" % tag, *keys], home, env)
    listed = run(["edge-deploy", "release", "list", *keys], home, env).stdout
    assert "v1.0.0" in listed and "v1.1.0" in listed, listed

    extra = json.dumps(dict(WINDOWS, release_repository=str(home / "releases" / "repo")))
    run(["ansible-playbook", "edge_deploy.jetson.provision", "-l", ROBOT], home, env)
    for tag in ("v1.0.0", "v1.1.0"):
        deploy = ["ansible-playbook", "edge_deploy.jetson.deploy", "-l", ROBOT, "-e", extra]
        run([*deploy, "-e", "release=" + tag], home, env)
    # every run leaves its report under the working directory's reports/ (provision's too)
    runs = [json.loads(path.read_text())["robots"][ROBOT]
            for path in sorted((home / "reports" / "rollouts").glob("*/report.json"))]  # fmt: skip
    rollouts = [robot for robot in runs if robot.get("release_target")]
    assert [robot["release_target"] for robot in rollouts] == ["v1.0.0", "v1.1.0"], runs
    last = rollouts[-1]
    assert (last["release_before"], last["release_after"]) == ("v1.0.0", "v1.1.0"), last
    assert last["engines"] == {"digits": "hit"}, "the engine built for v1.0.0 serves v1.1.0: %s" % last
    run(["ansible-playbook", "edge_deploy.jetson.rollback", "-l", ROBOT, "-e", extra], home, env)
    status = run(["edge-deploy", "status", "-i", "inventory", "--json"], home, env).stdout
    assert json.loads(status)["robots"][ROBOT]["current"] == "v1.0.0", status
