"""Container releases on the controller: `edge-deploy release build` builds the image with the
`docker` SDK through a real Docker Engine API (podman's Docker-compatible service, as on a
simulated controller), carries it in the bundle as content-addressed layers, and signs it; a robot
that keeps the release before downloads only the layer that changed. The images here are built
`FROM scratch` (no registry, no network): size and layers are what these tests are about."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from edge_common import image_archive
from edge_common.fsutil import sha256_file
from edge_deploy.release import bundle, container
from tests.release.images import APP, DOCKERFILE, build, source


def test_a_container_release_carries_its_image_as_content_addressed_layers_a_robot_can_load(engine, tmp_path):
    _, client = engine
    release = build(engine, tmp_path, "v1.0.0", "print('v1')\n")
    image = release["container"]["image"]
    bundle_dir = Path(release["path"])
    assert release["compatible"] == {
        "jetpack_min": "6.0",
        "modules": ["orin_nx", "agx_orin"],
        "l4t_major": 36,
    }
    assert release["container"]["runtime"] == "nvidia" and release["container"]["l4t_major"] == 36
    assert "entry" not in release
    built = client.images.get("%s:v1.0.0" % APP)
    assert (
        built.labels[container.L4T_LABEL] == "36"
        and built.labels[container.RELEASE_LABEL] == "%s:v1.0.0" % APP
    )
    assert image["id"] == built.id
    # every blob is named by the sha256 of its bytes, and release.json lists it like any file
    listed = {f["path"]: f for f in release["files"]}
    assert len(image["layers"]) == 2
    for layer in image["layers"]:
        path = bundle_dir / layer["file"]
        assert path.name == "%s.tar" % sha256_file(path)
        assert (
            listed[layer["file"]]["sha256"] == sha256_file(path)
            and listed[layer["file"]]["length"] == layer["length"]
        )
    config = bundle_dir / release["container"]["image"]["config"]
    assert config.name == "%s.json" % sha256_file(config)
    assert json.loads(config.read_text())["rootfs"]["diff_ids"] == [
        "sha256:%s" % Path(layer["file"]).stem for layer in image["layers"]
    ]
    # beside the image only what the robot uses outside it: the build context travels in the image
    assert {"image/manifest.json", "config/app.json"} <= set(listed)
    assert not {"Dockerfile", "app/app.py", "base/runtime.bin"} & set(listed), sorted(listed)
    # the archive a robot rebuilds from those files loads as the same image
    client.images.remove("%s:v1.0.0" % APP, force=True)
    archive = tmp_path / "load.tar"
    image_archive.write_load_archive(str(bundle_dir / "image"), str(archive))
    with open(archive, "rb") as handle:
        (loaded,) = client.images.load(handle.read())
    assert loaded.id == image["id"]
    assert loaded.labels[container.L4T_LABEL] == "36"


def test_an_app_change_adds_one_layer_and_a_robot_downloads_only_that(engine, tmp_path, releases, jp6_agent):
    first = build(engine, tmp_path, "v1.0.0", "print('v1')\n")
    second = build(engine, tmp_path, "v1.1.0", "print('v1.1, a fix')\n")
    old = [layer["file"] for layer in first["container"]["image"]["layers"]]
    new = [layer["file"] for layer in second["container"]["image"]["layers"]]
    assert old[0] == new[0] and old[1] != new[1]  # the base layer is one file; the app layer changed
    changed_layer = second["container"]["image"]["layers"][1]["length"]
    for built in (first, second):
        releases.repo.add_release(built["path"])
    agent = jp6_agent()
    repo = str(releases.repo_dir)
    agent.stage(repo, "v1.0.0")
    stage = agent.stage(repo, "v1.1.0")
    signed = json.loads((releases.repo_dir / "metadata" / "targets.json").read_text())["signed"]["targets"]
    lacking = sorted(
        f["path"] for f in second["files"] if f["sha256"] not in {g["sha256"] for g in first["files"]}
    )
    manifest_bytes = signed["%s/v1.1.0/release.json" % APP]["length"]
    # the changed app layer and the image's new config and manifest
    assert new[1] in lacking and new[0] not in lacking, lacking
    assert stage["downloaded_bytes"] == manifest_bytes + sum(
        signed["%s/v1.1.0/%s" % (APP, p)]["length"] for p in lacking
    )
    assert stage["reused_bytes"] >= first["container"]["image"]["layers"][0]["length"]
    assert stage["downloaded_bytes"] < changed_layer + 20000, (stage, changed_layer)


def test_a_dockerfile_that_fails_quotes_the_build_logs_tail_and_leaves_no_bundle(engine, tmp_path):
    src = source(tmp_path, "print('v1')\n")
    (src / "Dockerfile").write_text(DOCKERFILE + "COPY missing-file.txt /opt/\n")
    with pytest.raises(bundle.BundleError) as failed:
        bundle.build(str(src), "v1.0.0", str(tmp_path / "build"), engine[0])
    message = str(failed.value)
    assert message.startswith("the image of %s:v1.0.0 did not build from %s" % (APP, src / "Dockerfile")), (
        message
    )
    assert "The build log ends:" in message and "COPY missing-file.txt" in message, message
    assert not (tmp_path / "build" / ("%s-v1.0.0" % APP)).exists()


def test_an_image_without_the_l4t_label_is_refused_with_what_to_do(engine, tmp_path):
    url, client = engine
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "Dockerfile").write_text("FROM scratch\nCOPY x /x\n")
    (plain / "x").write_text("x")
    client.images.build(
        path=str(plain), tag="unlabelled-%s:1" % APP, labels={container.RELEASE_LABEL: APP + ":unlabelled"}
    )
    src = source(tmp_path, "print('v1')\n", container={"image": "unlabelled-%s:1" % APP})
    with pytest.raises(
        bundle.BundleError,
        match=re.escape("image unlabelled-%s:1 has no io.edge-deploy.l4t-major label" % APP),
    ) as failed:
        bundle.build(str(src), "v1.0.0", str(tmp_path / "build"), url)
    assert "LABEL io.edge-deploy.l4t-major=36" in str(failed.value)
    absent = source(tmp_path, "print('v1')\n", container={"image": "nowhere:9"})
    with pytest.raises(
        bundle.BundleError, match=r"nowhere:9 is not in the Docker engine: pull or build it first"
    ):
        bundle.build(str(absent), "v1.0.0", str(tmp_path / "build"), url)


@pytest.mark.parametrize(
    "section,words",
    [
        ({"l4t_major": 36}, "exactly one of dockerfile"),
        ({"dockerfile": "Dockerfile"}, "container.l4t_major is missing"),
        ({"dockerfile": "../Dockerfile", "l4t_major": 36}, "is not a file in"),
        ({"dockerfile": "Dockerfile", "l4t_major": "r36"}, "must be an L4T major release such as 36"),
        ({"dockerfile": "Dockerfile", "l4t_major": 36, "gpus": "all"}, "not gpus"),
        (
            {"dockerfile": "Dockerfile", "l4t_major": 36, "mounts": [{"source": "data", "target": "/d"}]},
            "absolute",
        ),
    ],
)
def test_a_malformed_container_section_is_refused_before_any_build(tmp_path, section, words):
    src = source(tmp_path, "print('v1')\n", container=section)
    with pytest.raises(bundle.BundleError, match=words):
        bundle.build(str(src), "v1.0.0", str(tmp_path / "build"), "unix:///nonexistent.sock")


def test_no_engine_says_how_to_start_one(tmp_path):
    pytest.importorskip("docker")
    src = source(tmp_path, "print('v1')\n")
    with pytest.raises(
        bundle.BundleError, match=r"no Docker Engine answers at unix:///nonexistent.sock .*DOCKER_HOST"
    ):
        bundle.build(str(src), "v1.0.0", str(tmp_path / "build"), "unix:///nonexistent.sock")
    assert not (tmp_path / "build" / ("%s-v1.0.0" % APP)).exists()


def test_a_controller_without_the_sdk_is_told_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "docker", None)  # this Python cannot import it
    src = source(tmp_path, "print('v1')\n")
    with pytest.raises(bundle.BundleError, match=r"pip install 'edge-deploy\[container\]'"):
        bundle.build(str(src), "v1.0.0", str(tmp_path / "build"), "unix:///nonexistent.sock")
    assert not (tmp_path / "build" / ("%s-v1.0.0" % APP)).exists()


def test_a_container_release_with_a_health_command_or_an_entry_is_refused(tmp_path):
    command = source(tmp_path, "print('v1')\n", health={"command": ["true"]})
    with pytest.raises(bundle.BundleError, match=r"a container release's health check is http"):
        bundle.build(str(command), "v1.0.0", str(tmp_path / "build"), "unix:///nonexistent.sock")
    entry = source(tmp_path, "print('v1')\n", entry=["python3", "app.py"])
    with pytest.raises(bundle.BundleError, match=r"not entry: remove entry"):
        bundle.build(str(entry), "v1.0.0", str(tmp_path / "build"), "unix:///nonexistent.sock")
