"""Input/output descriptions and sample inputs (golden .npz files or seeded random data).

Golden file layout (`.npz`): one array per model input, named like the input; optional `labels`
(int class ids); optional `expected.<output name>` arrays holding reference outputs computed on the
controller, so a robot can check parity without onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

from engine_builder._deps import require
from engine_builder.errors import UsageError

Dim = Union[int, str, None]
EXPECTED_PREFIX = "expected."
LABELS_KEY = "labels"


@dataclass
class TensorSpec:
    name: str
    shape: List[Dim]
    dtype: str  # numpy dtype name, e.g. "float32"

    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) or d < 0 for d in self.shape)

    def as_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def concrete_shape(spec: TensorSpec, batch: int = 1, override: Optional[Sequence[int]] = None) -> List[int]:
    """Fill dynamic dims: the first with `batch`, others must come from `override`."""
    if override is not None:
        return list(override)
    shape: List[int] = []
    for i, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim >= 0:
            shape.append(dim)
        elif i == 0:
            shape.append(batch)
        else:
            raise UsageError(
                "input %r has dynamic dimension %d (%r); give its shape with --shapes %s:..."
                % (spec.name, i, dim, spec.name)
            )
    return shape


def random_inputs(
    specs: Sequence[TensorSpec],
    batch: int = 1,
    seed: int = 0,
    overrides: Optional[Dict[str, List[int]]] = None,
) -> Dict[str, Any]:
    """Seeded inputs: standard normal floats, small non-negative ints."""
    np = require("numpy", "generating sample inputs")
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = concrete_shape(spec, batch, (overrides or {}).get(spec.name))
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feed[spec.name] = rng.integers(0, 10, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feed[spec.name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            raise UsageError(
                "cannot generate inputs of dtype %s for %r; give a .npz" % (spec.dtype, spec.name)
            )
    return feed


def load_samples(path: str, specs: Sequence[TensorSpec]) -> Dict[str, Any]:
    """Read a golden .npz: {"inputs": {...}, "labels": array|None, "expected": {...}}."""
    np = require("numpy", "reading sample inputs")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(
            "cannot read sample file %s: %s" % (path, exc), hint="give a .npz made with numpy.savez"
        ) from exc
    with archive:
        arrays = {key: archive[key] for key in archive.files}
    inputs = {}
    for spec in specs:
        if spec.name not in arrays:
            raise UsageError(
                "sample file %s has no array for input %r (it has: %s)"
                % (path, spec.name, ", ".join(sorted(arrays)))
            )
        value = arrays[spec.name]
        if len(value.shape) != len(spec.shape):
            raise UsageError(
                "sample array %r has shape %s but the model input has rank %d (%s)"
                % (spec.name, list(value.shape), len(spec.shape), spec.shape)
            )
        inputs[spec.name] = value.astype(np.dtype(spec.dtype), copy=False)
    expected = {k[len(EXPECTED_PREFIX) :]: v for k, v in arrays.items() if k.startswith(EXPECTED_PREFIX)}
    return {"inputs": inputs, "labels": arrays.get(LABELS_KEY), "expected": expected}


def batch_count(inputs: Dict[str, Any]) -> int:
    sizes = {int(v.shape[0]) for v in inputs.values() if getattr(v, "ndim", 0) > 0}
    if len(sizes) != 1:
        raise UsageError(
            "all sample inputs must have the same first (batch) dimension, got %s" % sorted(sizes)
        )
    return sizes.pop()


def chunks(inputs: Dict[str, Any], specs: Sequence[TensorSpec]) -> List[Dict[str, Any]]:
    """Split a batch of samples into feeds the model accepts (its static batch size, or all at once)."""
    total = batch_count(inputs)
    step = total
    for spec in specs:
        first = spec.shape[0] if spec.shape else None
        if isinstance(first, int) and first > 0:
            step = min(step, first)
    if total % step:
        raise UsageError("%d samples cannot be split into batches of %d" % (total, step))
    return [{k: v[i : i + step] for k, v in inputs.items()} for i in range(0, total, step)]
