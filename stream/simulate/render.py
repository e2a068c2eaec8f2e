"""Simulation rows -> wire bytes (JSON) and Arrow tables, in a fixed key order.

No pydantic model is built per event (too slow for the generation targets); instead the JSON
object is assembled in exactly the field order of the wire models, leaving out absent optional
fields, so that ``schemas.encode(schemas.decode(line)) == line`` holds for every line (tested).

Render JSON in small ranges (:data:`JSON_CHUNK` rows) and join or send the lines at once:
orjson 3.13 returns each document in an allocation of ~4 KiB whatever its length, so 50,000
lines held together took ~400 MB and, measured, more than twice the time per event of
2,000-line ranges. Lines that must be kept longer are copied (``bytes(memoryview(line))``).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa

from schemas import LabelSource
from stream.simulate import catalog as cat
from stream.simulate.engine import CARD_FRAUD, REPORTED_FRAUD, Simulation

ObjectArray = npt.NDArray[np.object_]
SUSPICIOUS_SOURCES = {
    cat.code(cat.TYPOLOGIES, t): (
        LabelSource.CHARGEBACK.value
        if t in CARD_FRAUD
        else LabelSource.FRAUD_REPORT.value
        if t in REPORTED_FRAUD
        else LabelSource.CONFIRMED_CASE.value
    )
    for t in cat.TYPOLOGIES[1:]
}
BACKGROUND_KIND = "background"
JSON_CHUNK = 2_000


def _table(values: list[str] | tuple[str, ...], with_none: bool = False) -> ObjectArray:
    """An object array to index with codes; with ``with_none``, code -1 gives None."""
    array = np.empty(len(values) + (1 if with_none else 0), dtype=object)
    array[: len(values)] = list(values)
    if with_none:
        array[-1] = None
    return array


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while rendering.

    Rendering allocates a dict per event and frees it at once; no cycles arise, but the
    allocation count alone triggers collections that scan every live object of the simulation,
    which more than doubled the rendering time when measured.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def iso_ms(t_ms: npt.NDArray[np.int64]) -> list[str]:
    """Epoch milliseconds -> RFC 3339 UTC strings as the wire models write them."""
    text = np.datetime_as_string(t_ms.astype("datetime64[ms]"), unit="ms")
    return [value + "Z" for value in text.tolist()]


class Renderer:
    """Turns ranges of the sorted simulation into lines or column lists."""

    def __init__(self, sim: Simulation) -> None:
        world = sim.world
        self.sim = sim
        self.tag = sim.config.run_tag
        self.customer_ids = _table(world.customer_ids)
        self.account_ids = _table(world.account_ids)
        self.segments = _table(("retail", "business"))
        self.channels = _table(tuple(c.value for c in cat.CHANNELS))
        self.directions = _table(tuple(d.value for d in cat.DIRECTIONS))
        self.currencies = _table(cat.CURRENCIES)
        self.countries = _table(cat.COUNTRIES)
        self.mccs = _table(cat.MCCS, with_none=True)
        self.memos = _table(cat.MEMOS, with_none=True)
        self.cp_ids = _table(world.counterparties.ids.values)
        cp_types = [cat.COUNTERPARTY_TYPES[k].value for k in world.counterparties.kinds]
        self.cp_types = _table(cp_types)
        self.terminals = _table(world.terminals.values, with_none=True)
        self.devices = _table(world.devices.values, with_none=True)
        self.ips = _table(world.ips.values, with_none=True)
        self.typologies = _table(tuple(t.value for t in cat.TYPOLOGIES))
        self.roles = _table(cat.ROLES)
        self.scenario_ids = _table([sid for sid, _ in world.scenarios], with_none=True)
        self.scenario_kinds = _table([kind for _, kind in world.scenarios] + [BACKGROUND_KIND])
        self._shared_range = (-1, -1)
        self._shared_columns: tuple[list[str], list[str], list[str], list[str]] = ([], [], [], [])

    def event_id(self, row: int) -> str:
        return f"ev-{self.tag}-{row:09d}"

    def _shared(self, lo: int, hi: int) -> tuple[list[str], list[str], list[str], list[str]]:
        """Columns both events and truth need: ids, times, customers, counterparties (kept
        for the last range asked, since events and truth of one range are rendered in turn)."""
        if self._shared_range == (lo, hi):
            return self._shared_columns
        e = self.sim.events
        self._shared_range = (lo, hi)
        self._shared_columns = (
            [f"ev-{self.tag}-{row:09d}" for row in range(lo, hi)],
            iso_ms(e["t_ms"][lo:hi]),
            self.customer_ids[e["cust"][lo:hi]].tolist(),
            self.cp_ids[e["cp"][lo:hi]].tolist(),
        )
        return self._shared_columns

    def event_columns(self, lo: int, hi: int) -> dict[str, list[Any]]:
        """Wire-model field -> values for events ``lo..hi`` (None for absent fields)."""
        e = self.sim.events
        sl = slice(lo, hi)
        cust = e["cust"][sl]
        event_ids, times, customer_ids, cp_ids = self._shared(lo, hi)
        return {
            "event_id": event_ids,
            "event_time": times,
            "customer_id": customer_ids,
            "account_id": self.account_ids[cust].tolist(),
            "customer_segment": self.segments[self.sim.world.customers.segment[cust]].tolist(),
            "channel": self.channels[e["channel"][sl]].tolist(),
            "direction": self.directions[e["direction"][sl]].tolist(),
            "amount_minor": e["amount"][sl].tolist(),
            "currency": self.currencies[e["currency"][sl]].tolist(),
            "counterparty_id": cp_ids,
            "counterparty_type": self.cp_types[e["cp"][sl]].tolist(),
            "terminal_id": self.terminals[e["terminal"][sl]].tolist(),
            "mcc": self.mccs[e["mcc"][sl]].tolist(),
            "country": self.countries[e["country"][sl]].tolist(),
            "device_id": self.devices[e["device"][sl]].tolist(),
            "ip_fingerprint": self.ips[e["ip"][sl]].tolist(),
            "memo": self.memos[e["memo"][sl]].tolist(),
        }

    def events_json(self, lo: int, hi: int) -> list[bytes]:
        c = self.event_columns(lo, hi)
        dumps, lines = orjson.dumps, list[bytes]()
        append = lines.append
        for (
            event_id,
            event_time,
            customer_id,
            account_id,
            segment,
            channel,
            direction,
            amount,
            currency,
            cp_id,
            cp_type,
            terminal,
            mcc,
            country,
            device,
            ip,
            memo,
        ) in zip(*c.values(), strict=True):
            obj = {
                "schema_version": 1,
                "event_id": event_id,
                "event_time": event_time,
                "customer_id": customer_id,
                "account_id": account_id,
                "customer_segment": segment,
                "channel": channel,
                "direction": direction,
                "amount_minor": amount,
                "currency": currency,
                "counterparty_id": cp_id,
                "counterparty_type": cp_type,
            }
            if terminal is not None:
                obj["terminal_id"] = terminal
            if mcc is not None:
                obj["mcc"] = mcc
            obj["country"] = country
            if device is not None:
                obj["device_id"] = device
            if ip is not None:
                obj["ip_fingerprint"] = ip
            if memo is not None:
                obj["memo"] = memo
            append(dumps(obj))
        return lines

    def truth_columns(self, lo: int, hi: int) -> dict[str, list[Any]]:
        e = self.sim.events
        sl = slice(lo, hi)
        typology = e["typology"][sl]
        event_ids, times, customer_ids, cp_ids = self._shared(lo, hi)
        return {
            "event_id": event_ids,
            "event_time": times,
            "customer_id": customer_ids,
            "typology": self.typologies[typology].tolist(),
            "is_suspicious": (typology != 0).tolist(),
            "scenario_id": self.scenario_ids[e["scenario"][sl]].tolist(),
            "scenario_kind": self.scenario_kinds[e["scenario"][sl]].tolist(),
            "role": self.roles[e["role"][sl]].tolist(),
            "counterparty_id": cp_ids,
            "terminal_id": self.terminals[e["terminal"][sl]].tolist(),
        }

    def truth_json(self, lo: int, hi: int) -> list[bytes]:
        dumps = orjson.dumps
        return [
            dumps(
                {
                    "event_id": event_id,
                    "event_time": event_time,
                    "customer_id": customer_id,
                    "typology": typology,
                    "is_suspicious": suspicious,
                    "scenario_id": scenario_id,
                    "scenario_kind": kind,
                    "role": role,
                    "counterparty_id": cp_id,
                    "terminal_id": terminal,
                }
            )
            for (
                event_id,
                event_time,
                customer_id,
                typology,
                suspicious,
                scenario_id,
                kind,
                role,
                cp_id,
                terminal,
            ) in zip(*self.truth_columns(lo, hi).values(), strict=True)
        ]

    def label_columns(self, lo: int, hi: int) -> dict[str, list[Any]]:
        labels, e = self.sim.labels, self.sim.events
        rows = labels.rows[lo:hi]
        typology = e["typology"][rows]
        return {
            "label_id": [f"lb-{self.tag}-{i:09d}" for i in range(lo, hi)],
            "event_id": [self.event_id(int(row)) for row in rows],
            "customer_id": self.customer_ids[e["cust"][rows]].tolist(),
            "event_time": iso_ms(e["t_ms"][rows]),
            "label_time": iso_ms(labels.label_ms[lo:hi]),
            "source": [SUSPICIOUS_SOURCES[int(t)] for t in typology],
            "is_suspicious": (typology != 0).tolist(),
            "typology": self.typologies[typology].tolist(),
            "counterparty_id": self.cp_ids[e["cp"][rows]].tolist(),
            "terminal_id": self.terminals[e["terminal"][rows]].tolist(),
            "scenario_id": self.scenario_ids[e["scenario"][rows]].tolist(),
        }

    def labels_json(self, lo: int, hi: int) -> list[bytes]:
        columns = self.label_columns(lo, hi)
        names = tuple(columns)
        lines = []
        for row in zip(*columns.values(), strict=True):
            obj: dict[str, Any] = {"schema_version": 1}
            obj.update((k, v) for k, v in zip(names, row, strict=True) if v is not None)
            lines.append(orjson.dumps(obj))
        return lines


# ---- Arrow ------------------------------------------------------------------------------------
TIMESTAMP = pa.timestamp("ms", tz="UTC")
_TIME_COLUMNS = {"event_time", "label_time"}
_TYPES: dict[str, pa.DataType] = {
    "schema_version": pa.int8(),
    "amount_minor": pa.int64(),
    "is_suspicious": pa.bool_(),
}


def arrow_table(columns: dict[str, list[Any]], times: dict[str, npt.NDArray[np.int64]]) -> pa.Table:
    """Columns as an Arrow table: times as UTC timestamps (from the raw milliseconds in
    ``times``), integers and booleans typed, everything else strings (nullable)."""
    arrays: dict[str, pa.Array] = {}
    for name, values in columns.items():
        if name in _TIME_COLUMNS:
            arrays[name] = pa.array(times[name], type=TIMESTAMP)
        else:
            arrays[name] = pa.array(values, type=_TYPES.get(name, pa.string()))
    return pa.table(arrays)
