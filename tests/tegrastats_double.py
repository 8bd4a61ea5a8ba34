"""TEGRASTATS_DOUBLE: a test double of NVIDIA's tegrastats (a Jetson's sensors do not exist here).

It prints a line recorded on a real Jetson once per --interval milliseconds, as tegrastats does;
edge_common.resources reads it as it reads the real tool.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Recorded: JetPack 6 Orin Nano, as root (beszel agent/gpu_test.go).
NANO_JP6 = (
    "11-15-2024 08:38:09 RAM 6185/7620MB (lfb 8x2MB) SWAP 851/3810MB (cached 1MB) "
    "CPU [15%@729,11%@729,14%@729,13%@729,11%@729,8%@729] EMC_FREQ 43%@2133 GR3D_FREQ 63%@[621] "
    "NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@53.968C soc2@52.437C soc0@50.75C "
    "gpu@53.343C tj@53.968C soc1@51.656C VDD_IN 12479mW/12479mW VDD_CPU_GPU_CV 4667mW/4667mW "
    "VDD_SOC 2817mW/2817mW"
)
# Recorded: JetPack 5 AGX Orin 64GB (GDWR/jetson_exporter#14): no VDD_IN rail, GPU sensor off.
AGX_JP5 = (
    "RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) CPU [0%@729,0%@729] "
    "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C "
    "SOC2@40.093C Tdiode@33C SOC0@41.093C CV1@-256C GPU@-256C tj@44.343C SOC1@41.25C CV2@-256C "
    "VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW "
    "VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
)

SCRIPT = """#!{python}
# TEGRASTATS_DOUBLE (tests/tegrastats_double.py): a recorded real line per --interval.
import sys, time
interval = int(sys.argv[sys.argv.index("--interval") + 1]) / 1000.0
while True:
    time.sleep(interval)
    print({line!r}, flush=True)
"""


def write(folder: Path, line: str = NANO_JP6) -> str:
    """An executable `tegrastats` double in `folder` that prints `line`; its path."""
    path = Path(folder) / "tegrastats"
    path.write_text(SCRIPT.format(python=sys.executable, line=line))
    path.chmod(0o755)
    return str(path)
