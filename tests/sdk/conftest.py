"""Fixtures for the official-SDK tests: real `sluice` processes, started once per session.

* `gateway`: `$SLUICE_BIN demo --listen 127.0.0.1:0 --json` (default `target/debug/sluice` in
  this repository) in a temporary working directory, so its SQLite store
  (`./sluice-data/sluice.db`) never touches the repository. It prints one JSON line once it is
  listening: `{"base_url": ..., "api_key": ..., "models": [...]}`.
* `configured_gateway` (only started by the tests that use it): `sluice mock` plus `sluice serve
  --config FILE` with short upstream timeouts and fallback aliases, for what the demo's fixed
  configuration cannot show (504s, fallback across deployments).

Processes are stopped by PID with SIGTERM (they drain and must exit 0), then killed if needed.

Every HTTP response the clients built here receive is collected (its `x-request-id`), and after
each test the autouse `records_match_requests` fixture checks with `sluice logs --json` that the
gateway wrote exactly one request record per request the test made, and no other record.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import anthropic
import httpx2
import openai
import pytest

from sdk_support import CLIENT_TIMEOUT, REPO_ROOT

DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "sluice"
STARTUP_TIMEOUT = 30.0
GATEWAY_FIXTURES = ("gateway", "configured_gateway")


@dataclass
class RequestLog:
    """The `x-request-id` of every response the test clients received, in order."""

    ids: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "METHOD URL" of responses without one
    # Ids a test expects no record for (requests that reached no route).
    unrecorded: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, response: httpx2.Response) -> None:
        rid = response.headers.get("x-request-id")
        with self.lock:
            if rid:
                self.ids.append(rid)
            else:
                self.missing.append(f"{response.request.method} {response.request.url}")

    def reset(self) -> None:
        with self.lock:
            self.ids.clear()
            self.missing.clear()
            self.unrecorded.clear()

    def expect_no_record(self, rid: str) -> None:
        with self.lock:
            self.unrecorded.add(rid)


@dataclass
class Gateway:
    base_url: str
    api_key: str
    cwd: Path
    bin: Path
    env: dict[str, str]
    config: Path | None = None
    models: list[str] = field(default_factory=list)
    requests: RequestLog = field(default_factory=RequestLog)
    # Record ids already matched to a request (see `records_match_requests`).
    accounted: set[str] | None = None

    # ---- CLI helpers -------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        config = ["--config", str(self.config)] if self.config else []
        return subprocess.run(
            [str(self.bin), *config, *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def logs(self, n: int = 200) -> list[dict[str, Any]]:
        out = self.cli("logs", "--json", "-n", str(n)).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_records(self, ids: list[str], timeout: float = 10.0, n: int = 200) -> dict[str, dict[str, Any]]:
        """Polls `sluice logs` until a record exists for every id; returns them by id.
        Records are written off the request path (streams when they end), so they may lag."""
        deadline = time.monotonic() + timeout
        while True:
            by_id = {r["id"]: r for r in self.logs(n)}
            if all(i in by_id for i in ids) or time.monotonic() > deadline:
                return by_id
            time.sleep(0.05)

    def create_key(self, *args: str) -> dict[str, Any]:
        """`sluice keys create --json` against this gateway's store; the result has `secret`."""
        return json.loads(self.cli("keys", "create", "--json", *args).stdout)

    # ---- clients -----------------------------------------------------------------------------

    def http_client(self) -> httpx2.Client:
        return httpx2.Client(timeout=CLIENT_TIMEOUT, event_hooks={"response": [self.requests.hook]})

    def openai(self, api_key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base_url + "/v1",
            api_key=api_key or self.api_key,
            max_retries=0,
            timeout=CLIENT_TIMEOUT,
            http_client=self.http_client(),
        )

    def anthropic(self, api_key: str | None = None) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.base_url,
            api_key=api_key or self.api_key,
            max_retries=0,
            timeout=CLIENT_TIMEOUT,
            http_client=self.http_client(),
        )


# ---- processes -------------------------------------------------------------------------------


