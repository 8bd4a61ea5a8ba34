from __future__ import annotations

import os
import stat

from edge_common import identity
from engine_builder import device

R35 = (
    "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Aug  1 19:57:35 UTC 2023\n"
)
R36 = (
    "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, "
    "DATE: Fri Jul 19 23:24:25 UTC 2024\n"
    "# KERNEL_VARIANT: oot\n"
)


def _root(tmp_path, files):
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(tmp_path)


def test_orin_nano_devkit_identity(tmp_path):
    root = _root(
        tmp_path,
        {
            "etc/nv_tegra_release": R36,
            "proc/device-tree/compatible": (
                b"nvidia,p3768-0000+p3767-0005\x00nvidia,p3767-0005\x00nvidia,tegra234\x00"
            ),
        },
    )
    ident = device.identity(root)
    assert ident["l4t"] == "36.3.0"
    assert ident["jetpack"] == "6.0" and ident["expected_tensorrt"] == "8.6.2"
    assert ident["module_part"] == "p3767-0005"
    assert ident["module_name"] == "Jetson Orin Nano Developer Kit"
    assert ident["soc"] == "tegra234" and ident["sm"] == "8.7"


def test_module_from_carrier_plus_module_and_tnspec_fallback(tmp_path):
    compatible = "nvidia,p3737-0000+p3701-0005\x00nvidia,tegra234\x00"
    assert identity.part_from_compatible(compatible) == "p3701-0005"
    assert identity.soc_from_compatible(compatible) == "tegra234"
    root = _root(
        tmp_path,
        {
            "etc/nv_tegra_release": R35,
            "etc/nv_boot_control.conf": (
                "TNSPEC 3767-300-0000-K.2-1-1-jetson-orin-nx-devkit-\nCOMPATIBLE_SPEC x\n"
            ),
        },
    )
    ident = device.identity(root)
    assert ident["l4t"] == "35.4.1" and ident["jetpack"] == "5.1.2" and ident["expected_tensorrt"] == "8.5.2"
    assert ident["module_part"] == "p3767-0000" and ident["module_name"] == "Jetson Orin NX 16GB"
    assert ident["soc"] is None and ident["sm"] is None


def test_soc_from_the_boot_control_chip_id(tmp_path):
    root = _root(
        tmp_path,
        {
            "etc/nv_tegra_release": R35,
            "etc/nv_boot_control.conf": (
                "TNSPEC 3701-500-0005-G.0-1-0-jetson-agx-orin-devkit-\nTEGRA_CHIPID 0x23\n"
            ),
        },
    )
    ident = device.identity(root)
    assert (ident["module_part"], ident["soc"], ident["sm"]) == ("p3701-0005", "tegra234", "8.7")


def test_plain_linux_host_is_robust(tmp_path):
    ident = device.identity(str(tmp_path))
    for key in ("l4t", "jetpack", "module_part", "module_name", "soc", "sm"):
        assert ident[key] is None
    assert ident["arch"]
    assert identity.parse_release("garbage") is None
    assert identity.part_from_boot_control("NO SPEC HERE") is None
    # the fingerprint keeps its published field names: the part number is "module" there
    key = device.identity_key(ident)
    assert key == {"l4t": None, "module": None, "soc": None, "sm": None, "arch": ident["arch"]}


def test_trtexec_banner_codes():
    assert device.trtexec_version_from_code("8502") == "8.5.2"
    assert device.trtexec_version_from_code("8602") == "8.6.2"
    assert device.trtexec_version_from_code("100300") == "10.3.0"
    assert device.trtexec_version_from_code("8400") == "8.4.0"
    assert device.trtexec_version_from_code("100200") == "10.2.0"


def fake_trtexec(tmp_path, code: str) -> str:
    """A stand-in trtexec that prints the real banner format (see tests/engine_builder/data)."""
    script = tmp_path / "usr/src/tensorrt/bin/trtexec"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        '#!/bin/sh\necho "&&&& RUNNING TensorRT.trtexec [TensorRT v%s] # trtexec $*"\nexit 0\n' % code
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_probe_finds_trtexec_at_the_jetson_path(tmp_path):
    path = fake_trtexec(tmp_path, "100300")
    report = device.probe(root=str(tmp_path))
    assert report["backends"]["trtexec"] == {"available": True, "path": path, "version": "10.3.0"}
    assert report["backends"]["onnxruntime"]["available"] is True
    assert "onnxruntime" in report["available_backends"] and "trtexec" in report["available_backends"]
    assert report["backends"]["tensorrt"]["available"] is False
    assert "tensorrt" in report["backends"]["tensorrt"]["reason"]
    assert os.path.isabs(report["python_executable"])
