"""Virtual keys made with `sluice keys create` / `revoke` (against the running demo's store),
seen through both SDKs: alias limits, revocation, and what the request record says."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import openai
import pytest

from sdk_support import ANTHROPIC_MODEL, OPENAI_MODEL, echo

# The gateway caches a key lookup for 5 s (docs/configuration.md, "Keys").
KEY_CACHE_TTL = 5.0


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def limited(gateway: Any) -> dict[str, Any]:
    return gateway.create_key("--name", "limited", "--team", "search", "--user", "ana", "--alias", OPENAI_MODEL)


def test_limited_key_lists_only_its_models(gateway: Any, limited: dict[str, Any]) -> None:
    assert [m.id for m in gateway.openai(limited["secret"]).models.list()] == [OPENAI_MODEL]
    assert [m.id for m in gateway.anthropic(limited["secret"]).models.list()] == [OPENAI_MODEL]


def test_limited_key_is_refused_other_models(gateway: Any, limited: dict[str, Any]) -> None:
    # Answered as if the model did not exist: a key may not learn which aliases exist.
    with pytest.raises(openai.NotFoundError) as oinfo:
        gateway.openai(limited["secret"]).chat.completions.create(model=ANTHROPIC_MODEL, messages=user("hi"))
    assert oinfo.value.status_code == 404
    assert oinfo.value.response.json()["error"]["code"] == "model_not_found"
    with pytest.raises(anthropic.NotFoundError) as ainfo:
        gateway.anthropic(limited["secret"]).messages.create(model=ANTHROPIC_MODEL, max_tokens=50, messages=user("hi"))
    assert ainfo.value.status_code == 404
    assert ainfo.value.type == "not_found_error"


def test_limited_key_records_its_bindings(gateway: Any, limited: dict[str, Any]) -> None:
    raw = gateway.anthropic(limited["secret"]).messages.with_raw_response.create(
        model=OPENAI_MODEL, max_tokens=50, messages=user("who am I")
    )
    assert raw.parse().content[0].text == echo("who am I")
    rid = raw.headers["x-request-id"]
    record = gateway.wait_records([rid])[rid]
    assert record["key_id"] == limited["id"]
    assert (record["team"], record["user"]) == ("search", "ana")


@pytest.mark.parametrize("field", ["openai-user", "anthropic-metadata"])
def test_request_end_user_wins_over_key_user(gateway: Any, limited: dict[str, Any], field: str) -> None:
    if field == "openai-user":
        raw = gateway.openai(limited["secret"]).chat.completions.with_raw_response.create(
            model=OPENAI_MODEL, messages=user("hi"), user="end-user-42"
        )
    else:
        raw = gateway.anthropic(limited["secret"]).messages.with_raw_response.create(
            model=OPENAI_MODEL, max_tokens=50, messages=user("hi"), metadata={"user_id": "end-user-42"}
        )
    rid = raw.headers["x-request-id"]
    assert gateway.wait_records([rid])[rid]["user"] == "end-user-42"


def test_key_revoked_before_use_is_refused_at_once(gateway: Any) -> None:
    key = gateway.create_key("--name", "short-lived")
    gateway.cli("keys", "revoke", key["id"])
    with pytest.raises(openai.AuthenticationError) as info:
        gateway.openai(key["secret"]).chat.completions.create(model=OPENAI_MODEL, messages=user("hi"))
    assert "revoked" in info.value.response.json()["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError) as ainfo:
        gateway.anthropic(key["secret"]).messages.create(model=ANTHROPIC_MODEL, max_tokens=50, messages=user("hi"))
    assert ainfo.value.type == "authentication_error"


def test_revocation_reaches_a_running_gateway_within_the_cache_ttl(gateway: Any) -> None:
    key = gateway.create_key("--name", "to-revoke")
    client = gateway.openai(key["secret"])
    assert client.chat.completions.create(model=OPENAI_MODEL, messages=user("hi")).choices[0].message.content
    gateway.cli("keys", "revoke", key["id"])
    revoked_at = time.monotonic()
    while True:
        try:
            client.models.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() - revoked_at < KEY_CACHE_TTL + 2.0, "revocation not effective within the cache TTL"
        time.sleep(0.25)
    # Once refused, refused everywhere.
    with pytest.raises(anthropic.AuthenticationError):
        gateway.anthropic(key["secret"]).messages.create(model=ANTHROPIC_MODEL, max_tokens=50, messages=user("hi"))
