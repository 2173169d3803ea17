"""Simulated orgs, accounts and keys: signup schedules, identities, bans and replacements.

The registry rows have the fields of `accounts.models` (`Org`, `Account`, `ApiKey`); payment methods are
stored only as keyed fingerprints (`accounts.keys.keyed_fingerprint`) under a secret derived from the scenario.
Names and domains never reveal the population: a campaign's fake identities look like anyone else's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hydraguard.accounts.keys import keyed_fingerprint
from hydraguard.sim.scenario import Accounts, Bans, Device, Email, Payment, Signup
from hydraguard.sim.timing import DAY, HOUR

FREEMAIL = {
    "gmail.com": 0.55,
    "outlook.com": 0.12,
    "hotmail.com": 0.07,
    "yahoo.com": 0.07,
    "icloud.com": 0.06,
    "proton.me": 0.04,
    "qq.com": 0.04,
    "163.com": 0.03,
    "gmx.de": 0.02,
}
DISPOSABLE = ("mailinator.com", "guerrillamail.com", "10minutemail.com", "tempmail.dev", "yopmail.com", "trashmail.io")
_NAME_A = ("north", "blue", "bright", "silver", "quantum", "clear", "red", "open", "swift", "deep", "urban", "true")
_NAME_B = ("ridge", "harbor", "leaf", "stone", "field", "wave", "forge", "peak", "grove", "signal", "bridge", "lake")
_NAME_C = ("Labs", "Analytics", "Systems", "Health", "Software", "Studio", "Partners", "Robotics", "Learning", "AI")
_TLDS = ("com", "io", "xyz", "top", "ai", "net", "dev")
_BASE62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_ids(rng: np.random.Generator, prefix: str, count: int, nbytes: int = 10) -> list[str]:
    """Ids shaped like the registry's (`acct_` + 20 hex digits), from the generator."""
    raw = np.frombuffer(rng.bytes(count * nbytes), dtype=np.uint8).reshape(count, nbytes)
    digits = np.empty((count, 2 * nbytes), dtype=np.uint8)
    digits[:, 0::2], digits[:, 1::2] = _HEX[raw >> 4], _HEX[raw & 15]
    return [prefix + d.decode() for d in digits.view(f"S{2 * nbytes}").ravel().tolist()]


def company_names(rng: np.random.Generator, count: int) -> list[str]:
    a, b, c = (rng.integers(len(x), size=count) for x in (_NAME_A, _NAME_B, _NAME_C))
    return [f"{_NAME_A[i].title()}{_NAME_B[j]} {_NAME_C[k]}" for i, j, k in zip(a, b, c, strict=True)]


def domain_of(name: str, tld: str = "com") -> str:
    return name.lower().replace(" ", "-") + "." + tld


def signup_times(rng: np.random.Generator, signup: Signup, count: int, start: float, days: int) -> np.ndarray:
    """Signup times of `count` accounts: before the start, in bursts, and the rest uniformly over the span."""
    sizes = [round(signup.existing * count)] + [round(b.share * count) for b in signup.bursts]
    while sum(sizes) > count:  # rounding
        sizes[int(np.argmax(sizes))] -= 1
    parts = [start - rng.random(sizes[0]) * signup.history_days * DAY]
    for burst, size in zip(signup.bursts, sizes[1:], strict=True):
        parts.append(start + burst.day * DAY + rng.random(size) * burst.hours * HOUR)
    parts.append(start + rng.random(count - sum(sizes)) * days * DAY)
    return np.sort(np.concatenate(parts))


