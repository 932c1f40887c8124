"""The official Anthropic Python SDK against the real gateway.

Every behaviour runs for both demo aliases: `claude-sonnet-4-5` (an Anthropic-dialect upstream:
the gateway passes bytes through) and `gpt-4o-mini` (an OpenAI-dialect upstream: the gateway
translates Anthropic -> OpenAI and back).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import anthropic
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

WEATHER_TOOL = {"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}
TIME_TOOL = {
    "name": "get_time",
    "description": "Local time in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
MAX_TOKENS = 256


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def texts(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


# ---------------------------------------------------------------------------------------------
# Plain messages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_message(ant: anthropic.Anthropic, model: str) -> None:
    prompt = "Say hello to the gateway"
    message = ant.messages.create(model=model, max_tokens=MAX_TOKENS, messages=user(prompt))
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id
    assert message.model == served_model(model)
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == echo(prompt)
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens == tokens(prompt)
    assert message.usage.output_tokens == tokens(echo(prompt))


@pytest.mark.parametrize("model", MODELS)
def test_system_and_history_count_as_input(ant: anthropic.Anthropic, model: str) -> None:
    system = "You are terse."
    messages = [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": [{"type": "text", "text": "Second question"}]},
    ]
    message = ant.messages.create(
        model=model,
        max_tokens=MAX_TOKENS,
        system=system,
        messages=messages,
        # Sampling parameters are no longer keyword arguments of this SDK version.
        extra_body={"temperature": 0.3, "top_p": 0.9},
    )
    assert texts(message) == echo("Second question")
    input_chars = len(system) + len("First question") + len("First answer") + len("Second question")
    assert message.usage.input_tokens == math.ceil(input_chars / 4)


@pytest.mark.parametrize("model", MODELS)
def test_max_tokens_stop_reason(ant: anthropic.Anthropic, model: str) -> None:
    message = ant.messages.create(model=model, max_tokens=3, messages=user("a long enough prompt"))
    assert message.stop_reason == "max_tokens"
    assert texts(message) == echo("a long enough prompt")[:12]
    assert message.usage.output_tokens == 3


@pytest.mark.parametrize("model", MODELS)
def test_exact_text_directive(ant: anthropic.Anthropic, model: str) -> None:
    message = ant.messages.create(
        model=model, max_tokens=MAX_TOKENS, messages=user("ignored\n#mock text=Exactly this, with ünïcode ✓")
    )
    assert texts(message) == "Exactly this, with ünïcode ✓"


# A 1x1 transparent PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@pytest.mark.parametrize("model", MODELS)
def test_image_block_is_accepted(ant: anthropic.Anthropic, model: str) -> None:
    message = ant.messages.create(
        model=model,
        max_tokens=MAX_TOKENS,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                    {"type": "text", "text": "what is in the picture?"},
                ],
            }
        ],
    )
    assert texts(message) == echo("what is in the picture?")


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_stream_text_and_final_message(ant: anthropic.Anthropic, model: str) -> None:
    prompt = "Stream, please"
    with ant.messages.stream(model=model, max_tokens=MAX_TOKENS, messages=user(prompt)) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1, "the text arrives in several deltas"
    assert "".join(pieces) == echo(prompt)
    assert final.model == served_model(model)
    assert texts(final) == echo(prompt)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == tokens(prompt)
    assert final.usage.output_tokens == tokens(echo(prompt))


@pytest.mark.parametrize("model", MODELS)
def test_stream_event_sequence(ant: anthropic.Anthropic, model: str) -> None:
    """The raw events follow Anthropic's documented order."""
    stream = ant.messages.create(model=model, max_tokens=MAX_TOKENS, messages=user("events"), stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1:-2].count("content_block_start") == 1
    assert kinds[1:-2].count("content_block_stop") == 1
    start, stop = kinds.index("content_block_start"), kinds.index("content_block_stop")
    assert set(kinds[start + 1 : stop]) == {"content_block_delta"}
    assert events[0].message.model == served_model(model)  # type: ignore[union-attr]
    assert events[0].message.content == []  # type: ignore[union-attr]
    delta = events[-2]
    assert delta.delta.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert delta.usage.output_tokens == tokens(echo("events"))  # type: ignore[union-attr]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]
    assert text == echo("events")


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_tool_use_round_trip(ant: anthropic.Anthropic, model: str) -> None:
    messages: list[Any] = user("What is the weather in Lisbon?")
    first = ant.messages.create(model=model, max_tokens=MAX_TOKENS, messages=messages, tools=[WEATHER_TOOL, TIME_TOOL])
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.id
    assert use.name == "get_weather"
    assert isinstance(use.input, dict)
    validate(use.input, WEATHER_SCHEMA)

    messages.append({"role": "assistant", "content": first.content})
    messages.append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 degrees and sunny"}]}
    )
    second = ant.messages.create(model=model, max_tokens=MAX_TOKENS, messages=messages, tools=[WEATHER_TOOL, TIME_TOOL])
    assert second.stop_reason == "end_turn"
    assert texts(second) == TOOL_ECHO + "18 degrees and sunny"
    assert not [b for b in second.content if b.type == "tool_use"]
    assert second.usage.input_tokens > first.usage.input_tokens


