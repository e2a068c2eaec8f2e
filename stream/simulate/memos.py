"""Payment references as people write them: each customer in their own way, or not at all.

Generators and scenarios write the *kind* of a reference (``catalog.MEMO[kind]``, the index of
its first phrasing). Once the run is built, :func:`personalise` turns each into the phrasing
its customer uses for that kind (a customer writes rent the same way every month) and drops
it for customers who rarely write references. What scam victims are told to write
(``catalog.SCAM_MEMO_KINDS``) is always written, in one of the kind's phrasings.

A separate random stream (seed, 7), so references never change the rest of the run.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stream.simulate import catalog as cat

_FIRST = np.zeros(len(cat.MEMOS), dtype=np.int64)
_COUNT = np.zeros(len(cat.MEMOS), dtype=np.int64)
_SCAM = np.zeros(len(cat.MEMOS), dtype=bool)
for _kind, _variants in cat.MEMO_KINDS.items():
    _start = cat.MEMO[_kind]
    _FIRST[_start : _start + len(_variants)] = _start
    _COUNT[_start : _start + len(_variants)] = len(_variants)
    _SCAM[_start : _start + len(_variants)] = _kind in cat.SCAM_MEMO_KINDS


def personalise(
    seed: int, customers: int, memo: npt.NDArray[np.int64], cust: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """The ``memo`` column with each reference in its customer's phrasing, or -1 where the
    customer did not write one (each customer writes a reference on a share of payments
    drawn from Beta(2, 1.2): most write them often, some hardly ever)."""
    rng = np.random.default_rng([seed, 7])
    habit = rng.beta(2.0, 1.2, customers)
    style = rng.integers(0, 1 << 30, customers)
    scam_pick = rng.integers(0, 1 << 30, len(memo))
    written = rng.random(len(memo)) < habit[cust]
    has = memo >= 0
    kind = np.where(has, memo, 0)
    first, count, scam = _FIRST[kind], _COUNT[kind], _SCAM[kind]
    # a customer's own phrasing of each kind; scam references as the fraudster dictates
    own = first + (style[cust] + 7919 * first) % count
    variant = np.where(scam, first + scam_pick % count, own)
    return np.where(has & (written | scam), variant, -1).astype(np.int64)
