"""Indicators: one kind, one normalized value, where they came from and how long they hold.

An indicator's id derives from its kind and normalized value, so the same indicator from two feeds is one
indicator: `merge` unites the sources and keeps the widest confidence and time span.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import ipaddress
import re
import time

import msgspec

from hydraguard.detect.request import MINHASH_BANDS


class IndicatorKind(enum.StrEnum):
    IP = "ip"  # an IPv4 or IPv6 address or CIDR
    ASN = "asn"  # an autonomous system, matched through the IP-to-ASN table
    EMAIL_DOMAIN = "email_domain"  # matches the domain and its subdomains
    PAYMENT_FINGERPRINT = "payment_fingerprint"  # a payment method's hash (the registry's keyed fingerprint)
    USER_AGENT = "user_agent"  # a regular expression searched in the User-Agent, case-insensitively
    KEY_FINGERPRINT = "key_fingerprint"  # SHA-256 of a leaked API key, never the key
    TEMPLATE_SIGNATURE = "template_signature"  # a prompt template's MinHash band keys (detect.request)


class IndicatorError(ValueError):
    """An indicator that cannot be accepted; the message says which value and why."""


class Indicator(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: IndicatorKind
    value: str
    sources: tuple[str, ...]
    confidence: int
    first_seen: float
    last_seen: float
    expires_at: float | None = None
    description: str = ""

    def active(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    @property
    def label(self) -> str:
        """What a match records on the event: `kind:indicator_id`."""
        return f"{self.kind}:{self.id}"


MAX_VALUE_CHARS = 512
MAX_SOURCE_CHARS = 200
MAX_DESCRIPTION_CHARS = 2_000
# Shorter prefixes than these would refuse a large share of the Internet: most likely a feed's mistake
MIN_PREFIX = {4: 8, 6: 16}
_HEX = re.compile(r"[0-9a-f]+")
_ASN = re.compile(r"(?:as)?(\d{1,10})")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def indicator_id(kind: IndicatorKind, value: str) -> str:
    return "ind_" + hashlib.sha256(f"{kind}\0{value}".encode()).hexdigest()[:20]


def key_fingerprint(api_key: str) -> str:
    """The fingerprint under which a leaked API key is shared and matched: SHA-256, hex."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def normalize(kind: IndicatorKind | str, value: str) -> str:
    """The canonical form of `value` for `kind`; IndicatorError if it is not a valid value of that kind."""
    try:
        kind = IndicatorKind(kind)
    except ValueError:
        raise IndicatorError(f"unknown indicator kind {kind!r} (one of {', '.join(IndicatorKind)})") from None
    if not isinstance(value, str) or not value or len(value) > MAX_VALUE_CHARS:
        raise IndicatorError(f"{kind} value must be a string of 1 to {MAX_VALUE_CHARS} characters")
    return _NORMALIZERS[kind](value)


