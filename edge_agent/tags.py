"""Release tags: the plain names a release may have on this robot (a folder name under releases/).

Version order is edge_common.versions.version_key.
"""

from __future__ import annotations

import re

from edge_agent.errors import UsageError

TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag or ""):
        raise UsageError("release tag %r is not a plain name (letters, digits, . _ + -)" % tag)
    return tag
