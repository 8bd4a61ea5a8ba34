"""The HTML report pages, rendered in headless Chromium (Debian's `chromium`, which `make setup`
installs for the tests): a pipeline run that passed, one the accuracy gate stopped, a rollout
report (the recorded one of test_rollout_report) and the demo's page over its rollouts. Each page
must load every picture it shows and hold the figures its JSON holds."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest

from edge_deploy import report as rollout_report
from tests.browser import CHROMIUM, pictures, rendered
from tests.unit.test_rollout_report import RECORDED

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make setup installs it)")


def run_pipeline(tmp_path, blank: bool):
    """A pipeline run of the digits model, calibrated as the example is, or on one blank frame (not
    as a CI job, which would refuse the test repository's root key beside the others)."""
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
    with pytest.MonkeyPatch.context() as patch, contextlib.suppress(PipelineError):
        patch.delenv("CI", raising=False)
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


def test_the_demo_page_links_every_step_to_its_rollout_page_and_timeline(tmp_path):
    from edge_deploy.demo import demo_page

    steps = []
    for number, title in ((2, "2/3 roll out v1.0.0 in waves"), (3, "3/3 roll back")):
        folder = tmp_path / ("step-%d" % number) / "20261203T120000Z"
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps(RECORDED))
        rollout_report.render(folder / "report.json")
        steps.append(
            {
                "title": title,
                "status": "successful",
                "report": "step-%d/20261203T120000Z/report.json" % number,
            }
        )
    steps.append({"title": "4/4 a step without a rollout", "status": "failed", "report": None})
    robot = {"profile": "orin-nx-16gb-jp60", "group": "orin_nx_robots", "engine_builds": 1,
             "jetson": {"module_name": "Jetson Orin NX 16GB", "jetpack": "6.0"}}  # fmt: skip
    report = {"fleet": "sim", "duration_s": 831.0, "robots": {"nx-01": robot}, "steps": steps}
    page = demo_page(report, tmp_path)
    assert page == tmp_path / "report.html"
    dom = rendered(page)
    assert pictures(dom) == (2, 2)  # each rollout's timeline
    assert "<td>Jetson Orin NX 16GB</td>" in dom and "not of a Jetson" in dom
    for number in (2, 3):
        assert 'href="step-%d/20261203T120000Z/report.html"' % number in dom
    assert "no rollout report (failed)" in dom


GATES = Path(__file__).parent / "data" / "rollout_gates.json"


def test_the_rollout_page_shows_latency_per_module_class_and_what_tegrastats_saw(tmp_path):
    """A real report.json of a canary rollout on a simulated Orin NX (tests/fleet/test_pipeline_fleet,
    recorded): its engine gates' latency against the class's target, the resource table with the
    verdict of the group's budget, the thermal, power and memory traces; then the same report with
    a budget it breaks, whose row says by how much."""
    from edge_common import resources

    recorded = json.loads(GATES.read_text())
    path = tmp_path / "report.json"
    path.write_text(json.dumps(recorded))
    rollout_report.render(path)
    dom = rendered(tmp_path / "report.html")
    assert pictures(dom) == (3, 3)  # the timeline, latency per module class, the resource traces
    series = rollout_report.latency_series(recorded)
    entries = [entry for engine in series.values() for entry in engine]
    assert entries and all(e["module_class"] == "orin_nx" and e["target_ms"] for e in entries), series
    rows = rollout_report.resource_rows(recorded)
    assert {row[2] for row in rows} >= {"health soak"} | {"%s benchmark" % engine for engine in series}
    for row in rows:
        assert row[-1] == "within budget", row
        assert "<td>%s</td><td>orin_nx</td><td>%s</td>" % (row[0], row[2]) in dom

    robot = next(iter(recorded["robots"].values()))
    robot["resources"] = resources.verdict(robot["resources"], {"power_max_w": 1.5})
    path.write_text(json.dumps(recorded))
    rollout_report.render(path)
    dom = rendered(tmp_path / "report.html")
    peak = robot["resources"]["power_peak_w"]
    said = "power peak %g W &gt; budget 1.5 W (over by %g W)" % (peak, round(peak - 1.5, 3))
    assert '<tr class="failed">' in dom and said in dom, dom[-2000:]
