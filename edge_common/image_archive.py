"""A container release's image as a bundle carries it, and the `docker load` archive made from it.

The controller (edge_deploy.release.container) writes the image under a release's `image/` folder:
`manifest.json` (a `docker load` archive's manifest: the config and the layers, in order), the config
as `<sha256>.json` and each layer as `<sha256>.tar`, each named by the sha256 of its bytes. The
robot's agent writes the archive back from those files, each verified by TUF on the way, and loads
it through the Docker Engine API. Python 3.8 and the standard library only (it runs on robots).
"""

from __future__ import annotations

import json
import os
import tarfile
from typing import List

IMAGE_DIR = "image"
MANIFEST = "manifest.json"


def members(folder: str) -> List[str]:
    """The archive's files, in the order `docker load` reads them: manifest, config, layers."""
    with open(os.path.join(folder, MANIFEST), encoding="utf-8") as handle:
        manifest = json.load(handle)
    if not isinstance(manifest, list) or len(manifest) != 1 or "Config" not in manifest[0]:
        raise ValueError("%s/%s is not an image manifest: build the release again" % (folder, MANIFEST))
    names = [MANIFEST, manifest[0]["Config"], *manifest[0].get("Layers", [])]
    for name in names:
        if os.path.basename(name) != name:
            raise ValueError("%s/%s names %r, not a file of its folder" % (folder, MANIFEST, name))
    return names


def write_load_archive(folder: str, out: str) -> int:
    """Write the `docker load` archive of the image in folder to out (streamed; an image may be
    gigabytes); its size in bytes."""
    with tarfile.open(out, mode="w") as archive:
        for name in dict.fromkeys(members(folder)):  # two identical layers are one file
            archive.add(os.path.join(folder, name), arcname=name, recursive=False)
    return os.path.getsize(out)
