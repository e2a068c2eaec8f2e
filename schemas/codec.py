"""Bytes <-> wire models. Strict decoding at the boundary, with errors that name the problem.

Every failure is a :class:`DecodeError` carrying the original bytes, so the caller can send
them to the dead-letter topic unchanged; nothing here ever raises anything else for bad input.
Strict means: JSON as RFC 8259 has it (orjson), no key repeated in an object, and each model's
own rules (schemas/common.py: RFC 3339 times whose UTC form exists, bounded amounts, known
codes, no unknown fields).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, TypeVar

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
        repeated = duplicate_key(raw, data)
    except RecursionError:
        raise DecodeError("JSON nested too deeply to check its keys", raw) from None
    except ValueError as exc:  # the standard library's parser refused what orjson took
        raise DecodeError(f"not valid JSON: {type(exc).__name__}", raw) from None
    if repeated is not None:
        raise DecodeError(f"duplicate key {_shown_name(repeated)} in a JSON object", raw)
    try:
        # Strict mode applies JSON-input rules (an RFC 3339 string is a valid datetime, "12"
        # is not a valid integer), so validate the bytes rather than the parsed dict.
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc), raw) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Not reachable by any input found so far (validators raise ValueError, which pydantic
        # reports); kept so that a bad message can never be more than a dead letter.
        raise DecodeError(f"could not be validated ({type(exc).__name__})", raw) from None


class _Repeated(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Repeated(name)
            seen.add(name)
    return result


def duplicate_key(raw: bytes, data: Any) -> str | None:
    """A key that occurs twice in one object of the JSON text ``raw`` (already parsed into
    ``data`` by orjson, which keeps the last of repeated keys silently), or None.

    Two readers of a message with a repeated key can see different values (most keep the last,
    some the first, some refuse): an amount shown to one and another amount to us. Exact and
    cheap: every member of an object is followed by one structural ':', so when ``raw`` holds
    no backslash (every string spelled literally) its ':' bytes are its members plus the ':'
    characters inside its strings - which is what re-encoding the parsed value also holds
    (orjson writes ':' literally), unless a repeated member was dropped. Only when the counts
    differ, or escapes make the count unreliable (a key can be spelled with \\u escapes), is
    the text parsed again with the standard library, which reports every member
    (BENCHMARKS.md, "Strict decoding", has the cost of each path).
    """
    if b"\\" not in raw:
        try:
            if raw.count(b":") == orjson.dumps(data).count(b":"):
                return None
        except orjson.JSONEncodeError:  # cannot happen for orjson's own output; be exact
            pass
    try:
        json.loads(raw, object_pairs_hook=_no_repeats)
    except _Repeated as repeated:
        return repeated.name
    return None


# A field name is shown in a reason only when it looks like one. An unexpected key is part of
# the payload: it could hold personal data, a newline that forges a log line, or 60 KiB of
# text copied into every log and dead-letter header.
_SHOWN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _location_part(part: str | int) -> str:
    if isinstance(part, int) or _SHOWN_NAME.fullmatch(part):
        return str(part)
    return f"<name of {len(part)} characters, not shown>"


def _shown_name(name: str) -> str:
    return f"'{name}'" if _SHOWN_NAME.fullmatch(name) else _location_part(name)


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
