"""One identity for every capture the repository holds.

Each recorded capture (the simulator's profiles, the release lines and device-tree strings the
unit tests recorded, and the cases the jetson_info module and engine_builder used to disagree on)
becomes a fake root filesystem; the jetson_info module, engine_builder's device probe and the
compatibility rule's view of the saved fact must then say the same thing about it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from edge_common import compat, identity
from edge_deploy import paths
from engine_builder import device
from tests.repo import REPO

# The collection's module, loaded from its file (outside Ansible it imports its module_utils as
# edge_common.identity, the same file).
spec = importlib.util.spec_from_file_location("jetson_info", REPO / "plugins" / "modules" / "jetson_info.py")
jetson_info = importlib.util.module_from_spec(spec)
spec.loader.exec_module(jetson_info)

ONE_ANSWER = ("is_jetson", "l4t", "l4t_major", "jetpack", "expected_tensorrt", "module_part", "module_name",
              "module_class", "memory_gb", "soc", "sm", "arch")  # fmt: skip

JP512 = ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
         "DATE: Tue Aug  1 19:57:35 UTC 2023")  # fmt: skip
JP60 = ("# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, "
        "DATE: Fri Jul 19 23:24:25 UTC 2024\n# KERNEL_VARIANT: oot")  # fmt: skip


def release(revision: str, major: int = 35) -> str:
    return "# R%d (release), REVISION: %s, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x" % (
        major, revision)  # fmt: skip


def compatible(carrier: str, module: str, soc: str = "tegra234") -> str:
    return "nvidia,%s+%s\0nvidia,%s\0nvidia,%s\0" % (carrier, module, module, soc)


def profile_captures():
    """The simulator's profiles, as edge_deploy/simdata/.../apply-profile turns them into files."""
    found = []
    for path in sorted(paths.SIM_PROFILES.glob("*.json")):
        profile = json.loads(path.read_text())
        module = profile["module"]
        boot = "TNSPEC %s\nCOMPATIBLE_SPEC %s\nTEGRA_CHIPID %s\n" % (
            module["tnspec"], module["tnspec"].rsplit("-", 1)[0], module["chipid"])  # fmt: skip
        base = {
            "etc/nv_tegra_release": "\n".join(profile["nv_tegra_release"]) + "\n",
            "etc/nv_boot_control.conf": boot,
            "usr/local/cuda/version.json": json.dumps({"cuda": {"version": profile["cuda"]["version"]}}),
        }
        with_tree = dict(base)
        with_tree["proc/device-tree/compatible"] = "\0".join(module["compatible"]) + "\0"
        with_tree["proc/device-tree/model"] = module["model"] + "\0"
        # the simulated robots read one or the other (molecule/jetson_facts): both must agree
        found.append(pytest.param(with_tree, profile, id=profile["name"] + "-device-tree"))
        found.append(pytest.param(base, profile, id=profile["name"] + "-boot-control"))
    return found


def files(release_text, compatible_list=None, boot_control=None):
    """A capture's files under the root: release line, device-tree compatible, boot control."""
    found = {"etc/nv_tegra_release": release_text}
    if compatible_list is not None:
        found["proc/device-tree/compatible"] = compatible_list
    if boot_control is not None:
        found["etc/nv_boot_control.conf"] = boot_control
    return found


XAVIER_NX = "nvidia,p3509-0000+p3668-0001\0nvidia,jetson-xavier-nx\0nvidia,tegra194\0"
TNSPEC_NX = "TNSPEC 3767-300-0000-K.2-1-1-jetson-orin-nx-devkit-\nCOMPATIBLE_SPEC x\n"
TNSPEC_AGX = "TNSPEC 3701-500-0005-G.0-1-0-jetson-agx-orin-devkit-\nTEGRA_CHIPID 0x23\n"
TNSPEC_NANO_DEVKIT = "TNSPEC 3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-\nTEGRA_CHIPID 0x23\n"

