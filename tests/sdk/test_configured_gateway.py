"""Both SDKs against `sluice serve --config` (the `configured_gateway` fixture): upstream
timeouts and fallback across deployments, which the demo's fixed configuration cannot show.

Aliases (see `CONFIGURED_TOML` in conftest.py): `gpt-4o-mini` and `claude-sonnet-4-5` as in the
demo; `dead-then-claude` / `dead-then-gpt` try a deployment whose port refuses connections
first; `claude-then-gpt` tries the Anthropic-dialect mock, then the OpenAI-dialect one. Upstream
first-byte and idle timeouts are `UPSTREAM_TIMEOUT_MS` (1 s); the slow answers here take 3 s.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from sdk_support import MODELS, TOOL_ECHO, echo, served_model, tokens

MAX_TOKENS = 128


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def coai(configured_gateway: Any) -> openai.OpenAI:
    return configured_gateway.openai()


@pytest.fixture(scope="module")
def cant(configured_gateway: Any) -> anthropic.Anthropic:
    return configured_gateway.anthropic()


# ---------------------------------------------------------------------------------------------
# Timeouts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_first_byte_timeout_is_504_openai(coai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        coai.chat.completions.create(model=model, messages=user("slow\n#mock delay_ms=3000"))
    assert info.value.status_code == 504
    error = info.value.response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "upstream_timeout"


@pytest.mark.parametrize("model", MODELS)
def test_first_byte_timeout_is_504_anthropic(cant: anthropic.Anthropic, model: str) -> None:
    with pytest.raises(anthropic.InternalServerError) as info:
        cant.messages.create(model=model, max_tokens=MAX_TOKENS, messages=user("slow\n#mock delay_ms=3000"))
    assert info.value.status_code == 504
    assert isinstance(info.value, anthropic.GatewayTimeoutError)
    assert info.value.type == "timeout_error"


# The OpenAI-dialect mock sends its first content event at once and then stalls; the
# Anthropic-dialect one stalls before its first text (after `message_start`), which is
# `test_stall_before_the_first_content_is_a_clean_504`.
@pytest.mark.parametrize("model", ["gpt-4o-mini"])
def test_idle_timeout_mid_stream_openai(configured_gateway: Any, coai: openai.OpenAI, model: str) -> None:
    stream = coai.chat.completions.create(
        model=model, messages=user("stall\n#mock first_token_ms=0 chunk_delay_ms=3000"), stream=True
    )
    rid = stream.response.headers["x-request-id"]
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received and not any(c.choices and c.choices[0].finish_reason for c in received)
    assert "timeout" in info.value.message
    record = configured_gateway.wait_records([rid])[rid]
    assert record["status"] == 200, "the status was sent before the failure"
    assert record["error_code"] == "upstream_timeout"


@pytest.mark.parametrize("model", ["gpt-4o-mini"])
def test_idle_timeout_mid_stream_anthropic(configured_gateway: Any, cant: anthropic.Anthropic, model: str) -> None:
    events: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with cant.messages.stream(
            model=model, max_tokens=MAX_TOKENS, messages=user("stall\n#mock first_token_ms=0 chunk_delay_ms=3000")
        ) as stream:
            rid = stream.response.headers["x-request-id"]
            for event in stream:
                events.append(event.type)
    assert events[0] == "message_start" and "message_stop" not in events
    assert info.value.type == "timeout_error"
    record = configured_gateway.wait_records([rid])[rid]
    assert record["error_code"] == "upstream_timeout"


def test_stall_before_the_first_content_is_a_clean_504(configured_gateway: Any, coai: openai.OpenAI) -> None:
    # Nothing but `message_start` arrived before the stall: the gateway had not started the
    # client's stream, so the client gets a 504 instead of a stream that breaks.
    with pytest.raises(openai.APIStatusError) as info:
        coai.chat.completions.create(
            model="claude-sonnet-4-5", messages=user("stall\n#mock first_token_ms=0 chunk_delay_ms=3000"), stream=True
        )
    assert info.value.status_code == 504
    assert info.value.code == "upstream_timeout"
    rid = info.value.response.headers["x-request-id"]
    record = configured_gateway.wait_records([rid])[rid]
    assert record["status"] == 504 and record["error_code"] == "upstream_timeout"


# ---------------------------------------------------------------------------------------------
# Fallback
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alias", "target"), [("dead-then-claude", "claude-sonnet-4-5"), ("dead-then-gpt", "gpt-4o-mini")])
def test_fallback_after_connect_failure_openai(configured_gateway: Any, coai: openai.OpenAI, alias: str, target: str) -> None:
    raw = coai.chat.completions.with_raw_response.create(model=alias, messages=user("fall back"))
    completion = raw.parse()
    assert completion.choices[0].message.content == echo("fall back")
    assert completion.model == served_model(target)
    assert raw.headers["x-sluice-attempts"] == "2"
    assert raw.headers["x-sluice-alias"] == alias
    assert raw.headers["x-sluice-deployment"] == target.split("-")[0]  # deployment `claude` / `gpt`
    rid = raw.headers["x-request-id"]
    record = configured_gateway.wait_records([rid])[rid]
    assert [(a["deployment"], a["outcome"]) for a in record["attempts"]] == [
        ("dead", "upstream_unavailable"),
        (target.split("-")[0], "ok"),
    ]
    assert record["status"] == 200 and record["error_code"] is None
    assert (record["team"], record["user"]) == ("qa", "tester"), "the key's bindings"


@pytest.mark.parametrize(("alias", "target"), [("dead-then-claude", "claude-sonnet-4-5"), ("dead-then-gpt", "gpt-4o-mini")])
def test_fallback_after_connect_failure_anthropic_stream(cant: anthropic.Anthropic, alias: str, target: str) -> None:
    with cant.messages.stream(model=alias, max_tokens=MAX_TOKENS, messages=user("fall back")) as stream:
        assert stream.response.headers["x-sluice-attempts"] == "2"
        assert stream.response.headers["x-sluice-served-model"] == served_model(target)
        final = stream.get_final_message()
    assert final.content[0].text == echo("fall back")  # type: ignore[union-attr]
    assert final.usage.output_tokens == tokens(echo("fall back"))


def test_tool_round_trip_across_fallback(cant: anthropic.Anthropic) -> None:
    """A conversation whose first turn was served after a fallback continues normally."""
    tool = {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}
    first = cant.messages.create(model="dead-then-gpt", max_tokens=MAX_TOKENS, messages=user("look it up"), tools=[tool])
    use = next(b for b in first.content if b.type == "tool_use")
    second = cant.messages.create(
        model="dead-then-gpt",
        max_tokens=MAX_TOKENS,
        tools=[tool],
        messages=[
            *user("look it up"),
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "found"}]},
        ],
    )
    assert second.content[0].text == TOOL_ECHO + "found"  # type: ignore[union-attr]


@pytest.mark.parametrize(("directive", "status", "code"), [("status=529", 503, "upstream_overloaded"), ("status=500", 502, "upstream_unavailable"), ("malformed", 502, "upstream_malformed_response")])
def test_retryable_failure_tries_every_deployment(
    configured_gateway: Any, coai: openai.OpenAI, directive: str, status: int, code: str
) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        coai.chat.completions.create(model="claude-then-gpt", messages=user(f"fail\n#mock {directive}"))
    assert info.value.status_code == status
    rid = info.value.response.headers["x-request-id"]
    record = configured_gateway.wait_records([rid])[rid]
    assert [a["deployment"] for a in record["attempts"]] == ["claude", "gpt"]
    assert record["status"] == status and record["error_code"] == code


def test_client_error_is_not_retried(configured_gateway: Any, cant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        cant.messages.create(model="claude-then-gpt", max_tokens=MAX_TOKENS, messages=user("bad\n#mock status=400"))
    rid = info.value.response.headers["x-request-id"]
    record = configured_gateway.wait_records([rid])[rid]
    assert [(a["deployment"], a["status"]) for a in record["attempts"]] == [("claude", 400)]


def test_stream_dying_before_first_event_falls_back(configured_gateway: Any, coai: openai.OpenAI) -> None:
    # cut_after=0: the first deployment's stream dies before any event, nothing reached the
    # client, so the next deployment is tried; the directive cuts it as well.
    with pytest.raises(openai.InternalServerError) as info:
        coai.chat.completions.create(model="claude-then-gpt", messages=user("cut\n#mock cut_after=0"), stream=True)
    rid = info.value.response.headers["x-request-id"]
    record = configured_gateway.wait_records([rid])[rid]
    assert [a["deployment"] for a in record["attempts"]] == ["claude", "gpt"]


def test_stream_failing_after_first_byte_is_not_retried(configured_gateway: Any, coai: openai.OpenAI) -> None:
    stream = coai.chat.completions.create(model="claude-then-gpt", messages=user("cut\n#mock cut_after=6"), stream=True)
    assert stream.response.headers["x-sluice-attempts"] == "1"
    rid = stream.response.headers["x-request-id"]
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    record = configured_gateway.wait_records([rid])[rid]
    assert [a["deployment"] for a in record["attempts"]] == ["claude"]
    assert record["status"] == 200 and record["error_code"] == "upstream_unavailable"


# ---------------------------------------------------------------------------------------------
# Structured output that holds
# ---------------------------------------------------------------------------------------------

CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


def test_json_schema_that_one_deployment_breaks_falls_back_to_one_that_holds_it(coai: openai.OpenAI) -> None:
    # `plain` (no structured output: an instruction, and the mock's echo, which is no JSON) breaks
    # the schema; the gateway falls back to `gpt`, whose answer holds it.
    import json

    import jsonschema

    raw = coai.chat.completions.with_raw_response.create(
        model="plain-then-gpt",
        messages=user("The largest city of France, please."),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
        },
    )
    assert raw.headers["x-sluice-deployment"] == "gpt"
    assert raw.headers["x-sluice-attempts"] == "2"
    completion = raw.parse()
    value = json.loads(completion.choices[0].message.content)
    jsonschema.validate(value, CITY_SCHEMA)
