"""The process lifecycle as an operator sees it: `sluice demo` announces itself, and SIGTERM
drains in-flight streams before a clean exit, with their records written."""

from __future__ import annotations

import signal
import threading
from typing import Any

import anthropic
import openai
import pytest

from sdk_support import ANTHROPIC_MODEL, DEMO_MODELS, MODELS, OPENAI_MODEL, RESILIENT_MODEL, echo


def test_demo_announces_its_models(gateway: Any) -> None:
    assert sorted(gateway.models) == sorted(DEMO_MODELS)
    assert gateway.base_url.startswith("http://127.0.0.1:")
    assert gateway.api_key.startswith("sk-sluice-")
    # The demo keeps its store in the working directory it was started in.
    assert (gateway.cwd / "sluice-data" / "sluice.db").is_file()


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_sigterm_drains_an_in_flight_stream(private_demo: Any, sdk: str) -> None:
    gw, process = private_demo
    prompt = "drain me\n#mock chunk_delay_ms=60"
    texts: list[str] = []
    first = threading.Event()

    if sdk == "openai":
        stream: Any = gw.openai().chat.completions.create(
            model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": prompt}], stream=True
        )
        rid = stream.response.headers["x-request-id"]
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
                if not first.is_set():
                    first.set()
                    process.proc.send_signal(signal.SIGTERM)  # mid-stream
            finish = chunk.choices[0].finish_reason if chunk.choices else None
        assert finish == "stop"
    else:
        with gw.anthropic().messages.stream(
            model=OPENAI_MODEL, max_tokens=256, messages=[{"role": "user", "content": prompt}]
        ) as mstream:
            rid = mstream.response.headers["x-request-id"]
            for text in mstream.text_stream:
                texts.append(text)
                if not first.is_set():
                    first.set()
                    process.proc.send_signal(signal.SIGTERM)
            assert mstream.get_final_message().stop_reason == "end_turn"
    assert "".join(texts) == echo(prompt)
    assert process.proc.wait(timeout=15) == 0, process.stderr()
    # The drained request's record was written before the exit.
    records = {r["id"]: r for r in gw.logs()}
    assert records[rid]["status"] == 200 and records[rid]["error_code"] is None

    # And the gateway is gone.
    with pytest.raises((openai.APIConnectionError, anthropic.APIConnectionError)):
        if sdk == "openai":
            gw.openai().models.list()
        else:
            gw.anthropic().models.list()


def test_the_resilient_route_answers_every_request_through_its_fallback(gateway: Any) -> None:
    # Its primary fails every second request with a 500: the client never sees one.
    client = gateway.openai()
    served = []
    for _ in range(6):
        raw = client.chat.completions.with_raw_response.create(
            model=RESILIENT_MODEL, messages=[{"role": "user", "content": "still there?"}]
        )
        assert raw.parse().choices[0].message.content == echo("still there?")
        served.append(raw.headers["x-sluice-deployment"])
    assert set(served) == {"mock-flaky", "mock-claude"}, served
    assert served.count("mock-claude") == 3, "one fallback per failure of the primary"
