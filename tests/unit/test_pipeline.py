"""`edge-deploy pipeline` up to the signed release, on the digits model (real onnxruntime
quantization and accuracy): each gate stops the run at its step with nothing signed, and a good
model becomes a signed release whose engine gate compares with the FP32 model's own outputs.
(The deploy step runs in the fleet tests.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")

from edge_deploy.pipeline import STEPS, Pipeline, PipelineError  # noqa: E402
from edge_deploy.release.repo import KEY_ENV, ReleaseRepository  # noqa: E402
from tests import digits  # noqa: E402
from tests.repo import REPO  # noqa: E402

DIGITS = digits.DIGITS
SOURCE = REPO / "examples" / "sample_app"


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A signed repository, the digits example's calibration set and its labelled test set; not a
    CI job (where the root key beside the others is refused: a test below sets CI itself)."""
    monkeypatch.delenv("CI", raising=False)
    pytest.importorskip("sklearn")
    repo = ReleaseRepository(str(tmp_path / "repo"), str(tmp_path / "keys"))
    repo.init()
    calibration = digits.calibration(tmp_path / "calibration")
    return tmp_path, repo, calibration, digits.labelled(tmp_path / "labelled.npz")


def pipeline(world, tag="v9.0.0", model=None, calibration=None, **kwargs) -> Pipeline:
    tmp, repo, default_calibration, labelled = world
    kwargs.setdefault("keys", str(repo.keys))
    return Pipeline(
        model=str(model or DIGITS / "digits_fp32.onnx"),
        calibration=str(calibration or default_calibration),
        golden=str(labelled),
        source=str(SOURCE),
        model_name="digits",
        tag=tag,
        repo=str(repo.repo),
        out=str(tmp / ("out-" + tag)),
        **kwargs,
    )


def test_a_good_model_becomes_a_signed_release_gated_against_its_fp32_outputs(world):
    tmp, repo, _, labelled = world
    run = pipeline(world)
    report = run.run()
    assert report["status"] == "ok"
    assert [s["step"] for s in report["steps"]] == list(STEPS[:-1])  # no inventory: no deploy
    accuracy = report["steps"][3]
    assert accuracy["drop_points"] <= 1.0 and accuracy["fp32_accuracy"] > 0.9, accuracy
    assert accuracy["samples"] == 450
    assert json.loads((tmp / "out-v9.0.0" / "pipeline.json").read_text()) == report
    # the release is signed, and carries the model the pipeline quantized
    assert repo.releases()["edge-app"] == ["v9.0.0"]
    signed = json.loads((Path(repo.repo) / "targets/edge-app/v9.0.0/release.json").read_text())
    digits = next(m for m in signed["models"] if m["name"] == "digits")
    assert digits["onnx"] == "models/digits_int8_qdq.onnx"
    assert digits["golden"]["samples"] == "models/digits_golden.npz"
    quantized = Path(report["steps"][2]["onnx"]).read_bytes()
    assert (Path(repo.repo) / "targets/edge-app/v9.0.0/models/digits_int8_qdq.onnx").read_bytes() == quantized
    # the golden set the robot's gate uses: the labelled inputs and this FP32 model's outputs
    import onnxruntime

    shipped = np.load(Path(repo.repo) / "targets/edge-app/v9.0.0/models/digits_golden.npz")
    source = np.load(labelled)
    assert np.array_equal(shipped["input"], source["input"])
    assert np.array_equal(shipped["labels"], source["labels"])
    model = str(DIGITS / "digits_fp32.onnx")
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    fp32 = session.run(None, {"input": source["input"].astype(np.float32)})[0]
    assert np.allclose(shipped["expected.output"], fp32, atol=1e-5)


def test_a_model_that_loses_accuracy_in_int8_stops_at_the_gate_and_nothing_is_signed(world):
    tmp, repo, _, _ = world
    blank = tmp / "blank"
    blank.mkdir()
    np.save(blank / "frame.npy", np.zeros((1, 1, 8, 8), np.float32))  # a capped lens: one blank frame
    run = pipeline(world, calibration=blank)
    gate = r"refused by the release's engine gate, run here with onnxruntime \(accuracy: output: "
    lost = gate + r"accuracy [0-9.]+ % vs 98.44 % for FP32, [0-9.]+ points lost"
    with pytest.raises(PipelineError, match=lost) as err:
        run.run()
    assert err.value.step == "accuracy"
    assert "edge-app" not in repo.releases()
    saved = json.loads((tmp / "out-v9.0.0" / "pipeline.json").read_text())
    assert saved["status"] == "failed" and saved["failed_step"] == "accuracy"
    refused = saved["steps"][-1]  # what the gate measured before it refused
    assert refused["status"] == "failed" and refused["drop_points"] > 1.0, refused
    assert refused["int8_accuracy"] < refused["fp32_accuracy"], refused
    assert [s["step"] for s in saved["steps"] if s["status"] == "ok"] == ["export", "check", "quantize"]


