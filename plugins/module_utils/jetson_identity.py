"""What a Jetson is: one parser and one set of tables for every consumer.

The collection's `jetson_info` module (this file is its module_utils `jetson_identity`, shipped to
robots with it), engine_builder's device probe (the engine fingerprint; the Python packages import
this file as edge_common.identity, a symlink to it) and, through the saved fact file, the release
compatibility rule (edge_common.compat) all read the robot's identity from here, so they cannot
disagree on what a robot is.

Read from the device's own files, never guessed: `/etc/nv_tegra_release` for L4T, the device tree's
`compatible` for the module part number and SoC, `/etc/nv_boot_control.conf` (TNSPEC, TEGRA_CHIPID)
where the device tree has no part number or SoC, dpkg for package versions.

Standard library only, Python 3.8 (JetPack 5's interpreter): this file runs on robots as it is,
inside the Ansible module and inside engine_builder's zip.
"""

from __future__ import annotations

import json
import os
import platform
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

# ---------------------------------------------------------------------------------------- tables
# L4T release -> (JetPack, TensorRT). Sources: jetson_stats jtop/core/jetson_variables.py and
# jetson-containers l4t_version.py (see FACTS.md). Releases those sources disagree on (36.4.2,
# 36.5.0) are left out on purpose: reported as unknown, not guessed.
L4T_RELEASES = {
    "35.3.1": ("5.1.1", "8.5.2"),
    "35.4.1": ("5.1.2", "8.5.2"),
    "35.5.0": ("5.1.3", "8.5.2"),
    "36.3.0": ("6.0", "8.6.2"),
    "36.4.0": ("6.1", "10.3"),
    "36.4.3": ("6.2", "10.3"),
}

# Module part number -> name, module class (what a release manifest's `compatible.modules` lists)
# and memory. Part numbers as in jetson_stats' module table; unknown part numbers stay raw.
MODULES = {
    "p3767-0000": {"name": "Jetson Orin NX 16GB", "class": "orin_nx", "memory_gb": 16},
    "p3767-0001": {"name": "Jetson Orin NX 8GB", "class": "orin_nx", "memory_gb": 8},
    "p3767-0003": {"name": "Jetson Orin Nano 8GB", "class": "orin_nano", "memory_gb": 8},
    "p3767-0004": {"name": "Jetson Orin Nano 4GB", "class": "orin_nano", "memory_gb": 4},
    "p3767-0005": {"name": "Jetson Orin Nano Developer Kit", "class": "orin_nano", "memory_gb": 8},
    "p3701-0000": {"name": "Jetson AGX Orin", "class": "agx_orin", "memory_gb": 32},
    "p3701-0004": {"name": "Jetson AGX Orin 32GB", "class": "agx_orin", "memory_gb": 32},
    "p3701-0005": {"name": "Jetson AGX Orin 64GB", "class": "agx_orin", "memory_gb": 64},
    "p3668-0000": {"name": "Jetson Xavier NX (developer kit)", "class": "xavier_nx", "memory_gb": 8},
    "p3668-0001": {"name": "Jetson Xavier NX 8GB", "class": "xavier_nx", "memory_gb": 8},
    "p3668-0003": {"name": "Jetson Xavier NX 16GB", "class": "xavier_nx", "memory_gb": 16},
}

# Module boards (as opposed to carrier boards, which also appear in `compatible`): Orin NX/Nano,
# AGX Orin, Xavier NX, AGX Xavier, Nano, TX2 NX, TX2 4GB, TX2.
MODULE_BOARDS = ("p3767", "p3701", "p3668", "p2888", "p3448", "p3636", "p3489", "p3310")

# nv_boot_control.conf's TEGRA_CHIPID -> SoC, where the device tree cannot be read.
SOC_BY_CHIPID = {"0x23": "tegra234", "0x19": "tegra194", "0x18": "tegra186", "0x21": "tegra210"}

# CUDA compute capability of each SoC's integrated GPU (Orin: 8.7, Xavier: 7.2).
SM_BY_SOC = {"tegra234": "8.7", "tegra194": "7.2", "tegra186": "6.2", "tegra210": "5.3"}

# Engine fingerprint name -> identity field. The fingerprint's names are published (engine
# manifests, stores, every fleet's cached keys), so they keep engine_builder's old spelling:
# "module" is the module part number. Hostname and serials never enter a fingerprint.
FINGERPRINT_FIELDS = (
    ("l4t", "l4t"),
    ("module", "module_part"),
    ("soc", "soc"),
    ("sm", "sm"),
    ("arch", "arch"),
)
IDENTITY_KEYS = tuple(field[0] for field in FINGERPRINT_FIELDS)

# Where a Jetson keeps what it says about itself, relative to the root filesystem.
RELEASE_FILE = "etc/nv_tegra_release"
DEVICE_TREE = "proc/device-tree"
BOOT_CONTROL_FILE = "etc/nv_boot_control.conf"
CUDA_PATH = "usr/local/cuda"

