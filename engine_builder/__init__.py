"""engine_builder: ONNX checks, INT8 Q/DQ quantization, engine builds, fingerprints, benchmarks.

Importing this package is cheap: numpy, onnx, onnxruntime, tensorrt and torch are imported only by
the functions that need them, so the CLI starts on a controller without a GPU and on a robot that has
only one backend installed.
"""

from __future__ import annotations

__version__ = "0.1.0"
