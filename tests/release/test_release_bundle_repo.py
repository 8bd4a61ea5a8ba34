"""Release bundles and the signed TUF repository on the controller."""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from edge_deploy.release import agent_pack, bundle
from edge_deploy.release.repo import ReleaseRepository, RepoError


def test_bundle_lists_every_file_with_length_and_hash(releases):
    path = releases.publish("v1.0.0")
    release = json.loads((path / "release.json").read_text())
    assert release["tag"] == "v1.0.0" and release["version"] == "1.0.0"
    listed = {f["path"]: f for f in release["files"]}
    assert set(listed) == {"app.py", "config/app.json"}
    assert listed["app.py"]["length"] == (path / "app.py").stat().st_size
    assert listed["app.py"]["sha256"] == bundle.sha256_file(path / "app.py")


def test_bundle_refuses_bad_tags_and_missing_models(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "release.json").write_text(
        json.dumps({"name": "edge-app", "entry": ["x"], "models": [{"name": "m", "onnx": "missing.onnx"}]})
    )
    with pytest.raises(bundle.BundleError, match="not a version tag"):
        bundle.build(str(src), "latest", str(tmp_path / "out"))
    with pytest.raises(bundle.BundleError, match=r"missing\.onnx"):
        bundle.build(str(src), "v1.0.0", str(tmp_path / "out"))


def test_every_target_is_signed_and_versions_go_up(releases):
    releases.publish("v1.0.0")
    md = Metadata.from_file(str(releases.repo_dir / "metadata" / "targets.json"))
    assert {
        "edge-app/v1.0.0/app.py",
        "edge-app/v1.0.0/config/app.json",
        "edge-app/v1.0.0/release.json",
    } <= set(md.signed.targets)
    root = Metadata.from_file(str(releases.repo_dir / "metadata" / "1.root.json"))
    root.signed.verify_delegate("targets", md.signed_bytes, md.signatures)
    before = releases.repo.timestamp().version
    releases.publish("v1.1.0")
    assert releases.repo.timestamp().version == before + 1
    assert releases.repo.releases() == {"edge-app": ["v1.0.0", "v1.1.0"]}


def test_tags_are_immutable_and_versions_only_go_up(releases):
    releases.publish("v1.1.0")
    with pytest.raises(RepoError, match="already signed"):
        releases.publish("v1.1.0")
    with pytest.raises(RepoError, match="not newer"):
        releases.publish("v1.0.0")


def test_init_refuses_an_existing_repository(releases):
    with pytest.raises(RepoError, match="already holds"):
        ReleaseRepository(str(releases.repo_dir), str(releases.keys)).init()
    assert oct(releases.keys.joinpath("root.pem").stat().st_mode & 0o777) == "0o600"


def test_agent_zip_is_reproducible_and_has_both_packages(tmp_path):
    first = agent_pack.pack(str(tmp_path / "a.pyz"))
    second = agent_pack.pack(str(tmp_path / "b.pyz"))
    assert first["sha256"] == second["sha256"]
    names = zipfile.ZipFile(tmp_path / "a.pyz").namelist()
    assert "__main__.py" in names and "edge_agent/agent.py" in names and "engine_builder/cli.py" in names
    assert not [n for n in names if n.endswith(".pyc")]


def test_agent_zip_without_a_path_is_named_by_its_sha256_and_old_ones_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "edge-deploy"
    folder.mkdir()
    stale = folder / "edge-agent-0000000000000000.pyz"
    recent = folder / "edge-agent-1111111111111111.pyz"
    stale.write_bytes(b"old code")
    recent.write_bytes(b"other checkout")
    week_ago = time.time() - agent_pack.PRUNE_AFTER_S - 60
    os.utime(stale, (week_ago, week_ago))
    packed = agent_pack.pack()
    path = Path(packed["path"])
    assert path == folder / ("edge-agent-%s.pyz" % packed["sha256"][:16])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == packed["sha256"]
    assert not stale.exists() and recent.exists()
    assert agent_pack.pack() == packed  # the same code, the same file


def test_variant_of_the_sample_app_builds_with_its_overrides(tmp_path):
    from tests.repo import REPO

    sample = REPO / "examples" / "sample_app"
    src = bundle.variant(str(sample), str(tmp_path / "src"), {"fault": "unhealthy"}, watchdog_seconds=7)
    built = bundle.build(str(src), "v9.0.0", str(tmp_path / "out"))
    assert built["watchdog_seconds"] == 7 and "assets" not in built
    config = json.loads((tmp_path / "out/edge-app-v9.0.0/config/app.json").read_text())
    original = json.loads((sample / "config" / "app.json").read_text())
    assert config == dict(original, fault="unhealthy")
    model = next(f for f in built["files"] if f["path"] == "models/digits_int8_qdq.onnx")
    assert model["length"] > 0  # the asset beside the original source was found
    assert (sample / "release.yaml").is_file()  # the original is untouched
    again = bundle.variant(str(sample), str(tmp_path / "src"))  # replaces the earlier variant
    assert json.loads((again / "config" / "app.json").read_text()) == original


def test_variant_of_a_container_source_copies_its_wider_build_context(tmp_path):
    from tests.repo import REPO

    examples = REPO / "examples"
    src = bundle.variant(
        str(examples / "container_app"),
        str(tmp_path / "ctx"),
        {"fault": "unhealthy"},
        container={"build_args": {"BASE": "localhost/base:1"}},
    )
    # the context (examples/) is copied, the source sits at the same place inside it
    assert src == tmp_path / "ctx" / "container_app"
    assert (tmp_path / "ctx" / "sample_app" / "app.py").read_bytes() == (
        examples / "sample_app" / "app.py"
    ).read_bytes()
    assert (tmp_path / "ctx" / ".dockerignore").is_file() and (src / "Dockerfile").is_file()
    data = json.loads((src / "release.json").read_text())
    original = bundle.load_source_manifest(examples / "container_app")
    # container keys given are merged over the source's: the rest (context, dockerfile) stays
    assert data["container"] == dict(original["container"], build_args={"BASE": "localhost/base:1"})
    # config/app.json was an asset: the variant has its own copy with the change, the original not
    assert "config/app.json" not in data["assets"]
    config = json.loads((src / "config" / "app.json").read_text())
    original_config = json.loads((examples / "sample_app" / "config" / "app.json").read_text())
    assert config == dict(original_config, fault="unhealthy")
    model = Path(data["assets"]["models/digits_int8_qdq.onnx"]).resolve()
    assert model == examples / "digits" / "digits_int8_qdq.onnx"  # assets still point at the originals
    assert not (examples / "container_app" / "config").exists()
