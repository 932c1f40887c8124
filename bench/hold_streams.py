#!/usr/bin/env python3
"""hold_streams.py — open N concurrent streaming chat requests and hold them open.

Every request is an OpenAI `POST /v1/chat/completions` with `"stream": true` sent over its own
raw TCP connection (`Connection: close`). The upstream must be a slow mock (e.g. the shared
mock-upstream with MOCK_CHUNK_DELAY_MS=4000) so the streams stay open for a while.

Phases:
  1. open: connections are opened with at most --parallel of them still waiting for their
     first SSE event; a stream counts as open once its status line is 200 and its first
     `data:` event has arrived;
  2. sample: once every stream is open (or has failed), wait --settle seconds, then read
     VmRSS / VmHWM / open fds of every --pid (the process under test and, e.g., the mock);
  3. drain: read every stream to its end; a stream is ok only when it carried `[DONE]`.

Prints one JSON object on stdout. Exit status 0 even with errors (they are in the JSON).
Raise `ulimit -n` first: N streams need N descriptors here, N in the mock, 2N in a gateway.
"""

import argparse
import asyncio
import json
import os
import sys
import time


def proc_sample(pid):
    out = {"pid": pid}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads"):
                    out[k] = int(v.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError as e:
        out["error"] = str(e)
    return out


class Stats:
    def __init__(self):
        self.opened = 0
        self.failed_open = 0
        self.ok = 0
        self.errors = 0
        self.first_errors = []
        self.open_ms = []

    def err(self, msg):
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(msg)


async def one(i, args, request, st, gate, all_open):
    t0 = time.perf_counter()
    writer = None
    opened = False
    try:
        async with gate:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port), args.connect_timeout)
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), args.first_timeout)
            status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b"?"
            if status != b"200":
                rest = await asyncio.wait_for(reader.read(300), 5)
                raise RuntimeError(f"status {status.decode()}: {rest[:200]!r}")
            seen = b""
            while b"data:" not in seen:
                chunk = await asyncio.wait_for(reader.read(65536), args.first_timeout)
                if not chunk:
                    raise RuntimeError("closed before the first event")
                seen += chunk
            opened = True
            st.opened += 1
            st.open_ms.append((time.perf_counter() - t0) * 1000)
            if st.opened + st.failed_open == args.n:
                all_open.set()
        # Hold: read to the end of the stream.
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), args.idle_timeout)
            if not chunk:
                break
            seen = seen[-16:] + chunk
            if b"[DONE]" in seen:
                st.ok += 1
                # the body ends right after [DONE]; keep reading to EOF but count now
                seen = b""
                while await asyncio.wait_for(reader.read(65536), args.idle_timeout):
                    pass
                return
        raise RuntimeError("stream ended without [DONE]")
    except Exception as e:  # noqa: BLE001 — every failure is counted and reported
        st.err(f"#{i}: {type(e).__name__}: {e}")
        if not opened:
            st.failed_open += 1
            if st.opened + st.failed_open == args.n:
                all_open.set()
    finally:
        if writer is not None:
            writer.close()


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="http://HOST:PORT/v1/chat/completions")
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--model", default="mock-slow")
    p.add_argument("--key", default="sk-fake")
    p.add_argument("--content", default="Hold this stream open.",
                   help="the user message (e.g. a `#mock chunk_delay_ms=4000` line for `sluice mock`)")
    p.add_argument("--parallel", type=int, default=256, help="streams opening at once")
    p.add_argument("--pid", type=int, action="append", default=[], help="process to sample")
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--connect-timeout", type=float, default=30)
    p.add_argument("--first-timeout", type=float, default=60)
    p.add_argument("--idle-timeout", type=float, default=60)
    args = p.parse_args()
    rest = args.url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    args.host, _, port = hostport.partition(":")
    args.port = int(port or 80)
    body = json.dumps({
        "model": args.model, "stream": True, "max_tokens": 64,
        "messages": [{"role": "user", "content": args.content}],
    }).encode()
    request = (
        f"POST /{path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {args.key}\r\n"
        f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body

    st = Stats()
    gate = asyncio.Semaphore(args.parallel)
    all_open = asyncio.Event()
    before = [proc_sample(pid) for pid in args.pid]
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one(i, args, request, st, gate, all_open)) for i in range(args.n)]
    await all_open.wait()
    ramp_s = time.perf_counter() - t0
    await asyncio.sleep(args.settle)
    open_at_sample = st.opened - st.ok - (st.errors - st.failed_open)
    held = [proc_sample(pid) for pid in args.pid]
    await asyncio.gather(*tasks)
    after = [proc_sample(pid) for pid in args.pid]
    st.open_ms.sort()
    pct = lambda q: st.open_ms[min(len(st.open_ms) - 1, int(q * len(st.open_ms)))] if st.open_ms else None
    print(json.dumps({
        "n": args.n, "opened": st.opened, "failed_open": st.failed_open,
        "open_at_sample": open_at_sample, "ok": st.ok, "errors": st.errors,
        "first_errors": st.first_errors, "ramp_s": round(ramp_s, 3),
        "open_ms_p50": pct(0.5), "open_ms_p99": pct(0.99),
        "total_s": round(time.perf_counter() - t0, 3),
        "before": before, "held": held, "after": after,
    }))


if __name__ == "__main__":
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    asyncio.run(main())
