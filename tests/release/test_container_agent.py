"""Container releases on the robot (edge_agent/containers.py) against a real Docker Engine API
(podman's Docker-compatible service; the same SDK calls as Docker Engine on a Jetson): staging
loads the signed image, the service's supervisor runs it with the release's mounts and health, a
stopped container stops the service with its status, and pruning removes the images of releases
no longer kept. The runnable images are built on the simulated robots' base image (Debian with
Python); no NVIDIA runtime exists here, so the container runs with the engine's default runtime."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from edge_agent import containers
from edge_agent.errors import Unverified
from edge_deploy.sim import base_image
from tests.release.images import APP, build

docker = pytest.importorskip("docker")

PORT = 18380  # the containers share the host's network (network_mode=host), as on a robot


@pytest.fixture(scope="module")
def base(engine):
    name = base_image()
    try:
        engine[1].images.get(name)
    except Exception:
        pytest.skip("%s is not built: `make setup` builds the simulated robots' images" % name)
    return name


def serving(base: str, **command) -> dict:
    """release.yaml keys of a release whose container serves /healthz on PORT."""
    health = {"http": {"port": PORT, "path": "/healthz"}, "start_timeout_seconds": 30}
    container = {
        "dockerfile": "Dockerfile",
        "l4t_major": 36,
        "build_args": {"BASE": base},
        "command": [
            "python3",
            "-m",
            "http.server",
            str(PORT),
            "--bind",
            "127.0.0.1",
            "--directory",
            "/opt/app",
        ],
    }
    container.update(command)
    return {"health": health, "container": container}


def staged(tmp_path, releases, agent, engine, base, tag="v1.0.0", **command):
    built = build(engine, tmp_path, tag, "print('%s')\n" % tag, **serving(base, **command))
    # The robot's engine is another machine's: it has the base image's layers at most, not this one.
    engine[1].images.remove(built["container"]["image"]["id"], force=True)
    releases.repo.add_release(built["path"])
    return agent.stage(str(releases.repo_dir), tag)


def supervisor(agent, tag, tmp_path):
    manifest = agent.manifest(tag)
    root = Path(agent.cfg.root)
    paths = {
        "release": agent.release_dir(tag),
        "config": str(root / "shared" / "config"),
        "engines_dir": str(root / "shared" / "engines"),
        "engine_store": agent.cfg.engine_store,
        "data": str(root / "shared" / "data"),
        "logs": str(root / "shared" / "logs"),
    }
    for key in ("config", "engines_dir", "engine_store"):
        Path(paths[key]).mkdir(parents=True, exist_ok=True)
    out = tmp_path / "journal.txt"
    handle = out.open("w")
    env = {"EDGE_RELEASE": tag, "EDGE_DATA_DIR": paths["data"]}
    return containers.Supervisor(agent.cfg.docker_host, APP, manifest, env, paths, out=handle), out


def healthy(timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % PORT, timeout=2) as answer:
                return answer.status == 200
        except OSError:
            time.sleep(0.3)
    return False


def test_staging_loads_the_signed_image_and_a_second_stage_finds_it(
    engine, base, tmp_path, releases, jp6_agent
):
    agent = jp6_agent()
    stage = staged(tmp_path, releases, agent, engine, base)
    image_id = agent.manifest("v1.0.0")["container"]["image"]["id"]
    assert stage["image"]["loaded"] is True and stage["image"]["image"] == image_id
    found = engine[1].images.get(image_id)
    assert "localhost/%s:v1.0.0" % APP in found.tags or "%s:v1.0.0" % APP in found.tags, found.tags
    assert not list(Path(agent.release_dir("v1.0.0")).glob(".image-load.tar"))  # the archive is gone
    # the engine has it: loading again is a no-op
    assert containers.load(
        agent.cfg.docker_host, APP, agent.release_dir("v1.0.0"), agent.manifest("v1.0.0")
    ) == {
        "image": image_id,
        "loaded": False,
    }


def test_an_image_that_loads_with_another_id_is_refused_and_nothing_is_staged(
    engine, base, tmp_path, releases, jp6_agent
):
    agent = jp6_agent()
    built = build(engine, tmp_path, "v1.0.0", "print('v1')\n", **serving(base))
    manifest_path = Path(built["path"]) / "release.json"
    manifest = json.loads(manifest_path.read_text())
    real = manifest["container"]["image"]["id"]
    manifest["container"]["image"]["id"] = "sha256:" + "0" * 64  # a build that lied about its image
    manifest_path.write_text(json.dumps(manifest))
    engine[1].images.remove(real, force=True)
    releases.repo.add_release(built["path"])
    with pytest.raises(Unverified, match=r"loaded as sha256:[0-9a-f]{64}, not the signed sha256:0{64}"):
        agent.stage(str(releases.repo_dir), "v1.0.0")
    assert agent.kept() == []
    with pytest.raises(docker.errors.ImageNotFound):
        engine[1].images.get(real)  # the wrong image was removed again


def test_the_supervisor_runs_the_release_with_its_mounts_and_stops_it_with_the_service(
    engine, base, tmp_path, releases, jp6_agent
):
    agent = jp6_agent()
    staged(tmp_path, releases, agent, engine, base)
    run, journal = supervisor(agent, "v1.0.0", tmp_path)
    result = {}
    thread = threading.Thread(target=lambda: result.update(code=run.run(max_seconds=60)), daemon=True)
    thread.start()
    try:
        assert healthy(), journal.read_text()
        running = engine[1].containers.get(APP)
        assert running.labels[containers.RELEASE_LABEL] == "%s:v1.0.0" % APP
        assert running.attrs["HostConfig"]["NetworkMode"] == "host"
        mounts = {m["Destination"]: m["RW"] for m in running.attrs["Mounts"]}
        assert mounts[agent.release_dir("v1.0.0")] is False and mounts[run.paths["data"]] is True, mounts
        assert "EDGE_RELEASE=v1.0.0" in running.attrs["Config"]["Env"]
    finally:
        run._stop()
        thread.join(timeout=30)
    assert result == {"code": 0}
    assert not engine[1].containers.list(all=True, filters={"name": "^%s$" % APP})  # removed
    assert '"GET /healthz HTTP/1.1" 200' in journal.read_text()  # the container's output reached the journal


def test_a_container_that_exits_ends_the_service_with_its_status(engine, base, tmp_path, releases, jp6_agent):
    agent = jp6_agent()
    staged(tmp_path, releases, agent, engine, base, command=["sh", "-c", "echo leaving; exit 3"])
    run, journal = supervisor(agent, "v1.0.0", tmp_path)
    assert run.run(max_seconds=60) == 3
    assert "exited with status 3" in journal.read_text()


def test_pruning_a_container_release_removes_its_image(engine, base, tmp_path, releases, jp6_agent):
    agent = jp6_agent(keep_releases=2)
    ids = {}
    for tag in ("v1.0.0", "v1.1.0", "v1.2.0"):
        staged(tmp_path, releases, agent, engine, base, tag=tag)
        ids[tag] = agent.manifest(tag)["container"]["image"]["id"]
        agent.activate(tag, gate=False)
    assert agent.kept() == ["v1.1.0", "v1.2.0"]
    present = {image.id for image in engine[1].images.list()}
    assert ids["v1.0.0"] not in present and {ids["v1.1.0"], ids["v1.2.0"]} <= present


def test_a_robot_without_the_sdk_or_an_engine_is_told_what_to_install(monkeypatch, tmp_path):
    from edge_agent.errors import AgentError

    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "docker", None)  # the agent's Python lacks it
        with pytest.raises(AgentError, match=r'add "docker>=7.1" to release_agent_pip_packages'):
            containers.engine("unix:///var/run/docker.sock")
    with pytest.raises(AgentError, match="no Docker engine answers at unix://%s" % tmp_path):
        containers.engine("unix://%s/docker.sock" % tmp_path)
