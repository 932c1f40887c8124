"""The official OpenAI Python SDK against the real gateway.

Every behaviour runs for both demo aliases: `gpt-4o-mini` (an OpenAI-dialect upstream: the
gateway passes bytes through) and `claude-sonnet-4-5` (an Anthropic-dialect upstream: the
gateway translates OpenAI -> Anthropic and back).
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from typing import Any, Literal, Optional

import openai
import pydantic
import pytest

from sdk_support import (
    ANTHROPIC_MODEL,
    DEMO_MODELS,
    MODELS,
    OPENAI_MODEL,
    REPORT_SCHEMA,
    TOOL_ECHO,
    WEATHER_SCHEMA,
    assert_provenance,
    echo,
    served_model,
    tokens,
    validate,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": WEATHER_SCHEMA,
    },
}
SECOND_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------------------------------------
# Plain completions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_completion(oai: openai.OpenAI, model: str) -> None:
    prompt = "Say hello to the gateway"
    reply = oai.chat.completions.create(model=model, messages=user(prompt))
    assert reply.object == "chat.completion"
    assert reply.id
    assert reply.model == served_model(model)
    # A Unix timestamp in seconds, stamped by the gateway when the provider (Anthropic) has none.
    assert abs(reply.created - time.time()) < 600
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == echo(prompt)
    assert not choice.message.tool_calls
    # Usage is the provider's, carried over field by field.
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == tokens(prompt)
    assert reply.usage.completion_tokens == tokens(echo(prompt))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
def test_system_prompt_and_history_count_as_input(oai: openai.OpenAI, model: str) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Second question"},
    ]
    reply = oai.chat.completions.create(model=model, messages=messages, max_tokens=100, temperature=0.5)
    assert reply.choices[0].message.content == echo("Second question")
    # Every input text reaches the provider: the system prompt (hoisted to `system` for
    # Anthropic), both user turns and the assistant turn.
    input_chars = sum(len(m["content"]) for m in messages)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == math.ceil(input_chars / 4)


@pytest.mark.parametrize("model", MODELS)
def test_max_tokens_cuts_with_finish_reason_length(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(model=model, messages=user("a long enough prompt"), max_completion_tokens=3)
    choice = reply.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content == echo("a long enough prompt")[:12]
    assert reply.usage is not None and reply.usage.completion_tokens == 3


@pytest.mark.parametrize("model", MODELS)
def test_exact_text_directive(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(model=model, messages=user("ignored\n#mock text=Exactly this, with ünïcode ✓"))
    assert reply.choices[0].message.content == "Exactly this, with ünïcode ✓"


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_stream_with_usage(oai: openai.OpenAI, model: str) -> None:
    prompt = "Stream, please"
    stream = oai.chat.completions.create(
        model=model, messages=user(prompt), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert len(chunks) >= 3
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1, "every chunk of one completion shares its id"
    assert {c.model for c in chunks} == {served_model(model)}
    assert len({c.created for c in chunks}) == 1 and abs(chunks[0].created - time.time()) < 600
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == echo(prompt)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    # include_usage: exactly one final chunk with empty choices and the usage.
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    assert final.usage.prompt_tokens == tokens(prompt)
    assert final.usage.completion_tokens == tokens(echo(prompt))
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize("model", MODELS)
def test_stream_without_usage_option_has_no_usage_chunk(oai: openai.OpenAI, model: str) -> None:
    # The gateway always asks the upstream for usage (it needs it for the record) but must not
    # show the client a usage chunk it did not ask for.
    chunks = list(oai.chat.completions.create(model=model, messages=user("no usage"), stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "a chunk with empty choices is a usage chunk"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == echo("no usage")
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", MODELS)
def test_stream_helper_accumulates(oai: openai.OpenAI, model: str) -> None:
    """`client.chat.completions.stream(...)`: the SDK's own accumulator over the chunks."""
    with oai.chat.completions.stream(
        model=model, messages=user("helper"), stream_options={"include_usage": True}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == echo("helper")
    assert final.choices[0].message.content == echo("helper")
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens == tokens(echo("helper"))


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_tool_call_round_trip(oai: openai.OpenAI, model: str) -> None:
    messages: list[Any] = user("What is the weather in Lisbon?")
    first = oai.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL, SECOND_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    validate(arguments, WEATHER_SCHEMA)

    # Send the result back: the assistant turn with its tool call, then the tool message.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"})
    second = oai.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL, SECOND_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == TOOL_ECHO + "18 degrees and sunny"
    assert not second.choices[0].message.tool_calls
    # The tool call and its result were counted as input on the provider's side.
    assert second.usage is not None and first.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


@pytest.mark.parametrize("model", MODELS)
def test_forced_tool_choice(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(
        model=model,
        messages=user("what time is it in Oslo?"),
        tools=[WEATHER_TOOL, SECOND_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["get_time"]
    validate(json.loads(calls[0].function.arguments), SECOND_TOOL["function"]["parameters"])


@pytest.mark.parametrize("model", MODELS)
def test_tool_choice_none_answers_text(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(
        model=model, messages=user("just talk"), tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert reply.choices[0].message.content == echo("just talk")
    assert not reply.choices[0].message.tool_calls


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_call(oai: openai.OpenAI, model: str) -> None:
    stream = oai.chat.completions.create(
        model=model,
        messages=user("Weather in Porto?"),
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    finish = []
    usage = None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.finish_reason:
                finish.append(choice.finish_reason)
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    assert not slot["id"], "a tool call's id is sent once"
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
    assert finish == ["tool_calls"]
    assert list(calls) == [0]
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    validate(json.loads(calls[0]["arguments"]), WEATHER_SCHEMA)
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_stream_helper_tool_call(oai: openai.OpenAI, model: str) -> None:
    with oai.chat.completions.stream(model=model, messages=user("Weather in Faro?"), tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_weather"
    validate(json.loads(calls[0].function.arguments), WEATHER_SCHEMA)
    assert final.choices[0].finish_reason == "tool_calls"


# ---------------------------------------------------------------------------------------------
# Structured output
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_json_schema_response_format(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(
        model=model,
        messages=user("Report the weather in Madrid as JSON"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "weather_report", "strict": True, "schema": REPORT_SCHEMA},
        },
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls, "structured output comes back as text, not a tool call"
    assert choice.message.content is not None
    validate(json.loads(choice.message.content), REPORT_SCHEMA)


@pytest.mark.parametrize("model", MODELS)
def test_json_schema_streamed(oai: openai.OpenAI, model: str) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=model,
            messages=user("Report as JSON"),
            stream=True,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "weather_report", "strict": True, "schema": REPORT_SCHEMA},
            },
        )
    )
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    validate(json.loads(text), REPORT_SCHEMA)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


class Wind(pydantic.BaseModel):
    speed_kmh: int
    direction: Literal["N", "E", "S", "W"]


class Report(pydantic.BaseModel):
    city: str
    temperature_c: float
    conditions: list[str]
    wind: Wind
    note: Optional[str]


@pytest.mark.parametrize("model", MODELS)
def test_parse_with_pydantic_model(oai: openai.OpenAI, model: str) -> None:
    parse = getattr(oai.chat.completions, "parse", None) or oai.beta.chat.completions.parse  # type: ignore[attr-defined]
    completion = parse(model=model, messages=user("Weather report for Rome"), response_format=Report)
    message = completion.choices[0].message
    assert isinstance(message.parsed, Report)
    assert message.parsed.wind.direction in ("N", "E", "S", "W")
    assert Report.model_validate_json(message.content or "") == message.parsed


def test_json_object_mode_passthrough(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=OPENAI_MODEL, messages=user("Answer in JSON"), response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content or "") == {"reply": echo("Answer in JSON")}


def test_json_object_mode_for_anthropic_target_is_asked_for_and_checked(oai: openai.OpenAI) -> None:
    # Anthropic has no JSON mode: the gateway asks for JSON in the system prompt and checks the
    # answer. An answer that is a JSON object passes (fences and text around it repaired)...
    answer = oai.chat.completions.create(
        model=ANTHROPIC_MODEL,
        messages=user('Answer in JSON\n#mock text=Sure: ```json {"city": "Paris"}``` done'),
        response_format={"type": "json_object"},
    )
    assert json.loads(answer.choices[0].message.content) == {"city": "Paris"}
    # ...and one that is not is never passed off as a 200 (the mock ignores instructions).
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(
            model=ANTHROPIC_MODEL, messages=user("Answer in JSON"), response_format={"type": "json_object"}
        )
    assert info.value.status_code == 502
    assert info.value.response.json()["error"]["code"] == "schema_violation"


# ---------------------------------------------------------------------------------------------
# Models and embeddings
# ---------------------------------------------------------------------------------------------


def test_models_list(oai: openai.OpenAI) -> None:
    page = oai.models.list()
    models = list(page)
    assert sorted(m.id for m in models) == sorted(DEMO_MODELS)
    for m in models:
        assert m.object == "model"
        # The time the gateway loaded its configuration, not 0.
        assert m.created > time.time() - 86_400
        assert m.owned_by


@pytest.mark.parametrize("model", MODELS)
def test_models_retrieve(oai: openai.OpenAI, model: str) -> None:
    info = oai.models.retrieve(model)
    assert (info.id, info.object, info.owned_by) == (model, "model", "sluice")
    assert info == next(m for m in oai.models.list() if m.id == model)


def test_models_retrieve_unknown_or_forbidden_is_not_found(gateway: Any) -> None:
    scoped = gateway.create_key("--name", "scoped-oai-models", "--alias", ANTHROPIC_MODEL)
    client = gateway.openai(api_key=scoped["secret"])
    assert client.models.retrieve(ANTHROPIC_MODEL).id == ANTHROPIC_MODEL
    for model in ("no-such-model", OPENAI_MODEL):
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve(model)
        assert caught.value.code == "model_not_found"


def test_embeddings_float(oai: openai.OpenAI) -> None:
    inputs = ["the quick brown fox", "jumps over", "the quick brown fox"]
    result = oai.embeddings.create(model=OPENAI_MODEL, input=inputs, encoding_format="float")
    assert result.object == "list"
    assert result.model == served_model(OPENAI_MODEL)
    assert [d.index for d in result.data] == [0, 1, 2]
    vectors = [d.embedding for d in result.data]
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) > 0
    for v in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4)  # unit vectors
    assert vectors[0] == vectors[2] != vectors[1]  # deterministic per input
    assert result.usage.prompt_tokens == sum(tokens(i) for i in inputs)
    assert result.usage.total_tokens == result.usage.prompt_tokens


def test_embeddings_sdk_default_and_base64_agree(oai: openai.OpenAI) -> None:
    """The SDK's default request (base64 on the wire when it chooses so) decodes to the same
    vector as an explicit float request; `dimensions` is forwarded."""
    as_float = oai.embeddings.create(model=OPENAI_MODEL, input="hello", dimensions=16, encoding_format="float")
    default = oai.embeddings.create(model=OPENAI_MODEL, input="hello", dimensions=16)
    raw_b64 = oai.embeddings.create(model=OPENAI_MODEL, input="hello", dimensions=16, encoding_format="base64")
    assert len(as_float.data[0].embedding) == 16
    assert default.data[0].embedding == pytest.approx(as_float.data[0].embedding, rel=1e-6)
    encoded = raw_b64.data[0].embedding
    if isinstance(encoded, str):  # the SDK hands base64 back untouched when asked for it explicitly
        decoded = list(struct.unpack("<16f", base64.b64decode(encoded)))
    else:
        decoded = encoded
    assert decoded == pytest.approx(as_float.data[0].embedding, rel=1e-6)


def test_embeddings_refused_for_anthropic_target(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model=ANTHROPIC_MODEL, input="hello", encoding_format="float")
    assert info.value.status_code == 400
    assert "embeddings" in info.value.message


# ---------------------------------------------------------------------------------------------
# Errors: the SDK's exception classes, from the status and the OpenAI error shape
# ---------------------------------------------------------------------------------------------


def error_body(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"]), body
    assert exc.response.headers["content-type"].startswith("application/json")
    assert exc.response.headers["x-request-id"].startswith("req_")
    return body["error"]


@pytest.mark.parametrize("model", MODELS)
def test_bad_key_is_authentication_error(gateway: Any, model: str) -> None:
    client = gateway.openai(api_key="sk-sluice-not-a-real-key")
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model=model, messages=user("hi"))
    assert info.value.status_code == 401
    err = error_body(info.value)
    assert err["code"] == "invalid_api_key"
    assert "sk-sluice-not-a-real-key" not in info.value.response.text, "the presented key is never echoed"
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_unknown_model_is_not_found(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="no-such-model", messages=user("hi"))
    assert info.value.status_code == 404
    err = error_body(info.value)
    assert err["code"] == "model_not_found"
    assert "no-such-model" in err["message"]


def test_unsupported_parameter_for_anthropic_target(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=ANTHROPIC_MODEL, messages=user("two please"), n=2)
    assert info.value.status_code == 400
    err = error_body(info.value)
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "unsupported_parameter"
    assert err["param"] == "n"
    assert "`n`" in err["message"] and "anthropic" in err["message"]


def test_n_passes_through_to_openai_target(oai: openai.OpenAI) -> None:
    # The same parameter is fine where the target honours it: refused only where unsupported.
    reply = oai.chat.completions.create(model=OPENAI_MODEL, messages=user("two please"), n=2)
    assert reply.choices and all(c.message.content == echo("two please") for c in reply.choices)


def test_invalid_body_is_bad_request(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[list-item]
    err = error_body(info.value)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == "messages[0].role"
    assert "wizard" in err["message"]


@pytest.mark.parametrize("model", MODELS)
def test_rate_limit_with_retry_after(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=model, messages=user("hi\n#mock status=429 retry_after=2"))
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "2"
    assert error_body(info.value)["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("upstream", "expected"), [(500, 502), (529, 503), (503, 503)])
def test_upstream_failures_are_server_errors(oai: openai.OpenAI, model: str, upstream: int, expected: int) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model=model, messages=user(f"hi\n#mock status={upstream}"))
    assert info.value.status_code == expected
    assert error_body(info.value)["type"] == "server_error"
    if expected == 503:
        assert int(info.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("model", MODELS)
def test_malformed_upstream_is_bad_gateway(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model=model, messages=user("hi\n#mock malformed"))
    assert info.value.status_code == 502


@pytest.mark.parametrize("model", MODELS)
def test_error_before_stream_is_a_status_error(oai: openai.OpenAI, model: str) -> None:
    # Errors the upstream sends before a stream starts are ordinary HTTP errors for the client.
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=model, messages=user("hi\n#mock status=429 retry_after=3"), stream=True)
    assert info.value.response.headers["retry-after"] == "3"


@pytest.mark.parametrize("model", MODELS)
def test_stream_cut_midway_raises(oai: openai.OpenAI, model: str) -> None:
    stream = oai.chat.completions.create(
        model=model, messages=user("a long message to cut\n#mock cut_after=6"), stream=True
    )
    received: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    # Some content arrived before the cut, and nothing claimed a clean finish.
    assert received, "the cut happens after the first events"
    assert not any(c.choices and c.choices[0].finish_reason for c in received)
    assert not isinstance(info.value, openai.APIStatusError) or info.value.status_code == 200
    assert info.value.message


@pytest.mark.parametrize("model", MODELS)
def test_stream_malformed_event_raises(oai: openai.OpenAI, model: str) -> None:
    # The mock's second event is not JSON: that is before the first content event, which the
    # gateway waits for before it starts the client's stream, so the client gets a clean 502
    # (and a route with a fallback would have moved on) instead of a stream that breaks.
    with pytest.raises(openai.APIStatusError) as info:
        list(oai.chat.completions.create(model=model, messages=user("hi\n#mock malformed"), stream=True))
    assert info.value.status_code == 502
    assert info.value.code == "upstream_malformed_response"


# ---------------------------------------------------------------------------------------------
# Raw responses: provenance headers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_raw_response_provenance_headers(oai: openai.OpenAI, model: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=model, messages=user("headers"))
    assert raw.status_code == 200
    assert_provenance(raw.headers, model)
    completion = raw.parse()
    assert completion.model == raw.headers["x-sluice-served-model"]
    assert completion.choices[0].message.content == echo("headers")


@pytest.mark.parametrize("model", MODELS)
def test_streaming_response_provenance_headers(oai: openai.OpenAI, model: str) -> None:
    with oai.chat.completions.with_streaming_response.create(
        model=model, messages=user("stream headers"), stream=True
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert_provenance(response.headers, model)
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == echo("stream headers")


def test_embeddings_provenance_headers(oai: openai.OpenAI) -> None:
    raw = oai.embeddings.with_raw_response.create(model=OPENAI_MODEL, input="x", encoding_format="float")
    assert_provenance(raw.headers, OPENAI_MODEL)


def test_request_ids_are_unique(oai: openai.OpenAI) -> None:
    ids = {
        oai.chat.completions.with_raw_response.create(model=m, messages=user("id")).headers["x-request-id"]
        for m in MODELS * 3
    }
    assert len(ids) == 6


# ---------------------------------------------------------------------------------------------
# Request records: `sluice logs --json` has one faithful record per request
# ---------------------------------------------------------------------------------------------


def test_records_describe_each_request(gateway: Any, oai: openai.OpenAI) -> None:
    made: dict[str, dict[str, Any]] = {}

    for model in MODELS:
        raw = oai.chat.completions.with_raw_response.create(model=model, messages=user("record me"))
        made[raw.headers["x-request-id"]] = {"model": model, "stream": False, "status": 200}
        with oai.chat.completions.with_streaming_response.create(
            model=model, messages=user("record my stream"), stream=True
        ) as response:
            for _ in response.parse():
                pass
            made[response.headers["x-request-id"]] = {"model": model, "stream": True, "status": 200}
        with pytest.raises(openai.RateLimitError) as info:
            oai.chat.completions.create(model=model, messages=user("#mock status=429"))
        made[info.value.response.headers["x-request-id"]] = {"model": model, "stream": False, "status": 429}

    records = gateway.wait_records(list(made))
    for rid, want in made.items():
        rec = records[rid]
        assert rec["endpoint"] == "chat.completions"
        assert rec["dialect"] == "openai"
        assert rec["alias"] == want["model"]
        assert rec["stream"] is want["stream"]
        assert rec["status"] == want["status"]
        assert len(rec["attempts"]) == 1
        if want["status"] == 200:
            assert rec["served_model"] == served_model(want["model"])
            assert rec["error_code"] is None
            assert rec["usage_estimated"] is False
            assert rec["input_tokens"] == tokens("record me" if not want["stream"] else "record my stream")
            assert rec["output_tokens"] == tokens(echo("record me" if not want["stream"] else "record my stream"))
            assert rec["attempts"][0]["outcome"] == "ok"
        else:
            assert rec["error_code"] == "rate_limit_exceeded"
            assert rec["attempts"][0]["status"] == 429


# ---------------------------------------------------------------------------------------------
# Images, concurrency, estimated usage
# ---------------------------------------------------------------------------------------------

# A 1x1 transparent PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@pytest.mark.parametrize("model", MODELS)
def test_image_part_is_accepted(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}", "detail": "low"}},
                    {"type": "text", "text": "what is in the picture?"},
                ],
            }
        ],
    )
    assert reply.choices[0].message.content == echo("what is in the picture?")


@pytest.mark.parametrize("model", MODELS)
def test_stream_without_upstream_usage_is_estimated(gateway: Any, oai: openai.OpenAI, model: str) -> None:
    prompt = "hi\n#mock no_usage"
    with oai.chat.completions.with_streaming_response.create(
        model=model, messages=user(prompt), stream=True, stream_options={"include_usage": True}
    ) as response:
        rid = response.headers["x-request-id"]
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == echo(prompt)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    record = gateway.wait_records([rid])[rid]
    assert record["usage_estimated"] is True
    assert record["output_tokens"] and record["output_tokens"] > 0
    assert record["input_tokens"] and record["input_tokens"] > 0


def test_concurrent_requests_do_not_mix(gateway: Any, oai: openai.OpenAI, ant: Any) -> None:
    """Many requests in flight at once, both SDKs and both models: each answer is its own."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[str, str, str]:
        model = MODELS[i % 2]
        prompt = f"request number {i}"
        if i % 4 < 2:
            with oai.chat.completions.with_streaming_response.create(
                model=model, messages=user(prompt), stream=(i % 3 == 0)
            ) as response:
                if i % 3 == 0:
                    text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
                else:
                    text = response.parse().choices[0].message.content or ""
                return prompt, text, response.headers["x-sluice-alias"]
        raw = ant.messages.with_raw_response.create(model=model, max_tokens=100, messages=user(prompt))
        return prompt, raw.parse().content[0].text, raw.headers["x-sluice-alias"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(24)))
    for i, (prompt, text, alias) in enumerate(results):
        assert text == echo(prompt)
        assert alias == MODELS[i % 2]
