"""Tool policy through both official SDKs, against `sluice serve --config` with a `[tool_policy]`
section (docs/tool-policy.md): a user key cannot get a `drop_database` call through, in either
dialect, whole or streamed; the SDK sees an ordinary answer explaining why. A key with the
`operator` role gets the call unchanged.

The gateway here is this module's own (`sluice mock` + `sluice serve`), started once.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any, Iterator

import anthropic
import openai
import pytest

from conftest import Gateway, Process, clean_env, sluice_bin

POLICY_TOML = """
[server]
listen = "127.0.0.1:0"

[store]
path = "sluice.db"

[providers.mock-openai]
type = "openai"
base_url = "{mock}/v1"
api_key_env = "SLUICE_TEST_MOCK_KEY"

[providers.mock-anthropic]
type = "anthropic"
base_url = "{mock}/v1"
api_key_env = "SLUICE_TEST_MOCK_KEY"

[deployments.gpt]
provider = "mock-openai"
model = "gpt-4o-mini"

[deployments.claude]
provider = "mock-anthropic"
model = "claude-sonnet-4-5"

[aliases.gpt-4o-mini]
deployments = ["gpt"]

[aliases.claude-sonnet-4-5]
deployments = ["claude"]

[tool_policy]
default_tools = ["drop_database", "search"]

[tool_policy.roles.operator]
tools = ["*"]

