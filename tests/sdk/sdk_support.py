"""Constants and helpers shared by the SDK tests (imported by `conftest.py` and the tests)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jsonschema

REPO_ROOT = Path(__file__).resolve().parents[2]

# The two `sluice demo` aliases, one per upstream dialect.
OPENAI_MODEL = "gpt-4o-mini"  # routes to the mock speaking the OpenAI dialect
ANTHROPIC_MODEL = "claude-sonnet-4-5"  # routes to the mock speaking the Anthropic dialect
MODELS = [OPENAI_MODEL, ANTHROPIC_MODEL]
# The demo's third alias: a primary failing every second request, with the Anthropic mock as
# its fallback.
RESILIENT_MODEL = "resilient"
# The fourth: served by gpt-4o-mini once the demo team is past its soft limit on it.
SMART_MODEL = "smart"
DEMO_MODELS = [*MODELS, RESILIENT_MODEL, SMART_MODEL]

# What the mock answers (crates/testkit/src/mock): the requested model plus a version suffix,
# an echo of the last user message, and `ceil(chars / 4)` tokens for input and output text.
MOCK_SUFFIX = "-mock-2026-01-01"
ECHO = "Hello from the Sluice mock. You said: "
TOOL_ECHO = "Tool result received: "

# Generous per-request timeout: the mock answers in milliseconds; this only bounds a hang.
CLIENT_TIMEOUT = 15.0

PROVENANCE = {
    OPENAI_MODEL: {"provider": "mock-openai", "deployment": "mock-gpt"},
    ANTHROPIC_MODEL: {"provider": "mock-anthropic", "deployment": "mock-claude"},
}

# A tool with a closed schema: generated arguments must fill every required field.
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}

# A structured-output schema using nesting, arrays, enums, nullable unions and $defs.
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "temperature_c": {"type": "number"},
        "conditions": {"type": "array", "items": {"type": "string", "enum": ["sun", "rain", "snow"]}, "minItems": 1},
        "wind": {"$ref": "#/$defs/wind"},
        "note": {"type": ["string", "null"]},
    },
    "required": ["city", "temperature_c", "conditions", "wind", "note"],
    "additionalProperties": False,
    "$defs": {
        "wind": {
            "type": "object",
            "properties": {"speed_kmh": {"type": "integer", "minimum": 0}, "direction": {"type": "string"}},
            "required": ["speed_kmh", "direction"],
            "additionalProperties": False,
        }
    },
}


def served_model(alias: str) -> str:
    """The model the mock reports for `alias` (the demo deploys each alias under its own name)."""
    return alias + MOCK_SUFFIX


def tokens(text: str) -> int:
    """The mock's token count for `text`: ceil(chars / 4), at least 1."""
    return max(1, math.ceil(len(text) / 4))


def echo(text: str) -> str:
    return ECHO + text


def validate(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(instance)


def assert_provenance(headers: Any, alias: str, served: str | None = None) -> None:
    """The provenance headers every answer that reached a provider carries."""
    assert headers.get("x-request-id", "").startswith("req_"), dict(headers)
    assert headers.get("x-sluice-served-model") == (served or served_model(alias))
    assert headers.get("x-sluice-alias") == alias
    assert headers.get("x-sluice-provider") == PROVENANCE[alias]["provider"]
    assert headers.get("x-sluice-deployment") == PROVENANCE[alias]["deployment"]
    assert headers.get("x-sluice-attempts") == "1"
