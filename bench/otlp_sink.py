#!/usr/bin/env python3
"""otlp_sink.py — a local OTLP/HTTP collector for `bench/run.sh --tracing`.

    otlp_sink.py --port PORT [--stats FILE]

Accepts `POST /v1/traces` (the body read in full, as a collector must before it answers) and
answers 200 with an empty `ExportTraceServiceResponse` (an empty protobuf message is zero
bytes), so the gateway's exporter sees every export accepted. `GET /health` answers 200 for
readiness. It counts exports and bytes and writes them as JSON to FILE when stopped (SIGTERM or
SIGINT). It does not decode the spans: what is measured is the gateway's cost of building,
encoding and sending them, and decoding here would only add load to the shared CPU. Binds
127.0.0.1 only.
"""

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS = {"exports": 0, "bytes": 0, "refused": 0}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    # Keep-alive: the exporter reuses one connection, as it would with a real collector.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        ok = self.path == "/v1/traces" and len(body) == length
        with LOCK:
            if ok:
                STATS["exports"] += 1
                STATS["bytes"] += length
            else:
                STATS["refused"] += 1
        self.send_response(200 if ok else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        ok = self.path == "/health"
        self.send_response(200 if ok else 404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stats", help="write the counts here as JSON when stopped")
    args = ap.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def stop(_signum, _frame):
        # shutdown() waits for serve_forever, which runs in this thread: do it from another.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    with LOCK:
        stats = json.dumps(STATS)
    if args.stats:
        with open(args.stats, "w") as f:
            f.write(stats + "\n")
    print(stats, file=sys.stderr)


if __name__ == "__main__":
    main()