def lifecycle(
    rng: np.random.Generator, created: np.ndarray, bans: Bans, start: float, end: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ban times (inf: never) of the accounts and of their replacements, generation by generation:
    (created, banned, replaces) for every account, replacements appended after the initial ones."""
    all_created, all_banned, all_replaces = [created], [], [np.full(len(created), -1, dtype=np.int64)]
    generation, first = created, 0
    while len(generation):
        live_from = np.maximum(generation, start)
        banned = np.full(len(generation), np.inf)
        if bans.daily_rate > 0:
            banned = live_from + rng.exponential(DAY / bans.daily_rate, len(generation))
        for wave in sorted(bans.waves, key=lambda w: w.day):
            when = start + wave.day * DAY + rng.random(len(generation)) * 600.0
            hit = (generation < when) & (banned > when) & (rng.random(len(generation)) < wave.share)
            banned[hit] = when[hit]
        banned[banned >= end] = np.inf
        all_banned.append(banned)
        if not bans.replace:
            break
        dead = np.flatnonzero(np.isfinite(banned))
        replacement = banned[dead] + bans.replace_after_hours * HOUR + rng.random(len(dead)) * 600.0
        keep = replacement < end
        generation = replacement[keep]
        all_created.append(generation)
        all_replaces.append(first + dead[keep])
        first += len(banned)
    return np.concatenate(all_created), np.concatenate(all_banned), np.concatenate(all_replaces)


@dataclass
class Registry:
    """Every simulated org, account and key, in global index order."""

    secret: bytes
    org_ids: list[str] = field(default_factory=list)
    org_names: list[str] = field(default_factory=list)
    org_tiers: list[str] = field(default_factory=list)
    org_created: list[np.ndarray] = field(default_factory=list)
    account_ids: list[str] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)
    key_hints: list[str] = field(default_factory=list)
    key_account: list[np.ndarray] = field(default_factory=list)
    key_created: list[np.ndarray] = field(default_factory=list)
    tables: list[AccountTable] = field(default_factory=list)

    @property
    def orgs(self) -> int:
        return len(self.org_ids)

    @property
    def accounts(self) -> int:
        return len(self.account_ids)


@dataclass
class AccountTable:
    """One population's accounts. `first` is the global index of its first account."""

    population: str
    first: int
    ids: list[str]
    org: np.ndarray  # global org index
    tier: list[str]
    created: np.ndarray
    banned: np.ndarray  # inf: never
    replaces: np.ndarray  # local index of the banned account this one replaces, -1 if none
    email_domain: list[str | None]
    payment_fingerprint: list[str | None]
    key_first: np.ndarray  # global index of the account's first key
    key_count: np.ndarray
    signup_ip: list[str] = field(default_factory=list)
    signup_device: list[str | None] = field(default_factory=list)
    email_pattern: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def create(
    registry: Registry,
    rng: np.random.Generator,
    population: str,
    payer: str,
    accounts: Accounts,
    email: Email,
    payment: Payment,
    created: np.ndarray,
    banned: np.ndarray,
    replaces: np.ndarray,
) -> AccountTable:
    """Orgs, accounts and keys for accounts signing up at `created`; `payer` names whose cards a `pool` is."""
    n = len(created)
    n_orgs = -(-n // accounts.per_org)
    org_local = rng.permutation(n) // accounts.per_org
    first_org = registry.orgs
    org_created = np.full(n_orgs, np.inf)
    np.minimum.at(org_created, org_local, created)
    tiers = list(accounts.tiers)
    weights = np.array([accounts.tiers[t] for t in tiers])
    org_tier = [tiers[i] for i in rng.choice(len(tiers), size=n_orgs, p=weights / weights.sum())]
    names = company_names(rng, n_orgs)
    registry.org_ids += hex_ids(rng, "org_", n_orgs)
    registry.org_names += names if accounts.per_org > 1 else ["Personal"] * n_orgs
    registry.org_tiers += org_tier
    registry.org_created.append(org_created)

    ids = hex_ids(rng, "acct_", n)
    key_count = rng.integers(1, accounts.keys_per_account + 1, size=n)
    key_first = len(registry.key_ids) + np.cumsum(key_count) - key_count
    n_keys = int(key_count.sum())
    registry.key_ids += hex_ids(rng, "key_", n_keys)
    registry.key_hints += _hints(rng, n_keys)
    registry.key_account.append(registry.accounts + np.repeat(np.arange(n), key_count))
    registry.key_created.append(np.repeat(created, key_count))
    table = AccountTable(
        population=population,
        first=registry.accounts,
        ids=ids,
        org=first_org + org_local,
        tier=[org_tier[o] for o in org_local],
        created=created,
        banned=banned,
        replaces=replaces,
        email_domain=_email_domains(rng, email, names, org_local),
        payment_fingerprint=_payments(rng, registry.secret, payment, population, payer, org_local),
        key_first=key_first,
        key_count=key_count,
    )
    registry.account_ids += ids
    registry.tables.append(table)
    return table


def _hints(rng: np.random.Generator, count: int) -> list[str]:
    chars = _BASE62[rng.integers(len(_BASE62), size=(count, 8))].view("S8").ravel().tolist()
    return [f"hg_{c[:4].decode()}…{c[4:].decode()}" for c in chars]


def _email_domains(
    rng: np.random.Generator, email: Email, org_names: list[str], org_local: np.ndarray
) -> list[str | None]:
    kinds = list(email.domains)
    weights = np.array([email.domains[k] for k in kinds])
    kind = rng.choice(len(kinds), size=len(org_local), p=weights / weights.sum())
    free = list(FREEMAIL)
    free_p = np.array(list(FREEMAIL.values()))
    free_pick = rng.choice(len(free), size=len(org_local), p=free_p / free_p.sum())
    disposable = rng.integers(len(DISPOSABLE), size=len(org_local))
    custom = [domain_of(n, _TLDS[i % len(_TLDS)]) for i, n in enumerate(company_names(rng, email.custom_domains))]
    custom_pick = rng.integers(len(custom), size=len(org_local))
    campus = domain_of(company_names(rng, 1)[0].split()[0] + " university", "edu")
    out: list[str | None] = []
    for i, k in enumerate(kind.tolist()):
        name = kinds[k]
        if name == "freemail":
            out.append(free[free_pick[i]])
        elif name == "disposable":
            out.append(DISPOSABLE[disposable[i]])
        elif name == "edu":
            out.append(campus)
        elif name == "corporate":
            out.append(domain_of(org_names[org_local[i]]))
        else:
            out.append(custom[custom_pick[i]])
    return out


def sign_up_devices_and_addresses(
    table: AccountTable, rng: np.random.Generator, secret: bytes, owner: str, email: Email, device: Device
) -> None:
    """The keyed signup device and address shape of the table's accounts, as the product's signup risk check
    stores them (`accounts.risk.facts_of`): a pool is `owner`'s (a campaign's populations share one), otherwise
    each account has its own."""
    n = len(table)
    own = [f"{table.population}/{i}" for i in range(n)]
    reports = rng.random(n) < device.share
    devices = [f"{owner}/pool/{k}" for k in rng.integers(device.pool, size=n)] if device.pool else own
    table.signup_device = [
        keyed_fingerprint(secret, "device", token) if reported else None
        for token, reported in zip(devices, reports.tolist(), strict=True)
    ]
    numbered = rng.random(n) < email.numbered
    shapes = [f"{owner}/pool/{k}" for k in rng.integers(email.shapes, size=n)] if email.shapes else own
    table.email_pattern = [
        keyed_fingerprint(secret, "email-shape", f"{shape}@{domain}") if has and domain is not None else None
        for shape, has, domain in zip(shapes, numbered.tolist(), table.email_domain, strict=True)
    ]


def _payments(
    rng: np.random.Generator, secret: bytes, payment: Payment, population: str, payer: str, org_local: np.ndarray
) -> list[str | None]:
    n = len(org_local)
    has = rng.random(n) < payment.share
    if payment.scope == "account":
        tokens = [f"{population}/account/{i}" for i in range(n)]
    elif payment.scope == "org":
        tokens = [f"{population}/org/{o}" for o in org_local.tolist()]
    elif payment.pool_of is None:
        tokens = [f"{payer}/pool/{c}" for c in rng.integers(payment.cards, size=n).tolist()]
    else:  # the owners of a campaign's pool cards
        tokens = [f"{payment.pool_of}/pool/{i % payment.cards}" for i in range(n)]
    cache: dict[str, str] = {}
    out: list[str | None] = []
    for token, paid in zip(tokens, has.tolist(), strict=True):
        if not paid:
            out.append(None)
            continue
        if token not in cache:
            cache[token] = keyed_fingerprint(secret, "payment", token)
        out.append(cache[token])
    return out
