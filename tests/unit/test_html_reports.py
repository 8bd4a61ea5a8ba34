"""The HTML report pages, rendered in headless Chromium (Debian's `chromium`, which `make setup`
installs for the tests): a pipeline run that passed, one the accuracy gate stopped, and a rollout
report (the recorded one of test_rollout_report). Each page must load every picture it shows and
hold the figures its JSON holds."""

from __future__ import annotations

import contextlib
import json
import re

import pytest

from edge_deploy import report as rollout_report
from tests.browser import CHROMIUM, pictures, rendered
from tests.unit.test_rollout_report import RECORDED

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make setup installs it)")


def run_pipeline(tmp_path, blank: bool):
    """A pipeline run of the digits model, calibrated as the example is, or on one blank frame."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("sklearn")
    from edge_deploy.pipeline import Pipeline, PipelineError
    from edge_deploy.release.repo import ReleaseRepository
    from tests import digits
    from tests.repo import REPO

    repo = ReleaseRepository(str(tmp_path / "repo"), str(tmp_path / "keys"))
    repo.init()
    if blank:
        (tmp_path / "calibration").mkdir()
        np.save(tmp_path / "calibration" / "blank.npy", np.zeros((1, 1, 8, 8), np.float32))
    else:
        digits.calibration(tmp_path / "calibration")
    digits.labelled(tmp_path / "labelled.npz")
    run = Pipeline(
        model=str(digits.DIGITS / "digits_fp32.onnx"), calibration=str(tmp_path / "calibration"),
        golden=str(tmp_path / "labelled.npz"), source=str(REPO / "examples" / "sample_app"),
        model_name="digits", tag="v9.0.0", repo=str(repo.repo), keys=str(repo.keys),
        out=str(tmp_path / "out"),
    )  # fmt: skip
    with contextlib.suppress(PipelineError):
        run.run()
    return run.report, tmp_path / "out"


def test_the_pipeline_page_shows_every_step_and_both_accuracies(tmp_path):
    report, out = run_pipeline(tmp_path, blank=False)
    assert report["status"] == "ok" and report["html"] == str(out / "pipeline.html")
    dom = rendered(out / "pipeline.html")
    assert pictures(dom) == (2, 2)  # the accuracy chart and the time per step
    accuracy = next(step for step in report["steps"] if step["step"] == "accuracy")
    for step in ("export", "check", "quantize", "accuracy", "build", "sign"):
        assert "<td>%s</td>" % step in dom, step
    assert (
        "FP32 %.2f %%, INT8 %.2f %%" % (100 * accuracy["fp32_accuracy"], 100 * accuracy["int8_accuracy"])
        in dom
    )
    assert 'href="pipeline.json"' in dom and json.loads((out / "pipeline.json").read_text())["status"] == "ok"


def test_the_page_of_a_stopped_pipeline_says_where_and_why(tmp_path):
    report, out = run_pipeline(tmp_path, blank=True)
    assert report["status"] == "failed" and report["failed_step"] == "accuracy"
    dom = rendered(out / "pipeline.html")
    assert pictures(dom) == (2, 2)
    assert "stopped at accuracy" in dom
    assert re.search(r"refused by the release.s engine gate.*[0-9.]+ points lost", dom), dom[-3000:]
    assert "<td>sign</td>" not in dom  # nothing after the gate ran


def test_the_rollout_page_shows_every_robot_and_its_timeline(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(RECORDED))
    outputs = rollout_report.render(path)
    assert outputs["html"] == str(tmp_path / "report.html")
    dom = rendered(tmp_path / "report.html")
    assert pictures(dom) == (1, 1)  # the timeline
    for row in rollout_report.summary_rows(RECORDED):
        assert "<td>%s</td>" % row[0] in dom and "<td>%s</td>" % row[3] in dom, row
    assert 'href="report.json"' in dom and 'href="summary.txt"' in dom