def sluice_bin() -> Path:
    binary = Path(os.environ.get("SLUICE_BIN", DEFAULT_BIN))
    if not binary.is_file():
        pytest.fail(f"sluice binary not found at {binary}: run `cargo build -p sluice-cli` or set SLUICE_BIN")
    return binary


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_CONFIG", "SLUICE_LOG")}
    env["SLUICE_LOG"] = "warn"
    env.update(extra)
    return env


class Process:
    """A `sluice` subprocess whose first stdout line announces it is ready."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], name: str) -> None:
        self.name = name
        self.stderr_path = cwd / f"{name}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
            )

    def ready_line(self, timeout: float = STARTUP_TIMEOUT) -> str:
        """The first stdout line, read on a thread so a silent or crashed binary cannot hang us."""
        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"{self.name} printed nothing within {timeout}s\n{self.stderr()}") from None
        if not line:
            code = self.stop()
            raise RuntimeError(f"{self.name} exited ({code}) before listening\n{self.stderr()}")
        return line.decode()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        """SIGTERM by PID, wait for the drain, kill only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def start_demo(cwd: Path) -> tuple[Gateway, Process]:
    """`sluice demo --listen 127.0.0.1:0 --json` in `cwd`, once it has said it listens."""
    binary = sluice_bin()
    env = clean_env()
    demo = Process([str(binary), "demo", "--listen", "127.0.0.1:0", "--json"], cwd, env, "sluice-demo")
    line = demo.ready_line()
    try:
        ready = json.loads(line)
    except json.JSONDecodeError:
        demo.stop()
        raise RuntimeError(f"`sluice demo --json` printed {line!r}, not JSON") from None
    gw = Gateway(
        base_url=ready["base_url"].rstrip("/"),
        api_key=ready["api_key"],
        models=ready["models"],
        cwd=cwd,
        bin=binary,
        env=env,
    )
    return gw, demo


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw, demo = start_demo(tmp_path_factory.mktemp("sluice-demo"))
    try:
        yield gw
    finally:
        code = demo.stop()
    assert code == 0, f"sluice demo exited with {code} after SIGTERM (expected a clean drain)\n{demo.stderr()}"


@pytest.fixture
def private_demo(tmp_path: Path) -> Iterator[tuple[Gateway, Process]]:
    """A demo of the test's own, for tests that stop it; stopped afterwards if still running."""
    gw, demo = start_demo(tmp_path)
    try:
        yield gw, demo
    finally:
        demo.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Short upstream timeouts, and aliases with several deployments (fallback in order). `dead` points
# at a loopback port nobody listens on: connecting fails at once, a retryable failure.
CONFIGURED_TOML = """
[server]
listen = "127.0.0.1:0"

[store]
path = "sluice.db"

[upstream]
first_token_timeout_ms = {timeout_ms}
idle_timeout_ms = {timeout_ms}

[providers.mock-openai]
type = "openai"
base_url = "{mock}/v1"
api_key_env = "SLUICE_TEST_MOCK_KEY"

[providers.mock-anthropic]
type = "anthropic"
base_url = "{mock}/v1"
api_key_env = "SLUICE_TEST_MOCK_KEY"

[providers.dead]
type = "openai_compatible"
base_url = "http://127.0.0.1:{dead_port}/v1"

[deployments.gpt]
provider = "mock-openai"
model = "gpt-4o-mini"

[deployments.claude]
provider = "mock-anthropic"
model = "claude-sonnet-4-5"

[deployments.dead]
provider = "dead"
model = "nobody-home"

# The same mock, declared as a compatible server without structured output: a schema reaches it
# as an instruction only, and its echo is no JSON, so a structured request falls back.
[providers.mock-plain]
type = "openai_compatible"
base_url = "{mock}/v1"
structured_output = "none"

[deployments.plain]
provider = "mock-plain"
model = "plain-llm"

[aliases.gpt-4o-mini]
deployments = ["gpt"]

[aliases.claude-sonnet-4-5]
deployments = ["claude"]

[aliases.dead-then-claude]
deployments = ["dead", "claude"]

[aliases.dead-then-gpt]
deployments = ["dead", "gpt"]

[aliases.claude-then-gpt]
deployments = ["claude", "gpt"]

[aliases.plain-then-gpt]
deployments = ["plain", "gpt"]

# DLP (docs/dlp.md): `guarded` pseudonymises and restores; `guarded-redact` shows, through the
# mock's echo, what an upstream receives, and blocks cloud keys.
[aliases.guarded]
deployments = ["claude"]
[aliases.guarded.dlp]
detectors = {{ email = "pseudonymise", payment_card = "pseudonymise", secret = "pseudonymise" }}

[aliases.guarded-redact]
deployments = ["gpt"]
[aliases.guarded-redact.dlp]
detectors = {{ email = "redact", payment_card = "redact", secret = "block" }}
"""
UPSTREAM_TIMEOUT_MS = 1000


