"""Bytes <-> wire models. Strict decoding at the boundary, with errors that name the problem.

Every failure is a :class:`DecodeError` carrying the original bytes, so the caller can send
them to the dead-letter topic unchanged; nothing here ever raises anything else for bad input.
"""

from __future__ import annotations

import re
from typing import Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from schemas.errors import DecodeError

# A real event is well under 2 KiB; anything past this is an attack or a bug, and parsing it
# would only cost memory. Checked before any parsing.
MAX_MESSAGE_BYTES: Final = 64 * 1024

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    """Compact JSON bytes (UTF-8) for a wire model."""
    return orjson.dumps(model.model_dump(mode="json", exclude_none=True))


def decode(model: type[M], raw: bytes | None) -> M:
    """Parse and validate ``raw`` as ``model``, or raise :class:`DecodeError`."""
    if raw is None or len(raw) == 0:
        raise DecodeError("empty message (no value bytes)", raw)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError(
            f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit", raw
        )
    try:
        # orjson first: it rejects what JSON forbids (invalid UTF-8, NaN/Infinity literals,
        # nesting deeper than 1024) with precise messages, before pydantic sees a thing.
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}", raw) from None
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object, got {type(data).__name__}", raw)
    try:
        # Strict mode applies JSON-input rules (an RFC 3339 string is a valid datetime, "12"
        # is not a valid integer), so validate the bytes rather than the parsed dict.
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc), raw) from None


# A field name is shown in a reason only when it looks like one. An unexpected key is part of
# the payload: it could hold personal data, a newline that forges a log line, or 60 KiB of
# text copied into every log and dead-letter header.
_SHOWN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _location_part(part: str | int) -> str:
    if isinstance(part, int) or _SHOWN_NAME.fullmatch(part):
        return str(part)
    return f"<name of {len(part)} characters, not shown>"


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """One line naming each bad field and its problem, without echoing the input values."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:limit]:
        location = ".".join(_location_part(part) for part in error["loc"]) or "(message)"
        problems.append(f"field '{location}': {error['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        problems.append(f"and {more} more")
    return "; ".join(problems)
