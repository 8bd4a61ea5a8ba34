"""A folder served over HTTPS (or plain HTTP) on 127.0.0.1, standard library only: a thread in the
release unit tests, a script on a simulated robot in the fleet tests (where the signed repository
stands in for a release server); a thread of the controller bound to the simulated fleet's network
for robots that fetch their releases themselves. `server.seen` lists every request.

As a script: python3 https_server.py PORT FOLDER [CERT KEY] [--fault MODE] [--match TEXT]
                                     [--stall-seconds N]
Without CERT and KEY it serves plain HTTP. A server can misbehave, for every file whose URL path
contains --match (default "targets/"); `server.fault` can be changed while it serves:
  too-long  declares and sends 64 KiB more than the file holds (the file, then zeros)
  endless   sends the file, then zeros without end, with no Content-Length
  cut       declares the file's length, sends half of it, and closes the connection
  stall     declares the file's length, sends half of it, then nothing for --stall-seconds
  trickle   declares the file's length, then sends one byte every 0.2 s
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import socket
import ssl
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional, Tuple

FAULTS = ("too-long", "endless", "cut", "stall", "trickle")
EXTRA = 1 << 16


class Server(ThreadingHTTPServer):
    block_on_close = False  # a stalled or endless answer must not hold up server_close()
    fault: Optional[str] = None
    match = "targets/"
    stall_seconds = 30.0
    seen: List[Tuple[str, str]]  # (client address, path) of every GET, in order


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.seen.append((self.client_address[0], self.path))
        fault = self.server.fault
        path = self.translate_path(self.path)
        if fault and self.server.match in self.path and os.path.isfile(path):
            with open(path, "rb") as fh:
                data = fh.read()
            with contextlib.suppress(OSError):  # the client gave up: what these modes are for
                self._misbehave(fault, data)
            self.close_connection = True
            return
        super().do_GET()

    def _misbehave(self, fault: str, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if fault == "too-long":
            self.send_header("Content-Length", str(len(data) + EXTRA))
        elif fault != "endless":
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        half = data[: len(data) // 2]
        if fault == "too-long":
            self.wfile.write(data + b"\0" * EXTRA)
        elif fault == "endless":
            self.wfile.write(data)
            for _ in range(1 << 14):  # 1 GiB at most, should a client never stop reading
                self.wfile.write(b"\0" * EXTRA)
        elif fault == "cut":
            self.wfile.write(half)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "stall":
            self.wfile.write(half)
            self.wfile.flush()
            time.sleep(self.server.stall_seconds)
        elif fault == "trickle":
            for byte in data:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        self.wfile.flush()


def make(
    port: int,
    folder: str,
    cert: Optional[str] = None,
    key: Optional[str] = None,
    fault: Optional[str] = None,
    match: str = "targets/",
    stall_seconds: float = 30.0,
    host: str = "127.0.0.1",
) -> Server:
    """A server bound to host:port (0: any free port), not yet serving; HTTPS with cert and key."""
    server = Server((host, port), functools.partial(_Handler, directory=str(folder)))
    server.fault, server.match, server.stall_seconds = fault, match, stall_seconds
    server.seen = []
    if cert and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("folder")
    parser.add_argument("cert", nargs="?")
    parser.add_argument("key", nargs="?")
    parser.add_argument("--fault", choices=FAULTS)
    parser.add_argument("--match", default="targets/")
    parser.add_argument("--stall-seconds", type=float, default=30.0)
    args = parser.parse_args()
    server = make(args.port, args.folder, args.cert, args.key, args.fault, args.match, args.stall_seconds)
    server.serve_forever()
