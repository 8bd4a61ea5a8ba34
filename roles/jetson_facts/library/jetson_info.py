#!/usr/bin/python
"""Read what a Jetson says about itself: L4T release, packages, CUDA, module."""

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
author: Edge Deploy
"""

EXAMPLES = r"""
- name: Read the Jetson's identity
  jetson_info:
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
      description: "L4T release as MAJOR.MINOR.PATCH, e.g. 35.4.1; null when absent."
      type: str
    l4t_major: {description: L4T major release, e.g. 35., type: int}
    l4t_board: {description: BOARD field of the release file., type: str}
    l4t_core_package: {description: Version of the nvidia-l4t-core package., type: str}
    tensorrt:
      description: "TensorRT version from libnvinfer (e.g. 8.5.2, 10.3.0); null when absent."
      type: str
    cuda: {description: "CUDA version (e.g. 11.4.19); null when absent.", type: str}
    module_part: {description: "Module part number, e.g. p3767-0003.", type: str}
    module_source: {description: Where the part number was read., type: str}
    soc: {description: "SoC, e.g. tegra234.", type: str}
    packages: {description: Versions of the NVIDIA packages found., type: dict}
"""

import json
import os
import re

RELEASE_RE = re.compile(r"^#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<revision>[\d.]+)")
FIELD_RE = re.compile(r"(?P<key>[A-Z_]+):\s*(?P<value>[^,]+)")
PART_RE = re.compile(r"\bp(?P<board>\d{4})-(?P<sku>\d{4})\b")
PACKAGE_RE = re.compile(r"^(nvidia-l4t-core|nvidia-jetpack|libnvinfer\d+|tensorrt|cuda-cudart-[\d-]+)$")


def read_text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return None


def parse_release(text):
    """Parse /etc/nv_tegra_release; None when its first line is not an L4T release line."""
    if not text:
        return None
    first = text.splitlines()[0] if text.splitlines() else ""
    match = RELEASE_RE.match(first)
    if not match:
        return None
    revision = match.group("revision")
    parts = revision.split(".")
    if len(parts) == 1:
        parts.append("0")
    fields = {m.group("key"): m.group("value").strip() for m in FIELD_RE.finditer(first)}
    variant = None
    for line in text.splitlines()[1:]:
        if line.startswith("# KERNEL_VARIANT:"):
            variant = line.split(":", 1)[1].strip()
    return {
        "l4t": "%s.%s" % (match.group("major"), ".".join(parts[:2])),
        "l4t_major": int(match.group("major")),
        "l4t_board": fields.get("BOARD"),
        "l4t_gcid": fields.get("GCID"),
        "l4t_date": fields.get("DATE"),
        "kernel_variant": variant,
    }


def part_from_compatible(raw):
    """Module part number from a device-tree compatible (NUL-separated) property."""
    if not raw:
        return None
    for entry in [item for item in raw.split("\0") if item]:
        # "nvidia,p3768-0000+p3767-0003": carrier+module; the module comes last.
        match = PART_RE.search(entry.split("+")[-1])
        if match and entry.startswith("nvidia,"):
            return "p%s-%s" % (match.group("board"), match.group("sku"))
    return None


def soc_from_compatible(raw):
    for entry in (raw or "").split("\0"):
        if entry.startswith("nvidia,tegra"):
            return entry.split(",", 1)[1]
    return None


def part_from_boot_control(text):
    """Module part number from nv_boot_control.conf's TNSPEC (board-fab-sku-...)."""
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "TNSPEC":
            pieces = fields[1].split("-")
            if len(pieces) >= 3 and pieces[0].isdigit() and pieces[2].isdigit():
                return "p%s-%s" % (pieces[0], pieces[2])
    return None


def chipid_from_boot_control(text):
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "TEGRA_CHIPID":
            return fields[1]
    return None


SOC_BY_CHIPID = {"0x23": "tegra234", "0x19": "tegra194", "0x18": "tegra186", "0x21": "tegra210"}


def nvidia_packages(run):
    rc, out, _ = run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"])
    found = {}
    if rc != 0:
        return found
    for line in out.splitlines():
        pieces = line.split("\t")
        # Installed whatever the wanted state: "ii", or "hi" once the base role holds L4T packages.
        if len(pieces) == 3 and pieces[2][1:2] == "i" and PACKAGE_RE.match(pieces[0]):
            found[pieces[0]] = pieces[1]
    return found


def upstream_version(debian_version, fields=3):
    """'8.6.2.3-1+cuda12.2' -> '8.6.2'; '35.4.1-20230801124926' -> '35.4.1'."""
    if not debian_version:
        return None
    upstream = debian_version.split(":")[-1].split("-")[0].split("+")[0]
    return ".".join(upstream.split(".")[:fields])


def tensorrt_version(packages):
    majors = [int(name[len("libnvinfer"):]) for name in packages if re.match(r"^libnvinfer\d+$", name)]
    if majors:
        return upstream_version(packages["libnvinfer%d" % max(majors)])
    return upstream_version(packages.get("tensorrt"))


def cuda_version(cuda_path):
    text = read_text(os.path.join(cuda_path, "version.json"))
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    text = read_text(os.path.join(cuda_path, "version.txt"))
    match = re.search(r"CUDA Version\s+([\d.]+)", text or "")
    return match.group(1) if match else None


def gather(params, run):
    release = parse_release(read_text(params["release_file"]))
    info = {
        "is_jetson": release is not None,
        "l4t": None, "l4t_major": None, "l4t_board": None, "l4t_gcid": None, "l4t_date": None,
        "kernel_variant": None,
    }
    if release:
        info.update(release)
    packages = nvidia_packages(run)
    info["packages"] = packages
    info["l4t_core_package"] = packages.get("nvidia-l4t-core")
    info["tensorrt"] = tensorrt_version(packages)
    info["cuda"] = cuda_version(params["cuda_path"])

    compatible = read_text(os.path.join(params["device_tree_path"], "compatible"))
    boot_control = read_text(params["boot_control_file"])
    part = part_from_compatible(compatible)
    source = "device-tree" if part else None
    if not part:
        part = part_from_boot_control(boot_control)
        source = "nv_boot_control.conf" if part else None
    info["module_part"] = part
    info["module_source"] = source
    info["soc"] = soc_from_compatible(compatible) or SOC_BY_CHIPID.get(chipid_from_boot_control(boot_control))
    model = read_text(os.path.join(params["device_tree_path"], "model"))
    info["dt_model"] = model.strip("\0\n ") if model else None
    return info


def main():
    # Imported here so the parsers above can be imported (and unit-tested) without
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
