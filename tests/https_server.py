"""A folder served over HTTPS on 127.0.0.1, standard library only: a thread in the release unit
tests, a script on a simulated robot in the fleet tests (where the signed repository stands in
for a release server). As a script: python3 https_server.py PORT FOLDER CERT KEY."""

from __future__ import annotations

import functools
import ssl
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def make(port: int, folder: str, cert: str, key: str) -> ThreadingHTTPServer:
    """A server bound to 127.0.0.1:port (0: any free port), not yet serving."""
    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Quiet, directory=str(folder)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


if __name__ == "__main__":
    make(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]).serve_forever()