def test_an_unlabelled_golden_set_gates_on_output_agreement_and_says_accuracy_is_not_measurable(world):
    """A detector's golden frames carry no labels: accuracy is not measurable, and INT8 is held to
    the release's output-agreement thresholds against FP32 (the sample app's max_abs_error)."""
    tmp, repo, _, labelled = world
    unlabelled = tmp / "unlabelled.npz"
    np.savez(unlabelled, input=np.load(labelled)["input"][:50])
    run = pipeline(world)
    run.golden = str(unlabelled)
    report = run.run()
    accuracy = report["steps"][3]
    assert report["status"] == "ok" and accuracy["accuracy"] == "not measurable: the golden set has no labels"
    assert accuracy["fp32_accuracy"] is None and accuracy["samples"] == 50
    assert (
        0.9 < accuracy["cosine_min"] <= 1.0 and accuracy["max_abs_error"] <= accuracy["gate"]["max_abs_error"]
    )
    shipped = np.load(Path(repo.repo) / "targets/edge-app/v9.0.0/models/digits_golden.npz")
    assert "labels" not in shipped.files and "expected.output" in shipped.files

    # a release that sets no agreement threshold for the model: nothing would be checked, so no
    from edge_deploy.release import bundle

    models = bundle.load_source_manifest(SOURCE)["models"]
    for model in models:
        model["golden"] = {"p99_ms": model["golden"].get("p99_ms")}
    source = bundle.variant(str(SOURCE), str(tmp / "no-thresholds"), None, models=models)
    run = pipeline(world, tag="v9.1.0")
    run.golden, run.source = str(unlabelled), str(source)
    with pytest.raises(PipelineError, match=r"has no `labels` array.*set the release's golden min_cosine or "
                                            r"max_abs_error or max_top1_disagreement"):  # fmt: skip
        run.run()
    assert repo.releases()["edge-app"] == ["v9.0.0"]


def test_the_example_detector_is_yolov5s_sized_at_640(tmp_path):
    """examples/detection: random weights, the layout and size of a YOLOv5s export."""
    onnx = pytest.importorskip("onnx")
    import onnxruntime

    from tests.detection import detector

    path = detector.build_model(str(tmp_path / "detector_fp32.onnx"))
    model = onnx.load(path)
    parameters = sum(int(np.prod(init.dims)) for init in model.graph.initializer if len(init.dims) > 1)
    assert 6_000_000 < parameters < 9_000_000, parameters
    assert 24e6 < Path(path).stat().st_size < 36e6
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": detector.random_frames(1, 0)})
    assert out.shape == (1, 25200, 85) and out.min() >= 0.0 and out.max() <= 1.0


def test_a_corrupt_onnx_file_stops_at_the_check(world):
    tmp, repo, _, _ = world
    corrupt = tmp / "corrupt.onnx"
    corrupt.write_bytes((DIGITS / "digits_fp32.onnx").read_bytes()[:500])
    with pytest.raises(PipelineError) as err:
        pipeline(world, model=corrupt).run()
    assert err.value.step == "check" and "onnx" in str(err.value).lower(), err.value
    assert "edge-app" not in repo.releases()


def test_a_ci_job_signs_with_online_keys_from_its_environment_and_never_near_the_root_key(world, monkeypatch):
    tmp, repo, _, _ = world
    monkeypatch.setenv("CI", "true")
    with pytest.raises(PipelineError, match="the root key is within reach of this CI job") as err:
        pipeline(world).run()
    assert err.value.step == "sign" and "edge-app" not in repo.releases()
    # the CI secrets: the online keys as environment variables, no keys folder on the runner
    for role, variable in KEY_ENV.items():
        monkeypatch.setenv(variable, (Path(repo.keys) / ("%s.pem" % role)).read_text())
    offline = tmp / "root-stays-offline"
    shutil.move(str(repo.keys), str(offline))
    assert pipeline(world, tag="v9.1.0", keys=None).run()["status"] == "ok"
    # or each variable names a file that holds the key (GitLab's File variables)
    monkeypatch.setenv(KEY_ENV["targets"], str(offline / "targets.pem"))
    assert pipeline(world, tag="v9.2.0", keys=None).run()["status"] == "ok"
    assert ReleaseRepository(str(repo.repo), str(offline)).releases()["edge-app"] == ["v9.1.0", "v9.2.0"]
    monkeypatch.setenv(KEY_ENV["targets"], "not a key")
    with pytest.raises(PipelineError, match="is neither a PEM key nor the path of a file holding one"):
        pipeline(world, tag="v9.3.0", keys=None).run()


def test_an_older_tag_is_refused_at_signing(world):
    _, repo, _, _ = world
    assert pipeline(world, tag="v9.0.0").run()["status"] == "ok"
    with pytest.raises(PipelineError, match="not newer than the newest signed version") as err:
        pipeline(world, tag="v8.0.0").run()
    assert err.value.step == "sign" and repo.releases()["edge-app"] == ["v9.0.0"]


def test_a_pytorch_factory_is_exported_then_goes_through_the_same_steps(world):
    """In a fresh interpreter (torch.export cannot trace once ansible has patched sys.intern). The
    factory's model is untrained, so the gate is opened wide: what is checked is the export."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    tmp, repo, calibration, labelled = world
    (tmp / "team_model.py").write_text(
        "import torch\n\n\n"
        "def digits():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),\n"
        "                               torch.nn.Flatten(), torch.nn.Linear(256, 10))\n"
    )
    argv = [sys.executable, "-m", "edge_deploy", "pipeline", "--model", "team_model:digits",
            "--input-shape", "1x1x8x8", "--calibration", str(calibration), "--golden", str(labelled),
            "--max-accuracy-drop", "100", "--release-source", str(SOURCE), "--model-name", "digits",
            "--tag", "v9.0.0", "--repo", str(repo.repo), "--keys", str(repo.keys),
            "--out", str(tmp / "out")]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp), str(REPO)]))  # (CI unset: `world`)
    proc = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp / "out" / "pipeline.json").read_text())
    export = report["steps"][0]
    assert export["step"] == "export" and export["exported"] is True, export
    assert export["export"]["opset"] == 17 and Path(export["onnx"]).stat().st_size == export["bytes"]
    assert report["steps"][1]["check"]["inputs"][0]["shape"][1:] == [1, 8, 8]
    assert repo.releases()["edge-app"] == ["v9.0.0"]