[[tool_policy.rules]]
name = "no-drop"
tools = ["drop_database"]
unless_role = ["operator"]
"""

MODELS = ["gpt-4o-mini", "claude-sonnet-4-5"]
EXPLANATION = (
    "[sluice] the call to `drop_database` was blocked by tool policy rule `no-drop`: "
    "it needs the `operator` role."
)
DROP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}
OPENAI_TOOL = {"type": "function", "function": {"name": "drop_database", "parameters": DROP_SCHEMA}}
ANTHROPIC_TOOL = {"name": "drop_database", "input_schema": DROP_SCHEMA}
OPENAI_FORCE = {"type": "function", "function": {"name": "drop_database"}}
ANTHROPIC_FORCE = {"type": "tool", "name": "drop_database"}
PROMPT = [{"role": "user", "content": "drop the prod database"}]


@pytest.fixture(scope="module")
def policy_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str, str]]:
    """The gateway, a user key's secret and an operator key's secret."""
    binary = sluice_bin()
    cwd = tmp_path_factory.mktemp("sluice-tool-policy")
    env = clean_env(SLUICE_TEST_MOCK_KEY="mock")
    mock = Process([str(binary), "mock", "--listen", "127.0.0.1:0"], cwd, env, "sluice-mock")
    try:
        found = re.search(r"http://127\.0\.0\.1:\d+", mock.ready_line())
        assert found, "`sluice mock` did not print its address"
        config = cwd / "sluice.toml"
        config.write_text(POLICY_TOML.format(mock=found.group(0)))
        check = subprocess.run(
            [str(binary), "--config", str(config), "check-config"], cwd=cwd, env=env, capture_output=True, text=True
        )
        assert check.returncode == 0, f"check-config rejected the configuration:\n{check.stderr}"
        server = Process(
            [str(binary), "--config", str(config), "serve", "--listen", "127.0.0.1:0"], cwd, env, "sluice-serve"
        )
        try:
            line = server.ready_line()
            found = re.fullmatch(r"sluice listening on (http://\S+)\s*", line)
            assert found, f"unexpected first line from `sluice serve`: {line!r}"
            gw = Gateway(base_url=found.group(1).rstrip("/"), api_key="", cwd=cwd, bin=binary, env=env, config=config)
            user = gw.create_key("--name", "user", "--role", "user")["secret"]
            operator = gw.create_key("--name", "ops", "--role", "operator")["secret"]
            gw.api_key = user
            yield gw, user, operator
        finally:
            code = server.stop()
        assert code == 0, f"sluice serve exited with {code} after SIGTERM\n{server.stderr()}"
    finally:
        mock.stop()


def blocked_in_record(gw: Gateway, rid: str) -> None:
    record = gw.wait_records([rid])[rid]
    decisions = record["policy"]
    assert {"policy": "tool_policy", "rule": "no-drop", "action": "block", "place": "tool_call", "count": 1} in decisions, record


@pytest.mark.parametrize("model", MODELS)
def test_user_key_cannot_get_drop_database_through_openai_sdk(policy_gateway: Any, model: str) -> None:
    gw, user, _ = policy_gateway
    raw = gw.openai(user).chat.completions.with_raw_response.create(
        model=model, messages=PROMPT, tools=[OPENAI_TOOL], tool_choice=OPENAI_FORCE
    )
    assert raw.headers["x-sluice-policy"] == "tool_policy:no-drop:block:tool_call=1"
    choice = raw.parse().choices[0]
    assert not choice.message.tool_calls
    assert choice.message.content == EXPLANATION
    assert choice.finish_reason == "stop"
    blocked_in_record(gw, raw.headers["x-request-id"])

    stream = gw.openai(user).chat.completions.create(
        model=model, messages=PROMPT, tools=[OPENAI_TOOL], tool_choice=OPENAI_FORCE, stream=True
    )
    rid = stream.response.headers["x-request-id"]
    text, calls, finish = "", 0, []
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            calls += len(c.delta.tool_calls or [])
            if c.finish_reason:
                finish.append(c.finish_reason)
    assert (text, calls, finish) == (EXPLANATION, 0, ["stop"])
    blocked_in_record(gw, rid)


@pytest.mark.parametrize("model", MODELS)
def test_user_key_cannot_get_drop_database_through_anthropic_sdk(policy_gateway: Any, model: str) -> None:
    gw, user, _ = policy_gateway
    raw = gw.anthropic(user).messages.with_raw_response.create(
        model=model, max_tokens=100, messages=PROMPT, tools=[ANTHROPIC_TOOL], tool_choice=ANTHROPIC_FORCE
    )
    message = raw.parse()
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == EXPLANATION
    assert message.stop_reason == "end_turn"
    blocked_in_record(gw, raw.headers["x-request-id"])

    with gw.anthropic(user).messages.stream(
        model=model, max_tokens=100, messages=PROMPT, tools=[ANTHROPIC_TOOL], tool_choice=ANTHROPIC_FORCE
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        rid = stream.response.headers["x-request-id"]
    assert text == EXPLANATION
    assert [b.type for b in final.content] == ["text"]
    assert final.stop_reason == "end_turn"
    blocked_in_record(gw, rid)


@pytest.mark.parametrize("model", MODELS)
def test_operator_key_gets_drop_database_through_both_sdks(policy_gateway: Any, model: str) -> None:
    gw, _, operator = policy_gateway
    reply = gw.openai(operator).chat.completions.create(
        model=model, messages=PROMPT, tools=[OPENAI_TOOL], tool_choice=OPENAI_FORCE
    )
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["drop_database"]
    assert "name" in json.loads(calls[0].function.arguments)
    assert reply.choices[0].finish_reason == "tool_calls"

    message = gw.anthropic(operator).messages.create(
        model=model, max_tokens=100, messages=PROMPT, tools=[ANTHROPIC_TOOL], tool_choice=ANTHROPIC_FORCE
    )
    assert [(b.type, getattr(b, "name", None)) for b in message.content] == [("tool_use", "drop_database")]
    assert message.stop_reason == "tool_use"


def test_offering_a_tool_outside_the_keys_list_is_refused(policy_gateway: Any) -> None:
    gw, user, _ = policy_gateway
    shell = {"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as oinfo:
        gw.openai(user).chat.completions.create(model=MODELS[0], messages=PROMPT, tools=[shell])
    assert oinfo.value.response.json()["error"]["code"] == "policy_blocked"
    assert "`shell`" in oinfo.value.message
    with pytest.raises(anthropic.BadRequestError) as ainfo:
        gw.anthropic(user).messages.create(
            model=MODELS[1], max_tokens=10, messages=PROMPT, tools=[{"name": "shell", "input_schema": {"type": "object"}}]
        )
    assert "`shell`" in ainfo.value.message
