# Documentation of the trt_engine action plugin (plugins/action/trt_engine.py); ansible-doc reads it.

DOCUMENTATION = r"""
---
module: trt_engine
short_description: Make sure a robot's engine store holds a gated engine for a model, built on the robot
description:
  - Builds a TensorRT engine (TensorRT Python API or trtexec) or an optimized onnxruntime model on
    the robot itself, since engines are tied to the TensorRT version and GPU they are built on.
  - Runs engine_builder's one engine path on the robot (C(engine_builder ensure), shipped to the
    remote tmp folder; nothing is installed). The release agent runs the same path when it stages a
    release, into the same store, so an engine built by either is a cache hit for the other and the
    app loads exactly the engine whose gate passed.
  - The engine's fingerprint covers the ONNX sha256, the build options, the precision, the backend
    and its version, and the robot's identity (L4T, module, SoC, GPU SM), all read on the robot.
    An engine with that fingerprint in the store, whose checksum verifies and whose gate already
    answered for this golden set and these thresholds, is used as it is; nothing is sent or built.
  - Otherwise only the files the robot lacks are sent (by checksum; files already in O(remote_dir)
    or in the store are not), the build runs under the store's lock (never two builds at once on a
    robot) in a staging folder, and is gated (golden-input parity and p99 latency, the model spec's
    C(golden) section) before it enters the store.
  - The accuracy gate, with a labelled golden set (C(labels) in its .npz), measures the points of
    accuracy the engine loses against the FP32 reference (the set's C(expected.*) outputs, or
    C(golden.reference) run through onnxruntime) on the robot, and refuses the engine when it loses
    more than C(golden.max_accuracy_drop_points) (default 1.0); an INT8 model its calibration broke
    never enters the store. Without labels, top-1 disagreement with the reference stands in
    (C(golden.max_top1_disagreement), 0.01 unless set; when set it applies to labelled sets too).
  - A failed build or gate leaves the store as it was, and the message says why (an ONNX that does
    not parse, named as the release has it; the accuracy or latency figures against their targets,
    both accuracies included).
  - A JSON report per robot and model is written on the controller under O(report_dir), for a
    refused engine too (with the gate's record).
version_added: "0.1.0"
options:
  spec:
    description:
      - The model, as an entry of a release's C(models:) (release.yaml). C(name) and C(onnx) are
        required; C(precision) (fp32, fp16, int8 for a Q/DQ model, best), C(backends) (a preference
        list), C(build) (workspace_mib, dla_core, gpu_fallback, shapes with min/opt/max,
        builder_optimization_level) and C(golden) (samples, reference, max_accuracy_drop_points,
        max_top1_disagreement, max_abs_error, min_cosine, p99_ms as a number or per module class,
        iterations, warmup, benchmark) are optional.
      - Paths are relative to O(src_dir) on the controller and to O(remote_dir) on the robot.
    type: dict
    required: true
  src_dir:
    description:
      - The controller folder the spec's paths are relative to (a release's folder in the signed repository).
    type: path
  remote_dir:
    description:
      - A robot folder where the spec's files may already be (a release's files just sent); a file
        found there with the same checksum is not sent again.
    type: str
  backend:
    description:
      - C(auto) takes the first of the spec's C(backends) the robot has (default order C(tensorrt),
        C(trtexec), C(onnxruntime)).
    type: str
    choices: [auto, tensorrt, trtexec, onnxruntime]
    default: auto
  dest:
    description: The engine store on the robot (the release agent's C(engine_store)).
    type: str
    default: /var/lib/edge-deploy/engines
  keep:
    description: Engines kept per model besides those a kept release uses, which are never removed.
    type: int
    default: 3
  force:
    description: Rebuild even when the store has an engine with the same fingerprint.
    type: bool
    default: false
  build_timeout:
    description: Seconds a build may wait for another build on the same robot.
    type: int
    default: 3600
  report_dir:
    description:
      - Where JSON reports are written on the controller (C(<report_dir>/<host>/engines/<name>.json)).
    type: path
    default: reports
attributes:
  check_mode:
    support: full
    description: A dry run on the robot says whether an engine would be built or gated; nothing is sent.
  diff_mode:
    support: full
    description: Shows the fingerprint the store's current link names, before and after.
  platform:
    support: full
    platforms: posix
    description: Linux robots (Jetsons on JetPack 5 or 6, simulated robots); no build on the controller.
notes:
  - Runs the shipped engine_builder with the robot's Python (3.8 on JetPack 5, 3.10 on JetPack 6).
  - Figures from robots running the onnxruntime backend (such as simulated robots) are not Jetson figures.
author: Edge Deploy maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Build the detector engine on every Orin NX
  edge_deploy.jetson.trt_engine:
    spec:
      name: detector
      onnx: models/detector.qdq.onnx
      precision: int8
      golden:
        samples: models/detector.golden.npz
        p99_ms: {orin_nano: 30, orin_nx: 15, agx_orin: 10}
    src_dir: /srv/releases/targets/edge-app/v1.4.0
  throttle: 4

- name: Would a build happen? (nothing is built in check mode)
  edge_deploy.jetson.trt_engine:
    spec: {name: digits, onnx: digits.onnx}
    src_dir: examples/digits
  check_mode: true
"""

