"""The one engine path (`engine_builder ensure`) and the robot's engine store: build in staging,
gate, move into place, cache hits, gate records, pins and retention. Real onnxruntime builds of the
digits example on this machine."""

from __future__ import annotations

import json
import os
import shutil

import onnx
import pytest

from edge_common import exitcodes
from edge_common.fsutil import sha256_file
from engine_builder import contract, store
from engine_builder.ensure import ensure
from engine_builder.errors import GateFailed, ModelError, UsageError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS = os.path.join(REPO, "examples", "digits")


def spec(**golden):
    return {
        "name": "digits",
        "onnx": "digits_int8_qdq.onnx",
        "precision": "int8",
        "backends": ["tensorrt", "onnxruntime"],
        "golden": dict({"samples": "digits_golden.npz", "max_abs_error": 2.0, "p99_ms": 5000}, **golden),
    }


@pytest.fixture()
def root(tmp_path):
    return str(tmp_path / "store")


def test_a_build_lands_in_the_store_gated_and_a_second_ensure_is_a_cache_hit(root):
    first = ensure(root, spec(), base=DIGITS)
    assert first["built"] and not first["cache_hit"] and first["gate"]["passed"]
    assert first["artifact"].startswith(os.path.join(root, "digits", first["fingerprint"]) + os.sep)
    assert sha256_file(first["artifact"]) == first["sha256"]
    assert first["gate"]["compare"]["outputs"]["output"]["candidate_accuracy"] > 0.9
    assert store.current(root, "digits") == first["fingerprint"]
    assert not [e for e in os.listdir(os.path.join(root, "digits")) if e.startswith(".staging-")]
    again = ensure(root, spec(), base=DIGITS)
    assert again["cache_hit"] and not again["built"]
    assert (again["fingerprint"], again["artifact"], again["sha256"]) == (
        first["fingerprint"],
        first["artifact"],
        first["sha256"],
    )
    assert again["gate"]["at"] == first["gate"]["at"], "the gate record answered; the gate did not run again"


