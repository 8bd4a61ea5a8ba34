"""`edge-agent`: the release agent's command line (run as `python3 edge-agent.pyz ...`).

Every command prints one JSON object with --json: {"command", "ok", ...} or {"command", "ok": false,
"error": {"kind", "message", "details"}}. Exit codes: 0 ok, 1 failed, 2 usage, 3 refused (nothing
changed; `lock --condition`: the mission lock holds), 4 health gate failed and rolled back, 5
another run holds the lock, 7 the robot's clock contradicts the signed metadata (nothing changed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from edge_agent import __version__
from edge_agent.errors import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, AgentError
from edge_agent.lease import DEFAULT_FILE as DEFAULT_LEASE_FILE

DEFAULT_CONFIG = "/etc/edge-agent/edge-app.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version="edge-agent " + __version__)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="agent config (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def repo_and_tag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--repo", help="TUF repository: URL or local folder (default: repository_url in the config)"
        )
        p.add_argument("--tag", required=True)
        p.add_argument(
            "--allow-downgrade", action="store_true", help="accept a version older than the current"
        )

    p = sub.add_parser(
        "seed", help="push mode: fill a copied repository's release folder from kept releases' files"
    )
    p.add_argument("--repo", required=True, help="the repository folder the controller copies into")
    p.add_argument("--tag", required=True)
    p.add_argument("--dry-run", action="store_true", help="count what is present and what is missing")
    repo_and_tag(sub.add_parser("verify", help="check signatures, hashes, lengths, expiry and version only"))
    p = sub.add_parser("stage", help="verify and unpack a release into releases/<tag>, build its engines")
    repo_and_tag(p)
    p.add_argument("--dry-run", action="store_true", help="verify, say what would change, change nothing")
    p = sub.add_parser("activate", help="switch current to a staged release, restart, health gate")
    p.add_argument("--tag", required=True)
    p.add_argument("--no-gate", action="store_true", help="skip the health gate (not recommended)")
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("deploy", help="stage then activate (what the OTA timer runs)")
    repo_and_tag(p)
    p = sub.add_parser(
        "pull", help="take the newest signed release newer than the current one (what the OTA timer runs)"
    )
    p.add_argument("--repo", help="TUF repository URL or folder (default: repository_url in the config)")
    p.add_argument("--dry-run", action="store_true", help="say which release would be taken")
    p = sub.add_parser("lock", help="may an update start now? (the robot app's mission lock)")
    p.add_argument("--file", help="the lock file (default: mission_lock_file in the config)")
    p.add_argument("--min-battery", type=float, help="lowest charge, 0..1 (default: min_battery)")
    p.add_argument("--require-docked", action="store_true", help="refuse while the robot is not docked")
    p.add_argument(
        "--max-age-hours",
        type=float,
        help="a lock older than this holds nothing (default: mission_lock_max_age_hours; 0: never)",
    )
    p.add_argument(
        "--condition",
        action="store_true",
        help="exit 3 while the lock holds (systemd's ExecCondition=: the unit is skipped, not failed)",
    )
    p = sub.add_parser("lease", help="one rollout at a time: the robot's rollout lease (edge_agent/lease.py)")
    p.add_argument("action", choices=("show", "acquire", "release"), help="acquire also renews the run's own")
    p.add_argument("--file", help="the lease file (default %s)" % DEFAULT_LEASE_FILE)
    p.add_argument("--owner", help="acquire: who rolls out, e.g. alice@ctl-1")
    p.add_argument("--run", help="the rollout run's id (acquire, release)")
    p.add_argument("--release", help="acquire: the release being rolled out")
    p.add_argument("--ttl", type=float, default=600.0, help="seconds until the lease expires unless renewed")
    p.add_argument("--wait", type=float, default=0.0, help="acquire: seconds to wait for another holder")
    p.add_argument("--force", action="store_true", help="release: whoever holds it (a holder known dead)")
    p = sub.add_parser("rollback", help="back to the previous release, or to --tag (a kept release)")
    p.add_argument("--tag")
    p.add_argument("--no-gate", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    sub.add_parser("status", help="releases, current, previous, service state, engines")
    sub.add_parser("on-failure", help="run by the OnFailure= unit: roll back after a crash loop")
    p = sub.add_parser(
        "recover", help="undo a switch that a crash, a power loss or a killed agent interrupted"
    )
    p.add_argument(
        "--restart", action="store_true", help="restart the app on the release it goes back to (the timer)"
    )
    sub.add_parser("exec", help="the service's ExecStart: exec the current release's entry command")
    return parser


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from edge_agent import mission
    from edge_agent.agent import Agent
    from edge_agent.config import load

    if args.command == "lease":  # no agent config: the rollout takes it before the agent is installed
        from edge_agent import lease

        return lease.command(args)
    cfg = load(args.config)
    agent = Agent(cfg, log=lambda message: sys.stderr.write("edge-agent: %s\n" % message))
    repo = getattr(args, "repo", None) or cfg.repository_url
    if args.command in ("verify", "stage", "deploy") and not repo:
        raise AgentError("no repository: give --repo or set repository_url in %s" % args.config)
    if args.command == "verify":
        return agent.verify(repo, args.tag, args.allow_downgrade)
    if args.command == "seed":
        return agent.seed(args.repo, args.tag, args.dry_run)
    if args.command == "stage":
        return agent.stage(repo, args.tag, args.allow_downgrade, args.dry_run)
    if args.command == "activate":
        return agent.activate(args.tag, gate=not args.no_gate, dry_run=args.dry_run)
    if args.command == "deploy":
        staged = agent.stage(repo, args.tag, args.allow_downgrade)
        activated = agent.activate(args.tag)
        return {"changed": staged["changed"] or activated["changed"], "stage": staged, "activate": activated}
    if args.command == "pull":
        return agent.pull(args.repo, args.dry_run)
    if args.command == "lock":
        path = args.file or cfg.mission_lock_file
        battery = cfg.min_battery if args.min_battery is None else args.min_battery
        age = cfg.mission_lock_max_age_hours if args.max_age_hours is None else args.max_age_hours
        lock = mission.read(path, battery, args.require_docked or cfg.require_docked, age)
        if lock.stale:
            agent.log(lock.stale)
        return {"changed": False, "free": lock.free, "reason": lock.reason, "stale": lock.stale, "file": path}
    if args.command == "rollback":
        return agent.rollback(args.tag, gate=not args.no_gate, dry_run=args.dry_run)
    if args.command == "on-failure":
        return agent.on_failure()
    if args.command == "recover":
        return agent.recover(restart=args.restart)
    if args.command == "exec":
        agent.exec_app()  # does not return
    return agent.status()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except AgentError as exc:
        if args.json:
            print(json.dumps({"command": args.command, "ok": False, "error": exc.as_dict()}, sort_keys=True))
        sys.stderr.write("edge-agent %s: %s\n" % (args.command, exc.message))
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("edge-agent %s: interrupted\n" % args.command)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(dict({"command": args.command, "ok": True}, **result), sort_keys=True, default=str))
    else:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    if args.command == "lock" and args.condition and not result["free"]:
        sys.stderr.write("edge-agent lock: held: %s\n" % result["reason"])
        return EXIT_REFUSED
    return EXIT_OK
