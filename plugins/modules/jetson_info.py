#!/usr/bin/python
"""Read what a Jetson says about itself: L4T release, packages, CUDA, module.

The parsing and the tables are this collection's module_utils `jetson_identity`
(plugins/module_utils/jetson_identity.py), which the Python packages import as edge_common.identity
(a symlink to it), so the facts this module returns and the identity engine_builder fingerprints
engines with are one answer.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jetson_info
short_description: Read the L4T release, NVIDIA packages, CUDA version and module part number of a Jetson
description:
  - Parses C(/etc/nv_tegra_release), the versions of the L4T, TensorRT and CUDA
    runtime packages (dpkg), CUDA's version file, and the module part number
    from the device tree C(compatible) property or, when the device tree cannot
    be read, from C(/etc/nv_boot_control.conf) (its C(TNSPEC) line).
  - Derives JetPack, the expected TensorRT, the module name and class and the
    GPU SM from the tables of the collection's module_utils C(jetson_identity)
    (C(edge_common.identity) to the Python side), the one place every part of
    Edge Deploy reads a robot's identity from.
  - Reads only; never changes the host. Works on any Linux host and says
    C(is_jetson=false) where there is no L4T release file.
options:
  release_file:
    description: The L4T release file.
    type: path
    default: /etc/nv_tegra_release
  device_tree_path:
    description: Where the device tree is exposed.
    type: path
    default: /proc/device-tree
  boot_control_file:
    description: The bootloader update configuration, read when the device tree has no part number.
    type: path
    default: /etc/nv_boot_control.conf
  cuda_path:
    description: The CUDA installation (C(version.json) from CUDA 11, C(version.txt) before).
    type: path
    default: /usr/local/cuda
author: Edge Deploy maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Read the Jetson's identity
  edge_deploy.jetson.jetson_info:
  register: jetson_facts__info
"""

RETURN = r"""
jetson:
  description: What the host says about itself.
  returned: always
  type: dict
  contains:
    is_jetson: {description: Whether an L4T release file exists., type: bool}
    l4t:
      description:
        - "L4T release as MAJOR.MINOR.PATCH: C(REVISION: 4.1) of R35 is 35.4.1, C(REVISION: 4) is 35.4.0;
          null when absent."
        - "A fourth number is kept (C(REVISION: 4.3.1) of R36 is 36.4.3.1): a build the tables do not know."
      type: str
    l4t_major: {description: "L4T major release, e.g. 35; null when absent.", type: int}
    l4t_board: {description: BOARD field of the release file., type: str}
    l4t_gcid: {description: GCID field of the release file., type: str}
    l4t_date: {description: DATE field of the release file., type: str}
    kernel_variant:
      description: "KERNEL_VARIANT line of the release file (R36, e.g. oot); null when absent."
      type: str
    l4t_core_package: {description: Version of the nvidia-l4t-core package., type: str}
    jetpack:
      description: "JetPack release of this L4T release, e.g. 5.1.2; null when the table does not know it."
      type: str
    expected_tensorrt:
      description: "TensorRT version this JetPack ships, e.g. 8.5.2 or 10.3; null when unknown."
      type: str
    tensorrt:
      description: "TensorRT version from libnvinfer (e.g. 8.5.2, 10.3.0); null when absent."
      type: str
    cuda: {description: "CUDA version (e.g. 11.4.19); null when absent.", type: str}
    module_part: {description: "Module part number, e.g. p3767-0003.", type: str}
    module_source:
      description: "Where the part number was read: device-tree or nv_boot_control.conf."
      type: str
    module_name:
      description: "Module name, e.g. Jetson Orin Nano 8GB; null for an unknown part number."
      type: str
    module_class:
      description:
        - "Module class, as a release manifest's compatible.modules lists it:
          orin_nano, orin_nx, agx_orin, xavier_nx; null for an unknown part number."
      type: str
    memory_gb: {description: Memory of the module in GB., type: int}
    soc: {description: "SoC, e.g. tegra234.", type: str}
    sm: {description: "CUDA compute capability of the SoC's GPU, e.g. 8.7.", type: str}
    arch: {description: "Machine architecture, e.g. aarch64.", type: str}
    dt_model: {description: The device tree's model string., type: str}
    packages: {description: Versions of the NVIDIA packages found., type: dict}
"""

try:
    from ansible_collections.edge_deploy.jetson.plugins.module_utils.jetson_identity import identity
except ImportError:  # loaded by path outside Ansible (unit tests): the same file, as edge_common.identity
    from edge_common.identity import identity


def gather(params, run):
    """The host's identity, read from the paths in the module's parameters."""
    return identity(
        run=run,
        release_file=params["release_file"],
        device_tree_path=params["device_tree_path"],
        boot_control_file=params["boot_control_file"],
        cuda_path=params["cuda_path"],
    )


def main():
    # Imported here so gather() above can be imported (and unit-tested) without
    # Ansible's module runtime, whose import patches interpreter internals.
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "release_file": {"type": "path", "default": "/etc/nv_tegra_release"},
            "device_tree_path": {"type": "path", "default": "/proc/device-tree"},
            "boot_control_file": {"type": "path", "default": "/etc/nv_boot_control.conf"},
            "cuda_path": {"type": "path", "default": "/usr/local/cuda"},
        },
        supports_check_mode=True,
    )

    def run(argv):
        try:
            return module.run_command(argv)
        except OSError as exc:
            return 1, "", str(exc)

    module.exit_json(changed=False, jetson=gather(module.params, run))


if __name__ == "__main__":
    main()
