"""The manifest written beside every artifact, and the cache check that reads it back."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from edge_common.fsutil import sha256_file

MANIFEST_SCHEMA = 1


def manifest_path(artifact_path: str) -> str:
    return artifact_path + ".manifest.json"


def read(artifact_path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(manifest_path(artifact_path), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cached(artifact_path: str, fingerprint: str) -> Optional[Dict[str, Any]]:
    """The manifest if the artifact on disk was built for `fingerprint` and is intact, else None.

    The artifact and its manifest are renamed into place one after the other; a crash in between
    leaves a manifest whose sha256 does not match the artifact, which this check treats as a miss.
    """
    data = read(artifact_path)
    if not data or data.get("fingerprint") != fingerprint or not os.path.exists(artifact_path):
        return None
    artifact = data.get("artifact") or {}
    if artifact.get("size") != os.path.getsize(artifact_path):
        return None
    if artifact.get("sha256") != sha256_file(artifact_path):
        return None
    return data
