"""The desk's database schema (SQLAlchemy 2). Migrations in :mod:`stream.desk.migrations` create
exactly this; ``tests/desk`` checks the two agree.

* ``users`` and ``login_sessions``: who may sign in, as which role; server-side sessions, so
  disabling a user ends their sessions at once.
* ``cases`` group the alerts of one customer and scenario (the alert's typology) while open.
* ``alerts``: every alert once (primary key: its id), the payload as received plus the columns
  the queue filters and sorts on.
* ``dispositions``: what an analyst decided; at most one final verdict per alert (a partial
  unique index), any number of "needs more information".
* ``outbox``: one row per final disposition, written in the same transaction; the relay
  publishes it as a ``LabelEvent`` and records the broker's acknowledgement.
* ``case_notes``, ``audit`` (every action, who and when) and ``intake_rejects`` (alert messages
  that could not be read, kept with the reason rather than dropped).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Timestamp = DateTime(timezone=True)


class Role(StrEnum):
    ANALYST = "analyst"  # works the queue, dispositions alerts
    SUPERVISOR = "supervisor"  # + the supervisor page and the audit trail
    ADMIN = "admin"  # + user administration


class AlertStatus(StrEnum):
    OPEN = "open"
    NEEDS_INFO = "needs_info"
    SUSPICIOUS = "suspicious"
    LEGITIMATE = "legitimate"


# The predicate of the active-queue indexes. Queries must use this very text (not bound
# parameters) for PostgreSQL to prove they can use those indexes.
ACTIVE_SQL = "status IN ('open', 'needs_info')"


class Verdict(StrEnum):
    SUSPICIOUS = "suspicious"
    LEGITIMATE = "legitimate"
    NEEDS_INFO = "needs_info"

    @property
    def is_final(self) -> bool:
        return self is not Verdict.NEEDS_INFO


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class LoginSession(Base):
    __tablename__ = "login_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the cookie's token: a leaked table does not hand out sessions."""
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        # One open case per customer and scenario: concurrent intakes cannot open two.
        Index(
            "ix_cases_open_scenario",
            "customer_id",
            "typology",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_cases_customer", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    typology: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)
    closed_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    alert_count: Mapped[int] = mapped_column(Integer, default=0)
    open_alerts: Mapped[int] = mapped_column(Integer, default=0)
    max_score: Mapped[float] = mapped_column(Float, default=0.0)


class AlertRow(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_status_score", "status", "score"),
        # The default queue (open and needs-information alerts) in score or time order, read
        # straight from an index: no sort of every active alert for a page of 50.
        Index("ix_alerts_active_score", "score", postgresql_where=text(ACTIVE_SQL)),
        Index("ix_alerts_active_emitted", "emitted_at", postgresql_where=text(ACTIVE_SQL)),
        Index("ix_alerts_status_emitted", "status", "emitted_at"),
        Index("ix_alerts_customer_time", "customer_id", "event_time"),
        Index("ix_alerts_case", "case_id"),
        Index("ix_alerts_typology", "typology"),
        Index("ix_alerts_model", "model_version"),
        Index("ix_alerts_assignee", "assignee_id"),
    )

    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    customer_id: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(128))
    typology: Mapped[str] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(128))
    mode: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    event_time: Mapped[datetime] = mapped_column(Timestamp)
    emitted_at: Mapped[datetime] = mapped_column(Timestamp)
    stored_at: Mapped[datetime] = mapped_column(Timestamp)
    status: Mapped[str] = mapped_column(String(16), default=AlertStatus.OPEN.value)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    source: Mapped[str] = mapped_column(String(300))
    """Where the alert was read: topic[partition]@offset."""
    payload: Mapped[str] = mapped_column(Text)
    """The alert's JSON exactly as received."""


class Disposition(Base):
    __tablename__ = "dispositions"
    __table_args__ = (
        Index(
            "ix_dispositions_one_final",
            "alert_id",
            unique=True,
            postgresql_where=text("verdict IN ('suspicious', 'legitimate')"),
        ),
        Index("ix_dispositions_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.alert_id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    verdict: Mapped[str] = mapped_column(String(16))
    typology: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    disposition_id: Mapped[int] = mapped_column(ForeignKey("dispositions.id"), unique=True)
    label_id: Mapped[str] = mapped_column(String(128), unique=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    """The encoded LabelEvent: what is published, byte for byte, however often it is retried."""
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    attempted_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    """Set (and committed) before the first publish: marks rows a crash may have sent."""
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    kafka_partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kafka_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class CaseNote(Base):
    __tablename__ = "case_notes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class AuditEntry(Base):
    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_target", "target"), Index("ix_audit_at", "at"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(Timestamp)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    username: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(160), nullable=True)
    """What was acted on: ``alert:<id>``, ``case:<id>``, ``user:<name>``."""
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class IntakeReject(Base):
    __tablename__ = "intake_rejects"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    stored_at: Mapped[datetime] = mapped_column(Timestamp)
