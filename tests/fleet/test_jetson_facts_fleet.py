"""jetson_facts over real SSH: converges, is idempotent, refuses JetPack 4.6."""

from __future__ import annotations

import json


def test_provision_converges_and_second_run_changes_nothing(fleet):
    first = fleet.playbook("site.yml", "-l", fleet.supported, "--tags", "jetson_facts", check=True)
    assert set(first.recap) == {"nano-01", "nx-01", "agx-01"}
    second = fleet.playbook("site.yml", "-l", fleet.supported, "--tags", "jetson_facts", check=True)
    assert second.changed() == {"nano-01": 0, "nx-01": 0, "agx-01": 0}, second.stdout[-3000:]
    saved = json.loads(fleet.exec("agx-01", "cat", "/etc/ansible/facts.d/jetson.fact").stdout)
    assert (saved["l4t"], saved["jetpack"], saved["tensorrt"], saved["module_name"]) == (
        "36.4.3", "6.2", "10.3.0", "Jetson AGX Orin 64GB")


def test_unsupported_jetpack_is_refused_with_what_to_do(fleet):
    run = fleet.playbook("site.yml", "-l", "xavier_nx_robots", "--tags", "jetson_facts")
    assert run.rc != 0
    assert run.recap["xavier-01"]["failed"] == 1
    assert "L4T R32.6.1" in run.stdout and "does not support" in run.stdout
    assert "jetson_facts_allow_unsupported: true" in run.stdout
    assert fleet.exec("xavier-01", "test", "-e", "/etc/ansible/facts.d/jetson.fact").returncode != 0
