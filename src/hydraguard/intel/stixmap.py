"""How indicator kinds are written as STIX 2.1 patterns, both ways.

| kind | pattern |
|---|---|
| ip | `[ipv4-addr:value = '198.51.100.0/24']`, `[ipv6-addr:value = ...]` (also ISSUBSET, IN) |
| asn | `[autonomous-system:number = 64500]` |
| email_domain | `[email-addr:value LIKE '%@example.com']` (also read: `[domain-name:value = ...]`) |
| user_agent | `[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' MATCHES '...']` |
| payment_fingerprint | `[x-hydraguard-payment-method:fingerprint = '...']` |
| key_fingerprint | `[x-hydraguard-api-key:hashes.'SHA-256' = '...']` |
| template_signature | `[x-hydraguard-template-signature:value = '...']` |

Only patterns that are one observation of ORed comparisons are read: an AND, a FOLLOWEDBY or a qualifier
describes a conjunction that a single indicator cannot stand for.
"""

from __future__ import annotations

import re

import stix2.patterns as sp

from hydraguard.intel.indicators import IndicatorKind


class UnsupportedPattern(Exception):
    """A valid pattern that names nothing hydraguard matches; the message says what."""


_UA_PATH = "network-traffic:extensions.http-request-ext.request_header.User-Agent"
_WRITE = {
    IndicatorKind.ASN: "[autonomous-system:number = {value}]",
    IndicatorKind.EMAIL_DOMAIN: "[email-addr:value LIKE '%@{value}']",
    IndicatorKind.USER_AGENT: "[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' MATCHES "
    "'{value}']",
    IndicatorKind.PAYMENT_FINGERPRINT: "[x-hydraguard-payment-method:fingerprint = '{value}']",
    IndicatorKind.KEY_FINGERPRINT: "[x-hydraguard-api-key:hashes.'SHA-256' = '{value}']",
    IndicatorKind.TEMPLATE_SIGNATURE: "[x-hydraguard-template-signature:value = '{value}']",
}
# object path -> kind, for equality (=, IN) comparisons
_EQUALS = {
    "ipv4-addr:value": IndicatorKind.IP,
    "ipv6-addr:value": IndicatorKind.IP,
    "autonomous-system:number": IndicatorKind.ASN,
    "domain-name:value": IndicatorKind.EMAIL_DOMAIN,
    "x-hydraguard-payment-method:fingerprint": IndicatorKind.PAYMENT_FINGERPRINT,
    "x-hydraguard-api-key:hashes.SHA-256": IndicatorKind.KEY_FINGERPRINT,
    "x-hydraguard-template-signature:value": IndicatorKind.TEMPLATE_SIGNATURE,
}


def pattern_of(kind: IndicatorKind, value: str) -> str:
    if kind is IndicatorKind.IP:
        return f"[{'ipv6' if ':' in value else 'ipv4'}-addr:value = '{_quote(value)}']"
    if kind is IndicatorKind.ASN:
        return _WRITE[kind].format(value=value.removeprefix("AS"))
    return _WRITE[kind].format(value=_quote(value))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _unquote(constant: sp._Constant) -> str:
    # stix2 keeps a string constant's escapes as written
    text = str(constant.value)
    return re.sub(r"\\(['\\])", r"\1", text) if isinstance(constant, sp.StringConstant) else text


def pattern_values(pattern: sp._PatternExpression) -> list[tuple[IndicatorKind, str]]:
    """The (kind, value) pairs a parsed pattern (`stix2.pattern_visitor.create_pattern_object`) stands for."""
    if isinstance(pattern, sp.ObservationExpression):
        return _comparisons(pattern.operand)
    if isinstance(pattern, sp.OrObservationExpression):
        return [pair for operand in pattern.operands for pair in pattern_values(operand)]
    if isinstance(pattern, sp.ParentheticalExpression):
        return pattern_values(pattern.expression)
    raise UnsupportedPattern(f"{type(pattern).__name__.removesuffix('Expression')} patterns are not read")


def _comparisons(expression: sp._PatternExpression) -> list[tuple[IndicatorKind, str]]:
    if isinstance(expression, sp.OrBooleanExpression):
        return [pair for operand in expression.operands for pair in _comparisons(operand)]
    if isinstance(expression, sp.ParentheticalExpression):
        return _comparisons(expression.expression)
    if not isinstance(expression, sp._ComparisonExpression):
        raise UnsupportedPattern(f"{type(expression).__name__.removesuffix('Expression')} comparisons are not read")
    if expression.negated:
        raise UnsupportedPattern("negated comparisons are not read")
    path = (
        expression.lhs.object_type_name
        + ":"
        + ".".join(str(getattr(part, "property_name", "")) for part in expression.lhs.property_path)
    )
    rhs = expression.rhs
    if isinstance(expression, sp.EqualityComparisonExpression) and path in _EQUALS:
        return [(_EQUALS[path], _unquote(rhs))]
    if isinstance(expression, sp.InComparisonExpression) and path in _EQUALS:
        return [(_EQUALS[path], _unquote(item)) for item in rhs.value]
    if isinstance(expression, sp.IsSubsetComparisonExpression) and path in ("ipv4-addr:value", "ipv6-addr:value"):
        return [(IndicatorKind.IP, _unquote(rhs))]
    if isinstance(expression, sp.LikeComparisonExpression) and path == "email-addr:value":
        domain = _unquote(rhs)
        if domain.startswith("%@") and "%" not in domain[2:] and "_" not in domain[2:]:
            return [(IndicatorKind.EMAIL_DOMAIN, domain[2:])]
    if path == _UA_PATH:
        if isinstance(expression, sp.MatchesComparisonExpression):
            return [(IndicatorKind.USER_AGENT, _unquote(rhs))]
        if isinstance(expression, sp.EqualityComparisonExpression):
            return [(IndicatorKind.USER_AGENT, f"^{re.escape(_unquote(rhs))}$")]
    raise UnsupportedPattern(f"{path} {expression.operator} is not an indicator kind hydraguard matches")
