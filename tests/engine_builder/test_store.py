"""The robot's engine store: staging, atomic activation, verification, retention."""

from __future__ import annotations

import json
import os

import pytest

from engine_builder import store
from engine_builder.fsutil import sha256_file


def fake_build(root, name, fingerprint, onnx_sha, payload=b"engine"):
    """A finished build in the staging folder, with a manifest like `engine-builder build` writes."""
    os.utime(store.onnx_path(root, onnx_sha), None)  # just transferred
    prepared = store.prepare(root, name, fingerprint, onnx_sha)
    artifact = os.path.join(prepared["staging"], "model.fp32.ort.onnx")
    with open(artifact, "wb") as handle:
        handle.write(payload)
    with open(artifact + ".manifest.json", "w") as handle:
        json.dump(
            {
                "fingerprint": fingerprint,
                "onnx": {"sha256": onnx_sha},
                "artifact": {"sha256": sha256_file(artifact), "size": len(payload)},
            },
            handle,
        )
    return artifact


@pytest.fixture()
def root(tmp_path):
    os.makedirs(tmp_path / ".onnx")
    for sha in ("a" * 64, "b" * 64):
        (tmp_path / ".onnx" / ("%s.onnx" % sha)).write_bytes(b"onnx")
    return str(tmp_path)


def test_activate_moves_the_build_in_and_swaps_current(root):
    fake_build(root, "digits", "f1", "a" * 64)
    result = store.activate(root, "digits", "f1", store.staging_dir(root, "digits", "f1"), keep=3)
    assert result == {"previous": None, "current": "f1", "removed": [], "changed": True}
    assert store.current(root, "digits") == "f1"
    assert store.verified(root, "digits", "f1")["fingerprint"] == "f1"
    assert not os.path.exists(store.staging_dir(root, "digits", "f1"))


def test_a_tampered_engine_does_not_verify(root):
    fake_build(root, "digits", "f1", "a" * 64)
    store.activate(root, "digits", "f1", store.staging_dir(root, "digits", "f1"), keep=3)
    artifact = store.artifact_in(os.path.join(root, "digits", "f1"))
    with open(artifact, "ab") as handle:
        handle.write(b"x")
    assert store.verified(root, "digits", "f1") is None
    assert store.state(root, "digits", "f1", "a" * 64)["cached"] is False


def test_discard_leaves_the_engine_in_use(root):
    fake_build(root, "digits", "f1", "a" * 64)
    store.activate(root, "digits", "f1", store.staging_dir(root, "digits", "f1"), keep=3)
    fake_build(root, "digits", "f2", "b" * 64)
    assert store.discard(root, "digits", "f2") == {"removed": True}
    assert store.current(root, "digits") == "f1"
    assert store.fingerprints(root, "digits") == ["f1"]


def test_retention_keeps_current_and_previous_and_drops_unused_onnx(root):
    for index, fingerprint in enumerate(("f1", "f2", "f3")):
        fake_build(root, "digits", fingerprint, ("a" if index == 0 else "b") * 64)
        os.utime(store.staging_dir(root, "digits", fingerprint), (index, index))
        result = store.activate(
            root, "digits", fingerprint, store.staging_dir(root, "digits", fingerprint), keep=1
        )
    assert store.current(root, "digits") == "f3"
    assert result["previous"] == "f2" and result["removed"] == ["f1"]
    assert sorted(store.fingerprints(root, "digits")) == ["f2", "f3"]
    for sha in ("a" * 64, "b" * 64):
        os.utime(store.onnx_path(root, sha), (0, 0))  # an hour and more later
    store.prune(root, "digits", keep=1, previous="f2")
    assert not os.path.exists(store.onnx_path(root, "a" * 64))
    assert os.path.exists(store.onnx_path(root, "b" * 64))


def test_onnx_of_a_build_in_progress_is_kept(root):
    fake_build(root, "digits", "f1", "a" * 64)
    fake_build(root, "other", "g1", "b" * 64)  # staged, not yet activated
    store.activate(root, "digits", "f1", store.staging_dir(root, "digits", "f1"), keep=1)
    assert os.path.exists(store.onnx_path(root, "b" * 64))


def test_switching_back_to_a_kept_engine_needs_no_build(root):
    for fingerprint in ("f1", "f2"):
        fake_build(root, "digits", fingerprint, "a" * 64)
        store.activate(root, "digits", fingerprint, store.staging_dir(root, "digits", fingerprint), keep=3)
    result = store.activate(root, "digits", "f1", None, keep=3)
    assert result["previous"] == "f2" and store.current(root, "digits") == "f1"
    with pytest.raises(SystemExit, match="not in the store"):
        store.activate(root, "digits", "missing", None, keep=3)


def test_state_reports_what_the_plugin_needs(root, capsys):
    assert (
        store.main(
            ["state", "--root", root, "--name", "digits", "--fingerprint", "f1", "--onnx-sha256", "a" * 64]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert answer == {
        "current": None,
        "cached": False,
        "artifact_path": None,
        "manifest": None,
        "onnx_cached": False,
        "fingerprints": [],
    }
