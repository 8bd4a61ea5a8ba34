"""The newest_version filter (plugins/filter) orders tags as the robot's agent does."""

from __future__ import annotations

import importlib.util

import pytest
from ansible.errors import AnsibleFilterError

from tests.repo import REPO

spec = importlib.util.spec_from_file_location(
    "newest_version", REPO / "plugins" / "filter" / "newest_version.py"
)
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
newest = plugin.FilterModule().filters()["newest_version"]


def test_numeric_order_prereleases_and_leading_v():
    assert newest(["v1.2.9", "v1.2.10", "v1.2.10-rc1"]) == "v1.2.10"
    assert newest(["1.3.0-rc1", "v1.2.10", None, ""]) == "1.3.0-rc1"
    assert newest([]) is None and newest([None]) is None


def test_refuses_what_is_not_a_list():
    with pytest.raises(AnsibleFilterError, match="expects a list"):
        newest("v1.0.0")
