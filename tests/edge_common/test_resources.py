"""The resource gate (edge_common.resources) against tegrastats lines recorded on real Jetsons;
where tegrastats itself must run, its test double (tests/tegrastats_double.py) prints them."""

from __future__ import annotations

import pytest

from edge_common import resources
from tests import tegrastats_double as tegrastats_double_mod
from tests.tegrastats_double import AGX_JP5, NANO_JP6

ORIN_NANO_BUDGET = {
    "ram_headroom_min_mb": 1024,
    "cpu_temp_max_c": 99,
    "gpu_temp_max_c": 99,
    "tj_temp_max_c": 99,
    "power_max_w": 15,
    "throttle_events_max": 0,
}


def test_a_jetpack_6_line_gives_ram_temperatures_and_input_power():
    sample = resources.sample_of(NANO_JP6)
    assert sample["ram_used_mb"] == 6185 and sample["ram_total_mb"] == 7620
    assert (sample["cpu_c"], sample["gpu_c"], sample["tj_c"]) == (53.968, 53.343, 53.968)
    assert sample["power_w"] == 12.479 and sample["power_rail"] == "VDD_IN"
    assert sample["gpu_load"] == 0.63 and sample["cpu_load"] == 0.15


def test_agx_orin_power_is_the_sum_of_its_rails_and_an_offline_sensor_is_not_a_reading():
    sample = resources.sample_of(AGX_JP5)
    assert sample["power_rail"] == "sum of rails"
    assert sample["power_w"] == pytest.approx(2.340 + 0.390 + 4.025 + 0.301)
    assert sample["gpu_c"] is None  # GPU@-256C: the sensor is off
    assert sample["cpu_c"] == 44.562 and sample["tj_c"] == 44.343


def test_a_line_without_figures_is_no_sample():
    assert resources.sample_of("tegrastats: permission denied") is None


def _summary(*lines):
    samples = []
    for index, line in enumerate(lines):
        sample = resources.sample_of(line)
        sample["t"] = float(index)
        samples.append(sample)
    return resources.summarize(samples, float(len(lines)), throttled=0)


def test_a_robot_within_its_budget_passes_with_its_peaks_reported():
    checked = resources.verdict(
        _summary(NANO_JP6, NANO_JP6.replace("tj@53.968C", "tj@71.5C")), ORIN_NANO_BUDGET
    )
    assert checked["passed"] and checked["breaches"] == [] and checked["unchecked"] == []
    assert checked["tj_temp_peak_c"] == 71.5
    assert checked["ram_headroom_min_mb"] == 7620 - 6185
    assert [point["t"] for point in checked["trace"]] == [0.0, 1.0]


def test_each_broken_budget_is_named_with_how_far_it_was_broken():
    hot = NANO_JP6.replace("tj@53.968C", "tj@101.25C").replace("VDD_IN 12479mW", "VDD_IN 17300mW")
    full = NANO_JP6.replace("RAM 6185/7620MB", "RAM 7000/7620MB")
    checked = resources.verdict(_summary(NANO_JP6, hot, full), ORIN_NANO_BUDGET)
    assert not checked["passed"]
    by_budget = {b["budget"]: b for b in checked["breaches"]}
    assert set(by_budget) == {"tj_temp_max_c", "power_max_w", "ram_headroom_min_mb"}
    assert by_budget["tj_temp_max_c"]["by"] == pytest.approx(2.25)
    assert by_budget["power_max_w"]["by"] == pytest.approx(2.3)
    assert by_budget["ram_headroom_min_mb"]["by"] == pytest.approx(1024 - 620)
    text = resources.reason(checked)
    assert "junction (tj) temperature peak 101.25°C > budget 99°C (over by 2.25°C)" in text
    assert "power peak 17.3 W > budget 15 W (over by 2.3 W)" in text
    assert "RAM headroom 620 MB < budget 1024 MB (short by 404 MB)" in text


def test_a_figure_the_robot_cannot_measure_leaves_its_budget_unchecked_not_passed_silently():
    checked = resources.verdict(
        resources.summarize([], 1.0, None, "not sampled: no tegrastats"), ORIN_NANO_BUDGET
    )
    assert checked["passed"] and checked["unavailable"] == "not sampled: no tegrastats"
    assert sorted(checked["unchecked"]) == sorted(ORIN_NANO_BUDGET)


def test_an_unknown_budget_or_a_non_number_is_refused_with_the_known_keys():
    with pytest.raises(ValueError, match=r"unknown resource budget 'ram_mb'.*ram_headroom_min_mb"):
        resources.check_budget({"ram_mb": 1})
    with pytest.raises(ValueError, match=r"power_max_w must be a number >= 0"):
        resources.check_budget({"power_max_w": "25W"})


def test_throttling_is_counted_from_the_soctherm_over_current_counters(tmp_path):
    other = tmp_path / "hwmon0"
    other.mkdir()
    (other / "name").write_text("ina3221\n")
    (other / "oc1_event_cnt").write_text("99\n")
    soctherm = tmp_path / "hwmon3"
    soctherm.mkdir()
    (soctherm / "name").write_text("soctherm_oc\n")
    for index, count in ((1, 2), (2, 0), (3, 5)):
        (soctherm / ("oc%d_event_cnt" % index)).write_text("%d\n" % count)
    assert resources.throttle_events(str(tmp_path)) == 7
    assert resources.throttle_events(str(tmp_path / "nothing")) is None


@pytest.fixture()
def tegrastats_double(tmp_path):
    return tegrastats_double_mod.write(tmp_path)


def test_a_recording_reads_tegrastats_while_the_work_runs_and_stops_it(tegrastats_double, tmp_path):
    (tmp_path / "hwmon0").mkdir()
    (tmp_path / "hwmon0" / "name").write_text("soctherm_oc\n")
    counter = tmp_path / "hwmon0" / "oc1_event_cnt"
    counter.write_text("4\n")
    with resources.Recording(50, tegrastats_double, hwmon=str(tmp_path)) as recording:
        counter.write_text("6\n")  # two over-current events during the window
    checked = recording.check(ORIN_NANO_BUDGET)
    assert checked["samples"] >= 2 and checked["unavailable"] is None
    assert recording._process.poll() is not None  # tegrastats was stopped
    assert checked["throttle_events"] == 2
    assert [b["budget"] for b in checked["breaches"]] == ["throttle_events_max"]
    assert checked["power_peak_w"] == 12.479


def test_a_robot_without_tegrastats_says_so(tmp_path):
    with resources.Recording(50, str(tmp_path / "tegrastats"), hwmon=str(tmp_path)) as recording:
        pass
    summary = recording.summary()
    assert summary["samples"] == 0
    assert summary["unavailable"] == "not sampled: no tegrastats at %s" % (tmp_path / "tegrastats")
