"""The release_manifest lookup (plugins/lookup) reads a release's manifest from a repository folder
or from the URL where it is served (HTTP, HTTPS with a private CA), and says what is wrong when it
cannot: a tag the repository does not sign, an untrusted certificate, a damaged manifest."""

from __future__ import annotations

import json

import pytest

from tests.tls import ServedRepository
from tests.unit.local_play import play, robots

PLAYBOOK = """
- hosts: robots
  gather_facts: false
  tasks:
    - name: Read each manifest, or the lookup's error
      ansible.builtin.set_fact:
        manifest: "{{ lookup('edge_deploy.jetson.release_manifest', item.tag, repository=item.repository,
                             app='edge-app', ca_path=item.ca | default('')) }}"
      loop: "{{ cases }}"
      loop_control: {label: "{{ item.key }}"}
      register: attempts
      ignore_errors: true
    - name: Write what each case gave
      ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ {'found': dict(good | map(attribute='item.key')
                                    | zip(good | map(attribute='ansible_facts.manifest'))),
                      'errors': dict(bad | map(attribute='item.key') | zip(bad | map(attribute='msg')))}
                     | to_json }}"
        mode: "0644"
      vars:
        good: "{{ attempts.results | rejectattr('failed') | list }}"
        bad: "{{ attempts.results | selectattr('failed') | list }}"
"""


@pytest.fixture
def repository(tmp_path):
    """targets/edge-app/<tag>/release.json for v1.0.0 (good) and v2.0.0 (not JSON)."""
    root = tmp_path / "repo"
    good = root / "targets" / "edge-app" / "v1.0.0"
    good.mkdir(parents=True)
    (good / "release.json").write_text(json.dumps({"name": "edge-app", "tag": "v1.0.0", "models": []}))
    broken = root / "targets" / "edge-app" / "v2.0.0"
    broken.mkdir(parents=True)
    (broken / "release.json").write_text("{not json")
    return root


def test_reads_a_folder_or_a_served_repository_and_names_each_failure(repository, tmp_path):
    plain = ServedRepository(repository)
    (tmp_path / "tls").mkdir()
    tls = ServedRepository(repository, tmp_path / "tls")
    try:
        cases = [
            {"key": "folder", "tag": "v1.0.0", "repository": str(repository)},
            {"key": "http", "tag": "v1.0.0", "repository": plain.url},
            {"key": "https", "tag": "v1.0.0", "repository": tls.url, "ca": str(tls.ca_file)},
            {"key": "folder_missing", "tag": "v9.0.0", "repository": str(repository)},
            {"key": "http_missing", "tag": "v9.0.0", "repository": plain.url},
            {"key": "untrusted", "tag": "v1.0.0", "repository": tls.url},
            {"key": "broken", "tag": "v2.0.0", "repository": str(repository)},
        ]
        out = tmp_path / "out.json"
        inventory = robots(tmp_path, ["ctl"])
        proc, _ = play(tmp_path, PLAYBOOK, inventory, {"cases": cases, "out": str(out)})
        assert proc.returncode == 0, proc.stdout[-3000:]
        result = json.loads(out.read_text())
    finally:
        plain.close()
        tls.close()
    for key in ("folder", "http", "https"):
        assert result["found"][key]["tag"] == "v1.0.0", (key, result)
    errors = result["errors"]
    assert set(errors) == {"folder_missing", "http_missing", "untrusted", "broken"}, errors
    assert "No signed release edge-app v9.0.0 in %s" % repository in errors["folder_missing"]
    assert "edge-deploy release list" in errors["folder_missing"]
    assert "No signed release edge-app v9.0.0 at %s (HTTP 404" % plain.url in errors["http_missing"]
    assert "CERTIFICATE_VERIFY_FAILED" in errors["untrusted"], errors["untrusted"]
    assert "release_pull_ca_certificate" in errors["untrusted"]
    assert "is not a release manifest" in errors["broken"], errors["broken"]
    # every served read went to the server: the two good ones and the 404
    assert [path for _, path in plain.server.seen] == [
        "/targets/edge-app/v1.0.0/release.json",
        "/targets/edge-app/v9.0.0/release.json",
    ]
