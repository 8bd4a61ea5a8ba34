"""The backend interface: a builder per backend and a runner that is a context manager.

backend = get_backend("onnxruntime")
extra = backend.build(onnx_path, artifact_tmp_path, options, progress)
with backend.runner(artifact_path) as runner:
    outputs = runner.infer({"input": batch})
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from engine_builder.options import BuildOptions
from engine_builder.progress import Progress
from engine_builder.tensors import TensorSpec


class Runner:
    """Loads an artifact on `__enter__`, runs it with `infer`, frees it on `__exit__`."""

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        raise NotImplementedError

    def deactivate(self) -> None:
        """Free what activate() took."""

    def input_specs(self) -> List[TensorSpec]:
        raise NotImplementedError

    def output_specs(self) -> List[TensorSpec]:
        raise NotImplementedError

    def infer(self, feed: Dict[str, Any]) -> Dict[str, Any]:
        """Run once; `feed` maps input names to numpy arrays; returns output name -> array."""
        raise NotImplementedError


class Backend:
    """A way to turn an ONNX file into a runnable artifact on this machine."""

    name = ""
    package = ""  # the library it needs, named in "not installed" errors
    artifact_suffix = ".engine"

    def version(self) -> str:
        """Version of the backend library; raises MissingDependency when it is not installed."""
        raise NotImplementedError

    def check_options(self, options: BuildOptions) -> None:
        """Raise UsageError for options this backend cannot honour (never ignore them silently)."""

    def build(
        self, onnx_path: str, artifact_path: str, options: BuildOptions, progress: Progress
    ) -> Dict[str, Any]:
        """Write the artifact to `artifact_path` (a temp path the caller renames); return extra facts."""
        raise NotImplementedError

    def runner(self, artifact_path: str) -> Runner:
        raise NotImplementedError

    def native_bench(self, artifact_path: str, **kwargs: Any) -> Optional[Dict[str, Any]]:
        """A backend with its own benchmark tool (trtexec) returns its parsed figures; others None."""
        return None
