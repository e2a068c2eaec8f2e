"""The desk schema: users, sessions, cases, alerts, dispositions, outbox, notes, audit, rejects.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-06 02:02:02.572108
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("typology", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("alert_count", sa.Integer(), nullable=False),
        sa.Column("open_alerts", sa.Integer(), nullable=False),
        sa.Column("max_score", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cases_customer", "cases", ["customer_id"], unique=False)
    op.create_index(
        "ix_cases_open_scenario",
        "cases",
        ["customer_id", "typology"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "intake_rejects",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("typology", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
        ),
        sa.PrimaryKeyConstraint("alert_id"),
    )
    op.create_index("ix_alerts_assignee", "alerts", ["assignee_id"], unique=False)
    op.create_index("ix_alerts_case", "alerts", ["case_id"], unique=False)
    op.create_index(
        "ix_alerts_customer_time", "alerts", ["customer_id", "event_time"], unique=False
    )
    op.create_index("ix_alerts_model", "alerts", ["model_version"], unique=False)
    op.create_index("ix_alerts_status_emitted", "alerts", ["status", "emitted_at"], unique=False)
    op.create_index("ix_alerts_status_score", "alerts", ["status", "score"], unique=False)
    op.create_index("ix_alerts_typology", "alerts", ["typology"], unique=False)
    op.create_index(
        "ix_alerts_active_score",
        "alerts",
        ["score"],
        unique=False,
        postgresql_where=sa.text("status IN ('open', 'needs_info')"),
    )
    op.create_index(
        "ix_alerts_active_emitted",
        "alerts",
        ["emitted_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('open', 'needs_info')"),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=160), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_at", "audit", ["at"], unique=False)
    op.create_index("ix_audit_target", "audit", ["target"], unique=False)
    op.create_table(
        "case_notes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_case_notes_case_id"), "case_notes", ["case_id"], unique=False)
    op.create_table(
        "login_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index(op.f("ix_login_sessions_user_id"), "login_sessions", ["user_id"], unique=False)
    op.create_table(
        "dispositions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("alert_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("typology", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.alert_id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dispositions_created", "dispositions", ["created_at"], unique=False)
    op.create_index(
        "ix_dispositions_one_final",
        "dispositions",
        ["alert_id"],
        unique=True,
        postgresql_where=sa.text("verdict IN ('suspicious', 'legitimate')"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("disposition_id", sa.BigInteger(), nullable=False),
        sa.Column("label_id", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["disposition_id"],
            ["dispositions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("disposition_id"),
        sa.UniqueConstraint("label_id"),
    )
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["id"],
        unique=False,
        postgresql_where=sa.text("sent_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_outbox_unsent", table_name="outbox", postgresql_where=sa.text("sent_at IS NULL")
    )
    op.drop_table("outbox")
    op.drop_index(
        "ix_dispositions_one_final",
        table_name="dispositions",
        postgresql_where=sa.text("verdict IN ('suspicious', 'legitimate')"),
    )
    op.drop_index("ix_dispositions_created", table_name="dispositions")
    op.drop_table("dispositions")
    op.drop_index(op.f("ix_login_sessions_user_id"), table_name="login_sessions")
    op.drop_table("login_sessions")
    op.drop_index(op.f("ix_case_notes_case_id"), table_name="case_notes")
    op.drop_table("case_notes")
    op.drop_index("ix_audit_target", table_name="audit")
    op.drop_index("ix_audit_at", table_name="audit")
    op.drop_table("audit")
    op.drop_index("ix_alerts_active_emitted", table_name="alerts")
    op.drop_index("ix_alerts_active_score", table_name="alerts")
    op.drop_index("ix_alerts_typology", table_name="alerts")
    op.drop_index("ix_alerts_status_score", table_name="alerts")
    op.drop_index("ix_alerts_status_emitted", table_name="alerts")
    op.drop_index("ix_alerts_model", table_name="alerts")
    op.drop_index("ix_alerts_customer_time", table_name="alerts")
    op.drop_index("ix_alerts_case", table_name="alerts")
    op.drop_index("ix_alerts_assignee", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("users")
    op.drop_table("intake_rejects")
    op.drop_index(
        "ix_cases_open_scenario", table_name="cases", postgresql_where=sa.text("status = 'open'")
    )
    op.drop_index("ix_cases_customer", table_name="cases")
    op.drop_table("cases")
