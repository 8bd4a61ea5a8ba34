"""release_manifest: a release's manifest (release.json) from the signed repository, a folder on the
controller or an HTTP(S) URL, read by the controller to plan a rollout."""

from __future__ import annotations

DOCUMENTATION = r"""
name: release_manifest
short_description: Read a release's manifest from the signed repository, a folder or a URL
version_added: "0.1.0"
description:
  - Returns the manifest (C(release.json)) of each release tag given, from the signed TUF repository
    made by C(edge-deploy release), at C(<repository>/targets/<app>/<tag>/release.json).
  - The repository is a folder on the controller or an C(http://) or C(https://) URL where it is
    served. With a URL, the robots download the release themselves (the release role's fetch mode)
    and the controller reads only the manifest, to plan the rollout (compatibility, engines).
  - The controller plans from this file; the robots' release agent verifies every signature, hash
    and expiry before anything is staged, and checks the compatibility contract again.
  - A tag that the repository does not hold, a manifest that is not JSON, or a server that does
    not answer fails with what to do.
options:
  _terms:
    description: Release tags, for example C(v1.2.0).
    type: list
    elements: str
    required: true
  repository:
    description: The signed repository, a folder on the controller or an HTTP(S) URL.
    type: str
    required: true
  app:
    description: The app's name in the repository (C(release_app_name)).
    type: str
    default: edge-app
  ca_path:
    description:
      - A PEM file with the CA that signs an HTTPS repository's certificate (a private CA). Empty
        or unset, the controller's system store.
    type: str
  timeout:
    description: Seconds to wait for an HTTP(S) repository.
    type: float
    default: 30
"""

EXAMPLES = r"""
- name: The compatibility contract of release v1.2.0
  ansible.builtin.debug:
    msg: "{{ lookup('edge_deploy.jetson.release_manifest', 'v1.2.0', repository='releases/repo') }}"

- name: The models of a release served over HTTPS
  ansible.builtin.debug:
    msg: >-
      {{ lookup('edge_deploy.jetson.release_manifest', 'v1.2.0', repository='https://releases.example.com/edge/',
                ca_path='files/releases-ca.pem').models }}
"""

RETURN = r"""
_list:
  description: One manifest (a dict) per tag given.
  type: list
  elements: dict
"""

import json  # noqa: E402
import os  # noqa: E402

from ansible.errors import AnsibleLookupError  # noqa: E402
from ansible.module_utils.common.text.converters import to_native  # noqa: E402
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError  # noqa: E402
from ansible.module_utils.urls import open_url  # noqa: E402
from ansible.plugins.lookup import LookupBase  # noqa: E402

HINT = (
    "Pass -e release=TAG with a tag from `edge-deploy release list --repo REPO --keys KEYS`, and set "
    "release_repository to the signed repository (a folder on the controller, or the URL where it is served)."
)


def is_url(repository):
    return str(repository).startswith(("http://", "https://"))


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        repository = str(self.get_option("repository") or "")
        if not repository:
            raise AnsibleLookupError("release_manifest: no repository given. " + HINT)
        app = self.get_option("app")
        return [self._read(repository, app, str(tag)) for tag in terms]

    def _read(self, repository, app, tag):
        if not tag:
            raise AnsibleLookupError("No release tag given. " + HINT)
        where = "%s/targets/%s/%s/release.json" % (repository.rstrip("/"), app, tag)
        if is_url(repository):
            text = self._fetch(where, repository, app, tag)
        else:
            if not os.path.isfile(where):
                raise AnsibleLookupError(
                    "No signed release %s %s in %s (%s does not exist). %s"
                    % (app, tag, repository, where, HINT)
                )
            with open(where, encoding="utf-8") as fh:
                text = fh.read()
        try:
            manifest = json.loads(text)
        except ValueError as exc:
            raise AnsibleLookupError(
                "%s is not a release manifest (%s): rebuild and sign the release with `edge-deploy release`"
                % (where, exc)
            ) from exc
        if not isinstance(manifest, dict) or manifest.get("tag") != tag:
            raise AnsibleLookupError(
                "%s does not describe release %s (it names %r): the repository is damaged, sign the "
                "release again"
                % (where, tag, manifest.get("tag") if isinstance(manifest, dict) else manifest)
            )
        return manifest

    def _fetch(self, url, repository, app, tag):
        ca_path = self.get_option("ca_path") or None
        try:
            response = open_url(
                url,
                timeout=float(self.get_option("timeout")),
                ca_path=ca_path,
                http_agent="edge-deploy",
                follow_redirects="safe",
            )
            return to_native(response.read())
        except HTTPError as exc:
            if exc.code == 404:
                raise AnsibleLookupError(
                    "No signed release %s %s at %s (HTTP 404 for %s). %s" % (app, tag, repository, url, HINT)
                ) from exc
            raise AnsibleLookupError("Cannot read %s: HTTP %d %s" % (url, exc.code, exc.reason)) from exc
        except (URLError, OSError) as exc:
            reason = to_native(getattr(exc, "reason", exc))
            message = "Cannot read the release repository at %s: %s" % (repository, reason)
            if "CERTIFICATE_VERIFY_FAILED" in reason:
                message += (
                    "; its HTTPS certificate is not signed by a CA the controller trusts: give the CA "
                    "as release_pull_ca_certificate (the served repository's CA, for pull and fetch alike)"
                )
            raise AnsibleLookupError(message) from exc
