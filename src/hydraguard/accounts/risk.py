"""Signup risk: signals about a new account, each with a configured weight, summed into a score.

The score sets where the account starts: at or above `risk.review_score` it is held at the review tier until
it verifies the step-up levels; at or above `risk.challenge_score` it must verify them before first use. What
fired is stored with the account (`account_signups`), so that operators can see why.

Nothing personal is stored raw: the device id and the email's shape are keyed hashes, as payment methods are.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Collection

import msgspec
import sqlalchemy as sa
from disposable_email_domains import blocklist as disposable_domains

from hydraguard.accounts import keys
from hydraguard.accounts.registry import accounts
from hydraguard.accounts.verification import metadata
from hydraguard.config import VerificationConfig
from hydraguard.intel.index import IntelIndex

SUBNET_PREFIX = {4: 24, 6: 48}
SIGNUP_SOURCE = "signup-risk"  # the source of the challenge a signup starts with
HOUR = 3_600.0
_IN_CHUNK = 5_000  # account ids per `IN (...)` query: under every database's limit on bound parameters

account_signups = sa.Table(
    "account_signups",
    metadata,
    sa.Column("account_id", sa.String(40), sa.ForeignKey(accounts.c.id), primary_key=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("account_type", sa.String(20), nullable=False),
    sa.Column("ip", sa.String(64), index=True),
    sa.Column("subnet", sa.String(64), index=True),
    sa.Column("device", sa.String(64), index=True),  # keyed hash of the provider's device id
    sa.Column("email_pattern", sa.String(64), index=True),  # keyed hash of the address's shape
    sa.Column("region", sa.String(8)),
    sa.Column("provider_ref", sa.String(200)),
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("signals", sa.Text, nullable=False),  # JSON list of Signal
    sa.Column("review", sa.Boolean, nullable=False),
    sa.Column("challenged", sa.Boolean, nullable=False),
    sa.Column("verification_required", sa.Boolean, nullable=False),
    sa.Column("required_levels", sa.Text, nullable=False),  # JSON list
)


class SignupRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the provider's signup flow (or an operator) tells about a new account; raw values, never stored."""

    account_type: str = "individual"
    email: str | None = None
    ip: str | None = None
    device_id: str | None = None
    payment_method: str | None = None
    region: str | None = None
    provider_ref: str | None = None


class SignupFacts(msgspec.Struct, frozen=True, kw_only=True):
    """The storable form of a signup: addresses normalized, personal values as keyed hashes."""

    org_id: str
    account_type: str
    email_domain: str | None
    email_pattern: str | None
    ip: str | None
    subnet: str | None
    device: str | None
    payment_fingerprint: str | None
    region: str | None


class Signal(msgspec.Struct, frozen=True):
    name: str
    weight: int
    detail: str


class RiskAssessment(msgspec.Struct, frozen=True, kw_only=True):
    score: int
    signals: list[Signal]
    review: bool
    challenged: bool


