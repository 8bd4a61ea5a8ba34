"""The release compatibility rule (edge_common.compat), and the release_refusal filter giving the
same answer for every row."""

from __future__ import annotations

import importlib.util
import json

import pytest
from ansible.errors import AnsibleFilterError

from edge_common import compat
from tests.repo import REPO

FILTER = REPO / "plugins" / "filter" / "release_compat.py"
spec = importlib.util.spec_from_file_location("release_compat", FILTER)
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
release_refusal = plugin.FilterModule().filters()["release_refusal"]

NANO_512 = {
    "jetpack": "5.1.2",
    "module_class": "orin_nano",
    "l4t": "35.4.1",
    "l4t_major": 35,
    "module_part": "p3767-0003",
}
NX_60 = {
    "jetpack": "6.0",
    "module_class": "orin_nx",
    "l4t": "36.3.0",
    "l4t_major": 36,
    "module_part": "p3767-0000",
}
AGX_62 = {
    "jetpack": "6.2",
    "module_class": "agx_orin",
    "l4t": "36.4.3",
    "l4t_major": 36,
    "module_part": "p3701-0005",
}
NO_L4T = {
    "jetpack": None,
    "module_class": "agx_orin",
    "l4t": None,
    "l4t_major": None,
    "module_part": "p3701-0005",
}
AGX_RC = dict(AGX_62, jetpack="6.1-rc1")
UNKNOWN_L4T = {"jetpack": None, "module_class": "agx_orin", "l4t": "36.4.3.1", "module_part": "p3701-0005"}
UNKNOWN_MODULE = {"jetpack": "6.0", "module_class": None, "l4t": "36.3.0", "module_part": "p3999-0000"}
FLEET = {"jetpack_min": "5.1", "jetpack_max": "6.2", "modules": ["orin_nano", "orin_nx", "agx_orin"]}
CONTAINER_36 = dict(FLEET, l4t_major=36)

# (row id, robot, contract, None when accepted else words the refusal must carry)
ROWS = [
    ("fleet-contract-nano", NANO_512, FLEET, None),
    ("fleet-contract-agx", AGX_62, FLEET, None),
    ("jetpack-max-is-inclusive", AGX_62, {"jetpack_max": "6.2"}, None),
    ("jetpack-min-is-inclusive", NX_60, {"jetpack_min": "6.0"}, None),
    ("too-old", NANO_512, {"jetpack_min": "6.0"}, ["JetPack 5.1.2 is older than 6.0", "Target compatible"]),
    ("too-new", AGX_62, {"jetpack_max": "6.1"}, ["JetPack 6.2 is newer than 6.1"]),
    ("patch-above-max", dict(AGX_62, jetpack="6.2.1"), {"jetpack_max": "6.2"}, ["6.2.1 is newer than 6.2"]),
    ("module-not-listed", NANO_512, {"modules": ["agx_orin"]}, ["orin_nano is not among them"]),
    ("both-wrong", NANO_512, {"jetpack_min": "6.0", "modules": ["agx_orin"]}, ["older", "not among"]),
    # pre-release tags: 6.1-rc1 < 6.1 < 6.1.1
    ("prerelease-robot-below-release-min", AGX_RC, {"jetpack_min": "6.1"}, ["6.1-rc1 is older than 6.1"]),
    ("prerelease-robot-within-prerelease-min", AGX_RC, {"jetpack_min": "6.1-rc1"}, None),
    ("prerelease-robot-below-max", AGX_RC, {"jetpack_max": "6.1"}, None),
    ("release-robot-above-prerelease-max", NX_60, {"jetpack_max": "6.0-rc2"}, ["6.0 is newer than 6.0-rc2"]),
    ("numeric-contract-from-yaml", NX_60, {"jetpack_min": 5.1, "jetpack_max": 6}, None),
    # missing sections accept everything, known or not
    ("no-contract", NANO_512, {}, None),
    ("null-contract", {}, None, None),
    ("no-contract-unknown-robot", None, {}, None),
    ("modules-only-any-jetpack", UNKNOWN_L4T, {"modules": ["agx_orin"]}, None),
    ("jetpack-only-any-module", UNKNOWN_MODULE, {"jetpack_min": "6.0"}, None),
    # fails closed
    ("no-facts", None, FLEET, ["JetPack and module class are unknown", "/etc/ansible/facts.d/jetson.fact",
                               "ansible-playbook playbooks/provision.yml --tags jetson_facts -l nano-01"]),
    ("empty-facts", {}, {"jetpack_min": "5.1"}, ["JetPack is unknown", "--tags jetson_facts -l nano-01"]),
    ("unknown-l4t", UNKNOWN_L4T, {"jetpack_min": "6.0"}, ["JetPack is unknown", "L4T 36.4.3.1"]),
    ("unknown-module", UNKNOWN_MODULE, FLEET, ["module class is unknown", "module p3999-0000"]),
    ("empty-string-jetpack", dict(NX_60, jetpack=""), {"jetpack_max": "6.2"}, ["JetPack is unknown"]),
    # container releases: the image's L4T major is the robot's
    ("container-same-l4t", AGX_62, CONTAINER_36, None),
    ("container-l4t-36-on-jetpack-5", NANO_512, CONTAINER_36,
     ["its L4T 35.4.1 is not the image's L4T 36", "(an image built for L4T 36)"]),
    ("container-l4t-only", NX_60, {"l4t_major": "36"}, None),
    ("container-unknown-l4t", NO_L4T, {"l4t_major": 36}, ["L4T release is unknown", "found no L4T release"]),
]  # fmt: skip