# Captures recorded in tests/unit/test_jetson_info.py and tests/engine_builder/test_device_identity.py,
# then the cases where jetson_info and engine_builder gave different answers before edge_common.identity.
# Each with what the one answer is: (l4t, jetpack, module_part, module_class, soc).
RECORDED = {
    "jp512-orin-nano": (
        files(JP512, compatible("p3768-0000", "p3767-0003")),
        ("35.4.1", "5.1.2", "p3767-0003", "orin_nano", "tegra234"),
    ),
    "jp60-orin-nano-devkit": (
        files(JP60, compatible("p3768-0000", "p3767-0005")),
        ("36.3.0", "6.0", "p3767-0005", "orin_nano", "tegra234"),
    ),
    "xavier-nx-named-compatible": (
        files(release("6.1", 32), XAVIER_NX),
        ("32.6.1", None, "p3668-0001", "xavier_nx", "tegra194"),
    ),
    "tnspec-only-orin-nx": (
        files(JP512, boot_control=TNSPEC_NX),
        ("35.4.1", "5.1.2", "p3767-0000", "orin_nx", None),
    ),
    "tnspec-and-chipid-agx": (
        files(JP512, boot_control=TNSPEC_AGX),
        ("35.4.1", "5.1.2", "p3701-0005", "agx_orin", "tegra234"),
    ),
    # was 35.4.0 (jetson_info) vs 35.4 (engine_builder)
    "revision-without-patch": (
        files(release("4"), compatible("p3768-0000", "p3767-0003")),
        ("35.4.0", None, "p3767-0003", "orin_nano", "tegra234"),
    ),
    # was 36.4.3 (jetson_info, so JetPack 6.2) vs 36.4.3.1 (engine_builder): kept, JetPack unknown
    "revision-with-four-numbers": (
        files(release("4.3.1", 36), compatible("p3737-0000", "p3701-0005")),
        ("36.4.3.1", None, "p3701-0005", "agx_orin", "tegra234"),
    ),
    # were missing from engine_builder's table
    "agx-orin-p3701-0000": (
        files(JP60, compatible("p3737-0000", "p3701-0000")),
        ("36.3.0", "6.0", "p3701-0000", "agx_orin", "tegra234"),
    ),
    "agx-orin-32gb-p3701-0004": (
        files(JP60, compatible("p3737-0000", "p3701-0004")),
        ("36.3.0", "6.0", "p3701-0004", "agx_orin", "tegra234"),
    ),
    # was named differently by the two tables
    "orin-nano-devkit-p3767-0005-by-tnspec": (
        files(release("4.3", 36), boot_control=TNSPEC_NANO_DEVKIT),
        ("36.4.3", "6.2", "p3767-0005", "orin_nano", "tegra234"),
    ),
    # a carrier listed on its own must not be taken for the module
    "carrier-listed-alone": (
        files(JP60, "nvidia,p3509-0000\0nvidia,p3668-0001\0nvidia,tegra194\0"),
        ("36.3.0", "6.0", "p3668-0001", "xavier_nx", "tegra194"),
    ),
    "plain-linux-host": ({}, (None, None, None, None, None)),
}


def five(facts):
    return facts["l4t"], facts["jetpack"], facts["module_part"], facts["module_class"], facts["soc"]


def make_root(tmp_path, captured) -> str:
    for rel, content in captured.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return str(tmp_path)


def dpkg_runner(packages):
    out = "".join("%s\t%s\tii \n" % item for item in sorted(packages.items()))
    return lambda argv: (0, out, "")


def module_params(root: str):
    return {
        "release_file": os.path.join(root, "etc/nv_tegra_release"),
        "device_tree_path": os.path.join(root, "proc/device-tree"),
        "boot_control_file": os.path.join(root, "etc/nv_boot_control.conf"),
        "cuda_path": os.path.join(root, "usr/local/cuda"),
    }


def saved_fact(tmp_path, facts) -> str:
    """What roles/jetson_facts/tasks/save.yml writes: the module's answer plus the role's policy."""
    path = tmp_path / "facts.d" / "jetson.fact"
    path.parent.mkdir()
    path.write_text(json.dumps(dict(facts, jetpack_line=None, python="3.8", supported=True), sort_keys=True))
    return str(path)


def one_answer(tmp_path, captured, packages=None):
    root = make_root(tmp_path / "root", captured)
    from_module = jetson_info.gather(module_params(root), dpkg_runner(packages or {}))
    from_engine_builder = device.identity(root)
    from_fact = compat.read_robot(saved_fact(tmp_path, from_module))
    views = {"jetson_info": from_module, "engine_builder": from_engine_builder, "jetson.fact": from_fact}
    answers = {name: {key: view.get(key) for key in ONE_ANSWER} for name, view in views.items()}
    assert answers["jetson_info"] == answers["engine_builder"] == answers["jetson.fact"], answers
    assert device.identity_key(from_module) == device.identity_key(from_engine_builder)
    return from_module


