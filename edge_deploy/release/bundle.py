"""`edge-deploy release build SRC --tag v1.2.0`: a release bundle from a source folder.

The source folder holds the app, its models and config, and `release.yaml`:

    name: edge-app                      # the robot's /opt/<name> and <name>.service
    entry: ["{python}", "app.py"]       # run in the release folder; {python} is the agent's interpreter
    health:
      http: {port: 8080, path: /healthz}   # or command: [...]
      soak_seconds: 30
      interval_seconds: 2
    watchdog_seconds: 10
    models:
      - name: digits
        onnx: models/digits.onnx
        precision: fp32                 # int8: point onnx at the Q/DQ model
        backends: [tensorrt, onnxruntime]
        golden: {samples: models/golden.npz, max_abs_error: 0.001, p99_ms: 50}
        # samples with labels: the engine may lose at most max_accuracy_drop_points (default 1.0)
        # of accuracy against FP32 (the set's expected.* outputs, or `reference: models/fp32.onnx`)
    compatible: {jetpack_min: "5.1", jetpack_max: "6.2", modules: [orin_nano, orin_nx, agx_orin]}
    ports: [8080]
    environment: {LOG_LEVEL: info}
    assets: {models/digits.onnx: ../digits/digits_fp32.onnx}   # files from elsewhere in the tree

A container release has a `container` section instead of `entry` (edge_deploy.release.container):
its image is built with the `docker` SDK and carried in the bundle as content-addressed layers.

The bundle is a folder `<name>-<tag>/` with every source file and `release.json` (the manifest
plus name, tag, version and each file's length and sha256). `release sign` signs it into the TUF
repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge_common.fsutil import sha256_file

TAG_RE = re.compile(r"^v?(?P<version>\d+(\.\d+){0,3}(-[A-Za-z0-9.]+)?)$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}$")
SOURCE_NAMES = ("release.yaml", "release.yml", "release.json")
KNOWN_KEYS = {
    "name",
    "entry",
    "health",
    "watchdog_seconds",
    "models",
    "compatible",
    "ports",
    "environment",
    "description",
    "assets",
    "container",
}
SKIP_PARTS = {"__pycache__", ".git", ".pytest_cache"}


class BundleError(Exception):
    pass


def load_source_manifest(src: Path) -> Dict[str, Any]:
    for name in SOURCE_NAMES:
        path = src / name
        if path.is_file():
            if name.endswith(".json"):
                return json.loads(path.read_text(encoding="utf-8"))
            import yaml

            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    raise BundleError("%s has no release.yaml (or release.json)" % src)


def validate(manifest: Dict[str, Any], src: Path) -> None:
    unknown = set(manifest) - KNOWN_KEYS
    if unknown:
        raise BundleError("release.yaml: unknown key(s) %s" % ", ".join(sorted(unknown)))
    if not NAME_RE.match(str(manifest.get("name", ""))):
        raise BundleError(
            "release.yaml: name must be lower-case letters, digits and '-' (got %r)" % manifest.get("name")
        )
    entry = manifest.get("entry")
    if "container" in manifest:
        if (manifest.get("health") or {}).get("command"):
            raise BundleError(
                "release.yaml: a container release's health check is http (health.http: {port, path}), "
                "answered by the container on the robot's network; health.command would run on the robot"
            )
        if entry is not None:
            raise BundleError(
                "release.yaml: a container release runs its image (container.command, or the image's CMD), "
                "not entry: remove entry"
            )
    elif not isinstance(entry, list) or not entry or not all(isinstance(a, str) for a in entry):
        raise BundleError("release.yaml: entry must be a non-empty list of strings (or a container section)")
    health = manifest.get("health") or {}
    if health.get("http") and "port" not in health["http"]:
        raise BundleError("release.yaml: health.http needs a port")
    for model in manifest.get("models") or []:
        for key in ("name", "onnx"):
            if not model.get(key):
                raise BundleError("release.yaml: every model needs %s" % key)
        # the golden set (inputs, labels, expected FP32 outputs) and the FP32 reference model travel too
        for rel in model_files({"models": [model]}):
            if not (src / rel).is_file() and rel not in (manifest.get("assets") or {}):
                raise BundleError(
                    "release.yaml: model %s refers to %s, which is not in %s" % (model["name"], rel, src)
                )


def model_files(manifest: Dict[str, Any]) -> List[str]:
    """The files the manifest's models name: each ONNX model, golden set and FP32 reference."""
    files = []
    for model in manifest.get("models") or []:
        golden = model.get("golden") or {}
        files += [model["onnx"]] + [golden[key] for key in ("samples", "reference") if golden.get(key)]
    return files


def source_files(src: Path) -> List[Path]:
    files = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_symlink():
            raise BundleError("%s is a symlink: bundles hold plain files only" % rel)
        if not path.is_file() or SKIP_PARTS.intersection(rel.parts) or rel.name.endswith(".pyc"):
            continue
        if rel.as_posix() in SOURCE_NAMES or rel.name.startswith("."):
            continue
        files.append(rel)
    return files