@pytest.mark.parametrize("model", MODELS)
def test_tool_result_as_blocks(ant: anthropic.Anthropic, model: str) -> None:
    first = ant.messages.create(model=model, max_tokens=MAX_TOKENS, messages=user("weather?"), tools=[WEATHER_TOOL])
    use = next(b for b in first.content if b.type == "tool_use")
    second = ant.messages.create(
        model=model,
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL],
        messages=[
            *user("weather?"),
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": use.id,
                        "content": [{"type": "text", "text": "rainy"}],
                    }
                ],
            },
        ],
    )
    assert texts(second) == TOOL_ECHO + "rainy"


@pytest.mark.parametrize("model", MODELS)
def test_forced_tool_choice(ant: anthropic.Anthropic, model: str) -> None:
    message = ant.messages.create(
        model=model,
        max_tokens=MAX_TOKENS,
        messages=user("time in Oslo?"),
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "tool", "name": "get_time"},
    )
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [u.name for u in uses] == ["get_time"]
    validate(uses[0].input, TIME_TOOL["input_schema"])
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_use(ant: anthropic.Anthropic, model: str) -> None:
    with ant.messages.stream(
        model=model, max_tokens=MAX_TOKENS, messages=user("Weather in Porto?"), tools=[WEATHER_TOOL]
    ) as stream:
        partial_json = "".join(e.partial_json for e in stream if e.type == "input_json")
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id
    validate(uses[0].input, WEATHER_SCHEMA)
    assert json.loads(partial_json) == uses[0].input
    assert final.usage.output_tokens > 0


# ---------------------------------------------------------------------------------------------
# Structured output (Anthropic's own `output_config.format`)
# ---------------------------------------------------------------------------------------------


def test_output_config_json_schema_passthrough(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=1024,
        messages=user("Weather report for Madrid as JSON"),
        output_config={"format": {"type": "json_schema", "schema": REPORT_SCHEMA}},
    )
    validate(json.loads(texts(message)), REPORT_SCHEMA)


class Report(pydantic.BaseModel):
    city: str
    temperature_c: float
    conditions: list[str]
    note: Optional[str]


def test_parse_with_pydantic_model(ant: anthropic.Anthropic) -> None:
    message = ant.messages.parse(
        model=ANTHROPIC_MODEL, max_tokens=1024, messages=user("Weather report for Rome"), output_format=Report
    )
    assert isinstance(message.parsed_output, Report)


def test_output_config_refused_for_openai_target(ant: anthropic.Anthropic) -> None:
    # An Anthropic-only field cannot be honoured by an OpenAI-dialect upstream: refused, not dropped.
    with pytest.raises(anthropic.BadRequestError) as info:
        ant.messages.create(
            model=OPENAI_MODEL,
            max_tokens=256,
            messages=user("JSON please"),
            output_config={"format": {"type": "json_schema", "schema": REPORT_SCHEMA}},
        )
    assert info.value.type == "invalid_request_error"
    assert "output_config" in (info.value.api_message or "")


# ---------------------------------------------------------------------------------------------
# count_tokens and models
# ---------------------------------------------------------------------------------------------


