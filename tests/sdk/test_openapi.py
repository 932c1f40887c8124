"""Gateway responses, byte for byte, against OpenAI's published OpenAPI description.

The spec is `shared/specs/openai-openapi.yaml` beside the repository (CI clones the repository
with `shared/` next to it); `SLUICE_OPENAPI_SPEC` overrides the path. The tests skip, saying
why, only when the file is absent.

How the spec becomes JSON Schema:

* The whole document is loaded once (PyYAML's C loader when available; the file is ~3 MB) and
  registered in a `referencing.Registry` under one URI, so every `$ref:
  '#/components/schemas/X'` inside it resolves; each check validates against
  `{"$ref": "<uri>#/components/schemas/<Name>"}` with a Draft 2020-12 validator.
* The document says `openapi: 3.1.0`, whose schemas are JSON Schema 2020-12, yet it still
  carries ~100 OpenAPI 3.0 `nullable: true` markers, which JSON Schema ignores (so `null`
  would be rejected where the spec means to allow it). `_convert_nullable` rewrites each one
  before validation: `type: T` becomes `type: [T, "null"]` (and `null` joins an `enum`); a
  schema without `type` (`$ref`, `anyOf`, `oneOf`...) becomes `anyOf: [<schema>, {type:
  "null"}]`; the marker itself is removed.
* `format` (e.g. the spec's own `unixtime`) is an annotation in 2020-12 and is not asserted.
* "Strict" validators additionally close every object schema that lists `properties` and says
  nothing about `additionalProperties` (`additionalProperties: false`), so a field the spec
  does not document fails. The closure of the schemas used here has no `allOf`, where closing
  branches would be wrong. Strict checks apply to what the gateway writes itself (translated
  answers, models, errors); passed-through bodies get the spec's own, open, schemas.

Requests go over raw HTTP (httpx2, which the SDKs install) to see the exact bytes.
"""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest
import referencing
import referencing.jsonschema
import yaml

from sdk_support import (
    ANTHROPIC_MODEL,
    DEMO_MODELS,
    MODELS,
    OPENAI_MODEL,
    REPO_ROOT,
    REPORT_SCHEMA,
    TOOL_ECHO,
    WEATHER_SCHEMA,
    echo,
)

SPEC_URI = "urn:sluice:openai-openapi"


def spec_path() -> Path:
    override = os.environ.get("SLUICE_OPENAPI_SPEC")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "specs" / "openai-openapi.yaml"


