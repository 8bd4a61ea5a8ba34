"""What this machine is (Jetson module, L4T, SoC, GPU SM) and which backends it can use.

Read from the device's own files, never guessed: `/etc/nv_tegra_release` for L4T, the device tree's
`compatible` for the module part number and SoC, `/etc/nv_boot_control.conf` (TNSPEC) as a fallback.
On a plain Linux host every Jetson field is None. `root` lets tests point at a fake filesystem.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

from engine_builder._deps import optional

# Part numbers -> names, from jetson_stats' mapping (see FACTS.md); unknown part numbers stay raw.
MODULE_NAMES = {
    "p3767-0000": "Jetson Orin NX 16GB",
    "p3767-0001": "Jetson Orin NX 8GB",
    "p3767-0003": "Jetson Orin Nano 8GB",
    "p3767-0004": "Jetson Orin Nano 4GB",
    "p3767-0005": "Jetson Orin Nano Developer Kit",
    "p3701-0005": "Jetson AGX Orin 64GB",
}
# Module boards (as opposed to carrier boards, which share the compatible string).
MODULE_BOARDS = ("p3767", "p3701", "p3668", "p2888", "p3448", "p3636", "p3489", "p3310")
# CUDA compute capability of each SoC's integrated GPU (Orin: 8.7).
# nv_boot_control.conf's TEGRA_CHIPID, where the device tree cannot be read.
SOC_BY_CHIPID = {"0x23": "tegra234", "0x19": "tegra194", "0x18": "tegra186", "0x21": "tegra210"}
SOC_SM = {"tegra234": "8.7", "tegra194": "7.2", "tegra186": "6.2", "tegra210": "5.3"}
# L4T -> (JetPack, TensorRT), only the rows FACTS.md confirms; anything else is reported as unknown.
L4T_RELEASES = {
    "35.3.1": ("5.1.1", "8.5.2"),
    "35.4.1": ("5.1.2", "8.5.2"),
    "35.5.0": ("5.1.3", "8.5.2"),
    "36.3.0": ("6.0", "8.6.2"),
    "36.4.0": ("6.1", "10.3"),
    "36.4.3": ("6.2", "10.3"),
}
# Fields that change an engine; only these enter a fingerprint (hostname and serials do not).
IDENTITY_KEYS = ("l4t", "module", "soc", "sm", "arch")

TRTEXEC_DEFAULT = "/usr/src/tensorrt/bin/trtexec"
_RELEASE_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")
_PART_RE = re.compile(r"p\d{4}-\d{4}")
_SOC_RE = re.compile(r"tegra\d+")
_BANNER_RE = re.compile(r"TensorRT\.trtexec \[TensorRT v(\d+)\]")


def _read(root: str, rel: str) -> Optional[bytes]:
    try:
        with open(os.path.join(root, rel), "rb") as fh:
            return fh.read()
    except OSError:
        return None


def parse_tegra_release(text: str) -> Optional[str]:
    """`# R35 (release), REVISION: 4.1, ...` -> `35.4.1`."""
    match = _RELEASE_RE.search(text)
    if not match:
        return None
    return "%s.%s" % (match.group(1), match.group(2))


def parse_compatible(raw: bytes) -> Tuple[Optional[str], Optional[str]]:
    """Module part number and SoC from the NUL-separated device-tree `compatible` list."""
    text = raw.decode("ascii", "replace").replace("\x00", "\n")
    parts = _PART_RE.findall(text)
    module = next((p for p in parts if p.startswith(MODULE_BOARDS)), None)
    if module is None:
        # "carrier+module" form: the module is the part after the plus sign.
        plus = re.search(r"p\d{4}-\d{4}\+(p\d{4}-\d{4})", text)
        module = plus.group(1) if plus else None
    soc = _SOC_RE.search(text)
    return module, soc.group(0) if soc else None


def parse_tnspec(text: str) -> Optional[str]:
    """`TNSPEC 3767-300-0005-K.2-1-1-...` -> `p3767-0005` (board id, then SKU)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "TNSPEC":
            spec = fields[1].split("-")
            if len(spec) >= 3 and spec[0].isdigit() and spec[2].isdigit():
                return "p%s-%s" % (spec[0], spec[2])
    return None


