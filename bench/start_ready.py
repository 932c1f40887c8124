#!/usr/bin/env python3
"""start_ready.py — time from process start until an HTTP readiness URL answers 200.

    start_ready.py --starts 20 --cpu 0 --path /ready [--env K=V]... -- CMD ARG... {port} ...

Each start picks a free loopback port and substitutes it for `{port}` in the command, takes
t0, forks and execs the command (pinned to --cpu with sched_setaffinity in the child, before
exec), then polls: connect to 127.0.0.1:PORT (retrying every --poll-ms while refused), send
`GET PATH`, and stop the clock at the first 200. The process is then stopped with SIGTERM
(SIGKILL after 10 s) and waited for before the next start. Prints one JSON object: every
sample in ms, and the median / min / max.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ready(port, path):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError:
        return False
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = s.recv(64)
        return data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
    except OSError:
        return False
    finally:
        s.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--starts", type=int, default=20)
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--path", default="/ready")
    p.add_argument("--poll-ms", type=float, default=0.2)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--log", default=os.devnull, help="child stdout/stderr")
    p.add_argument("--env", action="append", default=[], help="K=V for the child ({port} allowed)")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    cpu = a.cpu
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    samples, errors = [], []
    log = open(a.log, "ab")
    for _ in range(a.starts):
        port = free_port()
        argv = [c.replace("{port}", str(port)) for c in cmd]
        env = dict(os.environ)
        env.update(kv.replace("{port}", str(port)).split("=", 1) for kv in a.env)
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                preexec_fn=preexec, env=env)
        ok = False
        while time.perf_counter() - t0 < a.timeout:
            if ready(port, a.path):
                ok = True
                break
            if proc.poll() is not None:
                break
            time.sleep(a.poll_ms / 1000)
        t1 = time.perf_counter()
        if ok:
            samples.append((t1 - t0) * 1000)
        else:
            errors.append(f"not ready (exit {proc.poll()})")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = {"starts": a.starts, "ok": len(samples), "errors": len(errors),
           "first_error": errors[0] if errors else "",
           "samples_ms": [round(s, 2) for s in samples]}
    if samples:
        out.update(median_ms=round(statistics.median(samples), 2),
                   min_ms=round(min(samples), 2), max_ms=round(max(samples), 2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
