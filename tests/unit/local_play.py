"""ansible-playbook on stand-in robots of this machine (ansible_connection=local), with the
repository's ansible.cfg: the rollout role's steps and the rollout_report callback, whose run
report lands under <folder>/reports. tests/fleet plays the real thing on simulated robots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping, Optional, Tuple, Union

from tests.repo import REPO


def robots(folder: Path, hosts: Union[Iterable[str], Mapping[str, dict]], **group_vars) -> Path:
    """An inventory of local robots in the group `robots`; returns its path."""
    hosts = dict(hosts) if isinstance(hosts, Mapping) else {name: {} for name in hosts}
    group = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **group_vars}
    path = folder / "hosts.json"
    path.write_text(json.dumps({"robots": {"hosts": hosts, "vars": group}}))
    return path


def play(folder: Path, playbook: str, inventory: Path, variables: Optional[dict] = None,
         *args: str) -> Tuple[subprocess.CompletedProcess, Optional[Path]]:
    """Run `playbook` (its text) on `inventory`; the process and the run report's folder (None when
    the run wrote none; more than one is an error)."""
    (folder / "play.yml").write_text(playbook)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               EDGE_ROLLOUT_REPORT_DIR=str(folder / "reports"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory)]
    if variables is not None:
        argv += ["-e", json.dumps(variables)]
    proc = subprocess.run([*argv, *args, str(folder / "play.yml")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    found = sorted((folder / "reports").glob("*/report.json"))
    assert len(found) <= 1, found
    return proc, found[0].parent if found else None


def report(folder: Optional[Path], proc: subprocess.CompletedProcess) -> dict:
    """The run's report.json; the run's output when it wrote none."""
    assert folder is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((folder / "report.json").read_text())
