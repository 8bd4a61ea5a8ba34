"""Parse what trtexec prints: version banner, PASSED/FAILED, performance summary, errors.

Summary lines look like (prefix optional, percentiles vary by version: 8.5+ print 90/95/99, older
ones only 99):
  [12/11/2025-10:00:29] [I] Throughput: 12.9581 qps
  [12/11/2025-10:00:29] [I] Latency: min = 75.9753 ms, max = 76.4476 ms, mean = 76.3344 ms,
      median = 76.3436 ms, percentile(90%) = 76.4209 ms, percentile(95%) = 76.446 ms,
      percentile(99%) = 76.4476 ms
(shown wrapped here; trtexec prints one line per section)
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from engine_builder.device import trtexec_version_from_code

SECTIONS = {
    "Latency": "latency",
    "End-to-End Host Latency": "end_to_end_host_latency",
    "Enqueue Time": "enqueue_time",
    "H2D Latency": "h2d_latency",
    "GPU Compute Time": "gpu_compute_time",
    "D2H Latency": "d2h_latency",
}
_PREFIX = r"^(?:\[[^\]]*\]\s*\[I\]\s*)?"
_BANNER = re.compile(
    r"&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec \[TensorRT v(\d+)\](?: \[b\d+\])?(?: # (.*))?$", re.M
)
_SECTION = re.compile(_PREFIX + r"(%s): (min.*)$" % "|".join(re.escape(s) for s in SECTIONS), re.M)
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=?\s*([0-9.eE+-]+) ms")
_THROUGHPUT = re.compile(_PREFIX + r"Throughput: ([0-9.eE+-]+) qps", re.M)
_WALLTIME = re.compile(_PREFIX + r"Total Host Walltime: ([0-9.eE+-]+) s", re.M)
_GPU_TOTAL = re.compile(_PREFIX + r"Total GPU Compute Time: ([0-9.eE+-]+) s", re.M)
_ERROR = re.compile(r"^\[[^\]]*\]\s*\[E\]\s*(.*)$", re.M)
_NODE = re.compile(r'While parsing node number (\d+) \[(\w+)(?: -> "([^"]*)")?\]')
_INVALID_NODE = re.compile(r"Invalid Node - (\S+)")


def _stats(text: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for key, pct, value in _STAT.findall(text):
        if key == "median":
            out["p50"] = float(value)
        elif pct:
            label = pct[:-2] if pct.endswith(".0") else pct
            out["p%s" % label.replace(".", "_")] = float(value)
        else:
            out[key] = float(value)
    return out


def _float(pattern: re.Pattern[str], text: str) -> Optional[float]:
    match = pattern.search(text)
    return float(match.group(1)) if match else None


def parse(text: str) -> Dict[str, Any]:
    """Everything useful in a trtexec log, as a dict (missing parts are None or empty)."""
    banners = _BANNER.findall(text)
    status = None
    version = None
    command = None
    for state, code, cmd in banners:
        version = trtexec_version_from_code(code)
        command = cmd or command
        if state in ("PASSED", "FAILED"):
            status = state
    sections = {SECTIONS[name]: _stats(rest) for name, rest in _SECTION.findall(text)}
    parser_errors: List[Dict[str, Any]] = []
    for index, op, output in _NODE.findall(text):
        parser_errors.append({"node_index": int(index), "node_operator": op, "output": output or None})
    invalid = _INVALID_NODE.findall(text)
    for entry, name in zip(parser_errors, invalid):
        entry["node_name"] = name
    return {
        "tensorrt_version": version,
        "status": status,
        "passed": status == "PASSED",
        "command": command,
        "throughput_qps": _float(_THROUGHPUT, text),
        "latency_ms": sections.get("latency"),
        "sections_ms": sections,
        "total_host_walltime_s": _float(_WALLTIME, text),
        "total_gpu_compute_time_s": _float(_GPU_TOTAL, text),
        "errors": _ERROR.findall(text)[-20:],
        "parser_errors": parser_errors,
    }
