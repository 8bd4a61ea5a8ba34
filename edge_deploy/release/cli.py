"""`edge-deploy release ...`: build bundles, keep the signed TUF repository, pack the robot agent."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any, Dict


def add_parser(commands: Any) -> None:
    release = commands.add_parser("release", help="build, sign and list releases; pack the robot agent")
    sub = release.add_subparsers(dest="release_command", required=True)

    def repo_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repo", required=True, help="TUF repository folder (metadata/ and targets/)")
        p.add_argument("--keys", required=True, help="folder with the role keys (keep it off the robots)")
        p.add_argument(
            "--expires-days",
            action="append",
            default=[],
            metavar="ROLE=DAYS",
            help="expiry per role, e.g. timestamp=1 (defaults: root 365, targets 90, "
            "snapshot 30, timestamp 7)",
        )

    p = sub.add_parser("init", help="create role keys and an empty signed repository")
    repo_options(p)
    p = sub.add_parser("build", help="make a release bundle from a source folder with release.yaml")
    p.add_argument("src")
    p.add_argument("--tag", required=True, help="version tag, e.g. v1.2.0")
    p.add_argument("--out", default="build/releases", help="output folder (default %(default)s)")
    p.add_argument(
        "--docker-host",
        help="Docker Engine API of a container release's build, e.g. unix:///run/user/1000/podman.sock "
        "(default: DOCKER_HOST, else Docker's socket)",
    )
    p = sub.add_parser("sign", help="add a built bundle to the repository as signed TUF targets")
    p.add_argument("bundle")
    repo_options(p)
    p = sub.add_parser(
        "refresh",
        help="re-sign snapshot and timestamp with fresh expiry (targets and root too where they expire "
        "sooner): what a robot that found the metadata expired asks for",
    )
    repo_options(p)
    p = sub.add_parser("list", help="signed releases per app")
    repo_options(p)
    p = sub.add_parser("pack-agent", help="write the robot agent zip (edge_agent + engine_builder)")
    p.add_argument("output", nargs="?", help="where to write it (default: the user's cache, by sha256)")
    release.set_defaults(func=run)


def _expiry(values) -> Dict[str, timedelta]:
    out = {}
    for value in values:
        role, _, days = value.partition("=")
        out[role] = timedelta(days=float(days))
    return out


def run(args: argparse.Namespace) -> int:
    result: Dict[str, Any]
    try:
        if args.release_command == "build":
            from edge_deploy.release.bundle import build

            result = build(args.src, args.tag, args.out, args.docker_host)
            image = (result.get("container") or {}).get("image")
            result = dict(
                {k: result[k] for k in ("name", "tag", "version", "path")}, files=len(result["files"])
            )
            if image:
                result["image"] = {
                    "id": image["id"],
                    "layers": len(image["layers"]),
                    "bytes": sum(layer["length"] for layer in image["layers"]),
                }
        elif args.release_command == "pack-agent":
            from edge_deploy.release.agent_pack import pack

            result = pack(args.output)
        else:
            from edge_deploy.release.repo import ReleaseRepository

            repo = ReleaseRepository(args.repo, args.keys, _expiry(args.expires_days))
            if args.release_command == "init":
                result = repo.init()
            elif args.release_command == "sign":
                result = repo.add_release(args.bundle)
            elif args.release_command == "refresh":
                result = repo.refresh()
            else:
                result = repo.releases()
    except Exception as exc:  # one line for the user, no traceback
        from edge_deploy.release.bundle import BundleError
        from edge_deploy.release.repo import RepoError

        if not isinstance(exc, (BundleError, RepoError, OSError, ValueError)):
            raise
        print("error: %s" % exc)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0