def _ip(value: str) -> str:
    try:
        net = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise IndicatorError(f"ip {value!r}: {exc}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped and net.prefixlen >= 96:
        net = ipaddress.IPv4Network((net.network_address.ipv4_mapped, net.prefixlen - 96))
    if net.prefixlen < MIN_PREFIX[net.version]:
        raise IndicatorError(f"ip {value!r}: networks wider than /{MIN_PREFIX[net.version]} are refused")
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def _asn(value: str) -> str:
    match = _ASN.fullmatch(value.strip().lower())
    if match is None or not 0 < int(match[1]) < 2**32:
        raise IndicatorError(f"asn {value!r}: expected AS<number> or <number>, 1 to 4294967295")
    return f"AS{int(match[1])}"


def _email_domain(value: str) -> str:
    text = value.strip().lower().removeprefix("@").removeprefix("*.").rstrip(".")
    if "@" in text:
        raise IndicatorError(f"email_domain {value!r}: give the domain only, never an address")
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError:
        raise IndicatorError(f"email_domain {value!r}: not a valid domain name") from None
    labels = text.split(".")
    if len(text) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise IndicatorError(f"email_domain {value!r}: not a valid domain name (at least two labels)")
    return text


def _hex(kind: IndicatorKind, lengths: range | tuple[int, ...]):  # type: ignore[no-untyped-def]
    def check(value: str) -> str:
        text = value.strip().lower()
        if _HEX.fullmatch(text) is None or len(text) not in lengths:
            raise IndicatorError(f"{kind} {value!r}: expected {_describe(lengths)} hexadecimal digits")
        return text

    return check


def _describe(lengths: range | tuple[int, ...]) -> str:
    return f"{lengths[0]} to {lengths[-1]}" if isinstance(lengths, range) else " or ".join(map(str, lengths))


def _user_agent(value: str) -> str:
    try:
        compiled = re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise IndicatorError(f"user_agent pattern {value!r}: {exc}") from None
    # matching runs all patterns as one alternation first; a capturing group would renumber the others'
    if compiled.groups:
        raise IndicatorError(f"user_agent pattern {value!r}: use non-capturing groups (?:...)")
    if compiled.search("") is not None:
        raise IndicatorError(f"user_agent pattern {value!r}: matches every user agent")
    try:
        re.compile(f"(?:{value})|(?:)")
    except re.error as exc:  # e.g. global flags such as (?i) that are not at the start once combined
        raise IndicatorError(f"user_agent pattern {value!r}: {exc}") from None
    return value


_NORMALIZERS = {
    IndicatorKind.IP: _ip,
    IndicatorKind.ASN: _asn,
    IndicatorKind.EMAIL_DOMAIN: _email_domain,
    IndicatorKind.PAYMENT_FINGERPRINT: _hex(IndicatorKind.PAYMENT_FINGERPRINT, range(16, 129)),
    IndicatorKind.USER_AGENT: _user_agent,
    IndicatorKind.KEY_FINGERPRINT: _hex(IndicatorKind.KEY_FINGERPRINT, (64,)),
    IndicatorKind.TEMPLATE_SIGNATURE: _hex(IndicatorKind.TEMPLATE_SIGNATURE, (8 * MINHASH_BANDS,)),
}


def make_indicator(
    kind: IndicatorKind | str,
    value: str,
    *,
    source: str,
    confidence: int = 50,
    first_seen: float | None = None,
    last_seen: float | None = None,
    expires_at: float | None = None,
    description: str = "",
    now: float | None = None,
) -> Indicator:
    """A validated, normalized indicator; IndicatorError naming the problem otherwise."""
    normalized = normalize(kind, value)
    kind = IndicatorKind(kind)
    if not source or len(source) > MAX_SOURCE_CHARS:
        raise IndicatorError(f"source must be 1 to {MAX_SOURCE_CHARS} characters")
    if isinstance(confidence, bool) or not isinstance(confidence, int) or not 0 <= confidence <= 100:
        raise IndicatorError(f"confidence {confidence!r}: expected an integer from 0 to 100")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise IndicatorError(f"description longer than {MAX_DESCRIPTION_CHARS} characters")
    now = time.time() if now is None else now
    first = now if first_seen is None else float(first_seen)
    last = first if last_seen is None else float(last_seen)
    if last < first:
        raise IndicatorError(f"last_seen ({format_time(last)}) is before first_seen ({format_time(first)})")
    return Indicator(
        id=indicator_id(kind, normalized),
        kind=kind,
        value=normalized,
        sources=(source,),
        confidence=confidence,
        first_seen=first,
        last_seen=last,
        expires_at=None if expires_at is None else float(expires_at),
        description=description,
    )


def merge(old: Indicator, new: Indicator) -> Indicator:
    """One indicator from two reports of it: sources united, the highest confidence, the earliest first
    sighting, the latest last sighting and the latest expiry (none, if either never expires)."""
    if old.id != new.id:
        raise ValueError(f"cannot merge different indicators {old.id} and {new.id}")
    expires = None if old.expires_at is None or new.expires_at is None else max(old.expires_at, new.expires_at)
    latest = new if new.last_seen >= old.last_seen else old
    return msgspec.structs.replace(
        old,
        sources=tuple(sorted(set(old.sources) | set(new.sources))),
        confidence=max(old.confidence, new.confidence),
        first_seen=min(old.first_seen, new.first_seen),
        last_seen=max(old.last_seen, new.last_seen),
        expires_at=expires,
        description=latest.description or old.description or new.description,
    )


def parse_time(text: str) -> float:
    """Unix seconds from an ISO 8601 time (UTC unless it says otherwise) or a number of seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise IndicatorError(f"time {text!r}: expected ISO 8601 (2025-01-31T12:00:00Z) or unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def format_time(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")
