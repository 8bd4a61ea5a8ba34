"""The simulated Jetson fleet: podman containers that behave like robots.

Each robot is a container running systemd as PID 1, sshd published on a
loopback port, and the Jetson userland simulators of one profile
(edge_deploy/simdata/profiles, package data). The fleet gets its own SSH key and known_hosts file, and
an Ansible inventory grouped like production (orin_nano_robots, ...).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from edge_deploy import paths

LABEL = "io.edge-deploy.sim-fleet"
# Timed fleet work on one machine takes turns (fleet tests, make bench-rollout): their robots share
# its cores, and soak windows, timeouts and measured times assume the machine is theirs.
MACHINE_LOCK = Path(os.environ.get("EDGE_SIM_MACHINE_LOCK", "/tmp/edge-fleet.lock"))
DEFAULT_MIX = ("orin-nano-8gb-jp512", "orin-nx-16gb-jp60", "agx-orin-64gb-jp62")
ROBOT_USER = "nvidia"


class SimError(RuntimeError):
    """A simulated-fleet operation failed; the message says what to do."""


@dataclass
class Robot:
    name: str
    profile: str
    group: str
    port: int
    container: str
    # Runs container releases: privileged (nested podman with crun, the Docker-compatible socket
    # the agent's docker SDK talks to), with its image store on a volume of its own.
    containers: bool = False


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(paths.CONTAINERS_CONF))
    return env


def podman(*args: str, check: bool = True, input_text: str | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(["podman", *args], capture_output=True, text=True, env=_env(),
                                input=input_text, timeout=timeout)
    except FileNotFoundError as exc:
        raise SimError("podman is not installed: run `make setup` (or scripts/setup) as root") from exc
    if check and result.returncode != 0:
        raise SimError("podman %s failed: %s" % (" ".join(args[:2]), result.stderr.strip()))
    return result


def controller_address(network: str = "podman") -> str:
    """This machine's address on the simulated fleet's network (the bridge's gateway): what a server
    the robots reach, such as a release repository they fetch from, binds to, so that it listens to
    the fleet only; the controller reaches it there too. The bridge exists while a robot runs."""
    found = json.loads(podman("network", "inspect", network).stdout)
    gateways = [subnet["gateway"] for net in found for subnet in net.get("subnets") or []
                if subnet.get("gateway")]
    if not gateways:
        raise SimError("podman network %s has no gateway address: is a simulated robot running?" % network)
    return gateways[0]


def build_images(*args: str, capture: bool = True) -> str:
    """The image recipe (package data): builds what is missing, or with --tag prints the tag."""
    env = dict(os.environ, EDGE_SIM_PYTHON=os.environ.get("EDGE_SIM_PYTHON") or sys.executable)
    return subprocess.run(["bash", str(paths.BUILD_IMAGE), *args], check=True, env=env,
                          capture_output=capture, text=True).stdout or ""


def image_tag() -> str:
    return build_images("--tag").strip()


def base_image() -> str:
    """The simulated robots' base image (Debian bookworm with Python and the robots' wheels, no
    Jetson files), which the image recipe builds: on a simulated fleet, the base of a container
    release, in the place of NVIDIA's L4T images on a real one."""
    return "localhost/edge-sim-base:%s" % build_images("--base-tag").strip()


def profiles() -> dict:
    found = {}
    for path in sorted(paths.SIM_PROFILES.glob("*.json")):
        data = json.loads(path.read_text())
        found[data["name"]] = data
    return found


def image_for(profile: str, tag: str | None = None) -> str:
    return "localhost/edge-sim-jetson:%s-%s" % (profile, tag or image_tag())


@contextlib.contextmanager
def docker_engine(folder: Path, timeout: float = 30):
    """The simulated controller's Docker Engine API: podman's Docker-compatible service on a socket in
    folder, for as long as the block runs; yields its DOCKER_HOST (unix://...). The `docker` SDK
    builds, saves and loads images through it as it does through Docker Engine."""
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "engine.sock"
    sock.unlink(missing_ok=True)
    url = "unix://%s" % sock
    try:
        service = subprocess.Popen(["podman", "system", "service", "--time=0", url], env=_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError as exc:
        raise SimError("podman is not installed: run `make setup` (or scripts/setup) as root") from exc
    try:
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(sock))
                    break
                except OSError:
                    pass
            if service.poll() is not None or time.monotonic() > deadline:
                error = service.stderr.read() if service.poll() is not None else "no answer in %ds" % timeout
                raise SimError("podman system service did not start on %s: %s" % (url, error.strip()))
            time.sleep(0.1)
        yield url
    finally:
        service.terminate()
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        sock.unlink(missing_ok=True)