# --------------------------------------------------------------------------------------- parsers
_RELEASE_RE = re.compile(r"^#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<revision>\d+(?:\.\d+)*)")
_FIELD_RE = re.compile(r"(?P<key>[A-Z_]+):\s*(?P<value>[^,]+)")
_PART_RE = re.compile(r"\bp(?P<board>\d{4})-(?P<sku>\d{4})\b")
_SOC_RE = re.compile(r"^nvidia,(?P<soc>tegra\d+)\b")
_PACKAGE_RE = re.compile(r"^(nvidia-l4t-core|nvidia-jetpack|libnvinfer\d+|tensorrt|cuda-cudart-[\d-]+)$")
_LIBNVINFER_RE = re.compile(r"^libnvinfer(\d+)$")

Runner = Callable[[List[str]], Tuple[int, str, str]]


def read_text(path: str) -> Optional[str]:
    """A file's text (undecodable bytes replaced), None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return None


def normal_l4t(major: str, revision: str) -> str:
    """The one spelling of an L4T release: MAJOR.MINOR.PATCH.

    `R35, REVISION: 4.1` -> `35.4.1`; `REVISION: 4` -> `35.4.0`: a missing patch number is 0, as
    in L4T's own names (R36.3.0 is written `REVISION: 3.0`), so both spellings meet the tables.
    `REVISION: 4.3.1` -> `36.4.3.1`: a fourth number is KEPT, not cut. Such a build is not the
    36.4.3 that the JetPack table knows, so calling it 36.4.3 would guess its JetPack and
    TensorRT and let an engine built on one be loaded on the other; kept, it reads as a release
    the tables do not know (JetPack unknown, a fingerprint of its own), as jetson_stats and
    jetson-containers also keep every number of the revision.
    """
    numbers = [str(int(n)) for n in revision.split(".")]
    numbers += ["0"] * (2 - len(numbers))
    return ".".join([str(int(major)), *numbers])


def parse_release(text: Optional[str]) -> Optional[Dict[str, Any]]:
    """Parse /etc/nv_tegra_release; None when its first line is not an L4T release line."""
    lines = (text or "").splitlines()
    match = _RELEASE_RE.match(lines[0]) if lines else None
    if not match:
        return None
    fields = {m.group("key"): m.group("value").strip() for m in _FIELD_RE.finditer(lines[0])}
    variant = None
    for line in lines[1:]:
        if line.startswith("# KERNEL_VARIANT:"):
            variant = line.split(":", 1)[1].strip()
    return {
        "l4t": normal_l4t(match.group("major"), match.group("revision")),
        "l4t_major": int(match.group("major")),
        "l4t_board": fields.get("BOARD"),
        "l4t_gcid": fields.get("GCID"),
        "l4t_date": fields.get("DATE"),
        "kernel_variant": variant,
    }


def part_from_compatible(raw: Optional[str]) -> Optional[str]:
    """Module part number from the device tree's NUL-separated `compatible` list.

    The list names carrier boards too (`nvidia,p3768-0000+p3767-0003`: carrier, then module), so
    a part number of a known module board wins; otherwise the module half of a carrier+module
    entry; a lone part number of an unknown board is not taken for a module.
    """
    entries = [entry for entry in (raw or "").split("\0") if entry.strip()]
    parts = [
        "p%s-%s" % (m.group("board"), m.group("sku"))
        for entry in entries
        for piece in entry.split("+")
        for m in _PART_RE.finditer(piece)
    ]
    for part in parts:
        if part.startswith(MODULE_BOARDS):
            return part
    for entry in entries:
        if "+" in entry:
            match = _PART_RE.search(entry.split("+")[-1])
            if match:
                return "p%s-%s" % (match.group("board"), match.group("sku"))
    return None


def soc_from_compatible(raw: Optional[str]) -> Optional[str]:
    """`nvidia,tegra234` in the `compatible` list -> `tegra234`."""
    for entry in (raw or "").split("\0"):
        match = _SOC_RE.match(entry.strip())
        if match:
            return match.group("soc")
    return None


def _boot_control_field(text: Optional[str], name: str) -> Optional[str]:
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == name:
            return fields[1]
    return None


def part_from_boot_control(text: Optional[str]) -> Optional[str]:
    """nv_boot_control.conf's `TNSPEC 3767-300-0005-K.2-1-1-...` -> `p3767-0005` (board, SKU)."""
    spec = _boot_control_field(text, "TNSPEC")
    pieces = spec.split("-") if spec else []
    if len(pieces) >= 3 and pieces[0].isdigit() and pieces[2].isdigit():
        return "p%s-%s" % (pieces[0], pieces[2])
    return None


def chipid_from_boot_control(text: Optional[str]) -> Optional[str]:
    """nv_boot_control.conf's `TEGRA_CHIPID 0x23` -> `0x23` (lower case)."""
    chipid = _boot_control_field(text, "TEGRA_CHIPID")
    return chipid.lower() if chipid else None


