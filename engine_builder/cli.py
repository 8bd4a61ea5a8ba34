"""The `engine-builder` command line.

Every subcommand prints a human summary, or with `--json` one JSON object on stdout:
`{"command": ..., "ok": true, ...result fields}` or `{"command": ..., "ok": false, "error": {...}}`.
Progress and logs go to stderr. Exit codes (edge_common.exitcodes, the same in every command of
the project): 0 ok, 1 failed, 2 usage, 3 refused (a gate said no), 6 a library is missing (the
message names the package). engine_builder/contract.py is how other programs call these.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional

from engine_builder import __version__
from engine_builder.errors import EXIT_FAILED, EXIT_OK, EngineBuilderError, GateFailed, UsageError
from engine_builder.store import DEFAULT_ROOT as DEFAULT_STORE

ROBOT_COMMANDS = ("probe", "build", "ensure", "fingerprint", "bench", "compare", "selftest")


# ----------------------------------------------------------------------------- argument helpers
def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", required=True, help="onnxruntime, tensorrt or trtexec")
    p.add_argument(
        "--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="int8 needs a Q/DQ model"
    )
    p.add_argument("--workspace-mib", type=int, help="TensorRT workspace memory pool limit (MiB)")
    p.add_argument("--min-shapes", help="dynamic inputs: name:1x3x224x224[,name2:...]")
    p.add_argument("--opt-shapes", help="dynamic inputs: optimization-profile optimum shapes")
    p.add_argument("--max-shapes", help="dynamic inputs: optimization-profile maximum shapes")
    p.add_argument(
        "--dla-core", type=int, help="build for this DLA core (checked against the device's count)"
    )
    p.add_argument(
        "--gpu-fallback", action="store_true", help="with --dla-core: let unsupported layers run on GPU"
    )
    p.add_argument("--builder-optimization-level", type=int, help="TensorRT 8.6+ only")
    p.add_argument("--ort-optimization", default="all", choices=["basic", "extended", "all"])
    p.add_argument(
        "--device-json", help="device identity as a JSON file or string (default: read from this machine)"
    )
    p.add_argument("--trtexec", help="path of trtexec (default: /usr/src/tensorrt/bin/trtexec, then PATH)")


def _build_options(args: argparse.Namespace, timing_cache: Optional[str] = None):
    from engine_builder.options import BuildOptions, shape_ranges

    return BuildOptions(
        precision=args.precision,
        workspace_mib=args.workspace_mib,
        shapes=shape_ranges(args.min_shapes, args.opt_shapes, args.max_shapes),
        dla_core=args.dla_core,
        gpu_fallback=args.gpu_fallback,
        builder_optimization_level=args.builder_optimization_level,
        ort_optimization=args.ort_optimization,
        timing_cache=timing_cache,
    )


def _device(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.device import identity

    if not getattr(args, "device_json", None):
        return identity()
    text = args.device_json
    if os.path.exists(text):
        with open(text, encoding="utf-8") as fh:
            text = fh.read()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError("--device-json is neither a JSON file nor JSON: %s" % exc) from exc
    if not isinstance(data, dict):
        raise UsageError("--device-json must hold a JSON object")
    return data.get("device", data) if isinstance(data.get("device"), dict) else data


def _backend_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    if args.backend == "trtexec" and getattr(args, "trtexec", None):
        return {"trtexec": args.trtexec}
    if args.backend == "onnxruntime" and getattr(args, "threads", None):
        return {"threads": args.threads}
    return {}


def _progress(args: argparse.Namespace):
    from engine_builder.progress import make_progress

    return make_progress(enabled=not args.quiet)


# ----------------------------------------------------------------------------- commands
def cmd_probe(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.device import probe

    return probe(root=args.root, trtexec=args.trtexec)


def cmd_check(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.onnx_tools import check

    return check(args.model)


def cmd_inspect(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.onnx_tools import inspect

    return inspect(args.model)


def cmd_export(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.export import export_spec
    from engine_builder.options import parse_dims

    return export_spec(
        args.model,
        parse_dims(args.input_shape),
        args.output,
        dynamic_batch=args.dynamic_batch,
        opset=args.opset,
    )


def cmd_quantize(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.quantize import quantize

    output = (
        args.output
        or (args.model[: -len(".onnx")] if args.model.endswith(".onnx") else args.model) + ".qdq.onnx"
    )
    return quantize(args.model, output, args.calibration, args.data_reader, args.eval_samples)


def _timing_cache(args: argparse.Namespace, device: Dict[str, Any]) -> Optional[str]:
    """--timing-cache, or one in --cache-dir named after the device and the TensorRT version."""
    if args.timing_cache or not args.cache_dir or args.backend == "onnxruntime":
        return args.timing_cache
    from engine_builder.backends import get_backend
    from engine_builder.build import timing_cache_path

    version = get_backend(args.backend, **_backend_kwargs(args)).version()
    return timing_cache_path(args.cache_dir, version, device)


def cmd_build(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.build import build

    device = _device(args)
    options = _build_options(args, _timing_cache(args, device))
    with _progress(args) as progress:
        return build(
            args.model,
            args.backend,
            options,
            output=args.output,
            device=device,
            force=args.force,
            progress=progress,
            backend_kwargs=_backend_kwargs(args),
        )


def cmd_fingerprint(args: argparse.Namespace) -> Dict[str, Any]:
    from edge_common.fsutil import sha256_file
    from engine_builder.backends import get_backend
    from engine_builder.fingerprint import fingerprint, payload

    options = _build_options(args)
    backend = get_backend(args.backend, **_backend_kwargs(args))
    inputs = dict(
        onnx_sha256=args.onnx_sha256 or sha256_file(args.model),
        backend=backend.name,
        backend_version=args.backend_version or backend.version(),
        precision=options.precision,
        options=options.engine_options(backend.name),
        device=_device(args),
    )
    return {"fingerprint": fingerprint(**inputs), "inputs": payload(**inputs)}


def cmd_ensure(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.ensure import ensure

    text = args.spec
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as fh:
            text = fh.read()
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise UsageError("--spec is not JSON: %s" % exc) from exc
    try:
        budget = json.loads(args.resources) if args.resources else None
    except ValueError as exc:
        raise UsageError("--resources is not JSON: %s" % exc) from exc
    with _progress(args) as progress:
        return ensure(
            args.store,
            spec,
            base=args.base,
            onnx_sha256=args.onnx_sha256,
            backend=args.backend,
            dry_run=args.dry_run,
            force=args.force,
            keep=args.keep,
            lock_timeout=args.lock_timeout,
            progress=progress,
            file_sha256={
                key: value
                for key, value in (("samples", args.samples_sha256), ("reference", args.reference_sha256))
                if value
            },
            resources=budget,
        )


def _samples_for(runner, args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.options import parse_named_shapes
    from engine_builder.tensors import load_samples, random_inputs

    if args.samples:
        inputs = load_samples(args.samples, runner.input_specs())["inputs"]
        return {name: value[: args.batch] for name, value in inputs.items()}
    return random_inputs(runner.input_specs(), batch=args.batch, overrides=parse_named_shapes(args.shapes))


def cmd_bench(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.backends import get_backend
    from engine_builder.bench import apply_p99_gate, time_calls
    from engine_builder.options import parse_named_shapes

    backend = get_backend(args.backend, **_backend_kwargs(args))
    result: Dict[str, Any] = {"backend": backend.name, "artifact": args.artifact, "batch": args.batch}
    with _progress(args) as progress:
        native = None
        if args.native:
            native = backend.native_bench(
                args.artifact,
                warmup_ms=args.warmup_ms,
                iterations=args.iterations,
                shapes=parse_named_shapes(args.shapes),
                progress=progress,
            )
            if native is None:
                raise UsageError("backend %s has no native benchmark; drop --native" % backend.name)
        if native is not None:
            parsed = native["trtexec"]
            result.update(
                {
                    "method": "trtexec",
                    "iterations": args.iterations,
                    "latency_ms": parsed["latency_ms"],
                    "throughput_qps": parsed["throughput_qps"],
                    "trtexec": parsed,
                }
            )
        else:
            with backend.runner(args.artifact) as runner:
                feed = _samples_for(runner, args)
                timing = time_calls(lambda: runner.infer(feed), args.warmup, args.iterations, progress)
            result.update({"method": "runner"}, **timing)
    apply_p99_gate(result, args.p99_ms)
    if not result["passed"]:
        raise GateFailed(
            "p99 latency %.4g ms exceeds the target %.4g ms" % (result["latency_ms"]["p99"], args.p99_ms),
            details={"result": result},
        )
    return result


def cmd_compare(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.compare import compare

    result = compare(
        args.onnx,
        args.artifact,
        args.backend,
        samples_path=args.samples,
        count=args.count,
        max_top1_disagreement=args.max_top1_disagreement,
        min_cosine=args.min_cosine,
        max_abs_error=args.max_abs_error,
        backend_kwargs=_backend_kwargs(args),
        max_accuracy_drop_points=args.max_accuracy_drop,
    )
    if not result["passed"]:
        raise GateFailed("accuracy gate failed: " + "; ".join(result["failures"]), details={"result": result})
    return result


def cmd_selftest(args: argparse.Namespace) -> Dict[str, Any]:
    from engine_builder.selftest import selftest

    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    result = selftest(backends, args.workdir, args.trtexec)
    if not result["passed"]:
        _print_selftest(result, sys.stderr)
        failed = [r for r in result["rows"] if r["verdict"] == "FAIL"]
        reason = (
            "%d check(s) failed: %s" % (len(failed), ", ".join(r["backend"] for r in failed))
            if failed
            else "no backend is present here (install onnxruntime, or TensorRT with JetPack)"
        )
        raise GateFailed("selftest failed: " + reason, details={"result": result})
    return result


# ----------------------------------------------------------------------------- output
def _print_selftest(result: Dict[str, Any], out) -> None:
    out.write(
        "%-12s %-9s %-10s %-8s %-12s %-10s %s\n"
        % ("backend", "precision", "version", "verdict", "max_abs_err", "p50_ms", "note")
    )
    for row in result["rows"]:
        note = (
            row.get("reason")
            or "; ".join(row.get("failures") or [])
            or (row.get("error") or {}).get("message", "")
        )
        out.write(
            "%-12s %-9s %-10s %-8s %-12s %-10s %s\n"
            % (
                row["backend"],
                row.get("precision", "-"),
                row.get("version", "-"),
                row["verdict"],
                "%.3g" % row["max_abs_error"] if "max_abs_error" in row else "-",
                "%.4f" % row["p50_ms"] if "p50_ms" in row else "-",
                note,
            )
        )
    out.write("verdict: %s\n" % result["verdict"])


def _print_human(command: str, result: Dict[str, Any], out) -> None:
    if command == "selftest":
        _print_selftest(result, out)
    elif command == "bench":
        lat = result.get("latency_ms") or {}
        out.write(
            "%s (%s): p50 %.4f ms  p90 %.4f  p95 %.4f  p99 %.4f  min %.4f  mean %.4f  max %.4f  | %s qps\n"
            % (
                result["backend"],
                result.get("method"),
                *[lat.get(k, float("nan")) for k in ("p50", "p90", "p95", "p99", "min", "mean", "max")],
                result.get("throughput_qps"),
            )
        )
    elif command == "compare":
        for name, m in result["outputs"].items():
            out.write(
                "%s: max abs %.4g, max rel %.4g, cosine min %.6f, top-1 agreement %s\n"
                % (
                    name,
                    m["max_abs_error"],
                    m["max_rel_error"],
                    m["cosine_min"],
                    m.get("top1_agreement", "-"),
                )
            )
            if "accuracy_drop_points" in m:
                out.write(
                    "%s: accuracy %.2f %% (reference %.2f %%), %.2f points lost on %d labelled samples\n"
                    % (
                        name,
                        100 * m["candidate_accuracy"],
                        100 * m["reference_accuracy"],
                        m["accuracy_drop_points"],
                        m["labelled_samples"],
                    )
                )
        out.write("gate: %s\n" % ("PASS" if result["passed"] else "FAIL"))
    elif command == "build":
        out.write(
            "%s %s -> %s (%s, %d bytes, fingerprint %s)\n"
            % (
                "built" if result["changed"] else "up to date:",
                result["onnx"]["path"],
                result["artifact_path"],
                result["backend"]["name"] + " " + result["backend"]["version"],
                result["artifact"]["size"],
                result["fingerprint"][:16],
            )
        )
    elif command == "fingerprint":
        out.write(result["fingerprint"] + "\n")
    else:
        out.write(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")


def _emit_json(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine-builder",
        description="ONNX checks, INT8 Q/DQ quantization, engine builds (tensorrt, trtexec, onnxruntime), "
        "fingerprints, benchmarks and accuracy gates.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage, 3 refused by a gate, 6 a library is missing.",
    )
    parser.add_argument("--version", action="version", version="engine-builder " + __version__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, func: Callable[[argparse.Namespace], Dict[str, Any]], help_text: str):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("probe", cmd_probe, "backends available here (with versions) and the device identity")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)
    p.add_argument("--trtexec", help="path of trtexec")

    p = add("check", cmd_check, "validate an ONNX model (checker + shape inference)")
    p.add_argument("model")
    p = add("inspect", cmd_inspect, "describe an ONNX model: opset, inputs/outputs with dynamic dims, ops")
    p.add_argument("model")

    p = add("export", cmd_export, "export a PyTorch module to ONNX and verify it (needs torch)")
    p.add_argument("--model", required=True, help="module:callable returning a torch.nn.Module")
    p.add_argument("--input-shape", required=True, help="e.g. 1x3x224x224")
    p.add_argument("--output", required=True)
    p.add_argument("--dynamic-batch", action="store_true")
    p.add_argument("--opset", type=int, default=17, help="17 is the newest TensorRT 8.5 parses")

    p = add("quantize", cmd_quantize, "FP32 ONNX + calibration data -> Q/DQ INT8 ONNX for TensorRT")
    p.add_argument("model")
    p.add_argument("--output", help="default: MODEL.qdq.onnx")
    p.add_argument("--calibration", help="folder of .npy/.npz calibration inputs")
    p.add_argument("--data-reader", help="module:callable giving calibration feeds")
    p.add_argument("--eval-samples", help=".npz with inputs and labels: print FP32 vs INT8 accuracy")

    p = add("build", cmd_build, "build (or reuse by fingerprint) an engine with a backend")
    p.add_argument("model")
    _add_build_options(p)
    p.add_argument(
        "--output", help="artifact path (default beside the model); manifest: ARTIFACT.manifest.json"
    )
    p.add_argument("--force", action="store_true", help="rebuild even when the fingerprint matches")
    p.add_argument("--timing-cache", help="TensorRT timing cache file (keep one per device)")
    p.add_argument("--cache-dir", help="keep the timing cache here, named after the device identity")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")

    p = add(
        "ensure",
        cmd_ensure,
        "the one engine path: build or reuse a model's engine in the robot's store, gated",
    )
    p.add_argument("--spec", required=True, help="the model spec (a release's models: entry), JSON or @FILE")
    p.add_argument("--base", help="folder the spec's paths are relative to (the release folder)")
    p.add_argument("--store", default=DEFAULT_STORE, help="the engine store (default %(default)s)")
    p.add_argument("--backend", help="override the spec's backend choice")
    p.add_argument("--onnx-sha256", help="the model's sha256 (a dry run needs no file then)")
    p.add_argument("--samples-sha256", help="the golden set's sha256 (a dry run needs no file then)")
    p.add_argument("--reference-sha256", help="the reference ONNX's sha256 (likewise)")
    p.add_argument(
        "--resources",
        help="the robot's resource budget, JSON (edge_common.resources.BUDGETS): checked against "
        "tegrastats while the gate's benchmark runs",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be built or gated; change nothing")
    p.add_argument("--force", action="store_true", help="rebuild even when the store has the engine")
    p.add_argument("--keep", type=int, default=3, help="engines kept per model besides pinned ones")
    p.add_argument("--lock-timeout", type=float, default=3600.0, help="seconds to wait for another build")

    p = add("fingerprint", cmd_fingerprint, "the engine cache key for a model, options, backend and device")
    p.add_argument("model", nargs="?")
    _add_build_options(p)
    p.add_argument("--backend-version", help="compute for this backend version (default: the one installed)")
    p.add_argument("--onnx-sha256", help="use this sha256 instead of hashing MODEL")

    p = add("bench", cmd_bench, "latency percentiles and throughput of an artifact")
    p.add_argument("artifact")
    p.add_argument("--backend", required=True)
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--samples", help=".npz with inputs (default: seeded random inputs)")
    p.add_argument("--shapes", help="shapes for dynamic inputs: name:1x3x224x224")
    p.add_argument("--p99-ms", type=float, help="fail when p99 latency exceeds this")
    p.add_argument("--native", action="store_true", help="use the backend's own tool (trtexec)")
    p.add_argument("--warmup-ms", type=int, default=500, help="with --native: trtexec warm-up time")
    p.add_argument("--trtexec", help="path of trtexec")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")

    p = add("compare", cmd_compare, "reference (onnxruntime FP32 or golden outputs) vs the artifact, gated")
    p.add_argument("artifact")
    p.add_argument("--backend", required=True)
    p.add_argument("--onnx", help="the FP32 ONNX model for the onnxruntime reference")
    p.add_argument("--samples", help="golden .npz: inputs, optional labels and expected.<output> arrays")
    p.add_argument("--count", type=int, default=64, help="random samples when no --samples")
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="with labelled --samples: accuracy points the artifact may lose against the reference",
    )
    p.add_argument(
        "--max-top1-disagreement",
        type=float,
        help="share of top-1 answers that may differ from the reference (default 0.01 without labels; "
        "with labels only when given)",
    )
    p.add_argument("--min-cosine", type=float)
    p.add_argument("--max-abs-error", type=float)
    p.add_argument("--trtexec", help="path of trtexec")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")

    p = add("selftest", cmd_selftest, "build and check a tiny model with every backend present")
    p.add_argument("--backends", help="comma-separated subset (default: all)")
    p.add_argument("--workdir", help="keep the built artifacts here")
    p.add_argument("--trtexec", help="path of trtexec")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "fingerprint" and not (args.model or args.onnx_sha256):
        parser.error("fingerprint needs MODEL or --onnx-sha256")
    try:
        result = args.func(args)
    except EngineBuilderError as exc:
        if args.json:
            payload = {"command": args.command, "ok": False, "error": exc.to_dict()}
            _emit_json(payload)
        if not args.json or not isinstance(exc, GateFailed):
            sys.stderr.write("engine-builder %s: error: %s\n" % (args.command, exc))
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("engine-builder %s: interrupted\n" % args.command)
        return EXIT_FAILED
    if args.json:
        payload = {"command": args.command, "ok": True}
        payload.update(result)
        _emit_json(payload)
    else:
        _print_human(args.command, result, sys.stdout)
    return EXIT_OK
