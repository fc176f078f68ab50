"""docs/siemhub-event.schema.json is the JSON Schema of the native event, generated from the msgspec
structs (collector/core/event.py). Consumers of the Kafka topic validate with it, without a schema registry.
It must match the code: after a deliberate schema change regenerate it with
SIEMHUB_UPDATE_GOLDEN=1 pytest tests/unit/core/test_event_json_schema.py, and review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import msgspec

from siemhub.collector.core.event import SCHEMA_VERSION, Event, json_schema

REPO = Path(__file__).resolve().parents[3]
SCHEMA_FILE = REPO / "docs" / "siemhub-event.schema.json"
GOLDEN = REPO / "tests" / "golden"


def generate() -> str:
    schema = json_schema()
    doc = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "siemhub event",
        "description": f"The native siemhub event, schema_version {SCHEMA_VERSION} (docs/schema.md). "
                       "Generated from collector/core/event.py; do not edit by hand.",
        **schema,
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def test_schema_file_is_up_to_date():
    text = generate()
    if os.environ.get("SIEMHUB_UPDATE_GOLDEN") == "1":
        SCHEMA_FILE.write_text(text, encoding="utf-8")
        print("docs/siemhub-event.schema.json rewritten (review the diff)")  # then compared as usual
    assert SCHEMA_FILE.exists(), "missing docs/siemhub-event.schema.json; create it with SIEMHUB_UPDATE_GOLDEN=1"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == text, (
        "docs/siemhub-event.schema.json no longer matches collector/core/event.py: regenerate it with "
        "SIEMHUB_UPDATE_GOLDEN=1 pytest tests/unit/core/test_event_json_schema.py and review the diff")


def test_golden_native_events_validate():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    files = sorted(GOLDEN.glob("native_*.json"))
    assert files
    for path in files:
        errors = list(validator.iter_errors(json.loads(path.read_text(encoding="utf-8"))))
        assert not errors, f"{path.name}: {[e.message for e in errors[:5]]}"
    assert list(validator.iter_errors({"id": "x"})), "an event without its required fields must fail"
