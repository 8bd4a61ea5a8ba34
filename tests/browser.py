"""Headless Chromium (Debian's `chromium`, which `make setup` installs for the tests) for the HTML
report pages: the DOM after the page loaded, and the pictures it showed and loaded."""

from __future__ import annotations

import re
import shutil
import subprocess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rendered(page) -> str:
    """The page's DOM after it loaded, pictures included, in headless Chromium."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "<body" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def pictures(dom: str) -> tuple:
    """(pictures the page shows, pictures that loaded), as the page itself counted them."""
    body = re.search(r"<body[^>]*>", dom).group(0)
    shown = re.search(r'data-pictures="(\d+)"', body)
    loaded = re.search(r'data-pictures-loaded="(\d+)"', body)
    assert shown and loaded, body  # the page's load handler ran
    return int(shown.group(1)), int(loaded.group(1))