@pytest.fixture(scope="session")
def configured_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    binary = sluice_bin()
    cwd = tmp_path_factory.mktemp("sluice-serve")
    env = clean_env(SLUICE_TEST_MOCK_KEY="mock")
    mock = Process([str(binary), "mock", "--listen", "127.0.0.1:0"], cwd, env, "sluice-mock")
    try:
        found = re.search(r"http://127\.0\.0\.1:\d+", mock.ready_line())
        assert found, "`sluice mock` did not print its address"
        config = cwd / "sluice.toml"
        config.write_text(
            CONFIGURED_TOML.format(mock=found.group(0), dead_port=_free_port(), timeout_ms=UPSTREAM_TIMEOUT_MS)
        )
        check = subprocess.run(
            [str(binary), "--config", str(config), "check-config"], cwd=cwd, env=env, capture_output=True, text=True
        )
        assert check.returncode == 0, f"check-config rejected the test configuration:\n{check.stderr}"
        server = Process(
            [str(binary), "--config", str(config), "serve", "--listen", "127.0.0.1:0"], cwd, env, "sluice-serve"
        )
        try:
            line = server.ready_line()
            found = re.fullmatch(r"sluice listening on (http://\S+)\s*", line)
            assert found, f"unexpected first line from `sluice serve`: {line!r}"
            gw = Gateway(base_url=found.group(1).rstrip("/"), api_key="", cwd=cwd, bin=binary, env=env, config=config)
            gw.api_key = gw.create_key("--name", "sdk-tests", "--team", "qa", "--user", "tester")["secret"]
            yield gw
        finally:
            code = server.stop()
        assert code == 0, f"sluice serve exited with {code} after SIGTERM\n{server.stderr()}"
    finally:
        mock.stop()


# ---- SDK clients -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def oai(gateway: Gateway) -> openai.OpenAI:
    return gateway.openai()


@pytest.fixture(scope="session")
def ant(gateway: Gateway) -> anthropic.Anthropic:
    return gateway.anthropic()


@pytest.fixture(scope="session")
def http(gateway: Gateway) -> Iterator[httpx2.Client]:
    """A raw HTTP client (for exact bytes) whose responses are tracked like the SDKs'."""
    with httpx2.Client(
        base_url=gateway.base_url,
        timeout=CLIENT_TIMEOUT,
        headers={"authorization": f"Bearer {gateway.api_key}"},
        event_hooks={"response": [gateway.requests.hook]},
    ) as client:
        yield client


# ---- one record per request ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def records_match_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    """One request record per request: after each test, the records that appeared since the
    previous check are exactly those whose ids the test's responses carried in `x-request-id`.
    (A record landing late, after its test's check, would fail the next check.)"""
    gateways: list[Gateway] = [request.getfixturevalue(name) for name in GATEWAY_FIXTURES if name in request.fixturenames]
    for gw in gateways:
        if gw.accounted is None:
            gw.accounted = {r["id"] for r in gw.logs()}
        gw.requests.reset()
    yield
    for gw in gateways:
        with gw.requests.lock:
            ids = [i for i in gw.requests.ids if i not in gw.requests.unrecorded]
            unrecorded = set(gw.requests.unrecorded)
            missing = list(gw.requests.missing)
        assert not missing, f"responses without x-request-id: {missing}"
        assert len(ids) == len(set(ids)), f"x-request-id reused across responses: {ids}"
        by_id = gw.wait_records(ids)
        absent = [i for i in ids if i not in by_id]
        assert not absent, f"no request record for x-request-id {absent}"
        assert gw.accounted is not None
        new = set(by_id) - gw.accounted - unrecorded
        gw.accounted |= set(by_id)
        assert new == set(ids), f"records written without a matching response: {sorted(new - set(ids))}"
