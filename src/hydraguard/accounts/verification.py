"""What an account has proven: verification levels reported by the provider, and its payment history.

Reports are appended, never rewritten: a level is held while its latest report says verified. The raw
evidence (documents, card numbers) stays with the provider; only its outcome and reference are kept here.
These tables live in the registry database, beside `accounts`.
"""

from __future__ import annotations

import enum
import time
from typing import get_args

import msgspec
import sqlalchemy as sa

from hydraguard.accounts.registry import accounts
from hydraguard.config import VerificationLevel

LEVELS: tuple[str, ...] = get_args(VerificationLevel)
DEFAULT_ACCOUNT_TYPE = "individual"  # of an account created without a signup assessment


class Source(enum.StrEnum):
    ADMIN = "admin"  # the admin API or CLI
    WEBHOOK = "webhook"  # the provider's signed webhook


class Outcome(enum.StrEnum):
    VERIFIED = "verified"
    FAILED = "failed"


class PaymentOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CHARGEBACK = "chargeback"


metadata = sa.MetaData()

verification_reports = sa.Table(
    "verification_reports",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(40), sa.ForeignKey(accounts.c.id), nullable=False, index=True),
    sa.Column("level", sa.String(20), nullable=False),
    sa.Column("outcome", sa.String(10), nullable=False),
    sa.Column("source", sa.String(10), nullable=False),
    sa.Column("provider_ref", sa.String(200)),
    sa.Column("at", sa.Float, nullable=False),
)
payment_events = sa.Table(
    "payment_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(40), sa.ForeignKey(accounts.c.id), nullable=False, index=True),
    sa.Column("outcome", sa.String(12), nullable=False),
    sa.Column("source", sa.String(10), nullable=False),
    sa.Column("provider_ref", sa.String(200)),
    sa.Column("at", sa.Float, nullable=False),
)


class LevelReport(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    level: str
    outcome: Outcome
    source: Source
    provider_ref: str | None = None
    at: float = msgspec.field(default_factory=time.time)


class PaymentEvent(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    outcome: PaymentOutcome
    source: Source
    provider_ref: str | None = None
    at: float = msgspec.field(default_factory=time.time)


class PaymentHistory(msgspec.Struct, frozen=True):
    succeeded: int = 0
    failed: int = 0
    chargebacks: int = 0


def record_level(conn: sa.Connection, report: LevelReport) -> None:
    if report.level not in LEVELS:
        raise ValueError(f"unknown verification level {report.level!r}; the levels are {', '.join(LEVELS)}")
    conn.execute(verification_reports.insert().values(**msgspec.to_builtins(report)))


def record_payment(conn: sa.Connection, event: PaymentEvent) -> None:
    conn.execute(payment_events.insert().values(**msgspec.to_builtins(event)))


def reports(conn: sa.Connection, account_id: str) -> list[LevelReport]:
    """Every report on the account, oldest first."""
    query = (
        sa.select(verification_reports)
        .where(verification_reports.c.account_id == account_id)
        .order_by(verification_reports.c.at, verification_reports.c.id)
    )
    return [
        msgspec.convert({str(k): v for k, v in row.items() if k != "id"}, LevelReport)
        for row in conn.execute(query).mappings()
    ]


def held_levels(history: list[LevelReport]) -> dict[str, LevelReport]:
    """The levels whose latest report is a success, with that report: a later failure takes a level away."""
    latest: dict[str, LevelReport] = {}
    for report in history:
        latest[report.level] = report
    return {level: report for level, report in latest.items() if report.outcome is Outcome.VERIFIED}


def payment_history(conn: sa.Connection, account_id: str) -> PaymentHistory:
    query = (
        sa.select(payment_events.c.outcome, sa.func.count())
        .where(payment_events.c.account_id == account_id)
        .group_by(payment_events.c.outcome)
    )
    counts = {outcome: count for outcome, count in conn.execute(query)}
    return PaymentHistory(
        succeeded=counts.get(PaymentOutcome.SUCCEEDED.value, 0),
        failed=counts.get(PaymentOutcome.FAILED.value, 0),
        chargebacks=counts.get(PaymentOutcome.CHARGEBACK.value, 0),
    )
