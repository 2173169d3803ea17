"""Which limits apply to a request: tier limits with per-account overrides, per scope."""

from __future__ import annotations

import functools
import ipaddress

import msgspec

from hydraguard.limits.base import Slot
from hydraguard.limits.gcra import Quota

MINUTE = 60.0
DAY = 86_400.0


class LimitSet(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Limits of one scope; `None` means unlimited."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute
    tpd: int | None = None  # tokens per day
    concurrency: int | None = None

    def merged(self, override: LimitSet | None) -> LimitSet:
        """This set with every limit the override sets replaced."""
        if override is None:
            return self
        return LimitSet(
            **{
                f: getattr(override, f) if getattr(override, f) is not None else getattr(self, f)
                for f in self.__struct_fields__
            }
        )

    def tightened(self, other: LimitSet | None) -> LimitSet:
        """The stricter of the two for every limit (used by throttle decisions)."""
        if other is None:
            return self
        values = {}
        for f in self.__struct_fields__:
            a, b = getattr(self, f), getattr(other, f)
            values[f] = b if a is None else a if b is None else min(a, b)
        return LimitSet(**values)


@functools.lru_cache(maxsize=65_536)
def subnet_of(ip: str, v4_prefix: int = 24, v6_prefix: int = 48) -> str:
    addr = ipaddress.ip_address(ip)
    prefix = v4_prefix if addr.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def scope_limits(scope: str, scope_id: str, limits: LimitSet, tokens: int) -> tuple[list[Quota], list[Slot]]:
    """The GCRA quotas and concurrency slot for one scope (e.g. scope "account", id "acc_1")."""
    quotas: list[Quota] = []
    if limits.rpm:
        quotas.append(Quota(f"rpm:{scope}:{scope_id}", limits.rpm, MINUTE, 1, f"rpm:{scope}"))
    if limits.tpm:
        quotas.append(Quota(f"tpm:{scope}:{scope_id}", limits.tpm, MINUTE, tokens, f"tpm:{scope}"))
    if limits.tpd:
        quotas.append(Quota(f"tpd:{scope}:{scope_id}", limits.tpd, DAY, tokens, f"tpd:{scope}"))
    slots = [Slot(f"conc:{scope}:{scope_id}", limits.concurrency, f"concurrency:{scope}")] if limits.concurrency else []
    return quotas, slots


def token_quotas(quotas: list[Quota]) -> list[Quota]:
    return [q for q in quotas if q.name.startswith(("tpm:", "tpd:"))]


def with_cost(quotas: list[Quota], cost: int) -> list[Quota]:
    return [Quota(q.key, q.limit, q.period, cost, q.name) for q in quotas]
