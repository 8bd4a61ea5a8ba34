"""Container releases: the app as an image, built with the `docker` SDK and carried as its layers.

A release.yaml with a `container` section is a container release:

    container:
      dockerfile: Dockerfile           # built from the source folder; or `image: REF`, an image the
                                       # engine already has (pulled or built elsewhere)
      context: ..                      # the build context, relative to the source folder (default .);
                                       # it holds the Dockerfile
      build_args: {BASE: nvcr.io/nvidia/l4t-jetpack:r36.4.0}
      l4t_major: 36                    # the L4T its base is built for (labelled on the image)
      command: [python3, /app/app.py]  # the image's own CMD when left out
      devices: [/dev/video0]
      mounts: [{source: /var/lib/edge-app/data, target: /data}]   # read_only: true to protect it
      runtime: nvidia                  # where the robot has it (JetPack's nvidia-container-runtime)

`ports` and `environment` stay at the top of release.yaml, as for a native release.

The image is built (or found) through the Docker Engine API: Docker Engine, or podman's
Docker-compatible service (`podman system service`), named by DOCKER_HOST or `--docker-host`. It
must carry the label `io.edge-deploy.l4t-major`: a build sets it from `l4t_major`; an image given by
reference must already have it. The release's compatibility contract gains `l4t_major`, so a robot
on another L4T major is refused before anything is staged (edge_common.compat).

The bundle carries the image as `image/manifest.json` (a `docker load` archive's manifest) and one
file per blob named by the sha256 of its bytes: `image/<sha256>.json` for the config and
`image/<sha256>.tar` for each layer. A layer that two releases share is one file with one hash, so
a robot that keeps the release before downloads only the layers it lacks. The robot rebuilds the
archive from these files, each verified by TUF, and loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from edge_common import compat
from edge_common.fsutil import sha256_file
from edge_common.image_archive import IMAGE_DIR, MANIFEST

L4T_LABEL = "io.edge-deploy.l4t-major"
RELEASE_LABEL = "io.edge-deploy.release"
KNOWN_KEYS = {
    "dockerfile",
    "context",
    "image",
    "build_args",
    "l4t_major",
    "command",
    "devices",
    "mounts",
    "runtime",
}
LOG_TAIL = 15  # lines of the build log an error quotes


class ContainerError(Exception):
    pass


def _l4t_major(value: Any, where: str) -> int:
    try:
        return compat.l4t_major(value, where)
    except ValueError as exc:
        raise ContainerError(str(exc)) from exc


def validate(spec: Any, src: Path) -> Dict[str, Any]:
    """The container section, checked; ContainerError names what is wrong and how to fix it."""
    if not isinstance(spec, dict):
        raise ContainerError(
            "release.yaml: container must be a mapping (dockerfile or image, l4t_major, ...)"
        )
    unknown = sorted(set(spec) - KNOWN_KEYS)
    if unknown:
        raise ContainerError("release.yaml: container knows %s, not %s"
                             % (", ".join(sorted(KNOWN_KEYS)), ", ".join(unknown)))  # fmt: skip
    if bool(spec.get("dockerfile")) == bool(spec.get("image")):
        raise ContainerError(
            "release.yaml: container needs exactly one of dockerfile (built from the source folder) or image "
            "(a reference the Docker engine already has)"
        )
    if spec.get("dockerfile"):
        dockerfile = Path(str(spec["dockerfile"]))
        if dockerfile.is_absolute() or ".." in dockerfile.parts or not (src / dockerfile).is_file():
            raise ContainerError(
                "release.yaml: container.dockerfile %s is not a file in %s" % (dockerfile, src)
            )
        if "l4t_major" not in spec:
            raise ContainerError(
                "release.yaml: container.l4t_major is missing: name the L4T major release the Dockerfile's "
                "base is built for (36 for JetPack 6, 35 for JetPack 5); robots on another L4T are refused"
            )
    context = (src / str(spec.get("context") or ".")).resolve()
    if spec.get("dockerfile") and context not in (src / str(spec["dockerfile"])).resolve().parents:
        # Docker Engine takes a Dockerfile from outside the context; podman's API does not
        raise ContainerError(
            "release.yaml: container.dockerfile %s is not inside container.context %s: widen the context"
            % (spec["dockerfile"], spec.get("context") or ".")
        )
    if "context" in spec and not context.is_dir():
        raise ContainerError("release.yaml: container.context %s is not a folder (relative to %s)"
                             % (spec["context"], src))  # fmt: skip
    if "l4t_major" in spec:
        _l4t_major(spec["l4t_major"], "container.l4t_major")
    for key in ("command", "devices"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise ContainerError("release.yaml: container.%s must be a list of strings" % key)
    for mount in spec.get("mounts") or []:
        if (
            not isinstance(mount, dict)
            or not str(mount.get("source", "")).startswith("/")
            or not str(mount.get("target", "")).startswith("/")
        ):
            raise ContainerError(
                "release.yaml: each container mount needs an absolute source and target (got %r)" % (mount,)
            )
    if not isinstance(spec.get("build_args") or {}, dict):
        raise ContainerError("release.yaml: container.build_args must be a mapping of names to values")
    return spec


def client(docker_host: Optional[str] = None):
    """A Docker Engine API client for DOCKER_HOST (or docker_host), checked to answer."""
    try:
        import docker
    except ImportError as exc:
        raise ContainerError(
            "container releases need the `docker` SDK on this controller: "
            "pip install 'edge-deploy[container]'"
        ) from exc
    try:
        engine = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        engine.version()
    except docker.errors.DockerException as exc:
        raise ContainerError(
            "no Docker Engine answers at %s (%s): start Docker, or run `podman system service --time=0 "
            "unix:///run/user/$UID/podman.sock` and set DOCKER_HOST=unix:///run/user/$UID/podman.sock"
            % (docker_host or os.environ.get("DOCKER_HOST", "the default socket"), exc)
        ) from exc
    return engine


def _log_tail(log: Iterable[Dict[str, Any]]) -> str:
    lines: List[str] = []
    for item in log or []:
        text = item.get("stream") or item.get("error") or ""
        lines.extend(line for line in str(text).splitlines() if line.strip())
    return "\n".join("    " + line for line in lines[-LOG_TAIL:])


def image_for(engine, spec: Dict[str, Any], src: Path, name: str, tag: str):
    """Build the release's image (or find the image it names), labelled with its L4T major."""
    import docker

    release = "%s:%s" % (name, tag)
    if spec.get("dockerfile"):
        labels = {
            L4T_LABEL: str(_l4t_major(spec["l4t_major"], "container.l4t_major")),
            RELEASE_LABEL: release,
        }
        try:
            context = (src / str(spec.get("context") or ".")).resolve()
            image, _ = engine.images.build(
                path=str(context),
                dockerfile=str((src / str(spec["dockerfile"])).resolve().relative_to(context)),
                tag=release,
                buildargs={k: str(v) for k, v in (spec.get("build_args") or {}).items()},
                labels=labels,
                rm=True,
                forcerm=True,
            )
        except docker.errors.BuildError as exc:
            raise ContainerError(
                "the image of %s did not build from %s: %s. The build log ends:\n%s"
                % (release, src / spec["dockerfile"], exc.msg, _log_tail(exc.build_log))
            ) from exc
        except docker.errors.APIError as exc:
            raise ContainerError(
                "the Docker engine refused to build %s: %s" % (release, exc.explanation)
            ) from exc
    else:
        try:
            image = engine.images.get(spec["image"])
        except docker.errors.ImageNotFound as exc:
            raise ContainerError(
                "container.image %s is not in the Docker engine: pull or build it first (docker pull %s)"
                % (spec["image"], spec["image"])
            ) from exc
    label = (image.labels or {}).get(L4T_LABEL)
    if label is None:
        raise ContainerError(
            "image %s has no %s label, so the robots it suits cannot be known: build it with "
            "`LABEL %s=36` (its base's L4T major), or give release.yaml a dockerfile and container.l4t_major"
            % (spec.get("image") or release, L4T_LABEL, L4T_LABEL)
        )
    major = _l4t_major(label, "the image's %s label" % L4T_LABEL)
    if "l4t_major" in spec and _l4t_major(spec["l4t_major"], "container.l4t_major") != major:
        raise ContainerError(
            "image %s is labelled for L4T %d, and release.yaml says container.l4t_major %s: make them agree"
            % (spec.get("image") or release, major, spec["l4t_major"])
        )
    return image, major


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export(image, dest: Path, repo_tag: str) -> Dict[str, Any]:
    """Write the image under dest/image/ as content-addressed blobs; return what the manifest records.

    Reads the archive the engine saves (Docker's and podman's formats alike: its manifest.json names
    the config and the layers) and writes each blob under the sha256 of its bytes, checked against the
    config's diff_ids, so that a layer has one name wherever it appears."""
    folder = dest / IMAGE_DIR
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    spool = dest / ".image-archive.tar"
    try:
        with open(spool, "wb") as out:
            for chunk in image.save(named=False):
                out.write(chunk)
        with tarfile.open(spool) as archive:
            saved = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
            config_bytes = archive.extractfile(saved["Config"]).read()  # type: ignore[union-attr]
            config = json.loads(config_bytes)
            diff_ids = [d.split(":", 1)[1] for d in config.get("rootfs", {}).get("diff_ids", [])]
            config_name = "%s.json" % _sha256(config_bytes)
            (folder / config_name).write_bytes(config_bytes)
            layers = []
            for index, member in enumerate(saved["Layers"]):
                tmp = folder / ".layer"
                with archive.extractfile(member) as src, open(tmp, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, out, 1 << 20)
                digest = sha256_file(tmp)
                if index < len(diff_ids) and diff_ids[index] != digest:
                    raise ContainerError(
                        "the engine saved layer %d of %s with sha256 %s where its config says %s: a "
                        "compressed or damaged export; save the image again"
                        % (index, repo_tag, digest, diff_ids[index])
                    )
                name = "%s.tar" % digest
                os.replace(tmp, folder / name)
                layers.append({"file": "%s/%s" % (IMAGE_DIR, name), "length": (folder / name).stat().st_size})
    finally:
        spool.unlink(missing_ok=True)
    names = [Path(layer["file"]).name for layer in layers]
    load_manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": names}]
    (folder / MANIFEST).write_text(json.dumps(load_manifest), encoding="utf-8")
    return {
        "id": "sha256:%s" % _sha256(config_bytes),
        "ref": repo_tag,
        "config": "%s/%s" % (IMAGE_DIR, config_name),
        "layers": layers,
        "architecture": config.get("architecture"),
    }


def build(spec: Dict[str, Any], src: Path, dest: Path, name: str, tag: str,
          docker_host: Optional[str] = None) -> Dict[str, Any]:  # fmt: skip
    """Build (or find) the image, export it into the bundle at dest; the manifest's `container`."""
    engine = client(docker_host)
    try:
        image, major = image_for(engine, spec, src, name, tag)
        exported = export(image, dest, "%s:%s" % (name, tag))
    finally:
        engine.close()
    run = {k: spec[k] for k in ("command", "devices", "mounts", "runtime") if k in spec}
    run.setdefault("runtime", "nvidia")
    return dict(run, l4t_major=major, image=exported)
