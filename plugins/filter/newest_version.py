"""newest_version: the newest of some release versions or tags, in the release agent's order."""

from __future__ import annotations

DOCUMENTATION = r"""
name: newest_version
short_description: The newest of some release versions or tags
version_added: "0.1.0"
description:
  - Returns the newest of a list of release versions or tags (C(v1.2.10), C(1.3.0-rc1)), in the order
    the robot's release agent uses to refuse downgrades. C(1.2.10) is newer than C(1.2.9); a
    pre-release (C(1.3.0-rc1)) is older than its release (C(1.3.0)); a leading C(v) is ignored.
  - Empty and null items are left out; an empty list gives null.
options:
  _input:
    description: Release versions or tags.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: The newest release any targeted robot runs
  ansible.builtin.debug:
    msg: "{{ ['v1.2.9', 'v1.2.10', 'v1.3.0-rc1'] | edge_deploy.jetson.newest_version }}"  # v1.3.0-rc1
"""

RETURN = r"""
_value:
  description: The newest item, as given, or null.
  type: str
"""

from ansible.errors import AnsibleFilterError  # noqa: E402

try:
    from edge_common.versions import version_key
except ImportError:  # edge_common is a package of this project, installed beside edge_deploy
    version_key = None


def newest_version(values):
    if version_key is None:
        raise AnsibleFilterError("newest_version needs the edge_common package: pip install edge-deploy")
    if not isinstance(values, (list, tuple)):
        raise AnsibleFilterError("newest_version expects a list of versions, not %s" % type(values).__name__)
    found = [str(value) for value in values if value]
    return max(found, key=version_key) if found else None


class FilterModule:
    def filters(self):
        return {"newest_version": newest_version}
