"""`engine-builder export`: a PyTorch module -> ONNX, verified by running both (controller side).

torch is optional: it is imported here only, and its absence is a clear MissingDependency.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Dict, List

from edge_common.fsutil import atomic_path, sha256_file
from engine_builder._deps import load_callable, require
from engine_builder.errors import EngineBuilderError, UsageError

DEFAULT_OPSET = 17


def load_module(spec: str):
    """`package.module:factory` -> the torch.nn.Module the factory returns."""
    return load_callable(spec, "model factory")()


def export(
    model: Any,
    input_shape: List[int],
    output: str,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    input_name: str = "input",
    output_name: str = "output",
    atol: float = 1e-4,
    seed: int = 0,
) -> Dict[str, Any]:
    """Export `model` (a torch.nn.Module) for inputs of `input_shape`; check ORT matches torch."""
    torch = require("torch", "export")
    np = require("numpy", "export")
    model = model.eval()
    generator = torch.Generator().manual_seed(seed)
    dynamic_shapes = None
    example_shape = list(input_shape)
    if dynamic_batch:
        dynamic_shapes = {_forward_arg(model): {0: torch.export.Dim("batch", min=1, max=4096)}}
        # torch.export specializes a size-1 dimension, so trace with a batch of 2
        example_shape[0] = max(2, example_shape[0])
    example = torch.randn(*example_shape, generator=generator)
    # torch.onnx prints its progress on stdout, which is reserved for our JSON result
    with atomic_path(output, suffix=".onnx") as tmp, contextlib.redirect_stdout(sys.stderr):
        try:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[input_name],
                output_names=[output_name],
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                optimize=True,
            )
            program.save(str(tmp), external_data=False)
        except Exception as exc:
            raise EngineBuilderError(
                "torch.onnx.export failed: %s" % exc, hint="check the model's forward()"
            ) from exc
    check_batch = [3, *list(input_shape[1:])] if dynamic_batch else list(input_shape)
    verify = torch.randn(*check_batch, generator=generator)
    with torch.no_grad():
        expected = model(verify).detach().numpy()
    from engine_builder.backends.ort_backend import OnnxRuntimeRunner

    with OnnxRuntimeRunner(output) as runner:
        got = runner.infer({input_name: verify.numpy()})[output_name]
    max_abs = float(np.max(np.abs(got - expected)))
    if max_abs > atol:
        raise EngineBuilderError(
            "exported model disagrees with torch: max abs error %.3g > %.3g" % (max_abs, atol),
            hint="an op may export differently; try another --opset",
        )
    return {
        "output": output,
        "sha256": sha256_file(output),
        "opset": opset,
        "dynamic_batch": dynamic_batch,
        "input_shape": list(input_shape),
        "verified_batch": check_batch[0],
        "max_abs_error_vs_torch": max_abs,
        "torch": str(torch.__version__),
    }


def _forward_arg(model: Any) -> str:
    import inspect

    params = [p for p in inspect.signature(model.forward).parameters.values() if p.name != "self"]
    if not params:
        raise UsageError("the model's forward() takes no input")
    return params[0].name


def export_spec(spec: str, input_shape: List[int], output: str, **kwargs: Any) -> Dict[str, Any]:
    return export(load_module(spec), input_shape, output, **kwargs)
