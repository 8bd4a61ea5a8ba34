"""The Jetson simulators inside the robots, held to the formats recorded from
real devices (FACTS.md): each pattern below must match the real sample too."""

from __future__ import annotations

import re

import pytest

# Recorded on real devices (FACTS.md).
REAL_TEGRASTATS_JP6 = ("09-04-2026 19:40:46 RAM 1803/7486MB (lfb 8x4MB) CPU [66%@1510,2%@1510] "
                       "EMC_FREQ 1%@2133 GR3D_FREQ 4%@[305] cpu@48C VDD_IN 4832mW/4832mW "
                       "VDD_CPU_GPU_CV 1236mW/1236mW")
REAL_RELEASE_JP512 = ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
                      "DATE: Tue Aug  1 19:57:35 UTC 2023")

STAMP = r"\d\d-\d\d-\d{4} \d\d:\d\d:\d\d "
RAM = r"RAM \d+/\d+MB \(lfb \d+x\d+MB\) "
CPU = r"CPU \[(?:(?:\d+%@\d+|off),?)+\] "
RAIL = r"VDD_IN \d+mW/\d+mW VDD_CPU_GPU_CV \d+mW/\d+mW"
TEGRASTATS = {
    "r36": re.compile("^" + STAMP + RAM + r"(?:SWAP \S+ \(cached \d+MB\) )?" + CPU + r"EMC_FREQ \d+%@\d+ "
                      r"GR3D_FREQ \d+%@\[\d+(?:,\d+)*\] (?:\S+@[\d.]+C )+" + RAIL),
    "r35": re.compile("^" + STAMP + RAM + r"(?:SWAP \S+ \(cached \d+MB\) )?" + CPU + r"EMC_FREQ \d+%@\d+ "
                      r"GR3D_FREQ \d+%@\d+ (?:\S+@[\d.]+C )+" + RAIL),
}
RELEASE = re.compile(r"^# R(\d+) \(release\), REVISION: (\d+)\.(\d+), GCID: \d+, BOARD: \S+, EABI: aarch64, "
                     r"DATE: .+$")
ROBOT_FORMAT = {"nano-01": "r35", "nx-01": "r36", "agx-01": "r36"}


def test_patterns_match_the_real_recordings():
    assert TEGRASTATS["r36"].match(REAL_TEGRASTATS_JP6)
    assert RELEASE.match(REAL_RELEASE_JP512)


@pytest.mark.parametrize("robot", sorted(ROBOT_FORMAT))
def test_tegrastats_prints_the_release_format_at_the_interval(fleet, robot):
    result = fleet.exec(robot, "timeout", "2.3", "tegrastats", "--interval", "500")
    lines = [line for line in result.stdout.splitlines() if line]
    assert 3 <= len(lines) <= 5, result.stdout
    for line in lines:
        assert TEGRASTATS[ROBOT_FORMAT[robot]].match(line), line


@pytest.mark.parametrize("robot", [*sorted(ROBOT_FORMAT), "xavier-01"])
def test_release_file_and_l4t_package_agree(fleet, robot):
    first = fleet.exec(robot, "head", "-n1", "/etc/nv_tegra_release").stdout.strip()
    match = RELEASE.match(first)
    assert match, first
    version = fleet.exec(robot, "dpkg-query", "--showformat=${Version}", "--show", "nvidia-l4t-core").stdout
    assert version.startswith("%s.%s.%s-" % match.groups()), version


@pytest.mark.parametrize("robot", sorted(ROBOT_FORMAT))
def test_nvpmodel_query_and_list_match_the_conf(fleet, robot):
    conf = fleet.exec(robot, "cat", "/etc/nvpmodel.conf").stdout
    modes = dict(re.findall(r"^< POWER_MODEL ID=(\d+) NAME=(\S+) >$", conf, re.M))
    default = re.search(r"^< PM_CONFIG DEFAULT=(\d+) >$", conf, re.M).group(1)
    assert modes and default in modes

    query = fleet.exec(robot, "nvpmodel", "-q").stdout
    name, mode_id = re.match(r"^NV Power Mode: (\S+)\n(\d+)\n$", query).groups()
    assert modes[mode_id] == name

    verbose = fleet.exec(robot, "nvpmodel", "-q", "--verbose").stdout
    assert verbose.startswith("NVPM VERB: Config file: /etc/nvpmodel.conf\n")
    assert "NVPM VERB: Current mode: NV Power Mode: %s\n%s\n" % (name, mode_id) in verbose

    listing = fleet.exec(robot, "nvpmodel", "-p", "--verbose").stdout
    assert dict(re.findall(r"POWER_MODEL: ID=(\d+) NAME=(\S+)", listing)) == modes
    assert "PM_CONFIG: DEFAULT=%s(%s)" % (modes[default], default) in listing


def test_nvpmodel_sets_a_mode_that_survives_a_restart(fleet):
    assert fleet.exec("nx-01", "nvpmodel", "-m", "3").returncode == 0
    assert fleet.exec("nx-01", "nvpmodel", "-q").stdout == "NV Power Mode: 25W\n3\n"
    container = fleet.robots["nx-01"].container
    from edge_deploy.sim import podman

    podman("restart", "--time", "5", container)
    fleet.exec("nx-01", "systemctl", "is-system-running", "--wait")
    assert fleet.exec("nx-01", "nvpmodel", "-q").stdout == "NV Power Mode: 25W\n3\n"
    assert fleet.exec("nx-01", "nvpmodel", "-m", "2").returncode == 0


def test_nvpmodel_reboot_prompt_declined_changes_nothing(fleet):
    result = fleet.exec("nano-01", "nvpmodel", "-m", "1", input_text="no\n")
    assert result.stdout.splitlines() == [
        "NVPM WARN: Reboot required for changing to this power mode: 1",
        "NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:",
        "NVPM ERROR: optMask is 1, no request for power mode",
    ]
    assert fleet.exec("nano-01", "nvpmodel", "-q").stdout == "NV Power Mode: 15W\n0\n"


def test_nvpmodel_unknown_mode_is_an_error(fleet):
    result = fleet.exec("agx-01", "nvpmodel", "-m", "9")
    assert result.returncode != 0
    assert "Invalid power mode" in result.stderr


def test_jetson_clocks_show_store_restore(fleet):
    show = fleet.exec("agx-01", "jetson_clocks", "--show").stdout
    assert re.search(r"^GPU MinFreq=\d+ MaxFreq=\d+ CurrentFreq=\d+$", show, re.M)
    assert show.rstrip().endswith("NV Power Mode: MAXN")
    assert fleet.exec("agx-01", "jetson_clocks", "--store", "/root/l4t_dfs.conf").returncode == 0
    assert fleet.exec("agx-01", "jetson_clocks").returncode == 0
    locked = fleet.exec("agx-01", "jetson_clocks", "--show").stdout
    gpu = re.search(r"^GPU MinFreq=(\d+) MaxFreq=(\d+)", locked, re.M).groups()
    assert gpu[0] == gpu[1], "jetson_clocks did not lock the GPU at its maximum"
    assert fleet.exec("agx-01", "jetson_clocks", "--restore", "/root/l4t_dfs.conf").returncode == 0
    assert fleet.exec("agx-01", "jetson_clocks", "--show").stdout == show
    missing = fleet.exec("agx-01", "jetson_clocks", "--restore", "/nonexistent")
    assert missing.returncode != 0 and "doesn't exist" in missing.stderr
