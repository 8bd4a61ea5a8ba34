"""jetson_info's parsers (edge_common.identity, its module_utils) against the formats recorded from
real devices (FACTS.md)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from edge_common import identity
from tests.repo import REPO

# The collection's module, loaded from its file (it falls back to edge_common.identity, the same file
# as its module_utils, outside Ansible).
spec = importlib.util.spec_from_file_location("jetson_info", REPO / "plugins" / "modules" / "jetson_info.py")
jetson_info = importlib.util.module_from_spec(spec)
spec.loader.exec_module(jetson_info)

JP512_RELEASE = ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
                 "DATE: Tue Aug  1 19:57:35 UTC 2023\n")
JP60_RELEASE = ("# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, "
                "DATE: Fri Jul 19 23:24:25 UTC 2024\n# KERNEL_VARIANT: oot\n")


def test_release_line_of_jetpack_5_1_2():
    parsed = identity.parse_release(JP512_RELEASE)
    assert parsed["l4t"] == "35.4.1"
    assert parsed["l4t_major"] == 35
    assert parsed["l4t_board"] == "t186ref"
    assert parsed["l4t_gcid"] == "33958178"
    assert parsed["kernel_variant"] is None


def test_release_line_of_jetpack_6_0_with_kernel_variant():
    parsed = identity.parse_release(JP60_RELEASE)
    assert parsed["l4t"] == "36.3.0"
    assert parsed["l4t_board"] == "generic"
    assert parsed["kernel_variant"] == "oot"


@pytest.mark.parametrize("text", [None, "", "garbage\n", "# R36 (release)\n"])
def test_release_file_that_is_not_l4t(text):
    assert identity.parse_release(text) is None


@pytest.mark.parametrize("compatible,part", [
    ("nvidia,p3768-0000+p3767-0003\0nvidia,p3767-0003\0nvidia,tegra234\0", "p3767-0003"),
    ("nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0", "p3701-0005"),
    ("nvidia,p3509-0000+p3668-0001\0nvidia,jetson-xavier-nx\0nvidia,tegra194\0", "p3668-0001"),
    ("raspberrypi,4-model-b\0brcm,bcm2711\0", None),
    (None, None),
])
def test_module_part_from_device_tree(compatible, part):
    assert identity.part_from_compatible(compatible) == part


def test_module_part_and_soc_from_boot_control():
    text = ("TNSPEC 3767-300-0000-K.2-1-1-jetson-orin-nano-devkit-nvme0n1p1\n"
            "COMPATIBLE_SPEC 3767-300-0000-K.2-1-1-jetson-orin-nano-devkit\nTEGRA_CHIPID 0x23\n")
    assert identity.part_from_boot_control(text) == "p3767-0000"
    assert identity.SOC_BY_CHIPID[identity.chipid_from_boot_control(text)] == "tegra234"
    assert identity.part_from_boot_control("TNSPEC nonsense\n") is None


@pytest.mark.parametrize("debian,upstream", [
    ("8.5.2-1+cuda11.4", "8.5.2"),
    ("8.6.2.3-1+cuda12.2", "8.6.2"),
    ("10.3.0.30-1+cuda12.5", "10.3.0"),
    ("35.4.1-20230801124926", "35.4.1"),
    (None, None),
])
def test_upstream_version(debian, upstream):
    assert identity.upstream_version(debian) == upstream


def test_tensorrt_prefers_the_newest_libnvinfer():
    assert identity.tensorrt_version({"libnvinfer8": "8.6.2.3-1+cuda12.2"}) == "8.6.2"
    assert identity.tensorrt_version({"libnvinfer10": "10.3.0.30-1+cuda12.5",
                                         "libnvinfer8": "8.6.2.3-1"}) == "10.3.0"
    assert identity.tensorrt_version({}) is None


def test_cuda_version_from_json_and_txt(tmp_path):
    (tmp_path / "version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": "11.4.19"}}))
    assert identity.cuda_version(str(tmp_path)) == "11.4.19"
    old = tmp_path / "old"
    old.mkdir()
    (old / "version.txt").write_text("CUDA Version 10.2.300\n")
    assert identity.cuda_version(str(old)) == "10.2.300"
    assert identity.cuda_version(str(tmp_path / "missing")) is None


def test_gather_on_a_plain_linux_host(tmp_path):
    params = {"release_file": str(tmp_path / "nv_tegra_release"), "device_tree_path": str(tmp_path / "dt"),
              "boot_control_file": str(tmp_path / "nv_boot_control.conf"),
              "cuda_path": str(tmp_path / "cuda")}
    info = jetson_info.gather(params, lambda argv: (0, "bash\t5.2.15-2\tii \n", ""))
    assert info["is_jetson"] is False
    assert info["l4t"] is None
    assert info["module_part"] is None
    assert info["packages"] == {}


def test_gather_reads_installed_nvidia_packages_only(tmp_path):
    (tmp_path / "nv_tegra_release").write_text(JP512_RELEASE)
    dpkg = ("nvidia-l4t-core\t35.4.1-20230801124926\thi \nlibnvinfer8\t8.5.2-1+cuda11.4\tii \n"
            "libnvinfer10\t10.3.0.30-1\trc \nbash\t5.2\tii \n")
    params = {"release_file": str(tmp_path / "nv_tegra_release"), "device_tree_path": str(tmp_path / "dt"),
              "boot_control_file": str(tmp_path / "none"), "cuda_path": str(tmp_path / "cuda")}
    info = jetson_info.gather(params, lambda argv: (0, dpkg, ""))
    assert info["packages"] == {"nvidia-l4t-core": "35.4.1-20230801124926", "libnvinfer8": "8.5.2-1+cuda11.4"}
    assert info["tensorrt"] == "8.5.2"
    assert info["l4t_core_package"].startswith(info["l4t"])
