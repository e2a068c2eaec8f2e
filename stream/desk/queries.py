"""What the pages read: the queue's filters (validated against fixed choices, so nothing a user
types reaches SQL but as a bound parameter), the queue itself, and the supervisor's figures."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, TextClause, and_, func, select, text
from sqlalchemy.orm import Session, aliased

from schemas import Typology
from stream.desk.database import utcnow
from stream.desk.tables import (
    ACTIVE_SQL,
    AlertRow,
    AlertStatus,
    Disposition,
    IntakeReject,
    OutboxRow,
    User,
)

ACTIVE = (AlertStatus.OPEN.value, AlertStatus.NEEDS_INFO.value)
CLOSED = (AlertStatus.SUSPICIOUS.value, AlertStatus.LEGITIMATE.value)
STATUSES: dict[str, tuple[str, ...] | None] = {
    "active": ACTIVE,
    "open": (AlertStatus.OPEN.value,),
    "needs_info": (AlertStatus.NEEDS_INFO.value,),
    "closed": CLOSED,
    "all": None,
}
SCORE_BANDS: dict[str, tuple[float, float] | None] = {
    "any": None,
    "0.9-1.0": (0.9, 1.01),
    "0.7-0.9": (0.7, 0.9),
    "0.5-0.7": (0.5, 0.7),
    "0.0-0.5": (0.0, 0.5),
}
AGES: dict[str, tuple[timedelta | None, timedelta | None]] = {
    "any": (None, None),
    "1h": (None, timedelta(hours=1)),
    "24h": (None, timedelta(hours=24)),
    "7d": (None, timedelta(days=7)),
    "older": (timedelta(days=7), None),
}
SORTS = ("score", "newest", "oldest", "typology")
_MODEL_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+\-]{0,127}$")
MAX_PAGE = 10_000


class FilterError(ValueError):
    """A queue filter with a value outside its choices; the message names it."""


def _choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise FilterError(f"{name} must be one of {', '.join(choices)} (got {value[:40]!r})")
    return value


@dataclass(frozen=True)
class QueueFilter:
    status: str = "active"
    typology: str = ""
    band: str = "any"
    model: str = ""
    age: str = "any"
    sort: str = "score"
    mine: bool = False
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> QueueFilter:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise FilterError(f"unknown filter {unknown[0][:40]!r}")
        typology = params.get("typology", "")
        if typology and typology not in {t.value for t in Typology}:
            raise FilterError(f"unknown typology {typology[:40]!r}")
        model = params.get("model", "")
        if model and not _MODEL_VERSION.fullmatch(model):
            raise FilterError("a model version is 1-128 letters, digits and _ . : + -")
        page_text = params.get("page", "1")
        if not page_text.isdigit() or not 1 <= int(page_text) <= MAX_PAGE:
            raise FilterError(f"page must be a whole number from 1 to {MAX_PAGE}")
        mine = params.get("mine", "")
        return cls(
            status=_choice("status", params.get("status", "active"), list(STATUSES)),
            typology=typology,
            band=_choice("band", params.get("band", "any"), list(SCORE_BANDS)),
            model=model,
            age=_choice("age", params.get("age", "any"), list(AGES)),
            sort=_choice("sort", params.get("sort", "score"), SORTS),
            mine=_choice("mine", mine, ["", "0", "1"]) == "1",
            page=int(page_text),
        )

    def link(self, **changes: Any) -> str:
        """The queue URL of this filter with ``changes`` (defaults left out)."""
        chosen = replace(self, **changes)
        defaults = QueueFilter()
        params = {
            f.name: ("1" if value is True else value)
            for f in fields(chosen)
            if (value := getattr(chosen, f.name)) != getattr(defaults, f.name)
        }
        return "/queue" + (f"?{urlencode(params)}" if params else "")

    def conditions(self, user_id: int, now: datetime) -> list[ColumnElement[bool] | TextClause]:
        where: list[ColumnElement[bool] | TextClause] = []
        if self.status == "active":
            where.append(text(ACTIVE_SQL))  # the partial indexes' own predicate
        elif (statuses := STATUSES[self.status]) is not None:
            where.append(AlertRow.status.in_(statuses))
        if self.typology:
            where.append(AlertRow.typology == self.typology)
        band = SCORE_BANDS[self.band]
        if band is not None:
            where += [AlertRow.score >= band[0], AlertRow.score < band[1]]
        if self.model:
            where.append(AlertRow.model_version == self.model)
        older, newer = AGES[self.age]
        if older is not None:
            where.append(AlertRow.emitted_at <= now - older)
        if newer is not None:
            where.append(AlertRow.emitted_at > now - newer)
        if self.mine:
            where.append(AlertRow.assignee_id == user_id)
        return where

    def order(self) -> list[Any]:
        orders: dict[str, list[Any]] = {
            "score": [AlertRow.score.desc(), AlertRow.alert_id],
            "newest": [AlertRow.emitted_at.desc(), AlertRow.alert_id],
            "oldest": [AlertRow.emitted_at, AlertRow.alert_id],
            "typology": [AlertRow.typology, AlertRow.score.desc(), AlertRow.alert_id],
        }
        return orders[self.sort]


QUEUE_COLUMNS = (
    AlertRow.alert_id,
    AlertRow.case_id,
    AlertRow.customer_id,
    AlertRow.typology,
    AlertRow.score,
    AlertRow.model_version,
    AlertRow.amount_minor,
    AlertRow.currency,
    AlertRow.event_time,
    AlertRow.emitted_at,
    AlertRow.status,
)


def queue_page(
    db: Session, chosen: QueueFilter, user_id: int, page_size: int
) -> tuple[Sequence[Any], int]:
    """One page of the queue and the number of alerts matching the filter."""
    where = chosen.conditions(user_id, utcnow())
    assignee = aliased(User)
    page = (
        select(*QUEUE_COLUMNS, assignee.username.label("assignee"))
        .outerjoin(assignee, assignee.id == AlertRow.assignee_id)
        .where(*where)
        .order_by(*chosen.order())
        .limit(page_size)
        .offset((chosen.page - 1) * page_size)
    )
    rows = db.execute(page).all()
    total = db.scalar(select(func.count()).select_from(AlertRow).where(*where)) or 0
    return rows, total


def model_versions(db: Session) -> list[str]:
    return list(
        db.scalars(select(AlertRow.model_version).distinct().order_by(AlertRow.model_version))
    )


# -- the supervisor's figures ----------------------------------------------------------------


@dataclass(frozen=True)
class SupervisorStats:
    alerts_per_day: list[tuple[datetime, int]]
    dispositions_per_day: list[tuple[datetime, int]]
    precision: list[tuple[str, str, int, int]]
    """(model version, typology, suspicious, dispositioned)."""
    hours_to_disposition: list[float]
    counts: dict[str, int]


def supervisor_stats(db: Session, days: int = 30) -> SupervisorStats:
    since = utcnow() - timedelta(days=days)
    day = func.date_trunc("day", AlertRow.stored_at)
    alerts_per_day = [
        (d, n)
        for d, n in db.execute(
            select(day, func.count()).where(AlertRow.stored_at >= since).group_by(day).order_by(day)
        )
    ]
    dday = func.date_trunc("day", Disposition.created_at)
    dispositions_per_day = [
        (d, n)
        for d, n in db.execute(
            select(dday, func.count())
            .where(Disposition.created_at >= since)
            .group_by(dday)
            .order_by(dday)
        )
    ]
    final = and_(Disposition.alert_id == AlertRow.alert_id, Disposition.verdict.in_(CLOSED))
    suspicious = func.count().filter(Disposition.verdict == AlertStatus.SUSPICIOUS.value)
    precision = [
        (m, t, int(s), int(n))
        for m, t, s, n in db.execute(
            select(AlertRow.model_version, AlertRow.typology, suspicious, func.count())
            .join(Disposition, final)
            .group_by(AlertRow.model_version, AlertRow.typology)
            .order_by(AlertRow.model_version, AlertRow.typology)
        )
    ]
    hours = func.extract("epoch", Disposition.created_at - AlertRow.stored_at) / 3600.0
    hours_to_disposition = [
        float(h)
        for h in db.scalars(
            select(hours)
            .join(AlertRow, final)
            .where(Disposition.created_at >= since)
            .order_by(Disposition.created_at.desc())
            .limit(20_000)
        )
    ]
    by_status = {
        status: n
        for status, n in db.execute(select(AlertRow.status, func.count()).group_by(AlertRow.status))
    }
    counts = {status.value: int(by_status.get(status.value, 0)) for status in AlertStatus}
    counts["unsent_labels"] = int(
        db.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.sent_at.is_(None)))
        or 0
    )
    counts["intake_rejects"] = int(db.scalar(select(func.count()).select_from(IntakeReject)) or 0)
    return SupervisorStats(
        alerts_per_day, dispositions_per_day, precision, hours_to_disposition, counts
    )
