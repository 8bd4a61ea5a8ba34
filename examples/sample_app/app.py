"""The sample robot app: the digits classifier behind a small HTTP API, run by the release agent.

- loads the engine the robot built for this release (shared/engines/active.json) through
  engine_builder's runner for its backend (TensorRT on a Jetson, onnxruntime elsewhere);
- GET /healthz runs a real inference on a golden input and checks it against the expected output;
- POST /infer takes {"input": [[8x8 floats in 0..1]]} and answers the digit;
- tells systemd it is ready and pings the watchdog while its serving loop turns (sd_notify).

config/app.json (copied to shared/config by the agent) may inject a fault for tests and demos:
"crash" (exit), "hang" (stop serving and pinging) or "unhealthy" (/healthz fails), after
fault_after_seconds. A list names the fault of each start in turn (the last one repeats), for
example ["hang", "crash"]: the starts are counted in the log folder, per release.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from edge_agent.sdnotify import Watchdog, notify
from engine_builder.backends import get_backend


def load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


class App:
    def __init__(self) -> None:
        self.config = load_json(os.path.join(os.environ["EDGE_CONFIG_DIR"], "app.json"))
        engines = load_json(os.environ["EDGE_ENGINES"])["engines"]
        ref = engines[self.config["model"]]
        self.backend = ref["backend"]
        self.runner = get_backend(ref["backend"]).runner(ref["artifact"])
        self.runner.__enter__()
        self.input_name = self.runner.input_specs()[0].name
        golden = np.load(os.path.join(os.environ["EDGE_RELEASE_DIR"], "models", "digits_golden.npz"))
        index = int(self.config.get("golden_index", 0))
        self.golden_input = golden["input"][index : index + 1]
        self.golden_expected = golden["expected.output"][index : index + 1]
        self.current_fault = self.fault_of_this_start(self.config.get("fault"))
        self.started = time.monotonic()
        self.last_tick = time.monotonic()
        self.lock = threading.Lock()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            outputs = self.runner.infer({self.input_name: batch.astype(np.float32)})
        return np.asarray(next(iter(outputs.values())))

    def health(self) -> dict:
        t0 = time.perf_counter()
        out = self.infer(self.golden_input)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        error = float(np.abs(out - self.golden_expected).max())
        same_class = bool(out.argmax(-1)[0] == self.golden_expected.argmax(-1)[0])
        ok = (
            same_class
            and error <= float(self.config.get("max_abs_error", 1e-3))
            and not self.fault("unhealthy")
        )
        return {
            "ok": ok,
            "release": os.environ.get("EDGE_RELEASE"),
            "backend": self.backend,
            "max_abs_error": error,
            "top1_match": same_class,
            "latency_ms": round(latency_ms, 3),
        }

    @staticmethod
    def fault_of_this_start(fault):
        if not isinstance(fault, list) or not fault:
            return fault
        counter = os.path.join(os.environ["EDGE_LOG_DIR"], "fault-starts-%s" % os.environ.get("EDGE_RELEASE"))
        try:
            with open(counter, encoding="utf-8") as fh:
                starts = int(fh.read().strip() or 0)
        except FileNotFoundError:
            starts = 0
        with open(counter, "w", encoding="utf-8") as fh:
            fh.write(str(starts + 1))
        return fault[min(starts, len(fault) - 1)]

    def fault(self, kind: str) -> bool:
        return self.current_fault == kind and (
            time.monotonic() - self.started >= float(self.config.get("fault_after_seconds", 0))
        )

    def alive(self) -> bool:
        # The serving loop ticks at least every 0.5 s; a hung loop stops the watchdog pings.
        return time.monotonic() - self.last_tick < 5.0


def handler_for(app: App):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, code: int, body: dict) -> None:
            data = (json.dumps(body) + "\n").encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                result = app.health()
                self.reply(200 if result["ok"] else 503, result)
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/infer":
                self.reply(404, {"error": "not found"})
                return
            try:
                length = min(int(self.headers.get("Content-Length", 0)), 1 << 20)
                pixels = np.asarray(json.loads(self.rfile.read(length))["input"], dtype=np.float32)
                logits = app.infer(pixels.reshape(1, 1, 8, 8))
            except (ValueError, KeyError, TypeError) as exc:
                self.reply(400, {"error": str(exc)})
                return
            self.reply(200, {"digit": int(logits.argmax()), "logits": logits.reshape(-1).tolist()})

        def log_message(self, fmt: str, *args) -> None:  # keep the journal quiet
            pass

    return Handler


def main() -> int:
    app = App()
    server = ThreadingHTTPServer(("127.0.0.1", int(app.config.get("port", 8080))), handler_for(app))
    server.timeout = 0.5
    app.health()  # warm up before saying ready
    notify("READY=1")
    notify("STATUS=serving %s on port %d" % (os.environ.get("EDGE_RELEASE"), server.server_address[1]))
    with Watchdog(alive=app.alive):
        while True:
            server.handle_request()
            app.last_tick = time.monotonic()
            if app.fault("crash"):
                sys.stderr.write("sample app: injected crash\n")
                return 3
            if app.fault("hang"):
                sys.stderr.write("sample app: injected hang\n")
                while True:
                    time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