# ------------------------------------------------------------------------------- dpkg and CUDA
def nvidia_packages(run: Runner) -> Dict[str, str]:
    """Versions of the installed L4T, JetPack, TensorRT and CUDA runtime packages (dpkg)."""
    rc, out, _err = run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"])
    found: Dict[str, str] = {}
    if rc != 0:
        return found
    for line in out.splitlines():
        pieces = line.split("\t")
        # Installed whatever the wanted state: "ii", or "hi" once the base role holds L4T packages.
        if len(pieces) == 3 and pieces[2][1:2] == "i" and _PACKAGE_RE.match(pieces[0]):
            found[pieces[0]] = pieces[1]
    return found


def upstream_version(debian_version: Optional[str], fields: int = 3) -> Optional[str]:
    """'8.6.2.3-1+cuda12.2' -> '8.6.2'; '35.4.1-20230801124926' -> '35.4.1'."""
    if not debian_version:
        return None
    upstream = debian_version.split(":")[-1].split("-")[0].split("+")[0]
    return ".".join(upstream.split(".")[:fields])


def tensorrt_version(packages: Dict[str, str]) -> Optional[str]:
    """TensorRT from the newest libnvinfer<N> package, else the `tensorrt` meta-package."""
    majors = [int(m.group(1)) for m in map(_LIBNVINFER_RE.match, packages) if m]
    if majors:
        return upstream_version(packages["libnvinfer%d" % max(majors)])
    return upstream_version(packages.get("tensorrt"))


def cuda_version(cuda_path: str) -> Optional[str]:
    """CUDA's version from `version.json` (CUDA 11 on) or `version.txt` (before)."""
    text = read_text(os.path.join(cuda_path, "version.json"))
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    match = re.search(r"CUDA Version\s+([\d.]+)", read_text(os.path.join(cuda_path, "version.txt")) or "")
    return match.group(1) if match else None


# -------------------------------------------------------------------------------------- identity
def identity(
    root: str = "/",
    run: Optional[Runner] = None,
    release_file: Optional[str] = None,
    device_tree_path: Optional[str] = None,
    boot_control_file: Optional[str] = None,
    cuda_path: Optional[str] = None,
) -> Dict[str, Any]:
    """Everything a consumer needs to know about the machine, each field derived here only.

    Paths default to the usual places under `root` (tests point `root` at a fake filesystem; the
    simulator offers its device tree elsewhere, hence `device_tree_path`). On a plain Linux host
    `is_jetson` is False and every Jetson field is None. With `run` (argv -> (rc, stdout,
    stderr)) dpkg is asked too, which adds `packages`, `l4t_core_package` and `tensorrt`.
    """
    release_file = release_file or os.path.join(root, RELEASE_FILE)
    device_tree_path = device_tree_path or os.path.join(root, DEVICE_TREE)
    boot_control_file = boot_control_file or os.path.join(root, BOOT_CONTROL_FILE)
    cuda_path = cuda_path or os.path.join(root, CUDA_PATH)

    release = parse_release(read_text(release_file))
    info: Dict[str, Any] = {
        "is_jetson": release is not None,
        "l4t": None,
        "l4t_major": None,
        "l4t_board": None,
        "l4t_gcid": None,
        "l4t_date": None,
        "kernel_variant": None,
    }
    if release:
        info.update(release)
    jetpack, expected_tensorrt = L4T_RELEASES.get(info["l4t"] or "", (None, None))
    info["jetpack"] = jetpack
    info["expected_tensorrt"] = expected_tensorrt

    compatible = read_text(os.path.join(device_tree_path, "compatible"))
    boot_control = read_text(boot_control_file)
    part = part_from_compatible(compatible)
    source = "device-tree" if part else None
    if not part:
        part = part_from_boot_control(boot_control)
        source = "nv_boot_control.conf" if part else None
    module = MODULES.get(part or "", {})
    info["module_part"] = part
    info["module_source"] = source
    info["module_name"] = module.get("name")
    info["module_class"] = module.get("class")
    info["memory_gb"] = module.get("memory_gb")
    soc = soc_from_compatible(compatible) or SOC_BY_CHIPID.get(chipid_from_boot_control(boot_control) or "")
    info["soc"] = soc
    info["sm"] = SM_BY_SOC.get(soc or "")
    info["arch"] = platform.machine() or None
    model = read_text(os.path.join(device_tree_path, "model"))
    info["dt_model"] = model.strip("\0\n ") if model else None
    info["cuda"] = cuda_version(cuda_path)
    if run is not None:
        packages = nvidia_packages(run)
        info["packages"] = packages
        info["l4t_core_package"] = packages.get("nvidia-l4t-core")
        info["tensorrt"] = tensorrt_version(packages)
    return info


def fingerprint_identity(device: Dict[str, Any]) -> Dict[str, Optional[str]]:
    """The part of an identity that changes an engine, under the fingerprint's names.

    Device dicts already spelled with the fingerprint's names (a controller's `--device-json`,
    engine manifests written before this module) are read as they are.
    """
    key: Dict[str, Optional[str]] = {}
    for name, field in FINGERPRINT_FIELDS:
        value = device.get(field) if field in device else device.get(name)
        key[name] = str(value) if value is not None else None
    return key
