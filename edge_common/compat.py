"""The one rule that says whether a robot may take a release.

A release's manifest carries its contract, `compatible: {jetpack_min, jetpack_max, modules}`, and
for a container release `l4t_major`, the L4T its image's base is built for (a container runs on the
robot's kernel and driver libraries, which must be that L4T's); the robot's side is its identity as
the jetson_facts role saved it (/etc/ansible/facts.d/jetson.fact: `jetpack`, `module_class`,
`l4t_major`, from edge_common.identity). The
rollout role asks through the `release_refusal` filter before staging anything, the release agent
asks on the robot before it verifies or activates a release: one answer for both.

The rule fails closed: when the contract names a JetPack range or module classes and the robot's
JetPack or module class is unknown, the robot is refused with what to run. A contract with no
`compatible` section (or an empty one) accepts every robot. JetPack versions compare with
edge_common.versions.version_key: `6.1-rc1` is older than `6.1`, `6.2.1` newer than `6.2`.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from edge_common.versions import version_key

JETSON_FACT = "/etc/ansible/facts.d/jetson.fact"  # written by the jetson_facts role
CONTRACT_KEYS = ("jetpack_min", "jetpack_max", "modules", "l4t_major")
PROVISION = "`ansible-playbook playbooks/provision.yml --tags jetson_facts -l %s`"  # writes JETSON_FACT


def read_robot(fact_path: str = JETSON_FACT) -> Optional[Dict[str, Any]]:
    """The robot's saved identity (the jetson_facts fact), or None when missing or unreadable."""
    try:
        with open(fact_path, encoding="utf-8") as handle:
            robot = json.load(handle)
    except (OSError, ValueError):
        return None
    return robot if isinstance(robot, dict) else None


def _contract(contract: Any) -> Dict[str, Any]:
    """The contract's fields, checked; ValueError names what is malformed."""
    if contract is None:
        return {}
    if not isinstance(contract, dict):
        raise ValueError("a release's compatible section must be a mapping, not %s" % type(contract).__name__)
    unknown = sorted(set(contract) - set(CONTRACT_KEYS))
    if unknown:
        raise ValueError(
            "a release's compatible section knows %s, not %s" % (", ".join(CONTRACT_KEYS), ", ".join(unknown))
        )
    checked: Dict[str, Any] = {}
    for key in ("jetpack_min", "jetpack_max"):
        value = contract.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
            raise ValueError("compatible.%s must be a JetPack version such as 6.1, not %r" % (key, value))
        checked[key] = str(value).strip()
    low, high = checked.get("jetpack_min"), checked.get("jetpack_max")
    if low and high and version_key(low) > version_key(high):
        raise ValueError("compatible.jetpack_min %s is newer than compatible.jetpack_max %s" % (low, high))
    modules = contract.get("modules")
    if modules is not None:
        if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) and m for m in modules):
            raise ValueError(
                "compatible.modules must be a list of module classes (orin_nano, ...), not %r" % (modules,)
            )
        if not modules:
            raise ValueError(
                "compatible.modules is empty: list the module classes the release supports, "
                "or leave modules out to accept every module"
            )
        checked["modules"] = list(modules)
    if contract.get("l4t_major") is not None:
        checked["l4t_major"] = l4t_major(contract["l4t_major"], "compatible.l4t_major")
    return checked


def l4t_major(value: Any, where: str) -> int:
    """An L4T major release (36, "36"); ValueError names `where` it came from when it is not one."""
    if isinstance(value, bool) or not str(value).strip().isdigit():
        raise ValueError(
            "%s must be an L4T major release such as 36 (JetPack 6) or 35 (JetPack 5), not %r"
            % (where, value)
        )
    return int(str(value).strip())


def _supports(contract: Dict[str, Any]) -> str:
    """`JetPack 5.1.2 to 6.2 on orin_nano, orin_nx` (what the release supports, in words)."""
    low, high = contract.get("jetpack_min"), contract.get("jetpack_max")
    if low and high:
        jetpack = "JetPack %s to %s" % (low, high)
    elif low or high:
        jetpack = "JetPack %s or later" % low if low else "JetPack up to %s" % high
    else:
        jetpack = "any JetPack"
    modules = ", ".join(contract["modules"]) if "modules" in contract else "any module"
    base = " (an image built for L4T %s)" % contract["l4t_major"] if "l4t_major" in contract else ""
    return "%s on %s%s" % (jetpack, modules, base)


