"""The resource gate: tegrastats sampled while a gate runs, checked against the robot's budget.

Both gates that put load on a robot sample it: engine_builder's engine gate during its latency
benchmark, and the agent's health gate during its soak window (edge_agent/health.py). The robot's
budget comes from its module class's group_vars (`release_resource_budget`, written into the
agent's config): RAM headroom, peak CPU, GPU and junction (tj) temperature, input power, and
over-current throttling events. A breach refuses the release, and the verdict names the budget
and the distance: "power peak 27.3 W > budget 25 W (over by 2.3 W)".

What is sampled and how:
- one tegrastats line per interval (edge_common.tegrastats parses every L4T format);
- power is VDD_IN, or the sum of the rails where the module has no VDD_IN (AGX Orin), as jtop does;
- throttling is the change, over the window, of the `soctherm_oc` hwmon's `oc*_event_cnt` counters
  (the L4T kernel's tegra23x_oc_event.c); a robot without them says "not readable", never "0".

A measurement the robot cannot make (no tegrastats, no such sensor) is reported as not measured
and its budget as unchecked: the gate does not invent a figure. Standard library only, Python 3.8:
this runs on robots inside edge-agent.pyz.
"""

from __future__ import annotations

import glob
import os
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from edge_common import tegrastats

TEGRASTATS = "/usr/bin/tegrastats"
HWMON = "/sys/class/hwmon"
MB = 1024 * 1024
TRACE_POINTS = 120  # the trace a report draws: at most this many samples, evenly thinned

# budget key -> (what it bounds, unit, the summary's figure, "min" or "max")
BUDGETS = {
    "ram_headroom_min_mb": ("RAM headroom", "MB", "ram_headroom_min_mb", "min"),
    "cpu_temp_max_c": ("CPU temperature peak", "°C", "cpu_temp_peak_c", "max"),
    "gpu_temp_max_c": ("GPU temperature peak", "°C", "gpu_temp_peak_c", "max"),
    "tj_temp_max_c": ("junction (tj) temperature peak", "°C", "tj_temp_peak_c", "max"),
    "power_max_w": ("power peak", "W", "power_peak_w", "max"),
    "throttle_events_max": ("over-current throttling events", "", "throttle_events", "max"),
}