def parse_chipid(text: str) -> Optional[str]:
    """`TEGRA_CHIPID 0x23` -> `0x23`."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "TEGRA_CHIPID":
            return fields[1].lower()
    return None


def identity(root: str = "/") -> Dict[str, Optional[str]]:
    """Device identity read from the device; every field is None where it does not apply."""
    release = _read(root, "etc/nv_tegra_release")
    l4t = parse_tegra_release(release.decode("utf-8", "replace")) if release else None
    module, soc = parse_compatible(_read(root, "proc/device-tree/compatible") or b"")
    if module is None or soc is None:
        boot = (_read(root, "etc/nv_boot_control.conf") or b"").decode("utf-8", "replace")
        module = module or parse_tnspec(boot)
        soc = soc or SOC_BY_CHIPID.get(parse_chipid(boot) or "")
    jetpack, expected_trt = L4T_RELEASES.get(l4t or "", (None, None))
    return {
        "l4t": l4t,
        "jetpack": jetpack,
        "expected_tensorrt": expected_trt,
        "module": module,
        "module_name": MODULE_NAMES.get(module or ""),
        "soc": soc,
        "sm": SOC_SM.get(soc or ""),
        "arch": platform.machine() or None,
    }


def identity_key(device: Dict[str, Any]) -> Dict[str, Optional[str]]:
    """The fingerprint-relevant part of an identity (explicit, so the controller can compute it too)."""
    return {key: (str(device[key]) if device.get(key) is not None else None) for key in IDENTITY_KEYS}


def trtexec_version_from_code(code: str) -> str:
    """Decode trtexec's banner number: `8502` -> 8.5.2, `100300` -> 10.3.0, `8400` -> 8.4.0."""
    number = int(code)
    if number >= 10000:
        return "%d.%d.%d" % (number // 10000, (number // 100) % 100, number % 100)
    return "%d.%d.%d" % (number // 1000, (number // 100) % 10, number % 100)


def find_trtexec(explicit: Optional[str] = None, root: str = "/") -> Optional[str]:
    """The Jetson location first (it is not on PATH there), then PATH."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    default = os.path.join(root, TRTEXEC_DEFAULT.lstrip("/"))
    if os.access(default, os.X_OK):
        return default
    return shutil.which("trtexec")


def trtexec_version(path: str, timeout: float = 60.0) -> Optional[str]:
    """Every trtexec run prints `&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # ...` first."""
    try:
        proc = subprocess.run(
            [path, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _BANNER_RE.search(proc.stdout.decode("utf-8", "replace"))
    return trtexec_version_from_code(match.group(1)) if match else None


def _module_version(name: str) -> Dict[str, Any]:
    try:
        module = optional(name)
    except Exception as exc:  # a broken install (missing .so) must not break the probe
        return {"available": False, "reason": "import failed: %s" % exc}
    if module is None:
        return {"available": False, "reason": "Python package '%s' is not installed" % name}
    return {"available": True, "version": str(getattr(module, "__version__", "unknown"))}


def probe_backends(root: str = "/", trtexec: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    backends = {"tensorrt": _module_version("tensorrt"), "onnxruntime": _module_version("onnxruntime")}
    ort = optional("onnxruntime") if backends["onnxruntime"]["available"] else None
    if ort is not None:
        backends["onnxruntime"]["providers"] = list(ort.get_available_providers())
    path = find_trtexec(trtexec, root)
    if path is None:
        backends["trtexec"] = {"available": False, "reason": "no trtexec at %s or on PATH" % TRTEXEC_DEFAULT}
    else:
        version = trtexec_version(path)
        backends["trtexec"] = {"available": version is not None, "path": path, "version": version}
        if version is None:
            backends["trtexec"]["reason"] = "could not read the version banner of %s" % path
    return backends


def probe(root: str = "/", trtexec: Optional[str] = None) -> Dict[str, Any]:
    """Everything `engine-builder probe` prints: device identity, backends, Python."""
    available: List[str] = []
    backends = probe_backends(root, trtexec)
    for name, info in sorted(backends.items()):
        if info.get("available"):
            available.append(name)
    return {
        "device": identity(root),
        "backends": backends,
        "available_backends": available,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "hostname": platform.node(),
    }