@pytest.mark.parametrize("captured,profile", profile_captures())
def test_every_simulator_profile_has_one_identity(tmp_path, captured, profile):
    facts = one_answer(tmp_path, captured, profile["packages"])
    module = profile["module"]
    # cross-checks with what else the capture says: dpkg's L4T, TNSPEC, the profile's SoC
    assert facts["l4t"] == identity.upstream_version(profile["packages"]["nvidia-l4t-core"])
    assert facts["module_part"] == "p%s-%s" % (module["tnspec"].split("-")[0], module["tnspec"].split("-")[2])
    assert facts["soc"] == module["soc"]
    assert facts["cuda"] == profile["cuda"]["version"]
    if facts["jetpack"]:
        assert profile["description"].startswith(facts["module_name"].split(" (")[0])
        assert "JetPack %s (L4T R%s)" % (facts["jetpack"], facts["l4t"]) in profile["description"]
        assert facts["tensorrt"].startswith(facts["expected_tensorrt"])


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_every_recorded_capture_has_one_identity(tmp_path, name):
    captured, expected = RECORDED[name]
    assert five(one_answer(tmp_path, captured)) == expected


@pytest.mark.parametrize("revision,l4t", [("4.1", "35.4.1"), ("4", "35.4.0"), ("4.0", "35.4.0"),
                                          ("4.3.1", "35.4.3.1"), ("04.1", "35.4.1")])  # fmt: skip
def test_l4t_normal_form(revision, l4t):
    assert identity.parse_release(release(revision))["l4t"] == l4t


def test_every_module_of_the_table_has_a_known_class_and_board():
    for part, module in identity.MODULES.items():
        assert part.startswith(identity.MODULE_BOARDS), part
        assert module["class"] in ("orin_nano", "orin_nx", "agx_orin", "xavier_nx"), part


def test_edge_common_identity_is_the_collection_module_utils():
    # The collection tarball leaves edge_common out: the real file is the module_utils, and
    # edge_common/identity.py a relative symlink to it (the wheel and the agent zip copy its content).
    shipped = REPO / "plugins" / "module_utils" / "jetson_identity.py"
    python_side = REPO / "edge_common" / "identity.py"
    assert not shipped.is_symlink()
    assert python_side.is_symlink() and not os.path.isabs(os.readlink(str(python_side)))
    assert python_side.resolve() == shipped.resolve()
    assert identity.__file__ == str(python_side)


def test_identity_parses_as_python_38():
    import ast

    source = (REPO / "plugins" / "module_utils" / "jetson_identity.py").read_text()
    ast.parse(source, feature_version=(3, 8))
    assert ".removeprefix(" not in source and ".removesuffix(" not in source


@pytest.mark.skipif(shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) is None,
                    reason="ansible-playbook is not installed beside this Python")  # fmt: skip
def test_the_role_saves_the_same_identity_through_ansible(tmp_path):
    """The role's detect tasks, run by Ansible from the collection (the module ships its module_utils), in
    check mode."""
    captured, expected = RECORDED["revision-with-four-numbers"]
    root = make_root(tmp_path / "root", captured)
    out = tmp_path / "jetson.json"
    playbook = tmp_path / "detect.yml"
    playbook.write_text(json.dumps([{
        "name": "Detect a fake Jetson",
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": {"edge_deploy.jetson.jetson_info": {
            key: value for key, value in module_params(root).items() if key != "device_tree_path"}},
        "roles": [{"role": "edge_deploy.jetson.jetson_facts", "vars": {
            "jetson_facts_device_tree_path": os.path.join(root, "proc/device-tree"),
            "jetson_facts_save_enabled": False, "jetson_facts_allow_unsupported": True}}],
        "post_tasks": [{"name": "Write what save.yml would save",
                        "ansible.builtin.copy": {"content": "{{ jetson_facts_device | to_nice_json }}",
                                                 "dest": str(out)},
                        "check_mode": False}],
    }]))  # fmt: skip
    # not the repository's ansible.cfg (no rollout report callback), nor its .collections link: the
    # collection found through a link of the test's own
    collections = tmp_path / "collections" / "ansible_collections" / "edge_deploy"
    collections.mkdir(parents=True)
    (collections / "jetson").symlink_to(REPO)
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\ncollections_path = %s\n" % (tmp_path / "collections"))
    env = dict(os.environ, ANSIBLE_CONFIG=str(config), ANSIBLE_NOCOLOR="1")
    run = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "--check", "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path), check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout.decode()[-3000:]
    saved = compat.read_robot(str(out))
    direct = jetson_info.gather(module_params(root), dpkg_runner({}))
    assert {key: saved[key] for key in ONE_ANSWER} == {key: direct[key] for key in ONE_ANSWER}
    assert five(saved) == expected
