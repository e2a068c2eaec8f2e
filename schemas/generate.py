"""Generate the JSON Schema files in ``schemas/jsonschema/`` from the pydantic models.

Run ``python -m schemas.generate`` after changing a model; a test fails while the committed
files and the models disagree, so subscribers in other languages never validate against a
stale contract.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import orjson
from pydantic import BaseModel

from schemas.alert import Alert
from schemas.dead_letter import DeadLetterHeaders
from schemas.label import LabelEvent
from schemas.model_notice import ModelNotice
from schemas.score import Score
from schemas.transaction import TransactionEvent

SCHEMA_DIR: Final = Path(__file__).parent / "jsonschema"
WIRE_MODELS: Final[dict[str, type[BaseModel]]] = {
    "transaction_event": TransactionEvent,
    "label_event": LabelEvent,
    "alert": Alert,
    "score": Score,
    "dead_letter_headers": DeadLetterHeaders,
    "model_notice": ModelNotice,
}


def render(model: type[BaseModel]) -> bytes:
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://riskstream.dev/schemas/{model.__name__}.v1.json"
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def schema_files() -> dict[Path, bytes]:
    return {SCHEMA_DIR / f"{name}.schema.json": render(m) for name, m in WIRE_MODELS.items()}


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path, content in schema_files().items():
        path.write_bytes(content)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
