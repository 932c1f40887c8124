#!/usr/bin/env python3
"""How long a change takes to reach every replica: a key revocation and a config change.

    bench/propagation.py --sluice BIN --config FILE --admin-token TOKEN URL [URL ...]

The replicas at URL... serve FILE (same store, same file). Each repetition:
  revocation  `sluice keys create`, a request with the key on every replica (200, so each has
              it cached), then `sluice keys revoke` and every replica polled every 2 ms until it
              answers 401; the time from the revoke command's exit to the last replica's 401.
  config      a comment with a fresh value appended to FILE (written beside it and renamed over
              it, as deploy tools do); every replica's GET /admin/v1/config polled every 2 ms
              until it shows the new hash; the time from the rename to the last replica.
Prints one JSON line per measurement, then the median and the largest of each.
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import time
import urllib.error
import urllib.request


def call(url, key=None, token=None, body=None):
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def chat(base, key):
    body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    return call(f"{base}/v1/chat/completions", key=key, body=body)[0]


def wait_all(bases, done, timeout=10.0):
    """Seconds until done(base) holds for every base, polling every 2 ms."""
    start = time.monotonic()
    pending = set(bases)
    while pending:
        pending = {b for b in pending if not done(b)}
        if time.monotonic() - start > timeout:
            raise SystemExit(f"not every replica changed within {timeout} s: {pending}")
        if pending:
            time.sleep(0.002)
    return time.monotonic() - start


def sluice(args, *rest):
    out = subprocess.run([args.sluice, "--config", args.config, *rest], check=True,
                         capture_output=True, text=True)
    return out.stdout


def revocation(args):
    created = json.loads(sluice(args, "keys", "create", "--name", "propagation", "--json"))
    for base in args.urls:
        assert chat(base, created["secret"]) == 200, base
    sluice(args, "keys", "revoke", created["id"])
    return wait_all(args.urls, lambda b: chat(b, created["secret"]) == 401)


def config_change(args, n):
    with open(args.config, "rb") as f:
        text = f.read()
    text = text + f"\n# propagation {time.time_ns()} {n}\n".encode()
    new_hash = hashlib.sha256(text).hexdigest()
    staged = args.config + ".new"
    with open(staged, "wb") as f:
        f.write(text)
    os.replace(staged, args.config)

    def shows_new(base):
        status, body = call(f"{base}/admin/v1/config", token=args.admin_token)
        return status == 200 and json.loads(body).get("sha256") == new_hash

    return wait_all(args.urls, shows_new)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sluice", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--admin-token", required=True)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("urls", nargs="+")
    args = p.parse_args()
    results = {"revocation": [], "config": []}
    for n in range(args.repeat):
        results["revocation"].append(revocation(args))
        results["config"].append(config_change(args, n))
        for kind in results:
            print(json.dumps({"kind": kind, "run": n, "ms": round(results[kind][-1] * 1000, 1)}))
    for kind, values in results.items():
        print(json.dumps({"kind": kind, "replicas": len(args.urls), "n": len(values),
                          "median_ms": round(statistics.median(values) * 1000, 1),
                          "max_ms": round(max(values) * 1000, 1)}))


if __name__ == "__main__":
    main()
