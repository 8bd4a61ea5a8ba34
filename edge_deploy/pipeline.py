"""`edge-deploy pipeline`: from a changed model to a canary robot, in one command a CI job runs.

    export (a PyTorch factory) or take the ONNX file -> ONNX check -> INT8 Q/DQ calibration ->
    accuracy gate against FP32 -> release build -> sign -> deploy (the canary, or a group) -> report

Each step reuses the project's own part (engine_builder's export, check and quantize; the release
bundle and the TUF repository; deploy.yml through ansible-runner). The pipeline stops at the first
step that fails and says why; `pipeline.json` in the output folder records every step run, its time
and its figures, and `pipeline.html` shows them (with the accuracy before and after quantization and
the canary's rollout).

The release is a variant of a release source folder (`--release-source`, e.g. examples/sample_app)
whose `models:` entry `--model-name` gets the new INT8 model and a golden set made from the labelled
inputs given, with the FP32 model's outputs as the reference the robot's engine gate compares with.
Signing needs the online keys only (targets, snapshot, timestamp) from the keys folder, or each from
an environment variable (EDGE_DEPLOY_TARGETS_KEY, ...: repo.KEY_ENV); a CI run refuses to go on
where the root key is within reach.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from edge_deploy.release import bundle

STEPS = ("export", "check", "quantize", "accuracy", "build", "sign", "deploy")
DEFAULT_MAX_DROP_POINTS = 1.0
# What the accuracy gate checks where the golden set has no labels: INT8 outputs against FP32.
AGREEMENT_THRESHOLDS = ("min_cosine", "max_abs_error", "max_top1_disagreement")


class PipelineError(Exception):
    """A step failed or a gate refused: the message says which and what to do; `figures` are what
    the step measured before it refused (the report keeps them)."""

    def __init__(self, step: str, message: str, figures: Optional[Dict[str, Any]] = None):
        super().__init__("%s: %s" % (step, message))
        self.step = step
        self.figures = dict(figures or {})


class Pipeline:
    """One run: its settings, the steps done so far and where they left their files."""

    def __init__(
        self,
        model: str,
        calibration: str,
        golden: str,
        source: str,
        model_name: str,
        tag: str,
        repo: str,
        keys: Optional[str],
        out: str,
        input_shape: Optional[List[int]] = None,
        max_drop_points: float = DEFAULT_MAX_DROP_POINTS,
        inventory: Optional[str] = None,
        target: Optional[str] = None,
        canary: bool = True,
        extravars: Optional[Dict[str, Any]] = None,
    ):
        self.model, self.calibration, self.golden = model, calibration, golden
        self.source, self.model_name, self.tag = source, model_name, tag
        self.repo, self.keys, self.out = repo, keys, Path(out)
        self.input_shape = input_shape
        self.max_drop_points = max_drop_points
        self.inventory, self.target, self.canary = inventory, target, canary
        self.extravars = dict(extravars or {})
        self.work = self.out / "work"
        self.report: Dict[str, Any] = {
            "max_drop_points": max_drop_points,
            "tag": tag,
            "model": model,
            "model_name": model_name,
            "steps": [],
            "status": "running",
        }

    # ------------------------------------------------------------------------------ steps
    def export(self) -> Dict[str, Any]:
        fp32 = self.work / ("%s_fp32.onnx" % self.model_name)
        if self.model.endswith(".onnx"):
            if not os.path.isfile(self.model):
                raise PipelineError("export", "%s is not a file" % self.model)
            shutil.copyfile(self.model, fp32)
            return {"onnx": str(fp32), "exported": False, "bytes": fp32.stat().st_size}
        if ":" not in self.model:
            raise PipelineError(
                "export", "%s is neither an .onnx file nor a PyTorch factory module:callable" % self.model
            )
        if not self.input_shape:
            raise PipelineError("export", "a PyTorch model needs --input-shape (e.g. 1x3x640x640)")
        from engine_builder.export import export_spec

        result = export_spec(self.model, self.input_shape, str(fp32))
        return {"onnx": str(fp32), "exported": True, "bytes": fp32.stat().st_size, "export": result}

    def check(self, fp32: str) -> Dict[str, Any]:
        from engine_builder.onnx_tools import check

        return {"check": check(fp32)}

    def quantize(self, fp32: str) -> Dict[str, Any]:
        from engine_builder.quantize import quantize

        int8 = self.work / ("%s_int8_qdq.onnx" % self.model_name)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime's advice to pre-process, on the root logger
        try:
            result = quantize(fp32, str(int8), calibration=self.calibration)
        finally:
            root.setLevel(level)
        return {
            "onnx": str(int8),
            "bytes": int8.stat().st_size,
            "calibration_batches": result["calibration_batches"],
        }

    def accuracy(self, fp32: str, int8: str) -> Dict[str, Any]:
        """The gate: the release's own engine gate (engine_builder.gate, the accuracy half: its
        golden thresholds, and at most max_drop_points of accuracy lost against FP32 on the labelled
        set), run here on the INT8 model with onnxruntime before any robot sees it. Writes the
        release's golden set on the way: the inputs, labels and FP32 outputs (the reference)."""
        from engine_builder import gate

        golden, labelled = self._golden_set(fp32)
        thresholds = dict(self._model_spec("accuracy").get("golden") or {})
        if not labelled and not any(thresholds.get(k) is not None for k in AGREEMENT_THRESHOLDS):
            raise PipelineError(
                "accuracy",
                "the golden set %s has no `labels` array, so accuracy cannot be measured: save the "
                "inputs with their labels (numpy.savez(path, input=..., labels=...)), or, for a model "
                "whose accuracy this set cannot tell (a detector), set the release's golden %s for it"
                % (self.golden, " or ".join(AGREEMENT_THRESHOLDS)),
            )
        thresholds.update(samples=golden, reference=None, benchmark=False, p99_ms=None,
                          max_accuracy_drop_points=self.max_drop_points)  # fmt: skip
        verdict = gate.run(int8, "onnxruntime", gate.settings(thresholds, None))
        measured = verdict.get("accuracy")
        outputs = verdict["compare"]["outputs"].values()
        figures = {
            "samples": verdict["compare"].get("samples"),
            "gate": verdict["compare"]["gate"],
            "golden": golden,
        }
        if measured:
            figures.update(
                fp32_accuracy=measured["reference_accuracy"],
                int8_accuracy=measured["candidate_accuracy"],
                drop_points=measured["drop_points"],
                max_drop_points=self.max_drop_points,
                samples=measured["samples"],
            )
        else:  # no labels: no accuracy to report, INT8's outputs held to FP32's by the thresholds
            figures.update(
                fp32_accuracy=None,
                int8_accuracy=None,
                drop_points=None,
                accuracy="not measurable: the golden set has no labels",
                cosine_min=min(o["cosine_min"] for o in outputs),
                max_abs_error=max(o["max_abs_error"] for o in outputs),
            )
        if not verdict["passed"]:
            raise PipelineError(
                "accuracy",
                "INT8 is refused by the release's engine gate, run here with onnxruntime (%s): calibrate "
                "on more representative inputs, or exclude the sensitive layers" % verdict["reason"],
                figures,
            )
        return figures

    def _model_spec(self, step: str) -> Dict[str, Any]:
        """The release source's `models:` entry this pipeline replaces (a copy)."""
        models = bundle.load_source_manifest(Path(self.source)).get("models") or []
        chosen = [m for m in models if m.get("name") == self.model_name]
        if not chosen:
            raise PipelineError(
                step,
                "%s has no model named %s in its models: (it has %s)"
                % (self.source, self.model_name, ", ".join(m.get("name", "?") for m in models) or "none"),
            )
        return json.loads(json.dumps(chosen[0]))

    def _golden_set(self, fp32: str) -> str:
        import numpy as np

        from engine_builder.compare import reference_outputs
        from engine_builder.quantize import model_inputs
        from engine_builder.tensors import EXPECTED_PREFIX, LABELS_KEY, load_samples

        samples = load_samples(self.golden, model_inputs(fp32))
        expected = reference_outputs(fp32, samples["inputs"])
        path = self.work / ("%s_golden.npz" % self.model_name)
        arrays = dict(samples["inputs"])
        if samples.get("labels") is not None:
            arrays[LABELS_KEY] = samples["labels"]
        arrays.update({EXPECTED_PREFIX + name: value for name, value in expected.items()})
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        return str(path), samples.get("labels") is not None

    def build(self, int8: str, golden: str) -> Dict[str, Any]:
        data = bundle.load_source_manifest(Path(self.source))
        spec = self._model_spec("build")
        onnx_rel = "models/%s" % Path(int8).name
        golden_rel = "models/%s" % Path(golden).name
        spec["onnx"] = onnx_rel
        # the robot's gate asks what this pipeline's gate asked
        spec["golden"] = dict(spec.get("golden") or {}, samples=golden_rel,
                              max_accuracy_drop_points=self.max_drop_points)  # fmt: skip
        models = [spec if m.get("name") == self.model_name else m for m in data.get("models") or []]
        assets = {onnx_rel: str(Path(int8).resolve()), golden_rel: str(Path(golden).resolve())}
        variant = bundle.variant(self.source, str(self.work / "source"), models=models, assets=assets)
        try:
            built = bundle.build(str(variant), self.tag, str(self.work / "build"))
        except bundle.BundleError as exc:
            raise PipelineError("build", str(exc)) from exc
        size = sum(f["length"] for f in built["files"])
        return {"bundle": built["path"], "files": len(built["files"]), "bytes": size}

    def sign(self, bundle_dir: str) -> Dict[str, Any]:
        from edge_deploy.release.repo import ReleaseRepository, RepoError, root_key_within_reach

        keys = self.keys or str(self.work / "no-keys-folder")  # the environment holds them
        reach = root_key_within_reach(keys)
        if os.environ.get("CI") and reach:
            raise PipelineError(
                "sign",
                "the root key is within reach of this CI job (%s): keep root.pem offline; the pipeline "
                "needs only the targets, snapshot and timestamp keys" % reach,
            )
        try:
            return ReleaseRepository(self.repo, keys).add_release(bundle_dir)
        except RepoError as exc:
            raise PipelineError("sign", str(exc)) from exc

    def deploy(self) -> Dict[str, Any]:
        from edge_deploy.runner import run_playbook

        limit = self.target
        if self.canary:
            limit = canary_of(self.inventory, self.target or "all")
        reports = self.out / "rollout"
        result = run_playbook(
            "edge_deploy.jetson.deploy",
            self.inventory,
            limit=limit,
            title="deploy %s to %s" % (self.tag, limit),
            extravars=dict(self.extravars, release=self.tag, release_repository=self.repo),
            report_dir=reports,
        )
        found = sorted(reports.glob("*/report.json"))
        rollout = json.loads(found[-1].read_text()) if found else {}
        outcome = {"limit": limit, "run": result.status, "report": str(found[-1]) if found else None}
        outcome["robots"] = {
            name: {k: robot.get(k) for k in ("status", "release_after", "health", "bytes_staged", "engines")}
            for name, robot in (rollout.get("robots") or {}).items()
        }
        if not result.ok:
            failed = {n: r for n, r in (rollout.get("robots") or {}).items() if r.get("status") != "ok"}
            raise PipelineError(
                "deploy",
                "the rollout of %s to %s failed: %s" % (
                    self.tag, limit, "; ".join("%s %s" % (n, r.get("error") or r.get("status"))
                                               for n, r in failed.items()) or result.status),
                outcome,  # the rollout's report: the page links it, failed or not
            )  # fmt: skip
        return outcome

    # ------------------------------------------------------------------------------ the run
    def run(self, on_step: Optional[Callable[[str, Dict[str, Any]], None]] = None) -> Dict[str, Any]:
        shutil.rmtree(self.work, ignore_errors=True)  # what an earlier run into this folder left
        self.work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        state: Dict[str, Any] = {}
        plan = [
            ("export", lambda: self.export()),
            ("check", lambda: self.check(state["export"]["onnx"])),
            ("quantize", lambda: self.quantize(state["export"]["onnx"])),
            ("accuracy", lambda: self.accuracy(state["export"]["onnx"], state["quantize"]["onnx"])),
            ("build", lambda: self.build(state["quantize"]["onnx"], state["accuracy"]["golden"])),
            ("sign", lambda: self.sign(state["build"]["bundle"])),
        ]
        if self.inventory:
            plan.append(("deploy", lambda: self.deploy()))
        try:
            for name, step in plan:
                begun = time.monotonic()
                try:
                    state[name] = step()
                except PipelineError:
                    raise
                except Exception as exc:  # a library's own error: name the step it stopped
                    raise PipelineError(name, "%s: %s" % (type(exc).__name__, exc)) from exc
                entry = dict(state[name], step=name, status="ok", seconds=round(time.monotonic() - begun, 2))
                self.report["steps"].append(entry)
                if on_step:
                    on_step(name, entry)
            self.report["status"] = "ok"
        except PipelineError as exc:
            self.report["status"] = "failed"
            self.report["failed_step"] = exc.step
            self.report["error"] = str(exc)
            self.report["steps"].append(dict(exc.figures, step=exc.step, status="failed", error=str(exc)))
            if on_step:
                on_step(exc.step, self.report["steps"][-1])
            raise
        finally:
            self.report["seconds"] = round(time.monotonic() - started, 2)
            self.report["html"] = str(self.out / "pipeline.html")
            (self.out / "pipeline.json").write_text(
                json.dumps(self.report, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
            )
            write_html(self.report, self.out)
        return self.report


def write_html(report: Dict[str, Any], out: Path) -> Path:
    """pipeline.html beside pipeline.json: the steps and their figures, FP32 against INT8 accuracy,
    where the time went, and the canary's rollout (its own report page and timeline)."""
    from edge_deploy import html

    steps = report["steps"]
    failed = report.get("failed_step")
    sections = [
        '<p>%s %s: <span class="%s">%s</span> in %.1f s. %s</p>'
        % (
            html.esc(report["model_name"]),
            html.esc(report["tag"]),
            "ok" if not failed else "failed",
            "ok" if not failed else "stopped at %s" % html.esc(failed),
            report.get("seconds", 0.0),
            html.link("pipeline.json", "pipeline.json"),
        )
    ]
    if failed:
        sections.append('<p class="failed">%s</p>' % html.esc(report.get("error")))
    sections.append("<h2>Steps</h2>")
    sections.append(
        html.table(
            ("step", "status", "seconds", "figures"),
            [(s["step"], s["status"], s.get("seconds", "-"), _said(s)) for s in steps],
            ["ok" if s["status"] == "ok" else "failed" for s in steps],
        )
    )  # fmt: skip
    plt = html.pyplot()
    pictures = 0
    measured = next((step for step in steps if step["step"] == "accuracy"), {})
    if plt and measured.get("int8_accuracy") is not None:
        fig, ax = plt.subplots(figsize=(5, 3))
        values = [100 * measured["fp32_accuracy"], 100 * measured["int8_accuracy"]]
        ax.bar(["FP32", "INT8"], values, color=["#3a7ca5", "#4c9f70" if failed != "accuracy" else "#d1495b"])
        for index, value in enumerate(values):
            ax.annotate("%.2f %%" % value, (index, value), ha="center", va="bottom", fontsize=9)
        ax.axhline(values[0] - _max_drop(report), color="#555555", linestyle="--", linewidth=0.8)
        ax.set_ylabel("accuracy on the labelled set (%)")
        ax.set_ylim(0, 105)
        ax.set_title(
            "%d samples; INT8 may lose %.1f points" % (measured["samples"], _max_drop(report)), fontsize=9
        )
        fig.savefig(out / "accuracy.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        sections += [
            "<h2>Accuracy before and after quantization</h2>",
            html.picture("accuracy.png", "FP32 and INT8"),
        ]
        pictures += 1
    timed = [s for s in steps if s["status"] == "ok"]
    if plt and timed:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(timed) + 1))
        ax.barh([s["step"] for s in timed][::-1], [s["seconds"] for s in timed][::-1], color="#3a7ca5")
        ax.set_xlabel("seconds")
        fig.savefig(out / "steps.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        sections += ["<h2>Where the time went</h2>", html.picture("steps.png", "seconds per step")]
        pictures += 1
    deploy = next((s for s in steps if s["step"] == "deploy" and s.get("robots") is not None), None)
    if deploy and deploy.get("report"):
        folder = Path(deploy["report"]).parent
        rel = folder.relative_to(out) if folder.is_relative_to(out) else folder
        sections.append("<h2>Rollout to %s</h2>" % html.esc(deploy["limit"]))
        sections.append(
            html.table(
                ("robot", "status", "release", "health", "bytes staged", "engines"),
                [(name, r.get("status"), r.get("release_after"), r.get("health"), r.get("bytes_staged"),
                  ", ".join("%s %s" % item for item in sorted((r.get("engines") or {}).items())))
                 for name, r in deploy["robots"].items()],
            )
        )  # fmt: skip
        sections.append("<p>%s</p>" % html.link(str(rel / "report.html"), "the rollout's own report"))
        for name, caption in (
            ("timeline.png", "the rollout's timeline"),
            ("latency.png", "the engine gate's latency on each robot against its module class's target"),
            ("resources.png", "thermal, power and memory through the gates (tegrastats)"),
        ):
            if (folder / name).is_file():
                sections.append(html.picture(str(rel / name), caption))
                pictures += 1
    return html.write_page(out / "pipeline.html", "Pipeline %s" % report["tag"], sections, pictures)


def _said(step: Dict[str, Any]) -> str:
    return figures(step["step"], step) if step["status"] == "ok" else step["error"]


def _max_drop(report: Dict[str, Any]) -> float:
    for step in report["steps"]:
        if step["step"] == "accuracy" and "max_drop_points" in step:
            return step["max_drop_points"]
    return report.get("max_drop_points", DEFAULT_MAX_DROP_POINTS)


def canary_of(inventory: Optional[str], pattern: str) -> str:
    """The first robot of `pattern` in inventory order: the one deploy.yml's first wave (the
    canary) would take."""
    import subprocess
    import sys

    if not inventory:
        raise PipelineError("deploy", "no inventory given (--inventory)")
    argv = [str(Path(sys.executable).parent / "ansible"), "-i", inventory, pattern, "--list-hosts"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    hosts = [line.strip() for line in proc.stdout.splitlines()[1:] if line.strip()]
    if proc.returncode != 0 or not hosts:
        raise PipelineError(
            "deploy", "no robot in %s matches %s: %s" % (inventory, pattern, proc.stderr.strip()[-500:])
        )
    return hosts[0]


# ---------------------------------------------------------------------------------- command line
def add_parser(commands: Any) -> None:
    pipe = commands.add_parser(
        "pipeline",
        help="a model change to a canary: export, check, INT8, accuracy gate, build, sign, deploy",
        description="Stops at the first failed step and says why (exit 3); pipeline.json records every step.",
    )
    arg = pipe.add_argument
    arg("--model", required=True, help="an FP32 .onnx, or a PyTorch factory module:callable")
    arg("--input-shape", help="the shape to export a PyTorch model with, e.g. 1x3x640x640")
    arg("--calibration", required=True, help="folder of .npy/.npz calibration inputs")
    arg("--golden", required=True, help=".npz with `input` and `labels`: the accuracy gate's set")
    arg("--max-accuracy-drop", type=float, default=DEFAULT_MAX_DROP_POINTS,
        help="accuracy points INT8 may lose against FP32 (default %(default)s)")  # fmt: skip
    arg("--release-source", required=True, help="release source folder (with release.yaml)")
    arg("--model-name", required=True, help="the release's models: entry the new model replaces")
    arg("--tag", required=True, help="the new release's tag, newer than every signed one")
    arg("--repo", required=True, help="the signed repository folder")
    arg("--keys", help="folder of the online keys (targets, snapshot, timestamp); none when "
        "EDGE_DEPLOY_TARGETS_KEY, ..._SNAPSHOT_KEY, ..._TIMESTAMP_KEY hold them; never root's")  # fmt: skip
    arg("-i", "--inventory", help="deploy to this inventory's robots (none: stop after signing)")
    arg("-l", "--limit", help="the group to deploy to (default all)")
    arg("--whole-group", action="store_true",
        help="roll out to the whole group in waves (default: its first robot, the canary)")  # fmt: skip
    arg("-e", "--extra-vars", help="JSON, or @FILE, of variables for deploy.yml")
    arg("--out", help="report folder (default REPORTS/pipeline/TAG)")
    pipe.set_defaults(func=main)


def main(args: Any) -> int:
    from edge_deploy import paths
    from edge_deploy.runner import wide_console

    console = wide_console()
    out = Path(args.out) if args.out else paths.reports_dir() / "pipeline" / args.tag
    try:
        shape = [int(part) for part in args.input_shape.lower().split("x")] if args.input_shape else None
        text = args.extra_vars or "{}"
        extravars = json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except (ValueError, OSError) as exc:
        console.print("[red]error:[/red] --input-shape or --extra-vars: %s" % exc)
        return 2
    run = Pipeline(
        model=args.model, calibration=args.calibration, golden=args.golden, source=args.release_source,
        model_name=args.model_name, tag=args.tag, repo=args.repo, keys=args.keys, out=str(out),
        input_shape=shape, max_drop_points=args.max_accuracy_drop, inventory=args.inventory,
        target=args.limit, canary=not args.whole_group, extravars=extravars,
    )  # fmt: skip

    def shown(step: str, entry: Dict[str, Any]) -> None:
        if entry["status"] == "ok":
            console.print(
                "[green]ok[/green] %-9s %6.1f s  %s" % (step, entry["seconds"], figures(step, entry))
            )
        else:
            console.print("[red]FAILED[/red] %s" % entry["error"])

    try:
        with console.status("pipeline %s" % args.tag):
            run.run(on_step=shown)
    except PipelineError:
        console.print("pipeline stopped; report: %s" % run.report.get("html", out / "pipeline.json"))
        return 3
    console.print("pipeline done in %.1f s; report: %s" % (run.report["seconds"], run.report["html"]))
    return 0


def figures(step: str, entry: Dict[str, Any]) -> str:
    """One line of what a step measured."""
    if step in ("export", "quantize"):
        return "%s (%d bytes)" % (entry["onnx"], entry["bytes"])
    if step == "check":
        found = entry["check"]
        opsets = ", ".join("%s %s" % item for item in sorted((found.get("opsets") or {}).items()))
        return "valid: opset %s, %s nodes, %s parameters" % (
            opsets,
            found.get("nodes"),
            found.get("parameters"),
        )
    if step == "accuracy" and entry.get("fp32_accuracy") is None:
        return "accuracy %s; INT8 against FP32: cosine >= %.6f, max abs error %.4g" % (
            entry["accuracy"].split(": ", 1)[0], entry["cosine_min"], entry["max_abs_error"])  # fmt: skip
    if step == "accuracy":
        return "FP32 %.2f %%, INT8 %.2f %%: %.2f points lost (at most %.2f)" % (
            100 * entry["fp32_accuracy"], 100 * entry["int8_accuracy"], entry["drop_points"],
            entry["max_drop_points"])  # fmt: skip
    if step == "build":
        return "%s: %d files, %d bytes" % (entry["bundle"], entry["files"], entry["bytes"])
    if step == "sign":
        return "%s %s signed (targets version %s)" % (entry["app"], entry["tag"], entry["targets_version"])
    if step == "deploy":
        robots = ["%s %s" % (name, robot.get("release_after")) for name, robot in entry["robots"].items()]
        return "%s: %s" % (entry["limit"], ", ".join(robots))
    return ""
