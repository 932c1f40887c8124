"""DLP at egress through the official SDKs and the real binary (`configured_gateway`, aliases
`guarded` and `guarded-redact`; docs/dlp.md): an app that forgot to redact sends a card number,
an email and a cloud key; the provider never sees them, the user reads their own values back,
and the audit says what was found without showing it."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from sdk_support import echo

CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.com"
CLOUD_KEY = "AKIAIOSFODNN7EXAMPLE"
PROMPT = f"Charge card {CARD}, mail {EMAIL}, deploy with {CLOUD_KEY}"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def audit(gateway: Any, request_id: str) -> list[dict[str, Any]]:
    record = gateway.wait_records([request_id])[request_id]
    stored = json.dumps(record)
    for value in (CARD, EMAIL, CLOUD_KEY):
        assert value not in stored, stored
    return record.get("policy", [])


def test_the_provider_sees_redactions_and_the_audit_names_them_openai(configured_gateway: Any) -> None:
    client = configured_gateway.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="guarded-redact", messages=user(f"Charge card {CARD}, mail {EMAIL}")
    )
    answer = raw.parse()
    # The mock echoes what it received.
    assert answer.choices[0].message.content == echo(
        "Charge card [REDACTED:payment_card], mail [REDACTED:email]"
    )
    # In the order found in the text.
    assert raw.headers["x-sluice-policy"] == "dlp:payment_card:redact:request=1, dlp:email:redact:request=1"
    decisions = audit(configured_gateway, raw.headers["x-request-id"])
    assert {(d["rule"], d["action"], d["place"], d["count"]) for d in decisions} == {
        ("email", "redact", "request", 1),
        ("payment_card", "redact", "request", 1),
    }


@pytest.mark.parametrize("stream", [False, True])
def test_pseudonymised_values_come_back_to_the_user_openai(configured_gateway: Any, stream: bool) -> None:
    client = configured_gateway.openai()
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="guarded", messages=user(PROMPT), stream=True
        ) as response:
            request_id = response.headers["x-request-id"]
            text = "".join(
                chunk.choices[0].delta.content or ""
                for chunk in response.parse()
                if chunk.choices
            )
    else:
        raw = client.chat.completions.with_raw_response.create(model="guarded", messages=user(PROMPT))
        request_id = raw.headers["x-request-id"]
        text = raw.parse().choices[0].message.content
    assert text == echo(PROMPT)
    decisions = audit(configured_gateway, request_id)
    assert {(d["rule"], d["action"], d["place"]) for d in decisions} == {
        ("payment_card", "pseudonymise", "request"),
        ("email", "pseudonymise", "request"),
        ("secret", "pseudonymise", "request"),
    }


def test_pseudonymised_values_come_back_to_the_user_anthropic_stream(configured_gateway: Any) -> None:
    client = configured_gateway.anthropic()
    with client.messages.stream(model="guarded", max_tokens=256, messages=user(PROMPT)) as stream:
        text = "".join(stream.text_stream)
        request_id = stream.response.headers["x-request-id"]
    assert text == echo(PROMPT)
    assert len(audit(configured_gateway, request_id)) == 3


def test_a_blocked_value_is_refused_in_each_dialect(configured_gateway: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        configured_gateway.openai().chat.completions.create(model="guarded-redact", messages=user(PROMPT))
    error = info.value.response.json()["error"]
    assert error["code"] == "policy_blocked"
    assert "`secret`" in error["message"] and CLOUD_KEY not in error["message"]
    assert audit(configured_gateway, info.value.response.headers["x-request-id"])[-1]["action"] == "block"

    with pytest.raises(anthropic.BadRequestError) as refused:
        configured_gateway.anthropic().messages.create(
            model="guarded-redact", max_tokens=64, messages=user(PROMPT)
        )
    body = refused.value.response.json()
    assert body["type"] == "error" and "`secret`" in body["error"]["message"]
    audit(configured_gateway, refused.value.response.headers["x-request-id"])