def build(src: str, tag: str, out: str, docker_host: Optional[str] = None) -> Dict[str, Any]:
    """Write `<out>/<name>-<tag>/`; return its release.json. A container release's image is built
    (or found) through the Docker Engine API at docker_host (default: DOCKER_HOST)."""
    src_path = Path(src)
    match = TAG_RE.match(tag)
    if not match:
        raise BundleError("tag %r is not a version tag such as v1.2.0 or 1.2.0-rc1" % tag)
    manifest = load_source_manifest(src_path)
    validate(manifest, src_path)
    if "container" in manifest:
        from edge_deploy.release import container

        try:
            container.validate(manifest["container"], src_path)
        except container.ContainerError as exc:
            raise BundleError(str(exc)) from exc
    dest = Path(out) / ("%s-%s" % (manifest["name"], tag))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    sources = {rel.as_posix(): src_path / rel for rel in source_files(src_path)}
    if "container" in manifest:
        # The app travels in the image: the bundle carries beside it only what the robot uses
        # outside the image, the models (its engines are built on the robot), their golden sets
        # and config/ (the robot's config overlay). The build context (Dockerfile, app code) would
        # otherwise cross the network twice.
        sources = {
            rel: path
            for rel, path in sources.items()
            if rel in model_files(manifest) or rel.startswith("config/")
        }
        from edge_common.image_archive import IMAGE_DIR

        taken = sorted(rel for rel in sources if rel.split("/")[0] == IMAGE_DIR)
        if taken:
            raise BundleError(
                "%s: a container release keeps its image under %s/, so move that model elsewhere"
                % (taken[0], IMAGE_DIR)
            )
    for rel, origin in sorted((manifest.pop("assets", None) or {}).items()):
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not (src_path / origin).is_file():
            raise BundleError("release.yaml: asset %s -> %s is not a file inside the bundle" % (rel, origin))
        sources[rel] = src_path / origin
    files = []
    for rel, origin in sorted(sources.items()):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, target)
        os.chmod(target, 0o644)
        files.append({"path": rel, "length": target.stat().st_size, "sha256": sha256_file(target)})
    if "container" in manifest:
        try:
            manifest["container"] = container.build(
                manifest["container"], src_path, dest, manifest["name"], tag, docker_host
            )
        except container.ContainerError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise BundleError(str(exc)) from exc
        except OSError:  # a full disk: no half-written bundle left behind
            shutil.rmtree(dest, ignore_errors=True)
            raise
        stated = (manifest.get("compatible") or {}).get("l4t_major")
        if stated is not None and str(stated) != str(manifest["container"]["l4t_major"]):
            shutil.rmtree(dest, ignore_errors=True)
            raise BundleError(
                "release.yaml: compatible.l4t_major %s is not the image's L4T %s: leave it out (the image's "
                "label sets it) or make them agree" % (stated, manifest["container"]["l4t_major"])
            )
        manifest["compatible"] = dict(
            manifest.get("compatible") or {}, l4t_major=manifest["container"]["l4t_major"]
        )
        for path in sorted((dest / container.IMAGE_DIR).iterdir()):
            rel = path.relative_to(dest).as_posix()
            files.append({"path": rel, "length": path.stat().st_size, "sha256": sha256_file(path)})
    release = dict(manifest, tag=tag, version=match.group("version"), files=files, schema=1)
    (dest / "release.json").write_text(json.dumps(release, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return dict(release, path=str(dest))


def variant(src: str, dest: str, config: Optional[Dict[str, Any]] = None, **manifest: Any) -> Path:
    """A copy of the source folder `src` at `dest` (replaced) to build another release from:
    assets still point at their files beside `src`, `manifest` overrides keys of release.yaml (its
    `assets` are added to the source's own) and `config` keys of config/app.json. The demo, the
    pipeline and the fleet tests make their releases this way.

    A container source whose build context is wider than its folder (`container.context: ..`) is
    copied with that context: `dest` then holds the context, and the returned source folder lies at
    the same place inside it (edit the copy's app files there to change the image)."""
    src_path = Path(src).resolve()
    data = load_source_manifest(src_path)
    spec = dict(data.get("container") or {}, **(manifest.get("container") or {}))
    context = (src_path / str(spec.get("context") or ".")).resolve()
    top = context if spec.get("dockerfile") and context in src_path.parents else src_path
    dest_top = Path(dest)
    dest_path = dest_top / src_path.relative_to(top)
    if dest_top.exists():
        shutil.rmtree(dest_top)
    shutil.copytree(top, dest_top)
    assets = {rel: str(src_path / origin) for rel, origin in (data.get("assets") or {}).items()}
    assets.update(manifest.pop("assets", None) or {})
    data.update(manifest, assets=assets)
    if data.get("container"):
        data["container"] = spec
    for name in SOURCE_NAMES:
        (dest_path / name).unlink(missing_ok=True)
    if config:
        app_config = dest_path / "config" / "app.json"
        origin = data["assets"].pop("config/app.json", None)
        if origin:  # the config is an asset: the variant gets a copy of its own to change
            app_config.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, app_config)
        merged = dict(json.loads(app_config.read_text(encoding="utf-8")), **config)
        app_config.write_text(json.dumps(merged), encoding="utf-8")
    (dest_path / "release.json").write_text(json.dumps(data), encoding="utf-8")
    return dest_path
