"""The story's packed form (scored records, dataset caches): made while decoding customer.lua's
bytes, it must be exactly what packing the decoded entries gives, and unpack to them."""

from __future__ import annotations

import random

from schemas.story import ENTRY, Story, decode_story, pack_story, unpack_story


def script_bytes(rng: random.Random, count: int, event_time_s: int, cp_hashes: list[int]) -> bytes:
    """customer.lua's layout: a count byte, then ``count`` entries oldest first, with every
    field over its whole range (novelty bytes with bits the story does not use included)."""
    entries = [
        ENTRY.pack(
            event_time_s - rng.randrange(0, 90 * 86_400),
            rng.randrange(0, 2**16),
            rng.randrange(-128, 128),
            rng.randrange(0, 256),
            rng.randrange(0, 256),
            rng.choice(cp_hashes),
        )
        for _ in range(count)
    ]
    return bytes([count]) + b"".join(entries)


def test_the_packed_form_made_while_decoding_is_the_entries_packed() -> None:
    rng = random.Random(7)
    for _ in range(300):
        event_time_s = rng.randrange(10**9, 2 * 10**9)
        cp_hashes = [rng.randrange(0, 2**32) for _ in range(rng.randrange(1, 5))]
        story = decode_story(
            script_bytes(rng, rng.randrange(0, 17), event_time_s, cp_hashes),
            event_time_s,
            rng.choice(cp_hashes),
        )
        assert isinstance(story, Story)
        assert story.packed == pack_story(tuple(story))  # the generic path, field by field
        assert pack_story(story) is story.packed
        assert unpack_story(story.packed) == story


def test_an_empty_story_packs_to_nothing() -> None:
    story = decode_story(bytes([0]), 1_800_000_000, 5)
    assert story == ()
    assert pack_story(story) == b""
    assert unpack_story(b"") == ()