@contextlib.contextmanager
def machine_turn():
    """Wait for this machine's other timed fleet work to end, then hold the machine until done."""
    with MACHINE_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Fleet:
    """A named fleet of simulated robots and the files that reach it."""

    def __init__(self, name: str = "sim", state_dir: Path | None = None,
                 inventory_dir: Path | None = None):
        self.name = name
        self.state_dir = state_dir or paths.state_dir() / name
        if inventory_dir is None:
            inventory_dir = paths.sim_inventory() if name == "sim" else self.state_dir / "inventory"
        self.inventory_dir = inventory_dir
        self.key = self.state_dir / "id_ed25519"
        self.known_hosts = self.state_dir / "known_hosts"
        self.record = self.state_dir / "fleet.json"

    @property
    def inventory(self) -> Path:
        return self.inventory_dir / "hosts.yml"

    # -- lifecycle ---------------------------------------------------------
    def robots(self) -> list[Robot]:
        if not self.record.exists():
            return []
        return [Robot(**item) for item in json.loads(self.record.read_text())]

    def plan(self, count: int, mix: Sequence[str] = DEFAULT_MIX) -> list[tuple[str, str]]:
        known = profiles()
        unknown = [name for name in mix if name not in known]
        if unknown:
            raise SimError("unknown simulated profile(s) %s; known: %s"
                           % (", ".join(unknown), ", ".join(sorted(known))))
        if count < 1:
            raise SimError("a fleet needs at least one robot (got %d)" % count)
        chosen = [mix[index % len(mix)] for index in range(count)]
        numbers: dict = {}
        named = []
        for profile in sorted(chosen, key=mix.index):
            short = known[profile]["short_name"]
            numbers[short] = numbers.get(short, 0) + 1
            named.append(("%s-%02d" % (short, numbers[short]), profile))
        return named

    def up(self, count: int = 6, mix: Sequence[str] = DEFAULT_MIX, timeout: float = 240,
           containers: Iterable[str] = ()) -> list[Robot]:
        """Start `count` robots (replacing this fleet's old ones) and write the inventory; the robots
        named in `containers` (nx-01, ...) can run container releases (see Robot.containers)."""
        containers = set(containers)
        unknown = sorted(containers - {host for host, _ in self.plan(count, mix)})
        if unknown:
            raise SimError("--containers names %s, which this fleet does not have" % ", ".join(unknown))
        self.down()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_key()
        tag = image_tag()
        known = profiles()
        missing = sorted({p for _, p in self.plan(count, mix)
                          if podman("image", "exists", image_for(p, tag), check=False).returncode})
        if missing:  # built once per machine (debootstrap, a few minutes), cached by recipe
            try:
                build_images(capture=False)
            except subprocess.CalledProcessError as exc:
                raise SimError("could not build the simulated Jetson image(s) for %s (see above); "
                               "`edge-deploy sim up` needs root, podman, runc and debootstrap "
                               "(make setup installs them)" % ", ".join(missing)) from exc
        robots = []
        for host, profile in self.plan(count, mix):
            robot = Robot(name=host, profile=profile, group=known[profile]["inventory_group"],
                          port=_free_port(), container="edge-%s-%s" % (self.name, host),
                          containers=host in containers)
            # Nested containers need the privileges of a real host (SIM.md: crun works, runc fails
            # on these hybrid cgroups); their store cannot be overlay on the robot's own overlay.
            nested = (["--privileged", "--volume", "%s-containers:/var/lib/containers" % robot.container]
                      if robot.containers else [])
            podman("run", "--detach", "--name", robot.container, "--hostname", host,
                   "--systemd=always", "--cap-add", "NET_ADMIN", *nested,
                   "--label", "%s=%s" % (LABEL, self.name),
                   "--publish", "127.0.0.1:%d:22" % robot.port, image_for(profile, tag))
            robots.append(robot)
        self.record.write_text(json.dumps([asdict(r) for r in robots], indent=2) + "\n")
        public_key = self.key.with_suffix(".pub").read_text()
        with ThreadPoolExecutor(max_workers=len(robots)) as pool:
            list(pool.map(lambda r: self._ready(r, public_key, timeout), robots))
        self._write_known_hosts(robots, timeout)
        self.write_inventory(robots)
        return robots

    def down(self) -> int:
        names = podman("ps", "--all", "--filter", "label=%s=%s" % (LABEL, self.name),
                       "--format", "{{.Names}}").stdout.split()
        if names:
            podman("rm", "--force", "--time", "2", *names, timeout=300)
            volumes = ["%s-containers" % name for name in names]
            podman("volume", "rm", "--force", *volumes, check=False)
        for path in (self.record, self.known_hosts, self.inventory):
            if path.exists():
                path.unlink()
        return len(names)

    def status(self) -> list[dict]:
        running = {}
        for line in podman("ps", "--all", "--filter", "label=%s=%s" % (LABEL, self.name),
                           "--format", "{{.Names}} {{.State}}").stdout.splitlines():
            container, state = line.split(None, 1)
            running[container] = state
        return [dict(asdict(robot), state=running.get(robot.container, "missing"))
                for robot in self.robots()]

    # -- helpers -----------------------------------------------------------
    def _ensure_key(self) -> None:
        if not self.key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                            "edge-deploy-sim-%s" % self.name, "-f", str(self.key)], check=True)

    def _ready(self, robot: Robot, public_key: str, timeout: float) -> None:
        user = ROBOT_USER
        podman("exec", "-i", robot.container, "sh", "-ec",
               f"install -d -m 0700 -o {user} -g {user} /home/{user}/.ssh; "
               f"cat > /home/{user}/.ssh/authorized_keys; "
               f"chown {user}:{user} /home/{user}/.ssh/authorized_keys; "
               f"chmod 0600 /home/{user}/.ssh/authorized_keys",
               input_text=public_key)
        # Early in boot systemd's socket is not there yet and systemctl gives up at once
        # ("Failed to connect to bus"): ask again until the deadline, not only once.
        deadline = time.monotonic() + timeout
        while True:
            left = max(1, int(deadline - time.monotonic()))
            result = podman("exec", robot.container, "timeout", str(left),
                            "systemctl", "is-system-running", "--wait", check=False, timeout=left + 10)
            state = result.stdout.strip()
            if state in ("running", "degraded", "maintenance", "stopping") or time.monotonic() >= deadline:
                break
            time.sleep(1)
        if state not in ("running", "degraded"):
            # what systemd still waits for, and its last words: enough to tell why from a CI log
            def ask(*argv: str) -> str:
                try:
                    found = podman(*argv, check=False, timeout=30)
                except subprocess.TimeoutExpired:
                    return "(no answer in 30 s)"
                return (found.stdout + found.stderr).strip()

            raise SimError("robot %s did not boot within %d s (systemd says %r %s)\npending jobs:\n%s\n"
                           "last journal lines:\n%s"
                           % (robot.name, timeout, state, result.stderr.strip(),
                              ask("exec", robot.container, "systemctl", "list-jobs", "--no-pager"),
                              ask("exec", robot.container, "journalctl", "--boot", "--no-pager",
                                  "--lines", "30")))

    def _write_known_hosts(self, robots: Iterable[Robot], timeout: float) -> None:
        lines = []
        for robot in robots:
            deadline = time.monotonic() + timeout
            while True:
                scan = subprocess.run(["ssh-keyscan", "-T", "3", "-t", "ed25519", "-p", str(robot.port),
                                       "127.0.0.1"], capture_output=True, text=True)
                keys = [line for line in scan.stdout.splitlines() if line and not line.startswith("#")]
                if keys:
                    lines.extend(keys)
                    break
                if time.monotonic() > deadline:
                    raise SimError("robot %s: sshd on 127.0.0.1:%d does not answer"
                                   % (robot.name, robot.port))
                time.sleep(0.5)
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def write_inventory(self, robots: Iterable[Robot]) -> Path:
        children: dict = {}
        for robot in robots:
            hosts = children.setdefault(robot.group, {"hosts": {}})["hosts"]
            hosts[robot.name] = {"ansible_port": robot.port, "edge_sim_profile": robot.profile,
                                 "edge_sim_container": robot.container,
                                 "edge_sim_containers": robot.containers}
        inventory = {
            "all": {
                "vars": {
                    "ansible_host": "127.0.0.1",
                    "ansible_user": ROBOT_USER,
                    "ansible_become": True,
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "ansible_ssh_private_key_file": str(self.key),
                    "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes "
                                               "-o IdentitiesOnly=yes" % self.known_hosts,
                    "edge_sim_fleet": self.name,
                },
                "children": children,
            }
        }
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        header = "# Written by `edge-deploy sim up` for the simulated fleet %r; do not edit.\n" % self.name
        self.inventory.write_text(header + yaml.safe_dump(inventory, sort_keys=False))
        # The simulated fleet's settings are package data: linked, so an upgrade brings new ones.
        group_vars = self.inventory_dir / "group_vars"
        if group_vars.is_symlink() and group_vars.resolve() != paths.SIM_GROUP_VARS:
            group_vars.unlink()
        if not group_vars.exists():
            group_vars.symlink_to(paths.SIM_GROUP_VARS)
        return self.inventory

    def write_vars(self, name: str, values: dict, why: str) -> Path:
        """Fleet-wide variables in an inventory file of their own beside hosts.yml (Ansible reads every
        file of an inventory folder), e.g. the signed repository the demo made."""
        path = self.inventory_dir / ("%s.yml" % name)
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("# Written by edge-deploy: %s\n" % why + yaml.safe_dump({"all": {"vars": values}}))
        return path
