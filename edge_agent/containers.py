"""A container release on the robot: its image loaded from the verified bundle at staging, run by
the service's ExecStart under systemd's supervision, and removed when its release is pruned.

Through the `docker` SDK at the agent's `docker_host`: Docker Engine with JetPack's
nvidia-container-runtime on a Jetson, podman's Docker-compatible service on a simulated robot.

- **Load** (staging): the image's layers are release files, each verified by TUF on the way (a
  layer a kept release holds is taken from it, not downloaded). The `docker load` archive is
  rebuilt from them (edge_common.image_archive), loaded, and the loaded image must have the id the
  signed manifest names: else the release is refused. The image is tagged `<app>:<tag>`.
- **Run** (`edge-agent exec`, the unit's ExecStart, `Type=notify`): the supervisor removes a
  container left by a killed run, starts the release's container (host network, so the health
  check and the robot's ROS graph see it as a native app; the NVIDIA runtime with
  NVIDIA_VISIBLE_DEVICES=all where the engine has it, since `--gpus` alone fails on Jetson), mounts
  the release, the engines built on the robot and the config read-only and the data and logs
  read-write at the paths a native release sees, copies the container's output to the journal,
  says READY, and pings the watchdog while the container runs and its health check passes. It
  exits with the container's status when the container stops, and stops the container when
  systemd stops the service. So the health gate, the watchdog, the crash-loop rollback and the
  snapshots work for a container as for a native release.
- **Prune**: images of releases this robot no longer keeps are removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterable, List, Optional

from edge_agent import health
from edge_agent.errors import AgentError, Unverified
from edge_agent.sdnotify import notify, watchdog_interval
from edge_common.image_archive import IMAGE_DIR, write_load_archive

RELEASE_LABEL = "io.edge-deploy.release"  # <app>:<tag>, set by `edge-deploy release build`
STOP_SECONDS = 10  # the container's own SIGTERM grace before the engine kills it
POLL_SECONDS = 2.0


def is_container(manifest: Dict[str, Any]) -> bool:
    return bool(manifest.get("container"))


def engine(docker_host: str):
    """A client for the robot's Docker Engine API; AgentError says what to install or start."""
    try:
        import docker
    except ImportError as exc:
        raise AgentError(
            "the agent's Python has no `docker` package, which container releases need: add \"docker>=7.1\" "
            "to release_agent_pip_packages (the release role installs it into the agent's virtualenv)"
        ) from exc
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        raise AgentError(
            "no Docker engine answers at %s (%s): install Docker Engine and nvidia-container-runtime "
            "(JetPack ships both) and start docker.service, or set the agent's docker_host"
            % (docker_host, exc)
        ) from exc
    return client


def socket_group(docker_host: str) -> Optional[str]:
    """The group that owns the engine's unix socket (docker on a Jetson), or None (root's, not a
    socket, or a TCP engine): a container release's service joins it to reach the engine."""
    import grp

    if not docker_host.startswith("unix://"):
        return None
    try:
        gid = os.stat(docker_host[len("unix://") :]).st_gid
        return grp.getgrgid(gid).gr_name if gid != 0 else None
    except (OSError, KeyError):
        return None


