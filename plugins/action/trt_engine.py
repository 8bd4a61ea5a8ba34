"""trt_engine: make sure a robot's engine store holds a gated engine for a model, built on the robot.

Documentation: plugins/modules/trt_engine.py (`ansible-doc trt_engine`).

The work on the robot is engine_builder's one engine path (`engine_builder ensure`, shipped to the
remote tmp folder as a zip: nothing is installed): the same store, fingerprint and gate the release
agent uses when it stages a release, so a build by either is a cache hit for the other. This plugin
adds what a controller is for: it sends only the files the robot lacks (by checksum), answers check
mode from a dry run on the robot, shows progress, and writes a report per robot and model.
"""

from __future__ import annotations

import json
import os
import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.hashing import checksum

display = Display()

ARGUMENT_SPEC = {
    "spec": {"type": "dict", "required": True},
    "src_dir": {"type": "path"},
    "remote_dir": {"type": "str"},
    "backend": {"type": "str", "default": "auto", "choices": ["auto", "tensorrt", "trtexec", "onnxruntime"]},
    "dest": {"type": "str", "default": "/var/lib/edge-deploy/engines"},
    "keep": {"type": "int", "default": 3},
    "force": {"type": "bool", "default": False},
    "build_timeout": {"type": "int", "default": 3600},
    "report_dir": {"type": "path", "default": "reports"},
}
PACKAGES = ("engine_builder", "edge_common")


