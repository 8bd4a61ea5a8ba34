# Documentation of the trt_engine action plugin (plugins/action/trt_engine.py); ansible-doc reads it.

DOCUMENTATION = r"""
---
module: trt_engine
short_description: Build an inference engine on the robot from an ONNX model, cached by fingerprint
description:
  - Builds a TensorRT engine (TensorRT Python API or trtexec) or an optimized onnxruntime model on
    the robot itself, since engines are tied to the TensorRT version and GPU they are built on.
  - The engine's fingerprint covers the ONNX sha256, the build options, the precision, the backend
    and its version, and the robot's identity (L4T, module, SoC, GPU SM), all read from the robot.
    An engine with that fingerprint already on the robot, whose checksum verifies, is used as it is;
    nothing is transferred or built and the task reports C(ok).
  - Otherwise the ONNX is sent only if the robot does not have it (by checksum), the engine_builder
    code is shipped to the remote tmp folder (nothing is installed), the build runs under a lock
    (never two builds at once on one robot) in a staging folder, is benchmarked against
    O(latency_p99_ms) and checked against golden inputs, and only then replaces the engine in use.
  - A failed build or gate leaves the previous engine in place and in use, and the failure message
    carries the builder's log tail (ONNX parser errors by node name).
  - A JSON report per robot and model is written on the controller under O(report_dir).
version_added: "0.1.0"
options:
  src:
    description:
      - The ONNX model on the controller. For C(int8), a Q/DQ model made by C(engine-builder quantize).
    type: path
    required: true
  name:
    description: The model's name on the robot (a folder of the engine store).
    type: str
    required: true
  precision:
    description:
      - C(best) picks INT8 for a Q/DQ model, else FP16 on TensorRT and FP32 on onnxruntime.
      - INT8 needs a Q/DQ model; calibration happens once on the controller, never on the robot.
    type: str
    choices: [fp32, fp16, int8, best]
    default: best
  backend:
    description:
      - C(auto) takes the first available on the robot of C(tensorrt), C(trtexec), C(onnxruntime).
    type: str
    choices: [auto, tensorrt, trtexec, onnxruntime]
    default: auto
  workspace_mib:
    description: TensorRT workspace memory pool limit in MiB.
    type: int
  dla_core:
    description: Build for this DLA core (checked against the robot's DLA count; an Orin Nano has none).
    type: int
  gpu_fallback:
    description: With O(dla_core), let layers the DLA cannot run fall back to the GPU.
    type: bool
    default: true
  shapes:
    description: Optimization profile for dynamic inputs, each as C(name:1x3x224x224[,name2:...]).
    type: dict
    suboptions:
      min: {description: Minimum shapes., type: str}
      opt: {description: Shapes to optimize for., type: str}
      max: {description: Maximum shapes., type: str}
  dest:
    description: The engine store on the robot.
    type: path
    default: /var/lib/edge-deploy/engines
  benchmark:
    description: Benchmark the new engine on the robot (warm-up, then timed runs).
    type: bool
    default: true
  iterations:
    description: Timed benchmark runs.
    type: int
    default: 200
  warmup:
    description: Untimed runs before the benchmark.
    type: int
    default: 20
  latency_p99_ms:
    description: Fail the build (and keep the previous engine) when the p99 latency exceeds this.
    type: float
  accuracy:
    description: Accuracy gate on golden inputs.
    type: dict
    suboptions:
      samples:
        description:
          - A C(.npz) on the controller with C(inputs), optional C(labels) and C(expected.<output>) arrays.
        type: path
      reference:
        description: The FP32 ONNX model on the controller, run with onnxruntime as the reference.
        type: path
      max_top1_disagreement:
        description: Largest share of samples whose top-1 class differs from the reference.
        type: float
        default: 0.01
      min_cosine:
        description: Smallest cosine similarity of any output against the reference.
        type: float
      max_abs_error:
        description: Largest absolute error of any output against the reference.
        type: float
      count:
        description: Random samples to compare when no samples are given.
        type: int
        default: 64
  force:
    description: Rebuild even when an engine with the same fingerprint is on the robot.
    type: bool
    default: false
  keep:
    description: Engines kept per model; the one in use and the previous one are never removed.
    type: int
    default: 3
  report_dir:
    description:
      - Where JSON reports are written on the controller (C(<report_dir>/<host>/engines/<name>.json)).
    type: path
    default: reports
  build_timeout:
    description: Seconds to wait for the robot's build lock and for each build step.
    type: int
    default: 3600
attributes:
  check_mode:
    support: full
    description: Says whether an engine would be built and whether the ONNX would be sent; builds nothing.
  diff_mode:
    support: full
    description: Shows the fingerprint in use before and after.
  platform:
    platforms: posix
notes:
  - Runs the shipped engine_builder with the robot's Python (3.8 on JetPack 5, 3.10 on JetPack 6).
  - Figures from robots running the onnxruntime backend (such as simulated robots) are not Jetson figures.
author: Edge Deploy
"""

EXAMPLES = r"""
- name: Build the detector engine on every Orin NX
  trt_engine:
    src: models/detector.qdq.onnx
    name: detector
    precision: int8
    latency_p99_ms: 15
    accuracy:
      samples: models/detector.golden.npz
      reference: models/detector.onnx
  throttle: 4

- name: Would a build happen? (nothing is built in check mode)
  trt_engine:
    src: models/digits.onnx
    name: digits
  check_mode: true
"""

RETURN = r"""
fingerprint:
  description: The engine's cache key.
  returned: always
  type: str
previous_fingerprint:
  description: The key of the engine in use before this task (null on the first build).
  returned: always
  type: str
cache_hit:
  description: Whether an engine with this fingerprint was already on the robot and verified.
  returned: always
  type: bool
built:
  description: Whether an engine was built by this task.
  returned: always
  type: bool
onnx_transferred:
  description: Whether the ONNX model was sent (or, in check mode, would be).
  returned: always
  type: bool
backend:
  description: The backend used, and RV(backend_version) its version on the robot.
  returned: always
  type: str
precision:
  description: The precision built (C(best) resolved).
  returned: always
  type: str
artifact_path:
  description: The engine file on the robot.
  returned: when not in check mode
  type: str
latency_ms:
  description: Benchmark latency (min, mean, p50, p90, p95, p99, max) of a new build.
  returned: when built with O(benchmark)
  type: dict
report:
  description: The JSON report on the controller.
  returned: when not in check mode
  type: str
"""