@pytest.mark.parametrize("robot,contract,words", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_rule(robot, contract, words):
    answer = compat.refusal(robot, contract, "edge-app v3.0.0", "nano-01")
    if words is None:
        assert answer is None
        return
    assert answer.startswith("nano-01 cannot take edge-app v3.0.0: the release supports "), answer
    for word in words:
        assert word in answer, answer
    # the filter is the same rule, word for word
    assert release_refusal(robot, contract, "edge-app v3.0.0", "nano-01") == answer


@pytest.mark.parametrize("robot,contract", [row[1:3] for row in ROWS], ids=[row[0] for row in ROWS])
def test_filter_gives_the_rules_answer(robot, contract):
    for name in ("nano-01", None):
        assert release_refusal(robot, contract, "edge-app v3.0.0", name) == compat.refusal(
            robot, contract, "edge-app v3.0.0", name
        )


def test_without_a_robot_name_the_command_says_where_it_goes():
    answer = compat.refusal(None, FLEET, "edge-app v3.0.0")
    assert answer.startswith("this robot cannot take edge-app v3.0.0")
    assert "-l <robot>" in answer


@pytest.mark.parametrize(
    "contract,words",
    [
        ("6.0", "must be a mapping"),
        ({"jetpack_minimum": "6.0"}, "not jetpack_minimum"),
        ({"modules": "orin_nano"}, "must be a list"),
        ({"modules": []}, "leave modules out"),
        ({"modules": ["orin_nano", None]}, "must be a list"),
        ({"jetpack_min": True}, "must be a JetPack version"),
        ({"jetpack_min": ""}, "must be a JetPack version"),
        ({"jetpack_min": "6.2", "jetpack_max": "6.0"}, "newer than compatible.jetpack_max"),
        ({"l4t_major": "r36"}, "must be an L4T major release"),
        ({"l4t_major": True}, "must be an L4T major release"),
    ],
)
def test_a_malformed_contract_is_an_error_not_an_answer(contract, words):
    with pytest.raises(ValueError, match=words):
        compat.refusal(NX_60, contract, "edge-app v3.0.0")
    with pytest.raises(AnsibleFilterError, match=words):
        release_refusal(NX_60, contract, "edge-app v3.0.0")


def test_filter_refuses_bad_input():
    with pytest.raises(AnsibleFilterError, match="mapping"):
        release_refusal(["not", "facts"], FLEET, "edge-app v3.0.0")
    with pytest.raises(AnsibleFilterError, match="release's name"):
        release_refusal(NX_60, FLEET, "")


def test_read_robot(tmp_path):
    fact = tmp_path / "jetson.fact"
    assert compat.read_robot(str(fact)) is None
    fact.write_text("{not json")
    assert compat.read_robot(str(fact)) is None
    fact.write_text("[1, 2]")
    assert compat.read_robot(str(fact)) is None
    fact.write_text(json.dumps(NX_60))
    assert compat.read_robot(str(fact)) == NX_60
    assert compat.refusal(compat.read_robot(str(tmp_path / "missing")), FLEET, "edge-app v3.0.0") is not None


@pytest.mark.parametrize("robot,contract", [row[1:3] for row in ROWS], ids=[row[0] for row in ROWS])
def test_the_agent_and_the_rollout_refuse_the_same_robots(robot, contract, tmp_path, monkeypatch):
    """The rollout's refusal before staging (the filter) and the agent's on the robot agree."""
    from edge_agent.agent import Agent
    from edge_agent.config import Config
    from edge_agent.errors import Refused

    fact = tmp_path / "jetson.fact"
    if robot:
        fact.write_text(json.dumps(robot))
    monkeypatch.setattr("edge_agent.compatibility.JETSON_FACT", str(fact))
    agent = Agent(Config({"root": str(tmp_path / "opt"), "state_dir": str(tmp_path / "state")}))
    manifest = {"name": "edge-app", "tag": "v3.0.0", "version": "3.0.0", "compatible": contract}
    rollout = release_refusal(robot, contract, "edge-app v3.0.0", "nano-01")
    try:
        agent._check_compatible(manifest)
        agent_refused = False
    except Refused:
        agent_refused = True
    assert agent_refused == (rollout is not None), (rollout, agent_refused)