def gate_summary(verdict):
    """What a person reads of a gate record: the verdict, why, both accuracies on the labelled
    golden set (reference FP32 and this engine, points lost, the limit), p99 against its target.
    The rollout_report callback puts it in the run report (engine_gates)."""
    if not verdict:
        return None
    bench = verdict.get("bench") or {}
    return {
        "passed": verdict.get("passed"),
        "reason": verdict.get("reason"),
        "accuracy": verdict.get("accuracy"),
        "p99_ms": (bench.get("latency_ms") or {}).get("p99"),
        "p99_target_ms": bench.get("p99_target_ms"),
    }


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        args = self.validate_argument_spec(ARGUMENT_SPEC)[1]
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

    def _engine_builder(self, command, args, what, task_vars, fail=True):
        """Run engine_builder on the robot under the contract (engine_builder/contract.py); the
        envelope, or (fail) an AnsibleActionFail when it says no."""
        from engine_builder import contract

        tmpdir = self._connection._shell.tmpdir
        # No bytecode: the tmp folder belongs to the login user, these commands may run as root.
        cmd = "cd %s && PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=%s %s" % (
            shlex.quote(tmpdir),
            shlex.quote(os.path.join(tmpdir, "lib")),
            " ".join(shlex.quote(a) for a in contract.argv(self._python(task_vars), command, *args)),
        )
        res = self._low_level_execute_command(cmd, sudoable=True)
        envelope = contract.parse(res.get("stdout", ""), res.get("stderr", ""), res.get("rc"), command)
        if fail and not envelope.get("ok"):
            raise AnsibleActionFail(
                "%s failed on the robot: %s" % (what, contract.message(envelope)),
                result={"error": envelope.get("error"), "rc": res.get("rc")},
            )
        return envelope

    def _ship_engine_builder(self, task_vars):
        from edge_common import pack

        tmpdir = self._connection._shell.tmpdir
        remote_zip = self._connection._shell.join_path(tmpdir, "engine_builder.zip")
        self._transfer_data(remote_zip, pack.zip_bytes(PACKAGES))
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

    def _on_robot(self, local, candidates, task_vars):
        """A robot path holding the content of controller file `local`: one of `candidates` when it
        already holds it (same checksum), else a copy sent to the remote tmp folder. (path, sent?)"""
        for remote in [c for c in candidates if c]:
            stat = self._execute_remote_stat(remote, all_vars=task_vars, follow=True, checksum=True)
            if stat.get("exists") and stat.get("checksum") == checksum(local):
                return remote, False
        tmpdir = self._connection._shell.tmpdir
        dest = self._connection._shell.join_path(tmpdir, "files", os.path.basename(local))
        self._low_level_execute_command("mkdir -p %s" % shlex.quote(os.path.dirname(dest)), sudoable=False)
        self._transfer_file(local, dest)
        self._fixup_perms2([os.path.dirname(dest), dest], execute=False)
        return dest, True

    # -- the task ------------------------------------------------------------------------------
    def _run(self, args, task_vars):
        from edge_common.fsutil import sha256_file
        from engine_builder.ensure import check_spec
        from engine_builder.errors import UsageError

        spec = dict(args["spec"])
        try:
            check_spec(spec)
        except UsageError as exc:
            raise AnsibleActionFail("spec: %s" % exc) from exc
        name = spec["name"]
        local = {"onnx": self._local(args["src_dir"], spec["onnx"])}
        golden = dict(spec.get("golden") or {})
        for key in ("samples", "reference"):
            if golden.get(key):
                local[key] = self._local(args["src_dir"], golden[key])
        for key, path in local.items():
            if not os.path.isfile(path):
                raise AnsibleActionFail(
                    "model %s: %s %s does not exist on the controller" % (name, key, path)
                )
        onnx_sha = sha256_file(local["onnx"])
        # The golden set's and the reference's checksums: the robot's dry run tells from them
        # whether the gate already answered, without the files being sent.
        known = []
        for key in ("samples", "reference"):
            if key in local:
                known += ["--%s-sha256" % key, sha256_file(local[key])]
        remote_dir = args.get("remote_dir")

        def remote(rel):
            return None if not remote_dir else self._connection._shell.join_path(remote_dir, rel)

        if self._connection._shell.tmpdir is None:
            self._make_tmp_path()
        self._ship_engine_builder(task_vars)
        common = ["--store", args["dest"], "--keep", str(args["keep"]), "--backend", args["backend"]]
        plan = self._engine_builder(
            "ensure",
            ["--spec", json.dumps(spec), "--onnx-sha256", onnx_sha, "--dry-run", *known, *common]
            + (["--base", remote_dir] if remote_dir else []),
            "engine_builder ensure --dry-run",
            task_vars,
        )
        out = {
            "name": name,
            "fingerprint": plan.get("fingerprint"),
            "backend": plan["backend"],
            "backend_version": plan.get("backend_version"),
            "precision": plan.get("precision"),
            "device": plan.get("device"),
            "onnx_sha256": onnx_sha,
            "built": False,
            "onnx_transferred": False,
        }
        needs_files = bool(plan.get("would_build") or plan.get("would_gate") or args["force"])
        if self._task.check_mode:
            after = plan.get("fingerprint") or "(known once the model is sent)"
            if plan.get("current") != plan.get("fingerprint"):
                out["diff"] = {
                    "before": "fingerprint: %s\n" % plan.get("current"),
                    "after": "fingerprint: %s\n" % after,
                }
            out.update(
                changed=needs_files,
                cache_hit=bool(plan.get("cache_hit")),
                msg="an engine would be built"
                if plan.get("would_build")
                else (
                    "the cached engine would be gated"
                    if plan.get("would_gate")
                    else "the engine is in the store"
                ),
            )
            return out

        sent = []
        if needs_files:
            in_store = self._connection._shell.join_path(args["dest"], ".onnx", "%s.onnx" % onnx_sha)
            spec["onnx"], moved = self._on_robot(
                local["onnx"], [remote(args["spec"]["onnx"]), in_store], task_vars
            )
            if moved:
                sent.append("onnx")
            for key in ("samples", "reference"):
                if key in local:
                    golden[key], moved = self._on_robot(
                        local[key], [remote(args["spec"]["golden"][key])], task_vars
                    )
                    if moved:
                        sent.append(key)
            if golden:
                spec["golden"] = golden
        # else: a cache hit whose gate already answered (the store has the model by its sha256)
        display.display(
            "%s: %s %s (%s)"
            % (
                task_vars.get("inventory_hostname", "robot"),
                "building" if plan.get("would_build") or args["force"] else "reusing",
                name,
                plan["backend"],
            )
        )
        ensure = [
            "--spec",
            json.dumps(spec),
            "--onnx-sha256",
            onnx_sha,
            "--lock-timeout",
            str(args["build_timeout"]),
            *known,
        ]
        if remote_dir:
            ensure += ["--base", remote_dir]
        if args["force"]:
            ensure.append("--force")
        done = self._engine_builder("ensure", ensure + common, "engine build and gate", task_vars, fail=False)
        if not done.get("ok"):
            self._refused(args, task_vars, out, done, sent, local["onnx"])
        gate = done.get("gate") or {}
        out.update(
            changed=bool(done["built"]) or done.get("previous_fingerprint") != done["fingerprint"],
            fingerprint=done["fingerprint"],
            precision=done["precision"],
            built=bool(done["built"]),
            cache_hit=bool(done["cache_hit"]),
            onnx_transferred="onnx" in sent,
            files_sent=sent,
            artifact_path=done["artifact"],
            artifact_sha256=done.get("sha256"),
            previous_fingerprint=done.get("previous_fingerprint"),
            removed_fingerprints=done.get("removed_fingerprints") or [],
            build_seconds=done.get("build_seconds"),
            latency_ms=(gate.get("bench") or {}).get("latency_ms"),
            accuracy=gate.get("compare"),
            gate_passed=gate.get("passed"),
            gate=gate_summary(gate),
        )
        if out["previous_fingerprint"] != out["fingerprint"]:
            out["diff"] = {
                "before": "fingerprint: %s\n" % out["previous_fingerprint"],
                "after": "fingerprint: %s\n" % out["fingerprint"],
            }
        out["report"] = self._write_report(args, task_vars, dict(out, ensure=done))
        return out

    def _refused(self, args, task_vars, out, envelope, sent, local_onnx):
        """A failed ensure: the report (with the gate's record when a gate said no), then the
        failure, its message naming the release's file where the file is what is wrong."""
        from engine_builder import contract

        error = envelope.get("error") or {}
        verdict = error.get("gate")
        failed = dict(
            out,
            files_sent=sent,
            onnx_transferred="onnx" in sent,
            gate_passed=False if verdict else None,
            gate=gate_summary(verdict),
            error=error,
        )
        failed["report"] = self._write_report(args, task_vars, dict(failed, ensure=envelope))
        if error.get("kind") == "gate":
            what = "engine refused by its gate on the robot"
        else:
            what = "engine build and gate failed on the robot"
        if error.get("kind") == "model":
            what += " for the release's %s (on the controller: %s)" % (args["spec"]["onnx"], local_onnx)
        raise AnsibleActionFail("%s: %s" % (what, contract.message(envelope)), result=failed)

    def _local(self, base, rel):
        if os.path.isabs(rel):
            return rel
        if base:
            return os.path.join(base, rel)
        return self._find_needle("files", rel)

    def _write_report(self, args, task_vars, data):
        host = task_vars.get("inventory_hostname", "robot")
        folder = os.path.join(args["report_dir"], host, "engines")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "%s.json" % data["name"])
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        return path