def test_count_tokens_from_provider(ant: anthropic.Anthropic) -> None:
    prompt = "How many tokens is this?"
    raw = ant.messages.with_raw_response.count_tokens(model=ANTHROPIC_MODEL, messages=user(prompt), system="Be brief.")
    count = raw.parse()
    assert count.input_tokens == math.ceil((len(prompt) + len("Be brief.")) / 4)
    assert "x-sluice-token-count" not in raw.headers, "an Anthropic deployment counts for itself"
    # A count carries no model from the provider: the served model is the deployment's.
    assert_provenance(raw.headers, ANTHROPIC_MODEL, served=ANTHROPIC_MODEL)


def test_count_tokens_estimated_for_openai_target(ant: anthropic.Anthropic) -> None:
    short = ant.messages.with_raw_response.count_tokens(model=OPENAI_MODEL, messages=user("short"))
    long = ant.messages.count_tokens(model=OPENAI_MODEL, messages=user("a much longer message " * 20))
    assert short.headers["x-sluice-token-count"] == "estimated"
    assert short.headers["x-sluice-alias"] == OPENAI_MODEL
    assert 0 < short.parse().input_tokens < long.input_tokens


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens_with_tools(ant: anthropic.Anthropic, model: str) -> None:
    bare = ant.messages.count_tokens(model=model, messages=user("weather?"))
    with_tools = ant.messages.count_tokens(model=model, messages=user("weather?"), tools=[WEATHER_TOOL])
    if model == OPENAI_MODEL:
        # The gateway's estimate counts tool definitions.
        assert with_tools.input_tokens > bare.input_tokens
    else:
        # The mock's own count ignores tool definitions; the request must still be accepted.
        assert with_tools.input_tokens >= bare.input_tokens


def test_models_list(ant: anthropic.Anthropic) -> None:
    page = ant.models.list()
    models = list(page)
    assert sorted(m.id for m in models) == sorted(DEMO_MODELS)
    for m in models:
        assert m.type == "model"
        assert m.display_name
        assert m.lifecycle == "active"
        # The time the gateway loaded its configuration, not the Unix epoch.
        assert m.created_at.tzinfo is not None
        assert m.created_at > datetime.now(timezone.utc) - timedelta(days=1)
    assert page.has_more is False
    assert page.first_id == models[0].id and page.last_id == models[-1].id


@pytest.mark.parametrize("model", MODELS)
def test_models_retrieve(ant: anthropic.Anthropic, model: str) -> None:
    info = ant.models.retrieve(model)
    assert (info.id, info.type, info.display_name) == (model, "model", model)
    assert info == next(m for m in ant.models.list() if m.id == model)


def test_models_retrieve_unknown_is_not_found(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        ant.models.retrieve("no-such-model")
    assert error_type(caught.value) == "not_found_error"


def test_models_retrieve_of_a_model_the_key_may_not_use_is_not_found(gateway: Any) -> None:
    scoped = gateway.create_key("--name", "scoped-models", "--alias", OPENAI_MODEL)
    client = gateway.anthropic(api_key=scoped["secret"])
    assert client.models.retrieve(OPENAI_MODEL).id == OPENAI_MODEL
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve(ANTHROPIC_MODEL)


# ---------------------------------------------------------------------------------------------
# Errors: the SDK's exception classes, from the status and the Anthropic error shape
# ---------------------------------------------------------------------------------------------


def error_type(exc: anthropic.APIStatusError) -> str:
    body = exc.response.json()
    assert body["type"] == "error", body
    assert set(body["error"]) >= {"type", "message"}
    assert exc.response.headers["x-request-id"].startswith("req_")
    assert exc.type == body["error"]["type"]
    return body["error"]["type"]


@pytest.mark.parametrize("model", MODELS)
def test_bad_key_is_authentication_error(gateway: Any, model: str) -> None:
    client = gateway.anthropic(api_key="sk-sluice-not-a-real-key")
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model=model, max_tokens=10, messages=user("hi"))
    assert info.value.status_code == 401
    assert error_type(info.value) == "authentication_error"
    assert "sk-sluice-not-a-real-key" not in info.value.response.text
    with pytest.raises(anthropic.AuthenticationError):
        client.models.list()
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.count_tokens(model=model, messages=user("hi"))