class SignupRecord(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    at: float
    account_type: str
    region: str | None
    provider_ref: str | None
    score: int
    signals: list[Signal]
    review: bool
    challenged: bool  # by its risk score
    verification_required: bool  # before first use: by its risk score or its account type
    required_levels: list[str]  # what lifts the signup's challenge


class SignupLinks(msgspec.Struct, frozen=True):
    """What a signup stored that can link accounts across orgs, beyond the account's own row."""

    device: str | None
    email_pattern: str | None


class SignupError(ValueError):
    """A signup value that cannot be read (a malformed email or IP); the message says which."""


_EMAIL = re.compile(r"([^@\s]{1,64})@([A-Za-z0-9.-]{1,253})")
_REGION = re.compile(r"[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?")
_DIGITS = re.compile(r"\d+")


def facts_of(secret: bytes, org_id: str, request: SignupRequest) -> SignupFacts:
    email_domain = email_pattern = ip = subnet = None
    if request.email is not None:
        match = _EMAIL.fullmatch(request.email.strip())
        if match is None:
            raise SignupError(f"email {request.email!r} is not an address")
        local, email_domain = match.group(1).lower().split("+")[0], match.group(2).lower().rstrip(".")
        if _DIGITS.search(local):  # signup bursts number their addresses: the shape without its digits links them
            email_pattern = keys.keyed_fingerprint(secret, "email-shape", f"{_DIGITS.sub('#', local)}@{email_domain}")
    if request.ip is not None:
        try:
            address = ipaddress.ip_address(request.ip)
        except ValueError as exc:
            raise SignupError(f"ip {request.ip!r} is not an IP address") from exc
        ip = str(address)
        subnet = str(ipaddress.ip_network(f"{address}/{SUBNET_PREFIX[address.version]}", strict=False))
    if request.region is not None and _REGION.fullmatch(request.region) is None:
        raise SignupError(f"region {request.region!r} is not an ISO 3166 code (e.g. DE or US-CA)")
    return SignupFacts(
        org_id=org_id,
        account_type=request.account_type,
        email_domain=email_domain,
        email_pattern=email_pattern,
        ip=ip,
        subnet=subnet,
        device=keys.keyed_fingerprint(secret, "device", request.device_id) if request.device_id else None,
        payment_fingerprint=keys.keyed_fingerprint(secret, "payment", request.payment_method)
        if request.payment_method
        else None,
        region=request.region.upper() if request.region else None,
    )


def is_disposable(domain: str) -> bool:
    """The domain or a parent of it is on the maintained list of throwaway-address services."""
    labels = domain.split(".")
    return any(".".join(labels[i:]) in disposable_domains for i in range(len(labels) - 1))


_VELOCITY_COLUMN = {
    "email_burst": "email_pattern",
    "ip_velocity": "ip",
    "subnet_velocity": "subnet",
    "device_velocity": "device",
}


def _recent(conn: sa.Connection, column: sa.Column[str], value: str, since: float) -> int:
    query = (
        sa.select(sa.func.count()).select_from(account_signups).where(column == value, account_signups.c.at >= since)
    )
    return int(conn.execute(query).scalar_one())


def assess(
    conn: sa.Connection, facts: SignupFacts, config: VerificationConfig, intel: IntelIndex | None, now: float
) -> RiskAssessment:
    """Score a signup against the signups before it (read through `conn`, before this one is stored)."""
    risk, weights = config.risk, config.risk.weights
    window = risk.window_hours * HOUR
    since = now - window
    signals: list[Signal] = []
    if facts.email_domain and is_disposable(facts.email_domain):
        signals.append(Signal("disposable_email", weights.disposable_email, f"{facts.email_domain} is disposable"))
    velocity = (
        ("email_burst", risk.email_burst_signups, facts.email_pattern, "addresses of one shape (prefix and digits)"),
        ("ip_velocity", risk.ip_signups, facts.ip, f"signups from {facts.ip}"),
        ("subnet_velocity", risk.subnet_signups, facts.subnet, f"signups from {facts.subnet}"),
        ("device_velocity", risk.device_signups, facts.device, "signups from one device"),
    )
    for name, threshold, value, what in velocity:
        if value is not None:
            column = account_signups.c[_VELOCITY_COLUMN[name]]
            weight = getattr(weights, name)
            count = _recent(conn, column, value, since) + 1
            if count >= threshold:
                signals.append(Signal(name, weight, f"{count} {what} within {risk.window_hours:g} h"))
    if facts.payment_fingerprint is not None:
        same_card = accounts.c.payment_fingerprint == facts.payment_fingerprint
        recent = sa.select(sa.func.count()).select_from(accounts).where(same_card, accounts.c.signup_at >= since)
        count = int(conn.execute(recent).scalar_one()) + 1
        if count >= risk.payment_signups:
            what = f"{count} signups with one payment method within {risk.window_hours:g} h"
            signals.append(Signal("payment_velocity", weights.payment_velocity, what))
        other_orgs = sa.select(sa.func.count(sa.distinct(accounts.c.org_id))).where(
            same_card, accounts.c.org_id != facts.org_id
        )
        orgs = int(conn.execute(other_orgs).scalar_one())
        if orgs:
            signals.append(
                Signal(
                    "payment_shared", weights.payment_shared, f"payment method used by accounts of {orgs} other orgs"
                )
            )
    if intel is not None:
        matches = intel.match_signup(facts.email_domain, facts.payment_fingerprint, facts.ip, now)
        if matches:
            signals.append(Signal("threat_intel", weights.threat_intel, f"matches {', '.join(matches)}"))
    if facts.region is not None:
        country = facts.region.split("-")[0]
        if facts.region in config.unsupported_regions or country in config.unsupported_regions:
            signals.append(Signal("unsupported_region", weights.unsupported_region, f"{facts.region} is not supported"))
    score = sum(signal.weight for signal in signals)
    return RiskAssessment(
        score=score, signals=signals, review=score >= risk.review_score, challenged=score >= risk.challenge_score
    )


def store(conn: sa.Connection, record: SignupRecord, facts: SignupFacts) -> None:
    row = msgspec.to_builtins(record)
    row["signals"] = json.dumps(row["signals"])
    row["required_levels"] = json.dumps(row["required_levels"])
    conn.execute(
        account_signups.insert().values(
            **row, ip=facts.ip, subnet=facts.subnet, device=facts.device, email_pattern=facts.email_pattern
        )
    )


_RECORD_FIELDS = tuple(SignupRecord.__struct_fields__)


def load(conn: sa.Connection, account_id: str) -> SignupRecord | None:
    columns = [account_signups.c[name] for name in _RECORD_FIELDS]
    row = conn.execute(sa.select(*columns).where(account_signups.c.account_id == account_id)).mappings().first()
    if row is None:
        return None
    data = {str(name): value for name, value in row.items()}  # names may be str subclasses msgspec refuses
    data["signals"] = json.loads(data["signals"])
    data["required_levels"] = json.loads(data["required_levels"])
    return msgspec.convert(data, SignupRecord)


def signup_links(engine: sa.Engine, account_ids: Collection[str] | None = None) -> dict[str, SignupLinks]:
    """Each account signed up through the risk check (of `account_ids`, or all) that has a device or an address
    shape to link by."""
    query = sa.select(account_signups.c.account_id, account_signups.c.device, account_signups.c.email_pattern).where(
        sa.or_(account_signups.c.device.is_not(None), account_signups.c.email_pattern.is_not(None))
    )
    wanted = list(account_ids) if account_ids is not None else None
    chunks = (
        [query]
        if wanted is None
        else [
            query.where(account_signups.c.account_id.in_(wanted[i : i + _IN_CHUNK]))
            for i in range(0, len(wanted), _IN_CHUNK)
        ]
    )
    with engine.connect() as conn:
        return {
            row.account_id: SignupLinks(row.device, row.email_pattern)
            for chunk in chunks
            for row in conn.execute(chunk)
        }
