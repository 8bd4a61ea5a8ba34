"""TensorRT through `trtexec`, with the command line per version (FACTS.md):

- workspace: `--workspace=N` on 8.5; `--memPoolSize=workspace:N` (MiB) from 8.6 (`--workspace` is
  deprecated in 8.6 and gone in 10);
- build only: `--buildOnly` on 8.5, `--skipInference` from 8.6;
- int8 from a Q/DQ model: `--int8 --fp16` on 8.x, `--stronglyTyped` on 10.x;
- `--builderOptimizationLevel` from 8.6.
The engine it writes is the same file the `tensorrt` backend writes, so runs use the same runner;
`native_bench` uses trtexec itself and parses its performance summary.
"""

from __future__ import annotations

import subprocess
from typing import Any, Dict, List, Optional

from engine_builder.backends import trtexec_output
from engine_builder.backends.base import Backend, Runner
from engine_builder.backends.trt_backend import api_branch
from engine_builder.device import find_trtexec, trtexec_version
from engine_builder.errors import BuildError, MissingDependency
from engine_builder.options import BuildOptions
from engine_builder.progress import Progress


def _dims(dims: List[int]) -> str:
    return "x".join(str(d) for d in dims)


def _shape_flags(options: BuildOptions) -> List[str]:
    if not options.shapes:
        return []
    items = sorted(options.shapes.items())
    return [
        "--minShapes=" + ",".join("%s:%s" % (n, _dims(r.min)) for n, r in items),
        "--optShapes=" + ",".join("%s:%s" % (n, _dims(r.opt)) for n, r in items),
        "--maxShapes=" + ",".join("%s:%s" % (n, _dims(r.max)) for n, r in items),
    ]


def build_command(
    trtexec: str, version: str, onnx_path: str, engine_path: str, options: BuildOptions
) -> List[str]:
    """The trtexec command line for this TensorRT version (pure: tested per version)."""
    branch = api_branch(version)
    cmd = [trtexec, "--onnx=%s" % onnx_path, "--saveEngine=%s" % engine_path]
    cmd.append("--buildOnly" if branch == "8.5" else "--skipInference")
    if options.workspace_mib:
        if branch == "8.5":
            cmd.append("--workspace=%d" % options.workspace_mib)
        else:
            cmd.append("--memPoolSize=workspace:%d" % options.workspace_mib)
    if options.precision == "fp16":
        cmd.append("--fp16")
    elif options.precision == "int8":
        cmd.extend(["--stronglyTyped"] if branch == "10" else ["--int8", "--fp16"])
    cmd.extend(_shape_flags(options))
    if options.dla_core is not None:
        cmd.append("--useDLACore=%d" % options.dla_core)
        if options.gpu_fallback:
            cmd.append("--allowGPUFallback")
    if options.builder_optimization_level is not None:
        if branch == "8.5":
            raise BuildError("builder optimization level needs TensorRT 8.6 or newer (trtexec here is 8.5)")
        cmd.append("--builderOptimizationLevel=%d" % options.builder_optimization_level)
    if options.timing_cache:
        cmd.append("--timingCacheFile=%s" % options.timing_cache)
    return cmd


def bench_command(
    trtexec: str,
    engine_path: str,
    warmup_ms: int,
    iterations: int,
    shapes: Optional[Dict[str, List[int]]] = None,
) -> List[str]:
    cmd = [
        trtexec,
        "--loadEngine=%s" % engine_path,
        "--warmUp=%d" % warmup_ms,
        "--iterations=%d" % iterations,
        "--duration=0",
    ]
    if shapes:
        cmd.append("--shapes=" + ",".join("%s:%s" % (n, _dims(d)) for n, d in sorted(shapes.items())))
    return cmd


def run(cmd: List[str], progress: Progress, phase: str, timeout: Optional[float] = None) -> Dict[str, Any]:
    """Run trtexec, stream its lines to progress, parse the output."""
    progress.phase_start(phase)
    try:
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError("trtexec did not finish within %s s" % timeout, details={"command": cmd}) from exc
    finally:
        progress.phase_finish(phase)
    text = proc.stdout.decode("utf-8", "replace")
    parsed = trtexec_output.parse(text)
    parsed["returncode"] = proc.returncode
    if proc.returncode != 0 or parsed["status"] == "FAILED":
        names = ", ".join(
            e.get("node_name") or e.get("node_operator") or "?" for e in parsed["parser_errors"]
        )
        raise BuildError(
            "trtexec failed (exit %d)%s" % (proc.returncode, ": failing nodes " + names if names else ""),
            details={
                "command": cmd,
                "log_tail": text.splitlines()[-40:],
                "parser_errors": parsed["parser_errors"],
                "errors": parsed["errors"],
            },
        )
    return parsed


class TrtexecBackend(Backend):
    name = "trtexec"
    package = "trtexec"
    artifact_suffix = ".engine"

    def __init__(self, trtexec: Optional[str] = None, timeout: Optional[float] = None):
        self._explicit = trtexec
        self.timeout = timeout
        self._path: Optional[str] = None
        self._version: Optional[str] = None

    def path(self) -> str:
        if self._path is None:
            path = find_trtexec(self._explicit)
            if path is None:
                raise MissingDependency(
                    "trtexec",
                    "the trtexec backend",
                    "trtexec ships with JetPack at /usr/src/tensorrt/bin/trtexec "
                    "(package libnvinfer-bin); or pass --trtexec PATH",
                    what="the program",
                )
            self._path = path
        return self._path

    def version(self) -> str:
        if self._version is None:
            version = trtexec_version(self.path())
            if version is None:
                raise BuildError("could not read the TensorRT version from %s" % self.path())
            self._version = version
        return self._version

    def build(
        self, onnx_path: str, artifact_path: str, options: BuildOptions, progress: Progress
    ) -> Dict[str, Any]:
        cmd = build_command(self.path(), self.version(), onnx_path, artifact_path, options)
        parsed = run(cmd, progress, "trtexec build", self.timeout)
        return {"command": cmd, "api_branch": api_branch(self.version()), "trtexec": parsed}

    def runner(self, artifact_path: str) -> Runner:
        from engine_builder.backends.trt_runtime import TensorRTRunner

        return TensorRTRunner(artifact_path)

    def native_bench(self, artifact_path: str, **kwargs: Any) -> Optional[Dict[str, Any]]:
        cmd = bench_command(
            self.path(),
            artifact_path,
            kwargs.get("warmup_ms", 500),
            kwargs.get("iterations", 200),
            kwargs.get("shapes"),
        )
        parsed = run(cmd, kwargs["progress"], "trtexec bench", self.timeout)
        return {"command": cmd, "trtexec": parsed}