def test_unknown_model_is_not_found(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        ant.messages.create(model="no-such-model", max_tokens=10, messages=user("hi"))
    assert info.value.status_code == 404
    assert error_type(info.value) == "not_found_error"
    assert "no-such-model" in (info.value.api_message or "")


def test_missing_max_tokens_is_bad_request(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        ant.messages.create(model=ANTHROPIC_MODEL, messages=user("hi"), max_tokens=None)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert error_type(info.value) == "invalid_request_error"
    assert "max_tokens" in (info.value.api_message or "")


def test_unsupported_parameter_for_openai_target(ant: anthropic.Anthropic) -> None:
    # `top_k` has no OpenAI equivalent: refused rather than dropped.
    with pytest.raises(anthropic.BadRequestError) as info:
        ant.messages.create(model=OPENAI_MODEL, max_tokens=10, messages=user("hi"), extra_body={"top_k": 5})
    assert error_type(info.value) == "invalid_request_error"
    assert "top_k" in (info.value.api_message or "")
    # ... and accepted by the Anthropic target.
    ok = ant.messages.create(model=ANTHROPIC_MODEL, max_tokens=100, messages=user("hi"), extra_body={"top_k": 5})
    assert texts(ok) == echo("hi")


@pytest.mark.parametrize("model", MODELS)
def test_rate_limit_with_retry_after(ant: anthropic.Anthropic, model: str) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        ant.messages.create(model=model, max_tokens=10, messages=user("hi\n#mock status=429 retry_after=2"))
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "2"
    assert error_type(info.value) == "rate_limit_error"


@pytest.mark.parametrize("model", MODELS)
def test_upstream_500_is_bad_gateway(ant: anthropic.Anthropic, model: str) -> None:
    with pytest.raises(anthropic.InternalServerError) as info:
        ant.messages.create(model=model, max_tokens=10, messages=user("hi\n#mock status=500"))
    assert info.value.status_code == 502
    assert error_type(info.value) == "api_error"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("upstream", [529, 503])
def test_upstream_overload_is_service_unavailable(ant: anthropic.Anthropic, model: str, upstream: int) -> None:
    with pytest.raises(anthropic.InternalServerError) as info:
        ant.messages.create(model=model, max_tokens=10, messages=user(f"hi\n#mock status={upstream}"))
    assert info.value.status_code == 503
    assert isinstance(info.value, anthropic.ServiceUnavailableError)
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert error_type(info.value) == "overloaded_error"


@pytest.mark.parametrize("model", MODELS)
def test_malformed_upstream_is_bad_gateway(ant: anthropic.Anthropic, model: str) -> None:
    with pytest.raises(anthropic.InternalServerError) as info:
        ant.messages.create(model=model, max_tokens=10, messages=user("hi\n#mock malformed"))
    assert info.value.status_code == 502


@pytest.mark.parametrize("model", MODELS)
def test_error_before_stream_is_a_status_error(ant: anthropic.Anthropic, model: str) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        with ant.messages.stream(
            model=model, max_tokens=10, messages=user("hi\n#mock status=429 retry_after=3")
        ) as stream:
            stream.until_done()
    assert info.value.response.headers["retry-after"] == "3"


@pytest.mark.parametrize("model", MODELS)
def test_stream_cut_midway_raises(ant: anthropic.Anthropic, model: str) -> None:
    received: list[str] = []
    with pytest.raises(anthropic.APIError) as info:
        with ant.messages.stream(
            model=model, max_tokens=MAX_TOKENS, messages=user("a long message to cut\n#mock cut_after=6")
        ) as stream:
            for event in stream:
                received.append(event.type)
    assert received and received[0] == "message_start"
    assert "message_stop" not in received and "message_delta" not in received
    # The gateway ends the stream with Anthropic's `event: error`, which the SDK raises.
    assert isinstance(info.value, anthropic.APIStatusError)
    assert info.value.type == "api_error"


@pytest.mark.parametrize("model", MODELS)
def test_stream_malformed_event_raises(ant: anthropic.Anthropic, model: str) -> None:
    with pytest.raises(anthropic.APIError):
        with ant.messages.stream(model=model, max_tokens=MAX_TOKENS, messages=user("hi\n#mock malformed")) as stream:
            stream.until_done()


# ---------------------------------------------------------------------------------------------
# Raw responses: provenance headers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_raw_response_provenance_headers(ant: anthropic.Anthropic, model: str) -> None:
    raw = ant.messages.with_raw_response.create(model=model, max_tokens=MAX_TOKENS, messages=user("headers"))
    assert raw.status_code == 200
    assert_provenance(raw.headers, model)
    message = raw.parse()
    assert message.model == raw.headers["x-sluice-served-model"]
    assert texts(message) == echo("headers")


@pytest.mark.parametrize("model", MODELS)
def test_stream_provenance_headers(ant: anthropic.Anthropic, model: str) -> None:
    with ant.messages.stream(model=model, max_tokens=MAX_TOKENS, messages=user("stream headers")) as stream:
        headers = stream.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert_provenance(headers, model)
        assert stream.get_final_text() == echo("stream headers")


@pytest.mark.parametrize("model", MODELS)
def test_x_api_key_header_is_accepted(gateway: Any, model: str) -> None:
    """This SDK sends `Authorization: Bearer`; older Anthropic SDKs and raw clients send the key
    as `x-api-key` only, which the Anthropic routes accept too."""
    with gateway.http_client() as http:
        response = http.post(
            gateway.base_url + "/v1/messages",
            headers={"x-api-key": gateway.api_key, "anthropic-version": "2023-06-01"},
            json={"model": model, "max_tokens": 50, "messages": user("key")},
        )
        assert response.status_code == 200, response.text
        assert response.json()["content"][0]["text"] == echo("key")
        wrong = http.post(
            gateway.base_url + "/v1/messages",
            headers={"x-api-key": "sk-sluice-wrong", "anthropic-version": "2023-06-01"},
            json={"model": model, "max_tokens": 50, "messages": user("key")},
        )
        assert wrong.status_code == 401
        assert wrong.json()["error"]["type"] == "authentication_error"


# ---------------------------------------------------------------------------------------------
# Request records
# ---------------------------------------------------------------------------------------------


def test_records_describe_each_request(gateway: Any, ant: anthropic.Anthropic) -> None:
    made: dict[str, dict[str, Any]] = {}
    for model in MODELS:
        raw = ant.messages.with_raw_response.create(model=model, max_tokens=MAX_TOKENS, messages=user("record me"))
        made[raw.headers["x-request-id"]] = {"model": model, "endpoint": "messages", "stream": False, "status": 200}
        with ant.messages.stream(model=model, max_tokens=MAX_TOKENS, messages=user("record me")) as stream:
            stream.until_done()
            made[stream.response.headers["x-request-id"]] = {
                "model": model,
                "endpoint": "messages",
                "stream": True,
                "status": 200,
            }
        raw = ant.messages.with_raw_response.count_tokens(model=model, messages=user("record me"))
        made[raw.headers["x-request-id"]] = {
            "model": model,
            "endpoint": "messages.count_tokens",
            "stream": False,
            "status": 200,
        }
        with pytest.raises(anthropic.InternalServerError) as info:
            ant.messages.create(model=model, max_tokens=10, messages=user("#mock status=529"))
        made[info.value.response.headers["x-request-id"]] = {
            "model": model,
            "endpoint": "messages",
            "stream": False,
            "status": 503,
        }

    records = gateway.wait_records(list(made))
    for rid, want in made.items():
        rec = records[rid]
        assert rec["endpoint"] == want["endpoint"], rec
        assert rec["dialect"] == "anthropic"
        assert rec["alias"] == want["model"]
        assert rec["stream"] is want["stream"]
        assert rec["status"] == want["status"]
        assert rec["team"] == "demo"
        if want["endpoint"] == "messages" and want["status"] == 200:
            assert rec["served_model"] == served_model(want["model"])
            assert rec["input_tokens"] == tokens("record me")
            assert rec["output_tokens"] == tokens(echo("record me"))
            assert rec["usage_estimated"] is False
            assert [a["outcome"] for a in rec["attempts"]] == ["ok"]
        if want["status"] == 503:
            assert rec["error_code"]
            assert rec["attempts"][0]["status"] == 529
