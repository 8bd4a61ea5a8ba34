"""`edge-deploy`: the controller's command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edge_deploy import __version__


def _sim(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from edge_deploy.sim import DEFAULT_MIX, Fleet, SimError

    console = Console()
    # The default fleet's inventory is --sim-inventory's; another fleet's lives in its state folder
    # unless --sim-inventory names one for it.
    chosen = Path(args.sim_inventory).resolve() if args.sim_inventory else None
    fleet = Fleet(args.fleet, inventory_dir=chosen)
    try:
        if args.sim_command == "up":
            mix = tuple(args.profiles.split(",")) if args.profiles else DEFAULT_MIX
            with console.status("starting %d simulated robots" % args.robots):
                fleet.up(args.robots, mix, containers=args.containers.split(",") if args.containers else ())
            console.print("inventory: %s" % fleet.inventory)
            rows = fleet.status()
        elif args.sim_command == "down":
            console.print("removed %d simulated robots" % fleet.down())
            return 0
        else:
            rows = fleet.status()
    except SimError as exc:
        console.print("[red]error:[/red] %s" % exc)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="simulated fleet %r" % args.fleet)
    for column in ("robot", "group", "profile", "ssh", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["group"], row["profile"], "127.0.0.1:%d" % row["port"], row["state"])
    console.print(table)
    return 0


def _status(args: argparse.Namespace) -> int:
    from edge_deploy import paths, status
    from edge_deploy.runner import wide_console

    inventory = args.inventory or str(paths.sim_inventory())
    found = status.fleet_status(inventory, args.limit)
    if not found["robots"]:
        print("no robots matched in %s%s" % (inventory, " (-l %s)" % args.limit if args.limit else ""))
        return 1
    saved = status.write(found, paths.reports_dir() / "status")
    if args.json:
        print(json.dumps(found, indent=2, sort_keys=True))
    else:
        console = wide_console()
        console.print(status.table(found))
        console.print("saved: %s" % saved)
    return 0 if found["rc"] == 0 else 1


def _demo(args: argparse.Namespace) -> int:
    from edge_deploy.demo import run_demo

    return run_demo(robots=args.robots)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-deploy", description=__doc__)
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    parser.add_argument("--state-dir", help="simulated fleets and the demo's releases "
                        "(env EDGE_DEPLOY_STATE; default ./.sim)")
    parser.add_argument("--reports-dir", help="run, engine and status reports (env EDGE_DEPLOY_REPORTS; "
                        "default ./reports)")
    parser.add_argument("--sim-inventory", help="the simulated fleet's inventory folder (env "
                        "EDGE_DEPLOY_INVENTORY; default ./inventory/sim)")
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("sim", help="start, stop or list the simulated Jetson fleet")
    sim.add_argument("sim_command", choices=("up", "down", "status"))
    sim.add_argument("--fleet", default="sim", help="fleet name (default: sim, inventory in --sim-inventory)")
    sim.add_argument("--robots", type=int, default=6, help="how many robots (default 6)")
    sim.add_argument("--profiles", help="comma-separated profile mix (default: Orin Nano, NX, AGX)")
    sim.add_argument("--containers", metavar="ROBOTS",
                     help="comma-separated robots (nx-01,...) that run container releases "
                     "(privileged, nested podman)")
    sim.add_argument("--json", action="store_true", help="print the fleet as JSON")
    sim.set_defaults(func=_sim)

    status = commands.add_parser("status", help="which release every robot runs, read from the robots")
    status.add_argument("-i", "--inventory", help="inventory (default: the simulated fleet's)")
    status.add_argument("-l", "--limit", help="robots or groups, as ansible-playbook -l")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=_status)

    demo = commands.add_parser("demo", help="the main job on the simulated fleet, with a report")
    demo.add_argument("--robots", type=int, default=6)
    demo.set_defaults(func=_demo)

    from edge_deploy.pipeline import add_parser as add_pipeline_parser
    from edge_deploy.release.cli import add_parser as add_release_parser

    add_release_parser(commands)
    add_pipeline_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Flags win over the environment; edge_deploy.paths reads both (and children inherit them).
    for flag, variable in (("state_dir", "EDGE_DEPLOY_STATE"), ("reports_dir", "EDGE_DEPLOY_REPORTS"),
                           ("sim_inventory", "EDGE_DEPLOY_INVENTORY")):
        if getattr(args, flag, None):
            os.environ[variable] = os.path.abspath(getattr(args, flag))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