def _known(robot: Dict[str, Any], field: str) -> Optional[str]:
    value = robot.get(field)
    return str(value) if value not in (None, "") else None


def _what_was_read(robot: Dict[str, Any], needs: List[str], provision: str) -> str:
    """Why saved facts name no JetPack or module class, and what to do about it."""
    unnamed: List[str] = []  # read, but not in edge_common/identity.py's tables
    missing: List[str] = []  # not found on the robot at all
    for need, field, label, absent in (
        ("JetPack", "l4t", "L4T", "L4T release"),
        ("module class", "module_part", "module", "module part number"),
        ("L4T release", "l4t", "L4T", "L4T release"),
    ):
        if need in needs:
            value = robot.get(field)
            said = "%s %s" % (label, value) if value else absent
            if said not in unnamed + missing:
                (unnamed if value else missing).append(said)
    found = []
    if unnamed:
        found.append("read %s, which edge_common/identity.py does not name" % " and ".join(unnamed))
    if missing:
        found.append("found no %s" % " and no ".join(missing))
    return (
        "jetson_facts %s. Rerun %s if the robot changed since; otherwise a release or module the tables "
        "do not name needs adding to edge_common/identity.py once NVIDIA's documentation confirms it, or "
        "a release without that constraint." % (", and ".join(found), provision)
    )


def refusal(
    robot: Optional[Dict[str, Any]],
    contract: Optional[Dict[str, Any]],
    release: str,
    robot_name: Optional[str] = None,
) -> Optional[str]:
    """None when the robot may take the release; else a sentence: what is wrong, what to do.

    `robot` is the robot's identity (read_robot's answer, ansible_local.jetson, or
    edge_common.identity.identity()); None or {} when no facts were saved. `contract` is the
    manifest's `compatible` section (None or {} accepts every robot). `release` names the release
    in the sentence (`app v1.2.0`); `robot_name`, the robot (its inventory name, for `-l`).
    Raises ValueError when the contract or the robot is malformed.
    """
    checked = _contract(contract)
    if not checked:
        return None
    if robot is not None and not isinstance(robot, dict):
        raise ValueError("a robot's facts must be a mapping, not %s" % type(robot).__name__)
    robot = robot or {}
    name = robot_name or "this robot"
    needs: List[str] = []
    jetpack = _known(robot, "jetpack")
    module = _known(robot, "module_class")
    if ("jetpack_min" in checked or "jetpack_max" in checked) and jetpack is None:
        needs.append("JetPack")
    if "modules" in checked and module is None:
        needs.append("module class")
    l4t_major = _known(robot, "l4t_major")
    if "l4t_major" in checked and l4t_major is None:
        needs.append("L4T release")
    if needs:
        head = "%s cannot take %s: the release supports %s, and %s's %s %s unknown" % (
            name, release, _supports(checked), name, " and ".join(needs), "is" if len(needs) == 1 else "are",
        )  # fmt: skip
        provision = PROVISION % (robot_name or "<robot>")
        if not robot:
            return "%s: %s is missing or unreadable. Run %s to write it, then retry." % (
                head, JETSON_FACT, provision,
            )  # fmt: skip
        return "%s: %s" % (head, _what_was_read(robot, needs, provision))
    wrong: List[str] = []
    if "jetpack_min" in checked and version_key(jetpack) < version_key(checked["jetpack_min"]):
        wrong.append("JetPack %s is older than %s" % (jetpack, checked["jetpack_min"]))
    if "jetpack_max" in checked and version_key(jetpack) > version_key(checked["jetpack_max"]):
        wrong.append("JetPack %s is newer than %s" % (jetpack, checked["jetpack_max"]))
    if "modules" in checked and module not in checked["modules"]:
        wrong.append("%s is not among them" % module)
    if "l4t_major" in checked and l4t_major is not None and int(l4t_major) != checked["l4t_major"]:
        wrong.append(
            "its L4T %s is not the image's L4T %s" % (robot.get("l4t") or l4t_major, checked["l4t_major"])
        )
    if not wrong:
        return None
    return (
        "%s cannot take %s: the release supports %s, and %s runs JetPack %s on %s (%s). Target compatible "
        "robots (-l), or build a release whose release.yaml lists this one."
        % (name, release, _supports(checked), name, jetpack or "unknown", module or "an unknown module",
           "; ".join(wrong))
    )  # fmt: skip
