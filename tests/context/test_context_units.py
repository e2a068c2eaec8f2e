"""Pure parts of the context store: key names, event packing, reference data, features."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from redis.crc import key_slot

from schemas import Channel, Direction
from schemas.features import (
    CHANNEL_CODES,
    COUNTERPARTY_RECORD,
    CUSTOMER_RECORD,
    EVENT_FIELDS,
    FEATURE_NAMES,
    FEATURE_SETS,
    STORY_PART,
    ContextFeatures,
    assemble,
)
from schemas.reference import (
    COUNTRY_CODES,
    CURRENCY_CODES,
    HIGH_RISK_COUNTRIES,
    USD_PER_UNIT,
    amount_usd,
    is_near_threshold_usd,
)
from schemas.story import STORY_FEATURES
from stream.context import keys
from stream.context.ops import (
    F_CASH_IN,
    F_ECOMMERCE,
    F_NEAR_THRESHOLD,
    F_OUTBOUND,
    F_RISKY_MCC,
    F_SMALL,
    F_TRANSFER,
    counterparty_entity,
    epoch_ms,
    event_ops,
)


def test_all_keys_of_an_entity_share_one_cluster_slot() -> None:
    for base in (
        keys.customer_base("live", "cus-42"),
        keys.counterparty_base("live", "acc:9:x"),
        keys.terminal_base("backtest-7", "trm-1"),
    ):
        slots = {key_slot(k.encode()) for k in keys.entity_keys(base)}
        assert len(slots) == 1
    assert keys.customer_base("a", "x") != keys.customer_base("b", "x")
    assert keys.customer_base("a", "x") != keys.counterparty_base("a", "x")


def test_namespace_pattern_matches_only_its_namespace() -> None:
    import fnmatch

    pattern = keys.namespace_pattern("bt-1")
    assert fnmatch.fnmatchcase(keys.customer_base("bt-1", "c") + ":s", pattern)
    assert not fnmatch.fnmatchcase(keys.customer_base("bt-10", "c") + ":s", pattern)


def test_epoch_ms_is_exact() -> None:
    moment = datetime(2025, 3, 3, 9, 0, 0, 123000, tzinfo=UTC)
    assert epoch_ms(moment) == 1740992400123


def test_event_ops_flags_and_event_features(make_event) -> None:  # type: ignore[no-untyped-def]
    cash = make_event(channel=Channel.CASH, direction=Direction.INBOUND, amount_usd=9500)
    ops = event_ops(cash)
    flags = struct.unpack_from("<ddH", ops.customer_op)[2]
    assert flags == F_CASH_IN | F_NEAR_THRESHOLD
    assert ops.event_part[FEATURE_NAMES.index("near_threshold_cash")] == 1.0
    assert ops.event_part[FEATURE_NAMES.index("has_terminal")] == 0.0

    tiny = make_event(channel=Channel.ECOMMERCE, amount_usd=1.0, mcc="5732", terminal="t-1")
    ops = event_ops(tiny)
    _, cents, flags = struct.unpack_from("<ddH", ops.customer_op)
    assert cents == 100
    assert flags == F_OUTBOUND | F_SMALL | F_ECOMMERCE | F_RISKY_MCC
    assert ops.event_part[FEATURE_NAMES.index("has_terminal")] == 1.0
    assert counterparty_entity(tiny.terminal_id, tiny.counterparty_id) == ("t", "t-1")
    assert counterparty_entity(None, "mer-1") == ("p", "mer-1")
    assert ops.event_part[:3] == (1.0, 1.0, float(CHANNEL_CODES[Channel.ECOMMERCE]))

    wire = make_event(channel=Channel.WIRE, country=sorted(HIGH_RISK_COUNTRIES)[0])
    ops = event_ops(wire)
    assert struct.unpack_from("<ddH", ops.customer_op)[2] & F_TRANSFER
    assert ops.event_part[FEATURE_NAMES.index("high_risk_country")] == 1.0


def test_amounts_convert_at_the_fixed_table() -> None:
    assert amount_usd(123_45, "USD") == pytest.approx(123.45)
    assert amount_usd(10_000, "JPY") == pytest.approx(10_000 * USD_PER_UNIT["JPY"])
    assert amount_usd(1_000, "KWD") == pytest.approx(USD_PER_UNIT["KWD"])  # 3 decimals
    assert set(USD_PER_UNIT) <= CURRENCY_CODES
    assert HIGH_RISK_COUNTRIES <= COUNTRY_CODES
    assert is_near_threshold_usd(9_999.0)
    assert is_near_threshold_usd(8_000.0)
    assert not is_near_threshold_usd(10_000.0)
    assert not is_near_threshold_usd(7_999.0)


def test_feature_layout_is_stable_and_complete() -> None:
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES))
    assert 30 <= len(FEATURE_NAMES) <= 80
    # every features version is a subset of today's, in today's order (models select by name)
    assert len(FEATURE_SETS["f1"]) == 56
    assert list(FEATURE_SETS["f1"]) == [n for n in FEATURE_NAMES if n in FEATURE_SETS["f1"]]
    assert (
        EVENT_FIELDS
        + CUSTOMER_RECORD
        + tuple("cp_" + name for name in COUNTERPARTY_RECORD)
        + STORY_PART
        == FEATURE_NAMES
    )
    assert STORY_PART == STORY_FEATURES
    values = assemble(
        tuple(float(i) for i in range(len(EVENT_FIELDS))),
        tuple(100.0 + i for i in range(len(CUSTOMER_RECORD))),
        tuple(200.0 + i for i in range(len(COUNTERPARTY_RECORD))),
        tuple(300.0 + i for i in range(len(STORY_PART))),
    )
    assert isinstance(values, ContextFeatures)
    assert values.to_vector() == list(values)
    assert values.cp_age_days == 200.0 + COUNTERPARTY_RECORD.index("age_days")
    assert values.out_count_1h == 100.0
