"""release_refusal: whether a robot may take a release, by the release agent's own rule."""

from __future__ import annotations

DOCUMENTATION = r"""
name: release_refusal
short_description: Why a robot may not take a release, or null when it may
version_added: "0.1.0"
description:
  - Compares a robot's identity (C(ansible_local.jetson), saved by the jetson_facts role) with a
    release's compatibility contract (its manifest's C(compatible) section with
    C(jetpack_min), C(jetpack_max), C(modules), and for a container release C(l4t_major), the L4T
    its image is built for) by the rule the robot's release agent applies
    (C(edge_common.compat.refusal)), so the controller and the robot give one answer.
  - Returns null when the robot may take the release, else one sentence that says what is wrong
    and what to do.
  - Fails closed. When the contract names a JetPack range or module classes and the robot's
    JetPack or module class is unknown (no saved facts, or a release or module the identity
    tables do not know), the robot is refused and the sentence names the command that writes
    its facts.
  - A contract with no C(compatible) section (an empty mapping) accepts every robot. JetPack
    versions compare in release order; a pre-release (C(6.1-rc1)) is older than its release (C(6.1)).
options:
  _input:
    description: The robot's facts (C(ansible_local.jetson)); an empty mapping when none were saved.
    type: dict
    required: true
  contract:
    description: The release manifest's C(compatible) section; an empty mapping accepts every robot.
    type: dict
    required: true
  release:
    description: The release as the sentence names it, e.g. C(myapp v1.2.0).
    type: str
    required: true
  robot:
    description: The robot's inventory name, for the sentence and the C(-l) of the command it gives.
    type: str
    required: false
"""

EXAMPLES = r"""
- name: Refuse a robot outside the release's compatibility contract
  ansible.builtin.assert:
    that: rollout__refusal is none
    fail_msg: "{{ rollout__refusal }} Nothing was staged."
  vars:
    rollout__refusal: >-
      {{ ansible_local.jetson | default({})
         | edge_deploy.jetson.release_refusal(manifest.compatible | default({}), 'myapp v1.2.0',
                                              inventory_hostname) }}
"""

RETURN = r"""
_value:
  description: Null when the robot may take the release, else the sentence that says why not and what to do.
  type: str
"""

from ansible.errors import AnsibleFilterError  # noqa: E402

try:
    from edge_common.compat import refusal
except ImportError:  # edge_common is a package of this project, installed beside edge_deploy
    refusal = None


def release_refusal(robot, contract, release, robot_name=None):
    if refusal is None:
        raise AnsibleFilterError("release_refusal needs the edge_common package: pip install edge-deploy")
    if robot is not None and not isinstance(robot, dict):
        raise AnsibleFilterError(
            "release_refusal expects the robot's facts (ansible_local.jetson) as a mapping, not %s"
            % type(robot).__name__
        )
    if not release:
        raise AnsibleFilterError("release_refusal needs the release's name (e.g. 'myapp v1.2.0')")
    try:
        return refusal(robot, contract, str(release), str(robot_name) if robot_name else None)
    except ValueError as exc:
        raise AnsibleFilterError("release_refusal: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {"release_refusal": release_refusal}
