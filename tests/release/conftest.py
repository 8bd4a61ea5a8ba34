"""A signed release repository in a temp folder and an agent on a temp robot root (no systemd)."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Dict, Optional, Union

import pytest

# The agent is not a controller dependency: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_agent.agent import Agent
from edge_agent.config import Config
from edge_deploy.release import bundle
from edge_deploy.release.repo import ReleaseRepository
from tests.tls import ServedRepository


class FakeSystemd:
    """Records calls; the unit is always active with a stable restart count."""

    def __init__(self):
        self.calls = []
        self.state = {"ActiveState": "active", "SubState": "running", "NRestarts": "0", "Result": "success"}

    def daemon_reload(self):
        self.calls.append("daemon-reload")

    def restart(self, unit):
        self.calls.append("restart " + unit)

    def stop(self, unit):
        self.calls.append("stop " + unit)

    def show(self, unit):
        return dict(self.state)

    def is_enabled(self, unit):
        return True

    def enable(self, units):
        self.calls.append("enable")


class Releases:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.repo_dir = tmp / "repo"
        self.keys = tmp / "keys"
        self.repo = ReleaseRepository(str(self.repo_dir), str(self.keys))
        self.repo.init()

    def publish(
        self,
        tag: str,
        files: Optional[Dict[str, Union[str, bytes]]] = None,
        repo: Optional[ReleaseRepository] = None,
        **manifest,
    ) -> Path:
        src = self.tmp / ("src-" + tag)
        if src.exists():
            shutil.rmtree(src)
        src.mkdir()
        data = {
            "name": "edge-app",
            "entry": ["{python}", "app.py"],
            "health": {"soak_seconds": 0.2, "interval_seconds": 0.1},
        }
        data.update(manifest)
        (src / "release.json").write_text(json.dumps(data))
        for rel, text in (
            files or {"app.py": "print('%s')\n" % tag, "config/app.json": '{"tag": "%s"}' % tag}
        ).items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(text, bytes):
                (src / rel).write_bytes(text)
            else:
                (src / rel).write_text(text)
        built = bundle.build(str(src), tag, str(self.tmp / "build"))
        (repo or self.repo).add_release(built["path"])
        return Path(built["path"])


@pytest.fixture
def releases(tmp_path) -> Releases:
    return Releases(tmp_path)


@pytest.fixture
def make_agent(tmp_path, releases):
    def make(systemd=None, **config) -> Agent:
        state = tmp_path / "state"
        (state / "tuf").mkdir(parents=True, exist_ok=True)
        root = state / "tuf" / "root.json"
        if not root.exists():
            shutil.copy(releases.repo_dir / "metadata" / "1.root.json", root)
        cfg = dict(
            app="edge-app",
            root=str(tmp_path / "opt"),
            state_dir=str(state),
            systemd_dir=str(tmp_path / "systemd"),
            engine_store=str(tmp_path / "engines"),
            systemd=systemd is not None,
            keep_releases=3,
        )
        cfg.update(config)
        return Agent(Config(cfg), systemd=systemd, sleep=lambda s: None)

    return make


@pytest.fixture
def expired_repo(releases):
    """The same keys, but every role signed with an expiry in the past."""
    return ReleaseRepository(
        str(releases.repo_dir),
        str(releases.keys),
        {role: timedelta(days=-1) for role in ("targets", "snapshot", "timestamp")},
    )


@pytest.fixture
def https_repo(releases, tmp_path, monkeypatch):
    # the agent sets these for its own process: give them back afterwards; never use a proxy here
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    served = ServedRepository(releases.repo_dir, tmp_path)
    yield served
    served.close()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A real Docker Engine API for container releases: podman's Docker-compatible service (as on
    a simulated controller or robot); yields (DOCKER_HOST, client). Removes this worker's images."""
    docker = pytest.importorskip("docker")
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (make setup installs it)")
    from edge_deploy import sim
    from edge_deploy.release import container
    from tests.release.images import APP

    with sim.docker_engine(tmp_path_factory.mktemp("engine")) as url:
        client = docker.DockerClient(base_url=url)
        yield url, client
        for found in client.containers.list(all=True, filters={"label": container.RELEASE_LABEL}):
            if found.labels[container.RELEASE_LABEL].startswith(APP + ":"):
                found.remove(force=True)
        for image in client.images.list(filters={"label": container.RELEASE_LABEL}):
            if image.labels[container.RELEASE_LABEL].startswith(APP + ":"):
                client.images.remove(image.id, force=True)
        client.close()


@pytest.fixture
def jp6_agent(tmp_path, make_agent, monkeypatch, engine):
    """An agent on a robot whose saved identity is an Orin NX on JetPack 6.0 (L4T 36.3.0), whose
    Docker engine is the `engine` fixture's."""
    from tests.release.images import APP

    fact = tmp_path / "jetson.fact"
    fact.write_text(
        json.dumps({"jetpack": "6.0", "module_class": "orin_nx", "l4t": "36.3.0", "l4t_major": 36})
    )
    monkeypatch.setattr("edge_agent.compatibility.JETSON_FACT", str(fact))
    return lambda **config: make_agent(app=APP, docker_host=engine[0], **config)
