#!/usr/bin/python3
"""Write one tegrastats sample as Prometheus node-exporter textfile metrics.

Runs `tegrastats --interval N`, reads its first line, stops it, and replaces
<textfile-dir>/tegrastats.prom atomically, so node-exporter never reads half a
file. The line format differs between L4T releases (R32: `GR3D_FREQ 0%`,
`VDD_IN 3831/3831`; R35: `GR3D_FREQ 0%@0`, mW; R36: `GR3D_FREQ 4%@[305]`), so
each field is parsed on its own and a missing field is simply left out, in the
spirit of jetson_stats' tegra_parse. Standard library only: the robots run
Python 3.8 (JetPack 5) or 3.10 (JetPack 6).

The one tegrastats parser: the Python packages import this file as edge_common.tegrastats (a
symlink to it), whose resource gate (edge_common.resources) reads the same metrics.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import subprocess
import sys
import tempfile
import time

RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
CPU = re.compile(r"\bCPU \[([^\]]*)\]")
CPU_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
GPU = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
TEMPERATURE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?=\s|$)")
RAIL = re.compile(r"(?:^|\s)([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
NOT_RAILS = {"RAM", "SWAP", "IRAM"}
# tegrastats prints -256C for a sensor that is switched off.
NO_SENSOR = -200.0
MB = 1024 * 1024

HELP = {
    "tegrastats_ram_used_bytes": "RAM in use (tegrastats RAM).",
    "tegrastats_ram_total_bytes": "RAM size (tegrastats RAM).",
    "tegrastats_swap_used_bytes": "Swap in use.",
    "tegrastats_swap_total_bytes": "Swap size.",
    "tegrastats_cpu_online": "1 when the core is online in this power mode.",
    "tegrastats_cpu_load_ratio": "Core load, 0 to 1.",
    "tegrastats_cpu_frequency_hertz": "Core frequency.",
    "tegrastats_emc_load_ratio": "Memory controller load, 0 to 1.",
    "tegrastats_emc_frequency_hertz": "Memory controller frequency.",
    "tegrastats_gpu_load_ratio": "GPU (GR3D) load, 0 to 1.",
    "tegrastats_gpu_frequency_hertz": "GPU frequency per GPC.",
    "tegrastats_temperature_celsius": "Thermal zone temperature.",
    "tegrastats_power_watts": "Power rail, instantaneous.",
    "tegrastats_power_average_watts": "Power rail, average since tegrastats started.",
    "tegrastats_sample_ok": "1 when the last sample was read and parsed.",
    "tegrastats_sample_timestamp_seconds": "When the last sample was taken (Unix time).",
}


def parse(line):
    """Metrics from one tegrastats line: a list of (name, labels, value)."""
    out = []
    match = RAM.search(line)
    if match:
        out.append(("tegrastats_ram_used_bytes", {}, int(match.group(1)) * MB))
        out.append(("tegrastats_ram_total_bytes", {}, int(match.group(2)) * MB))
    match = SWAP.search(line)
    if match:
        out.append(("tegrastats_swap_used_bytes", {}, int(match.group(1)) * MB))
        out.append(("tegrastats_swap_total_bytes", {}, int(match.group(2)) * MB))
    match = CPU.search(line)
    if match:
        for index, core in enumerate(match.group(1).split(",")):
            labels = {"cpu": str(index)}
            core_match = CPU_CORE.match(core.strip())
            out.append(("tegrastats_cpu_online", labels, 1 if core_match else 0))
            if core_match:
                out.append(("tegrastats_cpu_load_ratio", labels, int(core_match.group(1)) / 100.0))
                if core_match.group(2):
                    out.append(("tegrastats_cpu_frequency_hertz", labels, int(core_match.group(2)) * 1000000))
    match = EMC.search(line)
    if match:
        out.append(("tegrastats_emc_load_ratio", {}, int(match.group(1)) / 100.0))
        if match.group(2):
            out.append(("tegrastats_emc_frequency_hertz", {}, int(match.group(2)) * 1000000))
    match = GPU.search(line)
    if match:
        out.append(("tegrastats_gpu_load_ratio", {}, int(match.group(1)) / 100.0))
        for index, mhz in enumerate((match.group(2) or "").split(",")):
            if mhz:
                out.append(("tegrastats_gpu_frequency_hertz", {"gpc": str(index)}, int(mhz) * 1000000))
    for sensor, celsius in TEMPERATURE.findall(line):
        if float(celsius) > NO_SENSOR:
            out.append(("tegrastats_temperature_celsius", {"sensor": sensor.lower()}, float(celsius)))
    for rail, now, average in RAIL.findall(line):
        if rail not in NOT_RAILS:
            out.append(("tegrastats_power_watts", {"rail": rail}, int(now) / 1000.0))
            out.append(("tegrastats_power_average_watts", {"rail": rail}, int(average) / 1000.0))
    return out


def render(metrics):
    """Prometheus text exposition format, one HELP/TYPE block per metric name."""
    lines = []
    seen = []
    for metric in metrics:
        name = metric[0]
        if name not in seen:
            seen.append(name)
    for name in seen:
        lines.append("# HELP %s %s" % (name, HELP.get(name, name)))
        lines.append("# TYPE %s gauge" % name)
        for other, labels, value in metrics:
            if other != name:
                continue
            label_text = ",".join('%s="%s"' % (key, labels[key]) for key in sorted(labels))
            text = repr(value) if isinstance(value, float) else str(value)
            lines.append("%s%s %s" % (name, "{%s}" % label_text if label_text else "", text))
    return "\n".join(lines) + "\n"


def sample(tegrastats, interval_ms, timeout):
    """The first line tegrastats prints, or None."""
    process = subprocess.Popen([tegrastats, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, universal_newlines=True)
    try:
        ready = select.select([process.stdout], [], [], timeout)[0]
        return process.stdout.readline().strip() if ready else None
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def write_atomic(directory, text):
    handle, tmp = tempfile.mkstemp(prefix=".tegrastats.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(directory, "tegrastats.prom"))
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--textfile-dir", default="/var/lib/prometheus/node-exporter")
    parser.add_argument("--interval-ms", type=int, default=1000, help="tegrastats sampling interval")
    parser.add_argument("--tegrastats", default="/usr/bin/tegrastats")
    parser.add_argument("--line", help="parse this line instead of running tegrastats")
    parser.add_argument("--stdout", action="store_true", help="print the metrics instead of writing the file")
    args = parser.parse_args(argv)

    started = time.time()
    line = args.line if args.line is not None else sample(args.tegrastats, args.interval_ms,
                                                          args.interval_ms / 1000.0 + 10)
    metrics = parse(line) if line else []
    ok = 1 if metrics else 0
    metrics.append(("tegrastats_sample_ok", {}, ok))
    metrics.append(("tegrastats_sample_timestamp_seconds", {}, round(started, 3)))
    text = render(metrics)
    if args.stdout:
        sys.stdout.write(text)
    else:
        write_atomic(args.textfile_dir, text)
    if not ok:
        sys.stderr.write("tegrastats gave no line that could be parsed: %r\n" % line)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
