"""trt_engine: build an inference engine on the robot from an ONNX model, cached by fingerprint.

Documentation: plugins/modules/trt_engine.py (`ansible-doc trt_engine`).

The controller computes the engine's fingerprint from the ONNX checksum, the options, and what the
robot reports about itself (L4T, module, SoC, backend version: `engine_builder probe` run there).
An engine with that fingerprint already in the robot's store, whose checksum verifies, is used as
it is: nothing is transferred or built. Otherwise only what is missing is sent (the ONNX, by
checksum), the build runs on the robot under a lock in a staging folder, is benchmarked and gated,
and only then replaces the engine in use. The remote tmp folder is always removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import zipfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

ARGUMENT_SPEC = {
    "src": {"type": "path", "required": True},
    "name": {"type": "str", "required": True},
    "precision": {"type": "str", "default": "best", "choices": ["fp32", "fp16", "int8", "best"]},
    "backend": {"type": "str", "default": "auto", "choices": ["auto", "tensorrt", "trtexec", "onnxruntime"]},
    "workspace_mib": {"type": "int"},
    "dla_core": {"type": "int"},
    "gpu_fallback": {"type": "bool", "default": True},
    "shapes": {
        "type": "dict",
        "options": {"min": {"type": "str"}, "opt": {"type": "str"}, "max": {"type": "str"}},
    },
    "dest": {"type": "path", "default": "/var/lib/edge-deploy/engines"},
    "benchmark": {"type": "bool", "default": True},
    "iterations": {"type": "int", "default": 200},
    "warmup": {"type": "int", "default": 20},
    "latency_p99_ms": {"type": "float"},
    "accuracy": {
        "type": "dict",
        "options": {
            "samples": {"type": "path"},
            "reference": {"type": "path"},
            "max_top1_disagreement": {"type": "float", "default": 0.01},
            "min_cosine": {"type": "float"},
            "max_abs_error": {"type": "float"},
            "count": {"type": "int", "default": 64},
        },
    },
    "force": {"type": "bool", "default": False},
    "keep": {"type": "int", "default": 3},
    "report_dir": {"type": "path", "default": "reports"},
    "build_timeout": {"type": "int", "default": 3600},
}

BACKEND_ORDER = ("tensorrt", "trtexec", "onnxruntime")


def _package_zip():
    """engine_builder as a zip (pure Python), built once per content; returns (bytes, sha256)."""
    import engine_builder

    root = os.path.dirname(os.path.abspath(engine_builder.__file__))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".pyc", ".pyo")):
                    continue
                path = os.path.join(folder, name)
                arcname = os.path.join("engine_builder", os.path.relpath(path, root))
                info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with open(path, "rb") as handle:
                    archive.writestr(info, handle.read(), zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _last_json(text):
    for line in reversed((text or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        _, args = self.validate_argument_spec(ARGUMENT_SPEC)
        try:
            result.update(self._run(args, task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    # -- remote helpers ------------------------------------------------------------------------
    def _python(self, task_vars):
        return (
            task_vars.get("ansible_python_interpreter")
            or task_vars.get("ansible_facts", {}).get("discovered_interpreter_python")
            or "/usr/bin/python3"
        )

    def _command(self, argv, task_vars, lock=None):
        """The shell command running the shipped engine_builder on the robot (under `lock`)."""
        tmpdir = self._connection._shell.tmpdir
        # No bytecode: the tmp folder belongs to the login user, these commands may run as root.
        cmd = "cd %s && PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=%s %s %s" % (
            shlex.quote(tmpdir),
            shlex.quote(os.path.join(tmpdir, "lib")),
            shlex.quote(self._python(task_vars)),
            " ".join(shlex.quote(str(a)) for a in argv),
        )
        if lock is None:
            return cmd
        path, timeout_s = lock
        # One build at a time on a robot: builds take all of a Jetson's memory.
        return "mkdir -p %s && flock --timeout %d %s sh -c %s" % (
            shlex.quote(os.path.dirname(path)),
            timeout_s,
            shlex.quote(path),
            shlex.quote(cmd),
        )

    def _remote(self, argv, what, task_vars, lock=None, check=True):
        """Run engine_builder on the robot; its JSON answer, or a failure with the log tail."""
        res = self._low_level_execute_command(self._command(argv, task_vars, lock), sudoable=True)
        answer = _last_json(res.get("stdout", ""))
        if check and (res.get("rc") != 0 or answer is None or not answer.get("ok", True)):
            lines = (res.get("stderr", "") + "\n" + res.get("stdout", "")).strip().splitlines()
            tail = "\n".join(lines[-25:])
            error = (answer or {}).get("error") or {}
            raise AnsibleActionFail(
                "%s failed on the robot (rc=%s): %s" % (what, res.get("rc"), error.get("message") or tail),
                result={"log_tail": tail, "error": error},
            )
        return answer

    def _ship_engine_builder(self, task_vars):
        data, digest = _package_zip()
        tmpdir = self._connection._shell.tmpdir
        remote_zip = self._connection._shell.join_path(tmpdir, "engine_builder.zip")
        self._transfer_data(remote_zip, data)
        self._fixup_perms2([tmpdir, remote_zip], execute=False)
        res = self._low_level_execute_command(
            "%s -m zipfile -e %s %s"
            % (
                shlex.quote(self._python(task_vars)),
                shlex.quote(remote_zip),
                shlex.quote(os.path.join(tmpdir, "lib")),
            ),
            sudoable=False,
        )
        if res.get("rc") != 0:
            raise AnsibleActionFail("could not unpack engine_builder on the robot: %s" % res.get("stderr"))
        return digest

    # -- the task ------------------------------------------------------------------------------
    def _run(self, args, task_vars):
        from engine_builder.fingerprint import fingerprint
        from engine_builder.options import BuildOptions, shape_ranges

        src = args["src"]
        if not os.path.isabs(src):
            src = self._find_needle("files", src)
        if not os.path.isfile(src):
            raise AnsibleActionFail("src %s does not exist on the controller" % src)
        onnx_sha = _sha256(src)
        name = args["name"]
        dest = args["dest"]
        if self._connection._shell.tmpdir is None:
            self._make_tmp_path()
        self._ship_engine_builder(task_vars)

        probe = self._remote(
            ["-m", "engine_builder", "probe", "--json", "--quiet"], "engine_builder probe", task_vars
        )
        backend = self._choose_backend(args["backend"], probe)
        backend_version = probe["backends"][backend].get("version")
        precision = self._resolve_precision(args["precision"], backend, src)
        shapes = args.get("shapes") or {}
        options = BuildOptions(
            precision=precision,
            workspace_mib=args.get("workspace_mib"),
            shapes=shape_ranges(shapes.get("min"), shapes.get("opt"), shapes.get("max")),
            dla_core=args.get("dla_core"),
            gpu_fallback=bool(args["gpu_fallback"]) if args.get("dla_core") is not None else False,
        )
        key = fingerprint(
            onnx_sha256=onnx_sha,
            backend=backend,
            backend_version=backend_version,
            precision=precision,
            options=options.engine_options(backend),
            device=probe["device"],
        )
        store = ["-m", "engine_builder.store"]
        where = ["--root", dest, "--name", name, "--fingerprint", key, "--onnx-sha256", onnx_sha]
        state = self._remote([*store, "state", *where], "reading the engine store", task_vars)

        out = {
            "changed": False,
            "name": name,
            "fingerprint": key,
            "previous_fingerprint": state["current"],
            "backend": backend,
            "backend_version": backend_version,
            "precision": precision,
            "device": probe["device"],
            "onnx_sha256": onnx_sha,
            "built": False,
            "onnx_transferred": False,
            "cache_hit": bool(state["cached"]) and not args["force"],
            "engine_path": os.path.join(dest, name, key),
        }
        if state["current"] != key:
            out["diff"] = {
                "before": "fingerprint: %s\n" % state["current"],
                "after": "fingerprint: %s\n" % key,
            }

        if out["cache_hit"]:
            out["artifact_path"] = state["artifact_path"]
            if state["current"] != key:
                out["changed"] = True
                if not self._task.check_mode:
                    self._remote(
                        [*store, "activate", "--keep", str(args["keep"]), *where[:6]],
                        "switching to the cached engine",
                        task_vars,
                    )
            out["report"] = self._write_report(args, task_vars, dict(out, manifest=state["manifest"]))
            return out

        out["changed"] = True
        out["msg"] = "an engine would be built" if self._task.check_mode else "engine built"
        if self._task.check_mode:
            out["onnx_transferred"] = not state["onnx_cached"]
            return out

        if not state["onnx_cached"]:
            self._send_onnx(src, dest, onnx_sha)
            out["onnx_transferred"] = True
        prepared = self._remote([*store, "prepare", *where], "preparing the build", task_vars)
        try:
            report = self._build_and_gate(args, task_vars, prepared, backend, precision, probe, dest)
        except AnsibleActionFail:
            self._remote(
                [*store, "discard", *where[:6]], "discarding the failed build", task_vars, check=False
            )
            raise
        activated = self._remote(
            [*store, "activate", "--staging", "--keep", str(args["keep"]), *where[:6]],
            "activating the engine",
            task_vars,
        )
        out.update(
            built=True,
            removed_fingerprints=activated["removed"],
            artifact_path=os.path.join(dest, name, key, os.path.basename(report["build"]["artifact_path"])),
            build_seconds=report["build"].get("build_seconds"),
            latency_ms=(report.get("bench") or {}).get("latency_ms"),
            accuracy=report.get("compare"),
        )
        out["report"] = self._write_report(args, task_vars, dict(out, manifest=report["build"], **report))
        return out

    def _choose_backend(self, wanted, probe):
        backends = probe.get("backends", {})
        if wanted != "auto":
            info = backends.get(wanted) or {}
            if not info.get("available"):
                raise AnsibleActionFail(
                    "backend %s is not available on the robot: %s" % (wanted, info.get("reason", "not found"))
                )
            return wanted
        for name in BACKEND_ORDER:
            if (backends.get(name) or {}).get("available"):
                return name
        raise AnsibleActionFail(
            "no engine backend on the robot: install TensorRT's Python bindings "
            "(python3-libnvinfer, part of JetPack) or onnxruntime"
        )

    def _resolve_precision(self, precision, backend, src):
        """`best`: INT8 for a Q/DQ model, else FP16 on TensorRT and FP32 on onnxruntime."""
        if precision != "best":
            return precision
        from engine_builder.backends.ort_backend import has_qdq_nodes

        if has_qdq_nodes(src):
            return "int8"
        return "fp32" if backend == "onnxruntime" else "fp16"

    def _send_onnx(self, src, dest, onnx_sha):
        tmpdir = self._connection._shell.tmpdir
        remote = self._connection._shell.join_path(tmpdir, "model.onnx")
        self._transfer_file(src, remote)
        self._fixup_perms2([remote], execute=False)
        final = os.path.join(dest, ".onnx", "%s.onnx" % onnx_sha)
        res = self._low_level_execute_command(
            "install -D -m 0644 %s %s.part && mv -f %s.part %s"
            % (shlex.quote(remote), shlex.quote(final), shlex.quote(final), shlex.quote(final)),
            sudoable=True,
        )
        if res.get("rc") != 0:
            raise AnsibleActionFail(
                "could not store the ONNX model on the robot at %s: %s"
                % (final, res.get("stderr", "").strip())
            )

    def _build_and_gate(self, args, task_vars, prepared, backend, precision, probe, dest):
        device_json = json.dumps(probe["device"], sort_keys=True)
        build = [
            "-m",
            "engine_builder",
            "build",
            prepared["model"],
            "--backend",
            backend,
            "--precision",
            precision,
            "--device-json",
            device_json,
            "--json",
            "--quiet",
            "--cache-dir",
            os.path.join(dest, ".timing"),
        ]
        if args.get("workspace_mib"):
            build += ["--workspace-mib", str(args["workspace_mib"])]
        if args.get("dla_core") is not None:
            build += ["--dla-core", str(args["dla_core"])]
            if args["gpu_fallback"]:
                build.append("--gpu-fallback")
        for bound in ("min", "opt", "max"):
            value = (args.get("shapes") or {}).get(bound)
            if value:
                build += ["--%s-shapes" % bound, value]
        lock = (os.path.join(dest, ".build.lock"), args["build_timeout"])
        built = self._remote(build, "engine build", task_vars, lock=lock)
        report = {"build": built}
        artifact = built["artifact_path"]
        if args["benchmark"]:
            bench = [
                "-m",
                "engine_builder",
                "bench",
                artifact,
                "--backend",
                backend,
                "--json",
                "--quiet",
                "--iterations",
                str(args["iterations"]),
                "--warmup",
                str(args["warmup"]),
            ]
            if args.get("latency_p99_ms"):
                bench += ["--p99-ms", str(args["latency_p99_ms"])]
            report["bench"] = self._remote(bench, "benchmark (latency gate)", task_vars, lock=lock)
        accuracy = args.get("accuracy") or {}
        if accuracy.get("samples"):
            samples = self._connection._shell.join_path(self._connection._shell.tmpdir, "golden.npz")
            self._transfer_file(accuracy["samples"], samples)
            self._fixup_perms2([samples], execute=False)
            compare = [
                "-m",
                "engine_builder",
                "compare",
                artifact,
                "--backend",
                backend,
                "--samples",
                samples,
                "--json",
                "--quiet",
                "--max-top1-disagreement",
                str(accuracy["max_top1_disagreement"]),
            ]
            if accuracy.get("reference"):
                reference = self._connection._shell.join_path(
                    self._connection._shell.tmpdir, "reference.onnx"
                )
                self._transfer_file(accuracy["reference"], reference)
                self._fixup_perms2([reference], execute=False)
                compare += ["--onnx", reference]
            for option in ("min_cosine", "max_abs_error"):
                if accuracy.get(option) is not None:
                    compare += ["--%s" % option.replace("_", "-"), str(accuracy[option])]
            report["compare"] = self._remote(compare, "accuracy gate", task_vars, lock=lock)
        return report

    def _write_report(self, args, task_vars, data):
        host = task_vars.get("inventory_hostname", "robot")
        folder = os.path.join(args["report_dir"], host, "engines")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "%s.json" % args["name"])
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        return path