def _convert_nullable(node: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` -> JSON Schema type unions (see the module docstring)."""
    if isinstance(node, list):
        return [_convert_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _convert_nullable(value) for key, value in node.items()}
    if out.pop("nullable", False) is not True:
        return out
    if "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        if "null" not in types:
            out["type"] = [*types, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    keys = set(out) - {"description", "title", "default", "example", "examples", "deprecated"}
    keys = {k for k in keys if not k.startswith("x-")}
    if not keys:
        return out  # no constraint at all: null is already allowed
    annotations = {k: out.pop(k) for k in list(out) if k in ("description", "title", "deprecated")}
    return {**annotations, "anyOf": [out, {"type": "null"}]}


def _close_objects(node: Any) -> Any:
    """Strict variant: objects listing `properties` accept no other field."""
    if isinstance(node, list):
        return [_close_objects(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _close_objects(value) for key, value in node.items()}
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=1)
def _load_spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(spec_path(), "rb") as f:
        return yaml.load(f, Loader=loader)


@pytest.fixture(scope="session")
def spec() -> "Spec":
    path = spec_path()
    if not path.is_file():
        pytest.skip(f"OpenAI OpenAPI spec not found at {path} (set SLUICE_OPENAPI_SPEC to its path)")
    return Spec(_load_spec())


class Spec:
    def __init__(self, raw: dict[str, Any]) -> None:
        assert str(raw.get("openapi", "")).startswith("3."), "not an OpenAPI document"
        self.version = str(raw["openapi"])
        self.document = _convert_nullable(raw)
        self.strict_document = _close_objects(self.document)
        self._validators: dict[tuple[str, bool], jsonschema.Draft202012Validator] = {}

    def validator(self, name: str, strict: bool) -> jsonschema.Draft202012Validator:
        key = (name, strict)
        if key not in self._validators:
            document = self.strict_document if strict else self.document
            assert name in document["components"]["schemas"], f"no schema {name} in the spec"
            resource = referencing.Resource.from_contents(
                document, default_specification=referencing.jsonschema.DRAFT202012
            )
            registry = referencing.Registry().with_resource(SPEC_URI, resource)
            self._validators[key] = jsonschema.Draft202012Validator(
                {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}, registry=registry
            )
        return self._validators[key]

    def check(self, name: str, instance: Any, strict: bool = False) -> None:
        errors = sorted(self.validator(name, strict).iter_errors(instance), key=lambda e: list(e.absolute_path))
        if errors:
            detail = "\n".join(
                f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:10]
            )
            pytest.fail(f"{'strict ' if strict else ''}{name} rejects the body:\n{detail}\nbody: {json.dumps(instance)[:2000]}")


def translated(model: str) -> bool:
    """OpenAI-dialect answers the gateway writes itself: those from the Anthropic upstream."""
    return model == ANTHROPIC_MODEL


def chat(http: httpx2.Client, body: dict[str, Any]) -> httpx2.Response:
    return http.post("/v1/chat/completions", json=body)


def sse_data(response: httpx2.Response) -> list[str]:
    """The `data:` payloads of an OpenAI stream, checking the framing on the way."""
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.endswith("\n\n"), "every event ends with a blank line"
    payloads = []
    for event in text.split("\n\n")[:-1]:
        lines = event.split("\n")
        assert all(line.startswith("data: ") for line in lines), f"OpenAI streams carry only data lines: {event!r}"
        payloads.append("\n".join(line[len("data: ") :] for line in lines))
    return payloads


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "weather_report", "strict": True, "schema": REPORT_SCHEMA},
}
CASES = {
    "plain": {"messages": user("Hello spec")},
    "tools": {"messages": user("Weather in Lisbon?"), "tools": TOOLS},
    "tool_result": {
        "messages": [
            *user("Weather in Lisbon?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": TOOLS,
    },
    "json_schema": {"messages": user("Report as JSON"), "response_format": JSON_SCHEMA_FORMAT},
    "length": {"messages": user("cut me short please"), "max_completion_tokens": 2},
}


# ---------------------------------------------------------------------------------------------


def test_spec_conversion(spec: Spec) -> None:
    """The `nullable` rewrite does what the docstring says, on the spec's own schemas."""
    assert spec.version.startswith("3.1")
    chunk_choice = spec.document["components"]["schemas"]["CreateChatCompletionStreamResponse"]["properties"]["choices"]["items"]
    finish = chunk_choice["properties"]["finish_reason"]
    assert "null" in finish["type"] and None in finish["enum"]
    usage = spec.document["components"]["schemas"]["CreateChatCompletionStreamResponse"]["properties"]["usage"]
    assert usage["anyOf"][1] == {"type": "null"}
    assert "'nullable'" not in repr(spec.document)
    # The strict variant refuses an undocumented field that the spec's open schema lets through.
    error = {"error": {"message": "m", "type": "t", "param": None, "code": None}}
    spec.check("ErrorResponse", error, strict=True)
    extra = copy.deepcopy(error)
    extra["error"]["undocumented"] = 1
    spec.check("ErrorResponse", extra)
    assert not spec.validator("ErrorResponse", strict=True).is_valid(extra)
    assert not spec.validator("ErrorResponse", strict=False).is_valid({"error": {"message": "m", "type": "t"}})


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("model", MODELS)
def test_chat_completion_matches_spec(spec: Spec, http: httpx2.Client, model: str, case: str) -> None:
    response = chat(http, {"model": model, **CASES[case]})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    spec.check("CreateChatCompletionResponse", body)
    if translated(model):
        spec.check("CreateChatCompletionResponse", body, strict=True)
    message = body["choices"][0]["message"]
    if case == "plain":
        assert message["content"] == echo("Hello spec")
    elif case == "tools":
        assert body["choices"][0]["finish_reason"] == "tool_calls"
        assert message["content"] is None
        jsonschema.validate(json.loads(message["tool_calls"][0]["function"]["arguments"]), WEATHER_SCHEMA)
    elif case == "tool_result":
        assert message["content"] == TOOL_ECHO + "sunny"
    elif case == "json_schema":
        jsonschema.validate(json.loads(message["content"]), REPORT_SCHEMA)
    elif case == "length":
        assert body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("case", ["plain", "tools", "json_schema"])
@pytest.mark.parametrize("model", MODELS)
def test_stream_chunks_match_spec(spec: Spec, http: httpx2.Client, model: str, case: str, include_usage: bool) -> None:
    body = {"model": model, "stream": True, **CASES[case]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response = chat(http, body)
    assert response.status_code == 200, response.text
    payloads = sse_data(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks
    for chunk in chunks:
        spec.check("CreateChatCompletionStreamResponse", chunk)
        if translated(model):
            spec.check("CreateChatCompletionStreamResponse", chunk, strict=True)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["tool_calls" if case == "tools" else "stop"]
    usage_chunks = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1]["choices"] == []
    else:
        assert usage_chunks == []


def test_embeddings_match_spec(spec: Spec, http: httpx2.Client) -> None:
    response = http.post(
        "/v1/embeddings", json={"model": OPENAI_MODEL, "input": ["one", "two"], "encoding_format": "float"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    spec.check("CreateEmbeddingResponse", body)
    assert len(body["data"]) == 2


def test_models_match_spec(spec: Spec, http: httpx2.Client) -> None:
    response = http.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    spec.check("ListModelsResponse", body, strict=True)
    assert sorted(m["id"] for m in body["data"]) == sorted(DEMO_MODELS)


# (id, expected status, method, path, key to send: "good" | "bad" | None, JSON body or raw bytes)
ERROR_CASES: list[tuple[str, int, str, str, str | None, Any]] = [
    ("bad-key", 401, "POST", "/v1/chat/completions", "bad", {"model": OPENAI_MODEL, "messages": user("hi")}),
    ("no-key", 401, "GET", "/v1/models", None, None),
    ("unknown-model", 404, "POST", "/v1/chat/completions", "good", {"model": "nope", "messages": user("hi")}),
    ("unknown-route", 404, "POST", "/v1/nothing-here", "good", {}),
    ("not-json", 400, "POST", "/v1/chat/completions", "good", b"{not json"),
    ("missing-messages", 400, "POST", "/v1/chat/completions", "good", {"model": OPENAI_MODEL}),
    ("n2-to-anthropic", 400, "POST", "/v1/chat/completions", "good", {"model": ANTHROPIC_MODEL, "n": 2, "messages": user("hi")}),
    ("embeddings-to-anthropic", 400, "POST", "/v1/embeddings", "good", {"model": ANTHROPIC_MODEL, "input": "x"}),
    *[
        case
        for model in MODELS
        for case in [
            (f"429-{model}", 429, "POST", "/v1/chat/completions", "good", {"model": model, "messages": user("#mock status=429 retry_after=2")}),
            (f"500-{model}", 502, "POST", "/v1/chat/completions", "good", {"model": model, "messages": user("#mock status=500")}),
            (f"529-{model}", 503, "POST", "/v1/chat/completions", "good", {"model": model, "messages": user("#mock status=529")}),
            (f"malformed-{model}", 502, "POST", "/v1/chat/completions", "good", {"model": model, "messages": user("#mock malformed")}),
        ]
    ],
]


@pytest.mark.parametrize(("status", "method", "path", "key", "body"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_errors_match_spec(spec: Spec, gateway: Any, status: int, method: str, path: str, key: str | None, body: Any) -> None:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = "Bearer " + (gateway.api_key if key == "good" else "sk-sluice-not-a-key")
    content = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    with gateway.http_client() as client:
        response = client.request(method, gateway.base_url + path, headers=headers, content=content)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    if path == "/v1/nothing-here":
        # A request that reaches no route gets an id but no request record (nothing was routed).
        gateway.requests.expect_no_record(response.headers["x-request-id"])
    error = response.json()
    spec.check("ErrorResponse", error, strict=True)
    assert error["error"]["message"]
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("model", MODELS)
def test_stream_error_chunk_matches_spec(spec: Spec, http: httpx2.Client, model: str) -> None:
    response = chat(http, {"model": model, "stream": True, "messages": user("cut\n#mock cut_after=6")})
    assert response.status_code == 200
    payloads = sse_data(response)
    assert "[DONE]" not in payloads, "a failed stream must not claim success"
    last = json.loads(payloads[-1])
    spec.check("ErrorResponse", last, strict=True)
    for chunk in payloads[:-1]:
        spec.check("CreateChatCompletionStreamResponse", json.loads(chunk))
