"""The headers a dead letter carries (the dead-letter topic, ``risk.dlq``).

A dead letter is the original message - key, value and headers unchanged, so it can be
inspected and replayed as it was - plus the headers below, which say what went wrong and where
the message came from. Header values are UTF-8 text. The original's own headers come first,
these after them; a reader takes the last occurrence of each name. The JSON Schema file
(``dead_letter_headers.schema.json``) describes the set as an object of the parsed values.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import WIRE_MODEL_CONFIG, UtcDatetime

H_ERROR: Final = "riskstream.error"
H_ERROR_TYPE: Final = "riskstream.error.type"
H_SOURCE_TOPIC: Final = "riskstream.source.topic"
H_SOURCE_PARTITION: Final = "riskstream.source.partition"
H_SOURCE_OFFSET: Final = "riskstream.source.offset"
H_FAILED_AT: Final = "riskstream.failed.at"
H_ORIGINAL_OMITTED: Final = "riskstream.original.omitted"


class DeadLetterHeaders(BaseModel):
    """The riskstream headers of one dead letter, by header name; each field has the type
    its text parses to (headers are text: lax parsing, unlike the strict JSON models)."""

    model_config = ConfigDict(**{**WIRE_MODEL_CONFIG, "strict": False}, populate_by_name=True)

    error: str = Field(alias=H_ERROR, description="Why the message could not be processed.")
    error_type: str = Field(
        alias=H_ERROR_TYPE,
        max_length=64,
        description="A stable category: invalid_event, duplicate_event_id, unprocessable_event...",
    )
    source_topic: str = Field(alias=H_SOURCE_TOPIC)
    source_partition: int = Field(alias=H_SOURCE_PARTITION, ge=0)
    source_offset: int = Field(alias=H_SOURCE_OFFSET, ge=0)
    failed_at: UtcDatetime = Field(alias=H_FAILED_AT)
    original_omitted: int | None = Field(
        None,
        alias=H_ORIGINAL_OMITTED,
        ge=0,
        description="Set when the original (this many bytes) was too large to copy: key, value "
        "and original headers are then absent, and the source position names the original.",
    )

    @classmethod
    def from_kafka(cls, headers: list[tuple[str, bytes]]) -> DeadLetterHeaders:
        """Parse a consumed dead letter's headers (the last occurrence of a name wins)."""
        values = {name: value.decode() for name, value in headers if name.startswith("riskstream.")}
        return cls.model_validate(values)

    def to_kafka(self) -> list[tuple[str, bytes]]:
        """The headers in the order they are written."""
        fields = self.model_dump(by_alias=True, mode="json", exclude_none=True)
        ordered = [H_ORIGINAL_OMITTED, H_ERROR, H_ERROR_TYPE, H_SOURCE_TOPIC]
        ordered += [H_SOURCE_PARTITION, H_SOURCE_OFFSET, H_FAILED_AT]
        return [(name, str(fields[name]).encode()) for name in ordered if name in fields]