def test_the_stored_model_is_kept_by_checksum_so_the_release_folder_may_go(root, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(DIGITS, release)
    first = ensure(root, spec(), base=str(release))
    os.unlink(release / "digits_int8_qdq.onnx")
    again = ensure(root, spec(), base=str(release), onnx_sha256=first["onnx_sha256"])
    assert again["cache_hit"] and again["fingerprint"] == first["fingerprint"]


def test_a_stricter_gate_on_a_cached_engine_runs_the_gate_again_and_refuses(root):
    built = ensure(root, spec(), base=DIGITS)
    refused = r"failed its gate: latency: p99 .* exceeds the target 1e-06 ms"
    with pytest.raises(GateFailed, match=refused) as err:
        ensure(root, spec(p99_ms=0.000001), base=DIGITS)
    assert err.value.exit_code == exitcodes.REFUSED
    # the engine stays in the store, and the looser gate is still answered by its record
    again = ensure(root, spec(), base=DIGITS)
    assert again["cache_hit"] and again["gate"]["at"] == built["gate"]["at"]


def test_a_fresh_build_that_fails_its_gate_never_enters_the_store(root):
    with pytest.raises(GateFailed, match="accuracy: output: max abs error"):
        ensure(root, spec(max_abs_error=1e-9), base=DIGITS)
    assert store.fingerprints(root, "digits") == []
    assert store.current(root, "digits") is None
    assert not [e for e in os.listdir(os.path.join(root, "digits")) if e.startswith(".staging-")]


def test_p99_targets_per_module_class(root):
    from engine_builder.device import probe as probe_device

    real = probe_device()
    probe = dict(real, device=dict(real["device"], module_class="orin_nano"))
    targets = {"orin_nano": 0.000001, "default": 5000}
    with pytest.raises(GateFailed, match="target 1e-06 ms"):
        ensure(root, spec(p99_ms=targets), base=DIGITS, probe=probe)
    other = dict(real, device=dict(real["device"], module_class="agx_orin"))
    passed = ensure(root, spec(p99_ms=targets), base=DIGITS, probe=other)
    assert passed["gate"]["bench"]["p99_target_ms"] == 5000


def test_dry_run_says_what_would_happen_and_changes_nothing(root):
    planned = ensure(root, spec(), base=DIGITS, dry_run=True)
    assert planned["would_build"] and planned["would_gate"] and planned["fingerprint"]
    assert not os.path.exists(root)
    built = ensure(root, spec(), base=DIGITS)
    assert planned["fingerprint"] == built["fingerprint"]
    planned = ensure(root, spec(), base=DIGITS, dry_run=True)
    assert not planned["would_build"] and not planned["would_gate"] and planned["cache_hit"]


def test_pinned_engines_survive_retention(root, tmp_path):
    """The release agent pins its kept releases' engines; retention never removes a pinned one."""
    fingerprints = []
    for index in range(3):
        # a different model file each time: three fingerprints of one model name
        model = tmp_path / ("m%d" % index)
        model.mkdir()
        onnx_model = onnx.load(os.path.join(DIGITS, "digits_int8_qdq.onnx"))
        onnx_model.doc_string = "variant %d" % index
        onnx.save(onnx_model, str(model / "digits_int8_qdq.onnx"))
        shutil.copy(os.path.join(DIGITS, "digits_golden.npz"), model)
        fingerprints.append(ensure(root, spec(), base=str(model), keep=1)["fingerprint"])
        if index == 0:
            store.pin(root, "edge-app", [fingerprints[0]])
    kept = set(store.fingerprints(root, "digits"))
    assert kept == {fingerprints[0], fingerprints[2]}, "pinned first and current last kept; middle pruned"


def test_bad_specs_and_missing_models_say_what_is_wrong(root):
    with pytest.raises(UsageError, match="unknown key"):
        ensure(root, dict(spec(), colour="blue"), base=DIGITS)
    with pytest.raises(UsageError, match="not a plain name"):
        ensure(root, dict(spec(), name="../etc"), base=DIGITS)
    with pytest.raises(ModelError, match="is not on this robot"):
        ensure(root, dict(spec(), onnx="missing.onnx"), base=DIGITS)
    with pytest.raises(UsageError, match="unknown gate setting"):
        ensure(root, spec(p95_ms=3), base=DIGITS)


def test_the_cli_speaks_the_contract(root):
    import sys

    ok = contract.run(
        sys.executable, "ensure", ["--store", root, "--base", DIGITS, "--spec", json.dumps(spec())], REPO
    )
    assert ok["ok"] and ok["command"] == "ensure" and ok["built"]
    refused = contract.run(
        sys.executable,
        "ensure",
        ["--store", root, "--base", DIGITS, "--spec", json.dumps(spec(p99_ms=0.000001))],
        REPO,
    )
    assert not refused["ok"] and refused["error"]["kind"] == "gate"
    assert "failed its gate" in contract.message(refused)


def test_contract_parse_gives_one_shape_for_every_outcome():
    assert contract.parse('progress\n{"ok": true, "command": "x"}\n', "", 0)["ok"]
    crashed = contract.parse("", "Traceback (most recent call last):\nKeyError: 'x'\n", 1, "build")
    assert not crashed["ok"] and "KeyError" in crashed["error"]["message"]
    lying = contract.parse('{"ok": true}', "", 3, "build")
    assert not lying["ok"] and "exit code 3" in lying["error"]["message"]


def test_a_dry_run_knows_the_gate_answered_from_the_golden_sets_checksum(root, tmp_path):
    """The controller's dry run, before any file reached the robot: checksums tell it all."""
    built = ensure(root, spec(), base=DIGITS)
    elsewhere = str(tmp_path / "not-sent-yet")
    samples = sha256_file(os.path.join(DIGITS, "digits_golden.npz"))
    blind = ensure(root, spec(), base=elsewhere, onnx_sha256=built["onnx_sha256"], dry_run=True)
    assert blind["cache_hit"] and blind["would_gate"], "without the golden set's checksum it cannot tell"
    told = ensure(
        root, spec(), base=elsewhere, onnx_sha256=built["onnx_sha256"], dry_run=True,
        file_sha256={"samples": samples},
    )  # fmt: skip
    assert told["cache_hit"] and not told["would_gate"] and not told["would_build"]
    other = ensure(
        root, spec(), base=elsewhere, onnx_sha256=built["onnx_sha256"], dry_run=True,
        file_sha256={"samples": "0" * 64},
    )  # fmt: skip
    assert other["would_gate"], "another golden set must be gated again"
    # and for real: the cached engine is used without the golden set on this robot
    known = {"samples": samples}
    used = ensure(root, spec(), base=elsewhere, onnx_sha256=built["onnx_sha256"], file_sha256=known)
    assert used["cache_hit"] and used["gate"]["at"] == built["gate"]["at"]
