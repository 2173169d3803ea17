"""Verification reports and payment events, signup assessments, seen webhook signatures, sent intel alerts.

Revision ID: 0002

Created only if missing, like the first revision's tables: code written before this revision created them with
`create_all`, so a database may have them already.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_INDEXES = [
    ("ix_verification_reports_account_id", "verification_reports", "account_id"),
    ("ix_payment_events_account_id", "payment_events", "account_id"),
    ("ix_account_signups_at", "account_signups", "at"),
    ("ix_account_signups_ip", "account_signups", "ip"),
    ("ix_account_signups_subnet", "account_signups", "subnet"),
    ("ix_account_signups_device", "account_signups", "device"),
    ("ix_account_signups_email_pattern", "account_signups", "email_pattern"),
    ("ix_webhook_signatures_expires_at", "webhook_signatures", "expires_at"),
]


def upgrade() -> None:
    op.create_table(
        "verification_reports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("provider_ref", sa.String(length=200), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_table(
        "payment_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("outcome", sa.String(length=12), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("provider_ref", sa.String(length=200), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_table(
        "account_signups",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("account_type", sa.String(length=20), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("subnet", sa.String(length=64), nullable=True),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("email_pattern", sa.String(length=64), nullable=True),
        sa.Column("region", sa.String(length=8), nullable=True),
        sa.Column("provider_ref", sa.String(length=200), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("signals", sa.Text(), nullable=False),
        sa.Column("review", sa.Boolean(), nullable=False),
        sa.Column("challenged", sa.Boolean(), nullable=False),
        sa.Column("verification_required", sa.Boolean(), nullable=False),
        sa.Column("required_levels", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id"),
        if_not_exists=True,
    )
    op.create_table(
        "webhook_signatures",
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("signature"),
        if_not_exists=True,
    )
    op.create_table(
        "intel_alerts",
        sa.Column("webhook", sa.String(length=32), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("webhook", "campaign_id"),
        if_not_exists=True,
    )
    for name, table, column in _INDEXES:
        op.create_index(name, table, [column], if_not_exists=True)


def downgrade() -> None:
    for name, table, _ in _INDEXES:
        op.drop_index(name, table_name=table)
    for table in ["intel_alerts", "webhook_signatures", "account_signups", "payment_events", "verification_reports"]:
        op.drop_table(table)
