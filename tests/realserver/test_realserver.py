"""The official OpenAI and Anthropic SDKs through `sluice serve` to a real model server
(llama-cpp-python's OpenAI-compatible server, SmolLM2-135M-Instruct): plain, streaming, tools,
errors, in both dialects. Text is compared at `temperature: 0` (greedy decoding, deterministic).

Generations are kept to a few tokens: the model runs on the test machine's CPU.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from conftest import MODEL, Llama

TIMEOUT = 180.0
# The Anthropic SDK no longer takes `temperature` as an argument; the API (and Sluice) still do.
GREEDY = {"temperature": 0}
MAX_TOKENS = 12
SYSTEM = "You are a helpful assistant. Answer briefly."
QUESTION = "What is the capital of France?"
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}

# Texts for the token estimate (English prose and code), against the server's own count.
PROSE = (
    "The river had been rising for three days before anyone in the village thought to move the "
    "boats. By the time the council met in the old schoolhouse, the water had already crossed the "
    "lower road and was lapping at the steps of the bakery. Maria, who had lived through the flood "
    "of 1987, argued that they should open the sluice gates upstream and let the meadow take the "
    "overflow. The mayor worried about the farmers, whose winter wheat would be ruined, and about "
    "the insurance company, which had already refused two claims that year."
)
CODE = '''def settle(hold, usage, prices):
    """Settles a budget hold to the actual cost of a request."""
    if usage is None:
        return hold.release()
    cost = usage.input_tokens * prices.input + usage.output_tokens * prices.output
    for scope in hold.scopes:
        scope.spent += cost
        if scope.spent > scope.limit:
            log.warning("scope %s over its limit by %d", scope.name, scope.spent - scope.limit)
    return {"cost_micros": cost, "scopes": [s.name for s in hold.scopes]}
'''


@pytest.fixture(scope="module")
def oai(gateway: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=gateway.api_key, max_retries=0, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def ant(gateway: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=gateway.api_key, max_retries=0, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def direct(llama: Llama) -> openai.OpenAI:
    """The same SDK straight to the model server, for comparison."""
    return openai.OpenAI(base_url=llama.base_url, api_key="unused", max_retries=0, timeout=TIMEOUT)


def chat(system: str = SYSTEM, question: str = QUESTION) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def anthropic_text(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


# ---- plain ------------------------------------------------------------------------------------


def test_openai_answer_is_the_servers_answer(oai: openai.OpenAI, direct: openai.OpenAI) -> None:
    through = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=chat(), max_tokens=MAX_TOKENS, temperature=0
    )
    reply = through.parse()
    straight = direct.chat.completions.create(model=MODEL, messages=chat(), max_tokens=MAX_TOKENS, temperature=0)
    assert reply.choices[0].message.content == straight.choices[0].message.content
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and straight.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        straight.usage.prompt_tokens,
        straight.usage.completion_tokens,
    )
    assert through.headers["x-sluice-provider"] == "llama"
    assert through.headers["x-sluice-served-model"] == MODEL


def test_anthropic_answer_is_the_same_text(ant: anthropic.Anthropic, direct: openai.OpenAI) -> None:
    message = ant.messages.create(
        model=MODEL, system=SYSTEM, max_tokens=MAX_TOKENS, extra_body=GREEDY,
        messages=[{"role": "user", "content": QUESTION}],
    )
    straight = direct.chat.completions.create(model=MODEL, messages=chat(), max_tokens=MAX_TOKENS, temperature=0)
    assert anthropic_text(message) == straight.choices[0].message.content
    # An Anthropic-shaped id, not the server's `chatcmpl-...`.
    assert message.id.startswith("msg_"), message.id
    assert message.type == "message" and message.role == "assistant"
    expected_stop = {"stop": "end_turn", "length": "max_tokens"}[straight.choices[0].finish_reason]
    assert message.stop_reason == expected_stop
    assert straight.usage is not None
    assert message.usage.input_tokens == straight.usage.prompt_tokens
    assert message.usage.output_tokens == straight.usage.completion_tokens


def test_stop_sequence_is_honoured(ant: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    free = oai.chat.completions.create(
        model=MODEL, messages=chat(), max_tokens=MAX_TOKENS, temperature=0
    ).choices[0].message.content
    assert free and " " in free.strip()
    # Stop at the second word of the free answer: the text is cut before it.
    stop = free.strip().split()[1]
    message = ant.messages.create(
        model=MODEL, system=SYSTEM, max_tokens=MAX_TOKENS, extra_body=GREEDY, stop_sequences=[stop],
        messages=[{"role": "user", "content": QUESTION}],
    )
    text = anthropic_text(message)
    assert stop not in text
    assert free.startswith(text.rstrip()) or free.strip().startswith(text.strip())
    # llama.cpp reports `stop` for a natural end and a matched stop alike, without naming the
    # sequence: the gateway cannot tell which (docs/translation.md), so it claims no sequence.
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None


# ---- streaming --------------------------------------------------------------------------------


def test_openai_stream_matches_the_plain_answer(oai: openai.OpenAI, gateway: Any) -> None:
    plain = oai.chat.completions.create(model=MODEL, messages=chat(), max_tokens=MAX_TOKENS, temperature=0)
    stream = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=chat(), max_tokens=MAX_TOKENS, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    # The server sends no usage in streams: the gateway counts, and says the figure is estimated.
    record = gateway.wait_records([stream.headers["x-request-id"]])[stream.headers["x-request-id"]]
    assert record["usage_estimated"] is True
    assert plain.usage is not None
    report_error("streamed answer, input", record["input_tokens"], plain.usage.prompt_tokens)
    report_error("streamed answer, output", record["output_tokens"], plain.usage.completion_tokens)


def test_openai_stream_carries_usage_when_asked_even_if_the_server_sends_none(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=MODEL, messages=chat(), max_tokens=4, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens > 0
    # The server sent none: the gateway's estimate, and it says so.
    assert (usage[0].model_extra or {}).get("estimated") is True


def test_anthropic_stream_matches_the_plain_answer(ant: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = dict(
        model=MODEL, system=SYSTEM, max_tokens=MAX_TOKENS, extra_body=GREEDY,
        messages=[{"role": "user", "content": QUESTION}],
    )
    plain = ant.messages.create(**kwargs)
    events = []
    with ant.messages.stream(**kwargs) as stream:
        for event in stream:
            events.append(event.type)
        final = stream.get_final_message()
    assert anthropic_text(final) == anthropic_text(plain)
    assert final.id.startswith("msg_")
    assert final.stop_reason == plain.stop_reason
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events


# ---- tools ------------------------------------------------------------------------------------


def test_openai_forced_tool_call(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=40,
        messages=[{"role": "user", "content": "What is the weather in Paris, in celsius?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    arguments = json.loads(calls[0].function.arguments)
    assert isinstance(arguments.get("city"), str) and arguments["city"]


def test_anthropic_tool_round_trip(ant: anthropic.Anthropic) -> None:
    tools: list[Any] = [{"name": "get_weather", "description": "Current weather", "input_schema": WEATHER}]
    question = {"role": "user", "content": "What is the weather in Paris, in celsius?"}
    first = ant.messages.create(
        model=MODEL, extra_body=GREEDY, max_tokens=40, tools=tools,
        tool_choice={"type": "tool", "name": "get_weather"}, messages=[question],
    )
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input, dict) and use.input.get("city")
    # The assistant turn that only called a tool goes back to the server (as `content: ""`:
    # llama.cpp's server rejects `null`), with the tool's result.
    second = ant.messages.create(
        model=MODEL, extra_body=GREEDY, max_tokens=MAX_TOKENS, tools=tools,
        messages=[
            question,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C and sunny"}]},
        ],
    )
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert second.content


# ---- errors -----------------------------------------------------------------------------------


def test_context_overflow_is_a_bad_request_in_each_dialect(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    too_long = "word " * 3000  # over the server's 2,048-token context
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": too_long}])
    assert "context" in str(caught.value.message).lower()
    with pytest.raises(anthropic.BadRequestError) as ant_caught:
        ant.messages.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": too_long}])
    assert ant_caught.value.response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_not_found_in_each_dialect(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-model", max_tokens=4, messages=chat())
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.create(model="no-such-model", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert oai.models.retrieve(MODEL).id == MODEL
    assert ant.models.retrieve(MODEL).id == MODEL


# ---- token estimates --------------------------------------------------------------------------


def report_error(what: str, estimate: int, real: int) -> float:
    error = (estimate - real) / real
    print(f"\n[token estimate] {what}: estimated {estimate}, server counted {real}, error {error:+.1%}")
    return error


@pytest.mark.parametrize("name,text", [("English prose", PROSE), ("code", CODE)])
def test_input_estimate_is_within_ten_percent_of_the_servers_count(
    ant: anthropic.Anthropic, name: str, text: str
) -> None:
    kwargs: dict[str, Any] = dict(model=MODEL, system=SYSTEM, messages=[{"role": "user", "content": text}])
    counted = ant.messages.with_raw_response.count_tokens(**kwargs)
    # The server has no count endpoint: the gateway estimates, and says so.
    assert counted.headers["x-sluice-token-count"] == "estimated"
    real = ant.messages.create(max_tokens=1, extra_body=GREEDY, **kwargs).usage.input_tokens
    error = report_error(f"input, {name}", counted.parse().input_tokens, real)
    assert abs(error) <= 0.10


def test_server_is_reachable_without_the_gateway(llama: Llama) -> None:
    """Guards the comparisons above: they compare with this very server."""
    assert httpx2.get(llama.base_url + "/models", timeout=10).json()["data"][0]["id"] == MODEL