def load(docker_host: str, app: str, release_dir: str, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """Load the release's image from its verified files unless the engine has it; check its id."""
    import docker

    image = manifest["container"]["image"]
    ref = "%s:%s" % (app, manifest["tag"])
    client = engine(docker_host)
    archive = os.path.join(release_dir, ".image-load.tar")
    try:
        try:
            client.images.get(image["id"]).tag(app, manifest["tag"])
            return {"image": image["id"], "loaded": False}
        except docker.errors.ImageNotFound:
            pass
        size = write_load_archive(os.path.join(release_dir, IMAGE_DIR), archive)
        with open(archive, "rb") as handle:
            try:
                loaded = client.images.load(handle)
            except docker.errors.APIError as exc:
                raise AgentError(
                    "the Docker engine could not load %s's image: %s" % (ref, exc.explanation)
                ) from exc
        ids = [found.id for found in loaded]
        if image["id"] not in ids:
            for found in loaded:
                client.images.remove(found.id, force=True)
            raise Unverified(
                "the image of %s loaded as %s, not the signed %s: release refused"
                % (ref, ", ".join(ids) or "nothing", image["id"])
            )
        client.images.get(image["id"]).tag(app, manifest["tag"])
        return {"image": image["id"], "loaded": True, "archive_bytes": size}
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(archive)
        client.close()


def prune(docker_host: str, app: str, kept: Iterable[str]) -> List[str]:
    """Remove the images of this app's releases that are no longer kept; the removed refs."""
    import docker

    keep = {"%s:%s" % (app, tag) for tag in kept}
    client = engine(docker_host)
    removed = []
    try:
        for image in client.images.list(filters={"label": RELEASE_LABEL}):
            ref = (image.labels or {}).get(RELEASE_LABEL, "")
            if ref.startswith(app + ":") and ref not in keep and all(t not in keep for t in image.tags):
                try:
                    client.images.remove(image.id, force=True)
                    removed.append(ref)
                except docker.errors.APIError:
                    pass  # in use by a container the engine still has: next prune
    finally:
        client.close()
    return removed


def _mounts(spec: Dict[str, Any], paths: Dict[str, str]):
    from docker.types import Mount

    # The paths a native release sees, at the same paths: the release, its config, the engines
    # built on this robot and the agent (engine_builder's runners) read-only; data and logs writable.
    mounts = [
        Mount(paths[key], paths[key], type="bind", read_only=key not in ("data", "logs"))
        for key in ("release", "config", "engines_dir", "engine_store", "agent", "data", "logs")
        if paths.get(key)
    ]
    for mount in spec.get("mounts") or []:
        read_only = bool(mount.get("read_only"))
        mounts.append(Mount(mount["target"], mount["source"], type="bind", read_only=read_only))
    return mounts


class Supervisor:
    """The service's main process for a container release (see the module's docstring)."""

    def __init__(self, docker_host: str, app: str, manifest: Dict[str, Any], env: Dict[str, str],
                 paths: Dict[str, str], out=None):  # fmt: skip
        self.docker_host = docker_host
        self.app = app
        self.manifest = manifest
        self.env = env
        self.paths = paths
        self.out = out or sys.stdout
        self.stopping = threading.Event()
        self.container = None

    def _start(self, client):
        import docker

        spec = self.manifest["container"]
        with contextlib.suppress(docker.errors.NotFound):  # a container a killed run left behind
            client.containers.get(self.app).remove(force=True)
        environment = dict(self.env)
        kwargs: Dict[str, Any] = {}
        runtime = spec.get("runtime")
        if runtime and runtime in (client.info().get("Runtimes") or {}):
            kwargs["runtime"] = runtime
            if runtime == "nvidia":
                environment.setdefault("NVIDIA_VISIBLE_DEVICES", "all")
                environment.setdefault("NVIDIA_DRIVER_CAPABILITIES", "all")
        for path in (self.paths["data"], self.paths["logs"]):
            os.makedirs(path, exist_ok=True)
        return client.containers.run(
            self.manifest["container"]["image"]["id"],
            command=spec.get("command"),
            name=self.app,
            detach=True,
            network_mode="host",
            environment=environment,
            mounts=_mounts(spec, self.paths),
            devices=["%s:%s:rwm" % (d, d) for d in spec.get("devices") or []],
            labels={RELEASE_LABEL: "%s:%s" % (self.app, self.manifest["tag"])},
            **kwargs,
        )

    def _copy_logs(self) -> None:
        try:
            for chunk in self.container.logs(stream=True, follow=True):
                self.out.write(chunk.decode("utf-8", "replace"))
                self.out.flush()
        except Exception:  # the container went away: the main loop reports it
            pass

    def _say(self, text: str) -> None:
        self.out.write("edge-agent: %s\n" % text)
        self.out.flush()

    def _stop(self, *_args) -> None:
        self.stopping.set()

    def run(self, max_seconds: Optional[float] = None) -> int:
        """Start the container and watch it; the exit status for systemd. max_seconds bounds the
        watch (tests); the service runs until systemd stops it or the container exits."""
        import docker

        client = engine(self.docker_host)
        try:
            signal.signal(signal.SIGTERM, self._stop)
            signal.signal(signal.SIGINT, self._stop)
        except ValueError:  # not the main thread (tests): stop() still works
            pass
        try:
            try:
                self.container = self._start(client)
            except docker.errors.APIError as exc:
                self._say(
                    "the container of %s:%s did not start: %s"
                    % (self.app, self.manifest["tag"], exc.explanation)
                )
                return 1
            threading.Thread(target=self._copy_logs, daemon=True).start()
            notify("READY=1")
            notify("STATUS=container %s running %s" % (self.app, self.manifest["tag"]))
            check = self.manifest.get("health") or {}
            settings = health.settings(check, {})
            started = time.monotonic()
            interval = min(POLL_SECONDS, watchdog_interval() or POLL_SECONDS)
            while not self.stopping.wait(interval):
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
                try:
                    self.container.reload()
                except docker.errors.NotFound:
                    self._say("the container of %s vanished" % self.app)
                    return 1
                if self.container.status not in ("created", "running"):
                    code = int(self.container.attrs.get("State", {}).get("ExitCode") or 1)
                    self._say(
                        "the container of %s:%s exited with status %d"
                        % (self.app, self.manifest["tag"], code)
                    )
                    return code or 1
                # The watchdog is pinged only while the app answers its health check (after its
                # start timeout): a hung container stops the pings and systemd restarts it.
                grace = time.monotonic() - started < settings["start_timeout_seconds"]
                if grace or health.probe(check, self.paths["release"], settings["timeout_seconds"]) is None:
                    notify("WATCHDOG=1")
            return 0
        finally:
            if self.container is not None:
                notify("STOPPING=1")
                try:
                    self.container.stop(timeout=STOP_SECONDS)
                    self.container.remove(force=True)
                except docker.errors.APIError:
                    pass
            client.close()