def check_budget(budget: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """The budget as numbers; an unknown key or a value that is not a number is a usage error
    (ValueError) that lists what is known."""
    out: Dict[str, float] = {}
    for key, value in (budget or {}).items():
        if key not in BUDGETS:
            raise ValueError(
                "unknown resource budget %r; known: %s (release_resource_budget in the module "
                "class's group_vars)" % (key, ", ".join(sorted(BUDGETS)))
            )
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError("resource budget %s must be a number >= 0, not %r" % (key, value))
        out[key] = float(value)
    return out


def throttle_events(root: str = HWMON) -> Optional[int]:
    """The soctherm_oc hwmon's over-current event count, or None where the robot has none."""
    for name_file in sorted(glob.glob(os.path.join(root, "hwmon*", "name"))):
        try:
            with open(name_file, encoding="utf-8") as handle:
                if handle.read().strip() != "soctherm_oc":
                    continue
            total = 0
            for counter in sorted(glob.glob(os.path.join(os.path.dirname(name_file), "oc*_event_cnt"))):
                with open(counter, encoding="utf-8") as handle:
                    total += int(handle.read().strip() or 0)
            return total
        except (OSError, ValueError):
            return None
    return None


def sample_of(line: str) -> Optional[Dict[str, Any]]:
    """The figures the gate reads from one tegrastats line; None when it has none of them."""
    ram_used = ram_total = gpu = None
    temps: Dict[str, float] = {}
    rails: Dict[str, float] = {}
    cpu_loads = []
    for name, labels, value in tegrastats.parse(line):
        if name == "tegrastats_ram_used_bytes":
            ram_used = value / MB
        elif name == "tegrastats_ram_total_bytes":
            ram_total = value / MB
        elif name == "tegrastats_gpu_load_ratio":
            gpu = value
        elif name == "tegrastats_cpu_load_ratio":
            cpu_loads.append(value)
        elif name == "tegrastats_temperature_celsius":
            temps[labels["sensor"]] = value
        elif name == "tegrastats_power_watts":
            rails[labels["rail"]] = value
    if ram_used is None and not temps and not rails:
        return None
    power = rails.get("VDD_IN")
    if power is None and rails:
        power = sum(rails.values())
    return {
        "ram_used_mb": ram_used,
        "ram_total_mb": ram_total,
        "cpu_load": max(cpu_loads) if cpu_loads else None,
        "gpu_load": gpu,
        "cpu_c": temps.get("cpu"),
        "gpu_c": temps.get("gpu"),
        "tj_c": temps.get("tj", max(temps.values()) if temps else None),
        "power_w": round(power, 3) if power is not None else None,
        "power_rail": "VDD_IN" if "VDD_IN" in rails else ("sum of rails" if rails else None),
    }


def _peak(samples: List[Dict[str, Any]], key: str, lowest: bool = False) -> Optional[float]:
    values = [s[key] for s in samples if s.get(key) is not None]
    if not values:
        return None
    return round(min(values) if lowest else max(values), 3)


def summarize(
    samples: List[Dict[str, Any]],
    seconds: float,
    throttled: Optional[int],
    unavailable: Optional[str] = None,
) -> Dict[str, Any]:
    """Peaks, headroom and a thinned trace of `samples` (each sample_of's figures and `t`)."""
    for sample in samples:
        if sample.get("ram_total_mb") is not None and sample.get("ram_used_mb") is not None:
            sample["ram_headroom_mb"] = sample["ram_total_mb"] - sample["ram_used_mb"]
    powers = [s["power_w"] for s in samples if s.get("power_w") is not None]
    step = max(1, -(-len(samples) // TRACE_POINTS))
    keys = ("t", "ram_used_mb", "cpu_load", "gpu_load", "cpu_c", "gpu_c", "tj_c", "power_w")
    return {
        "samples": len(samples),
        "seconds": round(seconds, 2),
        "unavailable": unavailable,
        "ram_total_mb": _peak(samples, "ram_total_mb"),
        "ram_used_peak_mb": _peak(samples, "ram_used_mb"),
        "ram_headroom_min_mb": _peak(samples, "ram_headroom_mb", lowest=True),
        "cpu_temp_peak_c": _peak(samples, "cpu_c"),
        "gpu_temp_peak_c": _peak(samples, "gpu_c"),
        "tj_temp_peak_c": _peak(samples, "tj_c"),
        "power_peak_w": _peak(samples, "power_w"),
        "power_mean_w": round(sum(powers) / len(powers), 3) if powers else None,
        "power_rail": next((s["power_rail"] for s in samples if s.get("power_rail")), None),
        "cpu_load_peak": _peak(samples, "cpu_load"),
        "gpu_load_peak": _peak(samples, "gpu_load"),
        "throttle_events": throttled,
        "trace": [{k: s.get(k) for k in keys} for s in samples[::step]],
    }


def verdict(summary: Dict[str, Any], budget: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The summary with the budget, its breaches (each with what, limit, measured and by how
    much) and `passed`; a budget whose figure was not measured is listed under `unchecked`."""
    budget = check_budget(budget)
    breaches = []
    unchecked = []
    for key, limit in sorted(budget.items()):
        what, unit, figure, kind = BUDGETS[key]
        measured = summary.get(figure)
        if measured is None:
            unchecked.append(key)
            continue
        over = limit - measured if kind == "min" else measured - limit
        if over <= 0:
            continue
        units = unit if unit in ("", "°C") else " " + unit
        breaches.append(
            {
                "budget": key,
                "limit": limit,
                "measured": measured,
                "by": round(over, 3),
                "text": "%s %g%s %s budget %g%s (%s by %g%s)"
                % (
                    what,
                    measured,
                    units,
                    "<" if kind == "min" else ">",
                    limit,
                    units,
                    "short" if kind == "min" else "over",
                    round(over, 3),
                    units,
                ),
            }
        )
    return dict(summary, budget=budget, breaches=breaches, unchecked=unchecked, passed=not breaches)


def reason(checked: Dict[str, Any]) -> Optional[str]:
    """One line for a verdict with breaches, None for one without."""
    if not checked.get("breaches"):
        return None
    return "resource budget broken: " + "; ".join(b["text"] for b in checked["breaches"])


class Recording:
    """tegrastats in the background for the length of a `with` block; at least `min_samples`
    lines are waited for (bounded: a short benchmark still gets a reading). summary() after."""

    def __init__(
        self,
        interval_ms: int = 500,
        tegrastats_path: Optional[str] = None,
        min_samples: int = 2,
        hwmon: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.interval_ms = max(10, int(interval_ms))
        self.path = tegrastats_path or TEGRASTATS
        self.min_samples = min_samples
        self.hwmon = hwmon or HWMON
        self.clock = clock
        self.samples: List[Dict[str, Any]] = []
        self.unavailable: Optional[str] = None
        self.started = 0.0
        self.seconds = 0.0
        self.throttle_before: Optional[int] = None
        self.throttled: Optional[int] = None
        self._process: Optional[subprocess.Popen] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def __enter__(self) -> Recording:
        self.started = self.clock()
        self.throttle_before = throttle_events(self.hwmon)
        if not os.access(self.path, os.X_OK):
            self.unavailable = "not sampled: no tegrastats at %s" % self.path
            return self
        try:
            self._process = subprocess.Popen(
                [self.path, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                universal_newlines=True,
            )
        except OSError as exc:
            self.unavailable = "not sampled: %s" % exc
            return self
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def keep_busy(self, call: Callable[[], Any], max_seconds: float = 5.0) -> int:
        """Run `call` again and again until tegrastats has read `min_samples` lines during the
        window (bounded by `max_seconds`): a benchmark shorter than the sampling interval still
        shows its load. Returns how many extra calls it took."""
        deadline = time.monotonic() + max_seconds
        calls = 0
        while (
            self._process is not None
            and self._process.poll() is None
            and len(self.samples) < self.min_samples
            and time.monotonic() < deadline
        ):
            call()
            calls += 1
        return calls

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            sample = sample_of(line)
            if sample is not None:
                sample["t"] = round(self.clock() - self.started, 3)
                with self._lock:
                    self.samples.append(sample)

    def __exit__(self, *exc_info: Any) -> None:
        self.seconds = self.clock() - self.started
        if self._process is not None:
            deadline = time.monotonic() + self.min_samples * self.interval_ms / 1000.0 + 5.0
            while len(self.samples) < self.min_samples and time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                time.sleep(0.05)
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            if self._thread is not None:
                self._thread.join(timeout=5)
            if not self.samples:
                self.unavailable = "not sampled: tegrastats printed no line that could be read"
        after = throttle_events(self.hwmon)
        if after is not None and self.throttle_before is not None:
            self.throttled = max(0, after - self.throttle_before)

    def summary(self) -> Dict[str, Any]:
        with self._lock:
            samples = [dict(s) for s in self.samples]
        return summarize(samples, self.seconds, self.throttled, self.unavailable)

    def check(self, budget: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        return verdict(self.summary(), budget)
