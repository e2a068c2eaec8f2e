"""Events as columns of integer codes, and the string tables the codes point into.

Generation appends whole numpy columns (thousands of events per call) instead of building an
object per event; strings (ids, codes) are looked up once, when the events are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from stream.simulate.catalog import ROLE_CUSTOMER

Column = npt.NDArray[np.int64]

# Column name -> value used when a generator does not set it. -1 means "absent" (None on the
# wire) for the optional fields; typology 0 is legitimate, scenario -1 is background.
COLUMNS: Final[dict[str, int | None]] = {
    "t_ms": None,  # event time, ms since the epoch (UTC)
    "cust": None,  # customer index
    "channel": None,
    "direction": None,
    "amount": None,  # minor units of `currency`
    "currency": None,
    "cp": None,  # counterparty index
    "country": None,
    "terminal": -1,
    "mcc": -1,
    "device": -1,
    "ip": -1,
    "memo": -1,
    "typology": 0,
    "scenario": -1,
    "role": ROLE_CUSTOMER,
    "link": -1,  # the two sides of one transfer between customers share a link id
}


@dataclass
class Frame:
    """Equal-length int64 columns, one row per event."""

    columns: dict[str, Column]

    def __len__(self) -> int:
        return len(self.columns["t_ms"])

    def __getitem__(self, name: str) -> Column:
        return self.columns[name]

    def take(self, rows: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Frame:
        return Frame({name: values[rows] for name, values in self.columns.items()})


class FrameBuilder:
    """Collects column blocks from the generators and joins them in the order they came."""

    def __init__(self) -> None:
        self._blocks: list[dict[str, Column]] = []
        self.rows = 0
        self._next_link = 0

    def new_links(self, count: int) -> Column:
        """Fresh link ids pairing the sender's and the receiver's side of internal transfers."""
        links = np.arange(self._next_link, self._next_link + count, dtype=np.int64)
        self._next_link += count
        return links

    def add(self, **values: npt.ArrayLike) -> int:
        """Append events; scalars broadcast, unset columns take their default. Returns count."""
        arrays = {name: np.asarray(value, dtype=np.int64) for name, value in values.items()}
        unknown = arrays.keys() - COLUMNS.keys()
        if unknown:
            raise KeyError(f"unknown event columns: {sorted(unknown)}")
        count = max((a.size for a in arrays.values() if a.ndim > 0), default=1)
        block: dict[str, Column] = {}
        for name, default in COLUMNS.items():
            value = arrays.get(name)
            if value is None and default is None:
                raise KeyError(f"event column {name!r} is required")
            if value is None or value.ndim == 0:
                block[name] = np.full(count, default if value is None else value, dtype=np.int64)
            elif value.shape == (count,):
                block[name] = value
            else:
                raise ValueError(f"event column {name!r} has {value.size} values, not {count}")
        self._blocks.append(block)
        self.rows += count
        return count

    def build(self) -> Frame:
        if not self._blocks:
            return Frame({name: np.empty(0, dtype=np.int64) for name in COLUMNS})
        return Frame({name: np.concatenate([b[name] for b in self._blocks]) for name in COLUMNS})


@dataclass
class StringTable:
    """An append-only list of distinct strings addressed by index."""

    values: list[str] = field(default_factory=list)

    def add(self, value: str) -> int:
        self.values.append(value)
        return len(self.values) - 1

    def extend(self, values: list[str]) -> Column:
        first = len(self.values)
        self.values.extend(values)
        return np.arange(first, len(self.values), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class Counterparties:
    """Everyone a customer pays or is paid by: accounts, merchants, ATMs, branches, exchanges."""

    ids: StringTable = field(default_factory=StringTable)
    kinds: list[int] = field(default_factory=list)  # code in catalog.COUNTERPARTY_TYPES
    countries: list[int] = field(default_factory=list)  # code in catalog.COUNTRIES

    def extend(self, ids: list[str], kind: int, countries: npt.ArrayLike) -> Column:
        country_codes = np.broadcast_to(np.asarray(countries, dtype=np.int64), (len(ids),))
        self.kinds.extend([kind] * len(ids))
        self.countries.extend(country_codes.tolist())
        return self.ids.extend(ids)

    def country_of(self, cps: Column) -> Column:
        return np.asarray(self.countries, dtype=np.int64)[cps]
