"""The models topic's notice: what the writers encode validates against the committed JSON
Schema, and a reader takes a malformed notice as none (a warning), never as a crash."""

from __future__ import annotations

from datetime import UTC, datetime

import jsonschema
import orjson
import pytest

from schemas.codec import encode
from schemas.generate import render
from schemas.model_notice import ModelNotice
from stream.kafka.model_notices import read_notice


def notice(**overrides: object) -> ModelNotice:
    fields: dict[str, object] = {
        "action": "promote",
        "version": "20261206T061308Z-student-s0",
        "reason": "challenger AP 0.81 > champion 0.79",
        "at": datetime(2026, 12, 6, 13, 0, tzinfo=UTC),
    }
    return ModelNotice.model_validate({**fields, **overrides})


def test_an_encoded_notice_validates_against_the_schema_and_reads_back() -> None:
    validator = jsonschema.Draft202012Validator(orjson.loads(render(ModelNotice)))
    raw = encode(notice())
    document = orjson.loads(raw)
    validator.validate(document)
    assert read_notice(raw) == notice()
    document["action"] = "demote"
    assert not validator.is_valid(document)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b'{"action": "promote"}',
        orjson.dumps({**orjson.loads(encode(notice())), "action": "delete-everything"}),
        orjson.dumps({**orjson.loads(encode(notice())), "extra": 1}),
    ],
)
def test_a_malformed_notice_is_read_as_none(raw: bytes | None) -> None:
    assert read_notice(raw) is None
