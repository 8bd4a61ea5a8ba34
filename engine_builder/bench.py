"""`engine-builder bench`: warm-up, timed runs, latency percentiles and throughput, p99 gate."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

from engine_builder.errors import UsageError
from engine_builder.progress import Progress
from engine_builder.stats import summarize_ms


def time_calls(
    call: Callable[[], Any],
    warmup: int = 10,
    iterations: int = 100,
    progress: Optional[Progress] = None,
    label: str = "timed runs",
) -> Dict[str, Any]:
    """Time `call` `iterations` times after `warmup` untimed calls."""
    if iterations < 1 or warmup < 0:
        raise UsageError("iterations must be >= 1 and warm-up >= 0")
    progress = progress or Progress()
    for _ in range(warmup):
        call()
    latencies = []
    progress.phase_start(label, iterations)
    clock = time.perf_counter
    wall0 = clock()
    for i in range(iterations):
        t0 = clock()
        call()
        latencies.append((clock() - t0) * 1000.0)
        if i % 50 == 49:
            progress.step(label, i + 1)
    wall = clock() - wall0
    progress.phase_finish(label)
    return {
        "warmup": warmup,
        "iterations": iterations,
        "latency_ms": summarize_ms(latencies),
        "throughput_qps": round(iterations / wall, 3) if wall > 0 else None,
        "wall_seconds": round(wall, 6),
    }


def apply_p99_gate(result: Dict[str, Any], p99_target_ms: Optional[float]) -> Dict[str, Any]:
    """Mark `result` passed/failed against a p99 target (in ms); no target always passes."""
    result["p99_target_ms"] = p99_target_ms
    p99 = (result.get("latency_ms") or {}).get("p99")
    result["passed"] = p99_target_ms is None or (p99 is not None and p99 <= p99_target_ms)
    return result
