"""Run playbooks through ansible-runner with a live per-robot progress view."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_deploy import paths


@dataclass
class HostProgress:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: bool = False
    task: str = ""  # the task running, else the last one that ran (skipped ones are not shown)
    done: str = ""
    messages: list = field(default_factory=list)


@dataclass
class PlaybookResult:
    status: str
    rc: int
    hosts: dict
    facts: dict
    artifacts: Path

    @property
    def ok(self) -> bool:
        return self.rc == 0


def wide_console(**kwargs):
    """A rich console; off a terminal (CI logs, pipes) wide enough for the report tables."""
    from rich.console import Console

    console = Console(**kwargs)
    return console if console.is_terminal else Console(width=160, **kwargs)


def _table(title: str, progress: dict):
    from rich.table import Table

    table = Table(title=title, expand=False)
    for column in ("robot", "ok", "changed", "failed", "now"):
        table.add_column(column, no_wrap=True, max_width=60 if column == "now" else None)
    for host in sorted(progress):
        item = progress[host]
        state = "[red]unreachable[/red]" if item.unreachable else item.task
        table.add_row(host, str(item.ok), str(item.changed),
                      "[red]%d[/red]" % item.failed if item.failed else "0", state)
    return table


ROLLOUT_REPORT = "edge_deploy.jetson.rollout_report"


def _playbook(playbook: str | Path) -> str:
    """A collection's playbook by name (edge_deploy.jetson.deploy) as it is, a file by its path."""
    text = str(playbook)
    if "/" not in text and not text.endswith((".yml", ".yaml")) and text.count(".") >= 2:
        return text
    return str(Path(text).resolve())


def run_playbook(playbook: str | Path, inventory: str | Path, limit: str | None = None,
                 extravars: dict[str, Any] | None = None, quiet: bool = False,
                 title: str | None = None, report_dir: str | Path | None = None,
                 tags: str | None = None) -> PlaybookResult:
    """Run one playbook; show per-robot progress; return per-host stats and gathered facts."""
    import ansible_runner
    from rich.live import Live

    console = wide_console(stderr=True)
    progress: dict[str, HostProgress] = {}
    facts: dict[str, dict] = {}
    data_dir = Path(tempfile.mkdtemp(prefix="edge-deploy-run-"))
    env = {
        # The user's ansible.cfg (in the working directory, as for ansible-playbook) decides the
        # rest: inventory defaults, collections path (a clone finds its own collection there).
        "ANSIBLE_CALLBACKS_ENABLED": ROLLOUT_REPORT,
        "EDGE_ROLLOUT_REPORT_DIR": str(report_dir or paths.reports_dir() / "rollouts"),
        "EDGE_DEPLOY_REPORTS": str(paths.reports_dir()),  # the engine role's reports go there too
        # ansible-playbook sits beside the interpreter running us (the venv).
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    live = Live(_table(title or str(playbook), progress), console=console, transient=False,
                refresh_per_second=4) if not quiet else None

    def on_event(event: dict) -> bool:
        data = event.get("event_data", {})
        host = data.get("host")
        kind = event.get("event", "")
        if host:
            item = progress.setdefault(host, HostProgress())
            if kind == "runner_on_start":
                item.task = data.get("task", "")
            elif kind == "runner_on_skipped":
                item.task = item.done
            elif kind.startswith("runner_on_"):
                item.done = item.task = data.get("task", "") or item.task
            if kind == "runner_on_ok":
                item.ok += 1
                res = data.get("res", {})
                item.changed += int(bool(res.get("changed")))
                facts.setdefault(host, {}).update(res.get("ansible_facts") or {})
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                item.failed += 1
                item.messages.append(str(data.get("res", {}).get("msg", "")))
            elif kind == "runner_on_skipped":
                item.skipped += 1
            elif kind == "runner_on_unreachable":
                item.unreachable = True
                item.messages.append(str(data.get("res", {}).get("msg", "")))
        if live is not None:
            live.update(_table(title or str(playbook), progress))
        return True

    if live is not None:
        live.start()
    try:
        result = ansible_runner.run(
            private_data_dir=str(data_dir), playbook=_playbook(playbook),
            inventory=str(Path(inventory).resolve()), limit=limit, extravars=extravars or {},
            envvars=env, quiet=True, event_handler=on_event, project_dir=os.getcwd(), tags=tags,
        )
    finally:
        if live is not None:
            live.stop()
            console.print()
    if result.rc != 0 and not progress:
        stdout = (data_dir / "artifacts").glob("*/stdout")
        tail = "".join(path.read_text()[-2000:] for path in stdout)
        console.print("[red]%s did not run[/red] (%s):\n%s" % (playbook, result.status, tail))
    return PlaybookResult(status=result.status, rc=result.rc, hosts=progress, facts=facts,
                          artifacts=data_dir)