RETURN = r"""
fingerprint:
  description: The engine's cache key (null in check mode for C(best) before the model reached the robot).
  returned: always
  type: str
previous_fingerprint:
  description: The fingerprint the store's current link named before this task.
  returned: when not in check mode
  type: str
cache_hit:
  description: Whether the store already held the engine.
  returned: always
  type: bool
built:
  description: Whether an engine was built by this task.
  returned: always
  type: bool
onnx_transferred:
  description: Whether the ONNX model was sent.
  returned: always
  type: bool
files_sent:
  description: Which of the spec's files were sent (onnx, samples, reference).
  returned: when not in check mode
  type: list
  elements: str
backend:
  description: The backend used, and RV(backend_version) its version on the robot.
  returned: always
  type: str
backend_version:
  description: The backend's version on the robot.
  returned: always
  type: str
precision:
  description: The precision built (C(best) resolved).
  returned: always
  type: str
artifact_path:
  description: The engine file in the robot's store (what the app loads).
  returned: when not in check mode
  type: str
artifact_sha256:
  description: The engine file's sha256.
  returned: when not in check mode
  type: str
gate_passed:
  description: The gate's verdict (null when the spec has no gate).
  returned: when not in check mode
  type: bool
latency_ms:
  description: The gate's latency figures (min, mean, p50, p90, p95, p99, max).
  returned: when the gate benchmarked the engine
  type: dict
accuracy:
  description: The gate's parity figures against the golden set or the reference.
  returned: when the gate compared outputs
  type: dict
gate:
  description:
    - What a person reads of the gate's record, for a refused engine too (then in the failed
      result); the rollout_report callback copies it into the run report (C(engine_gates)).
    - C(passed), C(reason); C(accuracy) with a labelled golden set (C(reference_accuracy) of FP32,
      C(candidate_accuracy) of this engine, C(drop_points), C(max_drop_points), C(samples),
      C(output), C(passed)), else null; C(p99_ms) and C(p99_target_ms).
  returned: when the spec has a gate
  type: dict
  sample:
    passed: false
    reason: >-
      accuracy: output: accuracy 79.56 % vs 98.44 % for FP32, 18.89 points lost on 450 labelled
      samples (at most 1 allowed)
    accuracy: {output: output, samples: 450, reference_accuracy: 0.9844, candidate_accuracy: 0.7956,
               drop_points: 18.89, max_drop_points: 1.0, passed: false}
    p99_ms: 0.21
    p99_target_ms: 50.0
error:
  description: engine_builder's error (kind, message, hint; C(gate), the gate's record, when a gate said no).
  returned: when the build or the gate failed
  type: dict
report:
  description: The JSON report on the controller (also written when the build or the gate failed).
  returned: when not in check mode
  type: str
"""
