"""Build options shared by all backends, and parsing of shape strings like `input:1x3x224x224`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from engine_builder.errors import UsageError
from engine_builder.fingerprint import PRECISIONS

ORT_OPTIMIZATION_LEVELS = ("basic", "extended", "all")


@dataclass
class ShapeRange:
    """Optimization-profile range of one dynamic input."""

    min: List[int]
    opt: List[int]
    max: List[int]

    def as_dict(self) -> Dict[str, List[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass
class BuildOptions:
    """What a build may be asked for. `engine_options()` is the part that changes the artifact."""

    precision: str = "fp32"
    workspace_mib: Optional[int] = None
    shapes: Dict[str, ShapeRange] = field(default_factory=dict)
    dla_core: Optional[int] = None
    gpu_fallback: bool = False
    builder_optimization_level: Optional[int] = None
    ort_optimization: str = "all"
    # Not part of the fingerprint: where the timing cache lives does not change the engine.
    timing_cache: Optional[str] = None

    def __post_init__(self) -> None:
        self.precision = self.precision.lower()
        if self.precision not in PRECISIONS:
            raise UsageError("precision must be one of %s, got %r" % (", ".join(PRECISIONS), self.precision))
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise UsageError("workspace must be a positive number of MiB, got %r" % self.workspace_mib)
        if self.dla_core is not None and self.dla_core < 0:
            raise UsageError("DLA core must be >= 0, got %r" % self.dla_core)
        if self.gpu_fallback and self.dla_core is None:
            raise UsageError("--gpu-fallback only makes sense with --dla-core")
        if self.ort_optimization not in ORT_OPTIMIZATION_LEVELS:
            raise UsageError(
                "onnxruntime optimization must be one of %s" % ", ".join(ORT_OPTIMIZATION_LEVELS)
            )

    def engine_options(self, backend: str) -> Dict[str, Any]:
        """Options that change the engine for `backend` (precision is keyed separately)."""
        if backend == "onnxruntime":
            return {"ort_optimization": self.ort_optimization}
        return {
            "workspace_mib": self.workspace_mib,
            "shapes": {name: rng.as_dict() for name, rng in sorted(self.shapes.items())},
            "dla_core": self.dla_core,
            "gpu_fallback": self.gpu_fallback if self.dla_core is not None else None,
            "builder_optimization_level": self.builder_optimization_level,
        }

    def non_default_tensorrt_options(self) -> List[str]:
        """TensorRT-only options that were set (a CPU backend must refuse them, not ignore them)."""
        names = []
        if self.workspace_mib is not None:
            names.append("workspace")
        if self.dla_core is not None:
            names.append("dla-core")
        if self.builder_optimization_level is not None:
            names.append("builder-optimization-level")
        if self.timing_cache:
            names.append("timing-cache")
        return names


def parse_dims(text: str) -> List[int]:
    """`1x3x224x224` -> [1, 3, 224, 224]."""
    try:
        dims = [int(part) for part in text.strip().lower().split("x")]
    except ValueError:
        raise UsageError("bad shape %r: expected dimensions joined by 'x', like 1x3x224x224" % text) from None
    if not dims or any(d <= 0 for d in dims):
        raise UsageError("bad shape %r: every dimension must be a positive integer" % text)
    return dims


def parse_named_shapes(text: Optional[str]) -> Dict[str, List[int]]:
    """`a:1x3x8x8,b:1x4` -> {"a": [1, 3, 8, 8], "b": [1, 4]} (trtexec's syntax)."""
    out: Dict[str, List[int]] = {}
    if not text:
        return out
    for item in text.split(","):
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise UsageError("bad shape spec %r: expected name:1x3x224x224" % item)
        out[name] = parse_dims(dims)
    return out


def shape_ranges(min_s: Optional[str], opt_s: Optional[str], max_s: Optional[str]) -> Dict[str, ShapeRange]:
    """Combine --min/--opt/--max shape specs; opt defaults to max, min to opt."""
    mins, opts, maxs = parse_named_shapes(min_s), parse_named_shapes(opt_s), parse_named_shapes(max_s)
    ranges: Dict[str, ShapeRange] = {}
    for name in sorted(set(mins) | set(opts) | set(maxs)):
        hi = maxs.get(name) or opts.get(name) or mins[name]
        mid = opts.get(name) or hi
        lo = mins.get(name) or mid
        if not (len(lo) == len(mid) == len(hi)):
            raise UsageError(
                "shapes of %r have different ranks: min %s, opt %s, max %s" % (name, lo, mid, hi)
            )
        if any(a > b or b > c for a, b, c in zip(lo, mid, hi)):
            raise UsageError(
                "shapes of %r must satisfy min <= opt <= max, got %s, %s, %s" % (name, lo, mid, hi)
            )
        ranges[name] = ShapeRange(lo, mid, hi)
    return ranges
