"""Cross-account linkage: a weighted evidence graph between accounts, and its communities (the hydra).

Accounts are linked through shared *evidence values*: a payment fingerprint, a signup subnet or device, an e-mail
domain or address shape, a template's MinHash band key, a client subnet or TLS fingerprint, a threat-intel label.
The graph is bipartite (accounts and values), so a value shared by 20,000 accounts costs 20,000 edges, not 200
million. Each account-value edge is weighted by its kind's weight times the value's rarity, log(N / k) for a value
seen on k of N accounts: a corporate NAT or a popular SDK links little, a rare template or card links much. Leiden
(igraph's own implementation, maximizing modularity) finds the communities; a cluster is the accounts of one
community.

Evidence accumulates as (account, value) pairs packed in one uint64 (24 bits of account number, 4 of kind, 36
of value hash), deduplicated with `np.unique` as batches arrive.
"""

from __future__ import annotations

import enum
import random
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import igraph as ig
import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hydraguard.detect.accounts import ClientAddresses, _subnets, encode

ACCOUNT_BITS, KIND_BITS, VALUE_BITS = 24, 4, 36
MAX_ACCOUNTS = 1 << ACCOUNT_BITS
TEMPLATE_BANDS = 4  # of the signature's 8 band keys: enough to collide, half the pairs to keep
TOP_VALUES_PER_ACCOUNT = 24  # per evidence kind, in a linkage
KEPT_VALUES_PER_ACCOUNT = 4 * TOP_VALUES_PER_ACCOUNT  # per evidence kind, in the log: the top ones and contenders
PROBATION_DAYS = 3  # a template an account used once is forgotten unless it uses it again within this many days
COUNT_MASK = (1 << 32) - 1  # request counts are ranked as 32-bit numbers (saturating)
SUBNET_SAMPLE = 4  # keep client subnets whose hash is 0 mod this: accounts sharing many subnets still share some
IP_HOUR_SAMPLE = 16  # keep the same-hour uses of client IPs whose hash is 0 mod this
HOUR_BITS = 12  # a same-hour value is 24 bits of the IP's hash and the hour mod 4096 (170 days)


class Evidence(enum.IntEnum):
    PAYMENT = 1
    SIGNUP_SUBNET = 2
    EMAIL_DOMAIN = 3
    TEMPLATE = 4
    CLIENT_SUBNET = 5
    INTEL = 6  # a threat-intel indicator the account's requests matched (shared intel: a known campaign's)
    TLS_FINGERPRINT = 7  # the client's TLS fingerprint (JA4, JA3), when the edge passes one
    SIGNUP_DEVICE = 8  # the keyed hash of the device the account signed up from, when the signup flow sends one
    EMAIL_PATTERN = 9  # the keyed hash of the address's shape (digits masked), when its local part is numbered
    IP_HOUR = 10  # a client IP in one hour: accounts using it at the same time, not a week apart
    SAMPLING = 11  # the request's sampling-parameter fingerprint (model, temperature, max_tokens, ...)

    @property
    def label(self) -> str:
        """The kind in words, for evidence lists (`payment`, `client IP in one hour`)."""
        return _LABELS.get(self, self.name.lower().replace("_", " "))


_LABELS = {
    Evidence.IP_HOUR: "client IP in one hour",
    Evidence.EMAIL_PATTERN: "address shape",
    Evidence.SAMPLING: "sampling parameters",
}


ALL = frozenset(Evidence)
REGISTRY_EVIDENCE = {  # the registry table's column of each kind
    Evidence.PAYMENT: "payment_fingerprint",
    Evidence.SIGNUP_SUBNET: "signup_ip",
    Evidence.EMAIL_DOMAIN: "email_domain",
    Evidence.SIGNUP_DEVICE: "signup_device",
    Evidence.EMAIL_PATTERN: "email_pattern",
}
EVENT_EVIDENCE = {  # the event column of each kind read value for value
    Evidence.TLS_FINGERPRINT: "tls_fingerprint",
    Evidence.SAMPLING: "sampling_fingerprint",
}
FAMILY = {  # the ablation families of docs/detection.md
    Evidence.PAYMENT: "payment",
    Evidence.SIGNUP_SUBNET: "ip",
    Evidence.EMAIL_DOMAIN: "identity",
    Evidence.TEMPLATE: "templates",
    Evidence.CLIENT_SUBNET: "ip",
    Evidence.INTEL: "intel",
    Evidence.TLS_FINGERPRINT: "client",
    Evidence.SIGNUP_DEVICE: "client",
    Evidence.EMAIL_PATTERN: "identity",
    Evidence.IP_HOUR: "ip",
    Evidence.SAMPLING: "client",
}
# values held by more than this share of the linked accounts link nothing: a freemail domain, a carrier's NAT, the
# TLS fingerprint of a popular browser or SDK, a kiosk or emulator every signup of a shop comes from, a common
# address shape (`info#@`), a carrier NAT's address in a busy hour, an SDK's default parameters
DEFAULT_MAX_SHARE = {
    Evidence.EMAIL_DOMAIN: 0.02,
    Evidence.EMAIL_PATTERN: 0.02,
    Evidence.SIGNUP_DEVICE: 0.02,
    Evidence.SIGNUP_SUBNET: 0.02,
    Evidence.CLIENT_SUBNET: 0.02,
    Evidence.TLS_FINGERPRINT: 0.02,
    Evidence.IP_HOUR: 0.02,
    Evidence.SAMPLING: 0.02,
}
DEFAULT_WEIGHTS = {
    Evidence.PAYMENT: 3.0,
    Evidence.SIGNUP_SUBNET: 1.0,
    Evidence.EMAIL_DOMAIN: 1.0,
    Evidence.TEMPLATE: 1.0,
    Evidence.CLIENT_SUBNET: 0.5,
    Evidence.INTEL: 2.0,
    Evidence.TLS_FINGERPRINT: 0.5,
    # one device signing up accounts of several orgs is near proof, as a shared card is; numbered addresses of one
    # shape, strong: rarer than a domain, weaker than a device
    Evidence.SIGNUP_DEVICE: 3.0,
    Evidence.EMAIL_PATTERN: 1.5,
    # one IP in the same hour: stronger than a subnet over the whole log (a dynamic residential IP changes hands
    # within days, a cloud or ISP /24 has many tenants), weaker than a card
    Evidence.IP_HOUR: 1.0,
    # the tool chooses the parameters, not the person: every user of one app or script shares them, as they share
    # a TLS fingerprint
    Evidence.SAMPLING: 0.5,
}


def value_hashes(values: list[str]) -> np.ndarray:
    """64 bits per value, stable across processes: CRC-32 low, Adler-32 high (`map`: the loops run in C)."""
    encoded = list(map(str.encode, values))
    crc = np.fromiter(map(zlib.crc32, encoded), dtype=np.uint64, count=len(encoded))
    adler = np.fromiter(map(zlib.adler32, encoded), dtype=np.uint64, count=len(encoded))
    return crc | (adler << np.uint64(32))


def _value_ids(kind: Evidence, hashes: np.ndarray) -> np.ndarray:
    return np.uint64(int(kind) << VALUE_BITS) | (hashes & np.uint64((1 << VALUE_BITS) - 1))


def _pack(accounts: np.ndarray, kind: Evidence, hashes: np.ndarray) -> np.ndarray:
    mask = np.uint64((1 << VALUE_BITS) - 1)
    return (
        (accounts.astype(np.uint64) << np.uint64(KIND_BITS + VALUE_BITS))
        | np.uint64(int(kind) << VALUE_BITS)
        | (hashes & mask)
    )


def _hex_pairs() -> np.ndarray:
    """Two hex digits (lower case), read as one native uint16, to the byte they spell; 256 for anything else."""
    table = np.full(1 << 16, 256, dtype=np.uint16)
    digits = b"0123456789abcdef"
    pairs = np.frombuffer(b"".join(bytes((hi, lo)) for hi in digits for lo in digits), dtype=np.uint16)
    table[pairs] = np.arange(256, dtype=np.uint16)
    return table


_HEX_PAIRS = _hex_pairs()


def _band_keys(signatures: pa.Array | pa.ChunkedArray, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose `template_signature` starts with `bands` band keys of 8 lower-case hex digits (others, from a
    damaged or foreign log, carry no template evidence), and those rows' (rows, bands) uint64 values
    `band << 32 | key`. Decoded from the column's own buffers: a Python string per row was most of the cost."""
    array = signatures.combine_chunks() if isinstance(signatures, pa.ChunkedArray) else signatures
    array = array.cast(pa.large_string())
    width = 8 * bands
    _, offset_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64, count=len(array) + 1, offset=8 * array.offset)
    starts = offsets[:-1]
    signed = (offsets[1:] - starts >= width) & array.is_valid().to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(signed)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, dtype=np.uint8)
    spelled = _HEX_PAIRS[data[starts[rows, None] + np.arange(width)].view(np.uint16)]
    hexed = (spelled < 256).all(axis=1)
    signed[rows[~hexed]] = False
    keys = spelled[hexed].astype(np.uint8).view(">u4")
    return signed, keys.astype(np.uint64) | (np.arange(bands, dtype=np.uint64) << np.uint64(32))


@dataclass
class EvidenceLog:
    """Distinct (account, evidence value) pairs with how many requests carried each, in bounded memory.

    Two rules bound it. A template an account has used once waits on probation (`PROBATION_DAYS`) and becomes
    evidence when the account uses it again: most prompts are one-offs whose band keys never recur, and a
    campaign's templates recur by the thousand. And each (account, kind) keeps its `KEPT_VALUES_PER_ACCOUNT` most
    used values, ties broken by value hash, so that accounts rotating through one pool of subnets keep the same
    sample of it (bottom-k sampling); linkage reads the top `TOP_VALUES_PER_ACCOUNT` of those.
    """

    pairs: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    counts: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    _pending: list[np.ndarray] = field(default_factory=list)
    _pending_size: int = 0
    _day: int = 0  # the day (of event time) of the latest events added
    _once: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))  # templates on probation
    _once_day: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    _top: np.ndarray | None = None
    # value id -> the value itself, for the kinds whose ids are hashes (templates' ids are their band keys)
    _names: dict[int, str] = field(default_factory=dict)
    _ips: dict[int, str] = field(default_factory=dict)  # a client IP by 24 bits of its hash (same-hour values)
    _hour: int = 0  # the latest hour (of event time) seen, to date same-hour values

    def add(self, packed: np.ndarray, time: float | None = None) -> None:
        self._pending.append(packed)
        self._pending_size += len(packed)
        if time is not None:
            self._day = max(self._day, int(time // 86_400))
        if self._pending_size > max(4_000_000, len(self.pairs)):
            self.compact()

    def compact(self) -> None:
        """Merge the pending pairs into the sorted, distinct `pairs` (binary searches and merge passes: the
        pairs held are never sorted again), then apply the probation and the per-account cap."""
        if not self._pending:
            return
        new, new_counts = np.unique(np.concatenate(self._pending), return_counts=True)
        self._pending, self._pending_size = [], 0
        self._top = None
        at, held = _find(self.pairs, new)
        self.counts[at[held]] += new_counts[held]
        new, new_counts = new[~held], new_counts[~held]
        template = (new >> np.uint64(VALUE_BITS)) & np.uint64((1 << KIND_BITS) - 1) == np.uint64(Evidence.TEMPLATE)
        # probation expires by the day of the latest events: exact to a compaction
        self._once, self._once_day, again = _probation(
            self._once, self._once_day, new, new_counts, template, self._day, self._day - PROBATION_DAYS
        )
        once = template & ~again & (new_counts == 1)
        self.pairs, self.counts = _merged(self.pairs, self.counts, new[~once], new_counts[~once])
        kept = _top_of_runs(self.pairs, self.counts, KEPT_VALUES_PER_ACCOUNT)
        if not kept.all():
            self.pairs, self.counts = self.pairs[kept], self.counts[kept]

    def observe_registry(self, accounts: np.ndarray, table: pa.Table, kinds: frozenset[Evidence] = ALL) -> None:
        """Registry evidence of accounts (numbers aligned with `table`'s rows): payment, signup subnet, domain, and
        where the table has them (a simulated registry may not), signup device and address shape."""
        for kind, name in REGISTRY_EVIDENCE.items():
            if kind not in kinds or name not in table.column_names:
                continue
            column = _subnets(table.column(name)) if kind == Evidence.SIGNUP_SUBNET else table.column(name)
            valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
            values = column.filter(pa.array(valid)).to_pylist()
            hashes = value_hashes(values)
            self._names.update(zip(_value_ids(kind, hashes).tolist(), values, strict=True))
            self.add(_pack(accounts[valid], kind, hashes))

    def observe_events(
        self,
        accounts: np.ndarray,
        batch: pa.RecordBatch | pa.Table,
        kinds: frozenset[Evidence] = ALL,
        addresses: ClientAddresses | None = None,
    ) -> None:
        """Evidence of the batch's requests (`accounts`: each row's account number); `addresses`: its client IPs,
        if the caller has encoded them already."""
        if Evidence.TEMPLATE in kinds:
            signed, keys = _band_keys(batch.column("template_signature"), TEMPLATE_BANDS)
            if signed.any():
                time = float(pc.max(batch.column("time")).as_py())
                self.add(_pack(np.repeat(accounts[signed], TEMPLATE_BANDS), Evidence.TEMPLATE, keys.ravel()), time)
        if Evidence.INTEL in kinds:
            self._observe_intel(accounts, batch.column("intel_matches"))
        for kind, name in EVENT_EVIDENCE.items():
            if kind in kinds:
                self._observe_values(accounts, kind, batch.column(name))
        if Evidence.CLIENT_SUBNET not in kinds and Evidence.IP_HOUR not in kinds:
            return
        addresses = addresses or ClientAddresses.of(batch.column("client_ip"))
        if Evidence.CLIENT_SUBNET in kinds:
            self._observe_subnets(accounts, addresses)
        if Evidence.IP_HOUR in kinds:
            self._observe_ip_hours(accounts, batch.column("time"), addresses)

    def _observe_subnets(self, accounts: np.ndarray, addresses: ClientAddresses) -> None:
        """Client subnets, sampled by hash (`SUBNET_SAMPLE`)."""
        known = np.array([subnet is not None for subnet in addresses.subnets], dtype=bool)
        hashes = np.zeros(len(known), dtype=np.uint64)
        hashes[known] = value_hashes([subnet for subnet in addresses.subnets if subnet is not None])
        kept = known & ((hashes % np.uint64(SUBNET_SAMPLE)) == 0)  # a request without a client IP has no subnet
        chosen = np.flatnonzero(kept)
        self._names.update(
            zip(
                _value_ids(Evidence.CLIENT_SUBNET, hashes[chosen]).tolist(),
                [addresses.subnets[i] for i in chosen.tolist()],
                strict=True,
            )
        )
        subnet = addresses.row_subnets()
        sampled = kept[subnet]
        self.add(_pack(accounts[sampled], Evidence.CLIENT_SUBNET, hashes[subnet[sampled]]))

    def _observe_ip_hours(
        self, accounts: np.ndarray, times: pa.ChunkedArray | pa.Array, addresses: ClientAddresses
    ) -> None:
        """Client IPs and the hours they were used in, sampled by the IP's hash (`IP_HOUR_SAMPLE`)."""
        known = np.array([ip is not None for ip in addresses.ips], dtype=bool)
        kept = known & (addresses.ip_hashes % np.uint64(IP_HOUR_SAMPLE) == 0)
        rows = kept[addresses.code]
        if not rows.any():
            return
        key = (addresses.ip_hashes // np.uint64(IP_HOUR_SAMPLE)) & np.uint64((1 << (VALUE_BITS - HOUR_BITS)) - 1)
        self._ips.update(zip(key[kept].tolist(), np.array(addresses.ips, dtype=object)[kept].tolist(), strict=True))
        hours = (times.to_numpy()[rows] // 3600).astype(np.int64)
        self._hour = max(self._hour, int(hours.max()))
        values = (key[addresses.code[rows]] << np.uint64(HOUR_BITS)) | (
            hours.astype(np.uint64) & np.uint64((1 << HOUR_BITS) - 1)
        )
        self.add(_pack(accounts[rows], Evidence.IP_HOUR, values))

    def _observe_values(self, accounts: np.ndarray, kind: Evidence, values: pa.ChunkedArray | pa.Array) -> None:
        """Each row's value of a text column as evidence of this kind (null: none)."""
        code, distinct = encode(values)
        known = np.array([v is not None for v in distinct], dtype=bool)
        if not known[code].any():  # e.g. no TLS-terminating edge: nothing per row
            return
        hashes = np.zeros(len(distinct), dtype=np.uint64)
        named = [v for v in distinct if v is not None]
        hashes[known] = value_hashes(named)
        self._names.update(zip(_value_ids(kind, hashes[known]).tolist(), named, strict=True))
        rows = known[code]
        self.add(_pack(accounts[rows], kind, hashes[code[rows]]))

    def _observe_intel(self, accounts: np.ndarray, matches: pa.ChunkedArray | pa.Array) -> None:
        valid = pc.is_valid(matches).to_numpy(zero_copy_only=False)
        if not valid.any():
            return
        labels = pc.split_pattern(matches.filter(pa.array(valid)), ",")
        owners = np.repeat(accounts[valid], pc.list_value_length(labels).to_numpy(zero_copy_only=False))
        unique, inverse = np.unique(pc.list_flatten(labels).to_numpy(zero_copy_only=False), return_inverse=True)
        hashes = value_hashes(unique.tolist())
        self._names.update(zip(_value_ids(Evidence.INTEL, hashes).tolist(), unique.tolist(), strict=True))
        self.add(_pack(owners, Evidence.INTEL, hashes[inverse]))

    def name(self, value_id: int) -> str:
        """The evidence value behind a value id: a payment fingerprint, subnet, domain, a template band key (`band:key`,
        as `request.signature_bands` writes them), or a client IP and the hour it was used in."""
        key = value_id & ((1 << VALUE_BITS) - 1)
        if value_id >> VALUE_BITS == Evidence.TEMPLATE:
            return f"{key >> 32}:{key & 0xFFFFFFFF:08x}"
        if value_id >> VALUE_BITS == Evidence.IP_HOUR:
            # the latest hour up to the latest seen with the value's residue: exact for values under 170 days old
            hour = self._hour - (self._hour - (key & ((1 << HOUR_BITS) - 1))) % (1 << HOUR_BITS)
            return f"{self._ips[key >> HOUR_BITS]} at {datetime.fromtimestamp(hour * 3600, UTC):%Y-%m-%dT%H}h UTC"
        return self._names[value_id]

    def top_per_account(self) -> np.ndarray:
        """Mask over `incidences()` (every pair): each (account, kind)'s TOP_VALUES_PER_ACCOUNT values by request
        count. An account's most repeated templates and subnets are what it shares with its cluster; the long tail
        adds graph edges, not evidence."""
        self.compact()
        if self._top is None:
            self._top = _top_of_runs(self.pairs, self.counts, TOP_VALUES_PER_ACCOUNT)
        return self._top

    def values_of(self, accounts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(account, value id) of each distinct pair of these account numbers, held or pending, without compacting:
        cheap for a few accounts between linkages. Pending templates count from their first use (no probation)."""
        shift = np.uint64(KIND_BITS + VALUE_BITS)
        wanted = np.unique(accounts).astype(np.uint64)
        low = np.searchsorted(self.pairs, wanted << shift)
        high = np.searchsorted(self.pairs, (wanted + np.uint64(1)) << shift)
        held = [self.pairs[a:b] for a, b in zip(low.tolist(), high.tolist(), strict=True) if b > a]
        # a lookup table, not `np.isin`: pending chunks hold millions of pairs. Its last slot, never wanted, stands
        # for every larger account number.
        chosen = np.zeros(int(wanted.max()) + 2 if len(wanted) else 1, dtype=bool)
        chosen[wanted.astype(np.int64)] = True
        top = np.uint64(len(chosen) - 1)
        pending = [chunk[chosen[np.minimum(chunk >> shift, top).astype(np.int64)]] for chunk in self._pending]
        pairs = _sorted_distinct(np.sort(np.concatenate([np.zeros(0, np.uint64), *held, *pending])))[0]
        return (pairs >> shift).astype(np.int64), pairs & np.uint64((1 << (KIND_BITS + VALUE_BITS)) - 1)

    def top_counts(self, kind: Evidence, accounts: int) -> np.ndarray:
        """Per account number (`accounts` of them): the requests of its most used value of this kind (0: none)."""
        self.compact()
        of_kind = (self.pairs >> np.uint64(VALUE_BITS)) & np.uint64((1 << KIND_BITS) - 1) == np.uint64(kind)
        owner = (self.pairs[of_kind] >> np.uint64(KIND_BITS + VALUE_BITS)).astype(np.int64)
        top = np.zeros(accounts)
        if len(owner):
            starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])  # pairs are sorted by account
            top[owner[starts]] = np.maximum.reduceat(self.counts[of_kind], starts)
        return top

    def incidences(self, top: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(account, kind, value id, requests) of every pair, or with `top` only of each (account, kind)'s top
        values (`top_per_account`, what linkage reads); value ids are kind and hash packed together."""
        self.compact()
        pairs, counts = self.pairs, self.counts
        if top:
            chosen = self.top_per_account()
            pairs, counts = pairs[chosen], counts[chosen]
        account = (pairs >> np.uint64(KIND_BITS + VALUE_BITS)).astype(np.int64)
        value = pairs & np.uint64((1 << (KIND_BITS + VALUE_BITS)) - 1)
        kind = (value >> np.uint64(VALUE_BITS)).astype(np.int64)
        return account, kind, value, counts


@dataclass(frozen=True)
class Clusters:
    """Communities of linked accounts: `members[i]` are account numbers, `strength[i]` each member's total edge
    weight to the cluster's evidence values; `evidence(i)` the values that link them most."""

    members: list[np.ndarray]
    strength: list[np.ndarray]
    label: np.ndarray  # per account number: its cluster, or -1
    # the graph's evidence values, sorted: each one's cluster (-1: a community too small) and edge weight, so that
    # an account can be weighed against the clusters between linkages (`strengths`)
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    value_label: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    value_weight: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # each cluster's inside edges (kind, value id, weight), cluster after cluster from `_edge_bounds[i]`
    _edges: tuple[np.ndarray, np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0))
    )
    _edge_bounds: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))

    def evidence(self, cluster: int, top: int = 8) -> list[tuple[Evidence, int, int, float]]:
        """The values that link cluster `cluster` most, as (kind, value id, members sharing it, total weight)
        (computed on demand: most clusters are never reported)."""
        edges = slice(self._edge_bounds[cluster], self._edge_bounds[cluster + 1])
        kind, value, weight = (array[edges] for array in self._edges)
        return _top_evidence(kind, value, weight, top)

    def most_shared(self, cluster: int, kind: Evidence) -> int:
        """The most members of cluster `cluster` that one value of this kind links (0: none of this kind)."""
        edges = slice(self._edge_bounds[cluster], self._edge_bounds[cluster + 1])
        kinds, values, _ = (array[edges] for array in self._edges)
        chosen = np.sort(values[kinds == kind])
        if len(chosen) == 0:
            return 0
        starts = np.flatnonzero(np.r_[True, chosen[1:] != chosen[:-1]])
        return int(np.diff(np.r_[starts, len(chosen)]).max())

    def strengths(self, account: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weigh accounts against the clusters through the values they hold ((account, value id) pairs, each once):
        (account, cluster, strength) for each account's strongest cluster, strength being the sum of the edge weights
        of its values in that cluster, as in a linkage."""
        at, found = _find(self.values, value)
        found[found] = self.value_label[at[found]] >= 0
        account, at = account[found], at[found]
        if len(account) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
        key = (account.astype(np.uint64) << np.uint64(32)) | self.value_label[at].astype(np.uint64)
        order = np.argsort(key, kind="stable")
        pairs, index = _sorted_distinct(key[order])
        strength = np.bincount(index, weights=self.value_weight[at][order])
        owner = (pairs >> np.uint64(32)).astype(np.int64)
        cluster = (pairs & np.uint64(COUNT_MASK)).astype(np.int64)
        # per account, its strongest cluster: pairs are sorted by account, so the maximum of each run
        best = np.lexsort((strength, owner))
        last = np.r_[owner[best][1:] != owner[best][:-1], True]
        chosen = best[last]
        return owner[chosen], cluster[chosen], strength[chosen]


@dataclass(frozen=True)
class EvidenceGraph:
    """The bipartite graph a linkage partitions: linked accounts (vertices 0..) and the evidence values they share
    (after them), one weighted edge per (account, value)."""

    accounts: int  # account numbers there are (the length of a `Clusters.label`)
    linked: np.ndarray  # per account vertex, its account number
    values: np.ndarray  # per value vertex, its value id (kind and hash), in value order
    account_vertex: np.ndarray  # per edge
    value_vertex: np.ndarray  # per edge, counted from the first value vertex
    kind: np.ndarray  # per edge, its evidence kind
    weight: np.ndarray  # per edge

    @property
    def vertices(self) -> int:
        return len(self.linked) + len(self.values)

    def edges(self) -> np.ndarray:
        """(account vertex, value vertex) per edge, values numbered after the accounts; int32 halves what a worker
        process is sent."""
        return np.column_stack([self.account_vertex, len(self.linked) + self.value_vertex]).astype(np.int32)


def link(
    log: EvidenceLog,
    orgs: np.ndarray,
    *,
    candidates: np.ndarray | None = None,
    weights: dict[Evidence, float] | None = None,
    max_share: dict[Evidence, float] | None = None,
    min_cluster: int = 3,
    resolution: float = 1.0,
    seed: int = 0,
) -> Clusters:
    """Cluster accounts by shared evidence (`evidence_graph`, then `communities`, then `clusters_of`)."""
    graph = evidence_graph(log, orgs, candidates=candidates, weights=weights, max_share=max_share)
    return clusters_of(graph, communities(graph.vertices, graph.edges(), graph.weight, resolution, seed), min_cluster)


def evidence_graph(
    log: EvidenceLog,
    orgs: np.ndarray,
    *,
    candidates: np.ndarray | None = None,
    weights: dict[Evidence, float] | None = None,
    max_share: dict[Evidence, float] | None = None,
) -> EvidenceGraph:
    """The graph of shared evidence. `orgs` gives each account number's org number: a value counts only when
    accounts of two or more orgs share it (the registry already ties an org's accounts together, and a company
    card or office NAT is not evidence). `candidates` (a boolean mask over account numbers) limits the graph to
    those accounts. Values of the kinds in `max_share` shared by more than that share of the linked accounts are
    dropped (a freemail domain, a mobile carrier's NAT)."""
    accounts = len(orgs)
    weights = DEFAULT_WEIGHTS if weights is None else weights
    account, kind, value, _ = log.incidences(top=True)
    weighted = np.zeros(1 << KIND_BITS, dtype=bool)
    weighted[[int(k) for k, w in weights.items() if w > 0]] = True
    keep = weighted[kind]
    if candidates is not None:
        keep &= (account < len(candidates)) & candidates[np.minimum(account, len(candidates) - 1)]
    account, kind, value = account[keep], kind[keep], value[keep]
    # one sort by (value, org) gives each value's orgs and holders: it is kept if two orgs or more hold it and, for
    # the kinds in `caps`, no more than that share of the linked accounts do
    org = orgs[account]
    order = np.argsort((value << np.uint64(ACCOUNT_BITS)) | org.astype(np.uint64))
    by_value, by_org = value[order], org[order]
    starts = np.r_[True, by_value[1:] != by_value[:-1]] if len(order) else np.zeros(0, dtype=bool)
    run = np.cumsum(starts) - 1
    held_by = np.bincount(run, weights=starts | np.r_[True, by_org[1:] != by_org[:-1]][: len(order)])
    run_value, sharing = by_value[starts], np.bincount(run)
    run_of = np.empty(len(order), dtype=np.int64)
    run_of[order] = run  # each incidence's value run, incidences still in account order
    shared = held_by >= 2
    total = max(len(_sorted_distinct(account[shared[run_of]])[0]), 2)
    caps = DEFAULT_MAX_SHARE if max_share is None else max_share
    cap = np.full(1 << KIND_BITS, np.inf)
    for k, share in caps.items():
        cap[int(k)] = share * total
    used = shared & (sharing <= cap[(run_value >> np.uint64(VALUE_BITS)).astype(np.int64)])
    keep = used[run_of]
    account, kind, run_of = account[keep], kind[keep], run_of[keep]
    kind_weight = np.zeros(1 << KIND_BITS)
    for k, w in weights.items():
        kind_weight[int(k)] = w
    edge_weight = kind_weight[kind] * np.log(total / sharing[run_of] + 1)
    linked, account_vertex = _sorted_distinct(account)
    return EvidenceGraph(
        accounts,
        linked,
        run_value[used],  # the graph's value vertices, in value order
        account_vertex,
        (np.cumsum(used) - 1)[run_of],
        kind,
        edge_weight,
    )


def communities(
    vertices: int, edges: np.ndarray, weights: np.ndarray, resolution: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Each vertex's Leiden community (`EvidenceGraph.edges` numbering): the costly step of a linkage, and one that
    needs nothing but these arrays (`Engine` can run it in another process meanwhile)."""
    if len(edges) == 0:
        return np.zeros(vertices, dtype=np.int64)
    network = ig.Graph(n=vertices)
    network.add_edges(edges)  # faster than Graph(edges=...)
    return np.array(_leiden(network, weights, resolution, seed).membership, dtype=np.int64)


def clusters_of(graph: EvidenceGraph, membership: np.ndarray, min_cluster: int = 3) -> Clusters:
    """The clusters of a graph's communities (`communities`) with `min_cluster` accounts or more."""
    label = np.full(graph.accounts, -1, dtype=np.int64)
    if len(graph.account_vertex) == 0:
        return Clusters([], [], label)
    linked, values, account_vertex, value_vertex = graph.linked, graph.values, graph.account_vertex, graph.value_vertex
    kind, edge_weight = graph.kind, graph.weight
    value_membership = membership[len(linked) :]
    membership = membership[: len(linked)]
    # each account's weight to its own community's values: the edges whose two ends share a community
    inside = membership[account_vertex] == value_membership[value_vertex]
    inside_strength = np.bincount(account_vertex[inside], weights=edge_weight[inside], minlength=len(linked))
    edge_community = membership[account_vertex[inside]]
    edge_order = np.argsort(edge_community, kind="stable")
    inside_kind, inside_value = kind[inside][edge_order], values[value_vertex[inside]][edge_order]
    inside_weight = edge_weight[inside][edge_order]
    account_order = np.argsort(membership, kind="stable")
    account_bounds = np.searchsorted(membership[account_order], np.arange(membership.max() + 2))
    members: list[np.ndarray] = []
    strength: list[np.ndarray] = []
    for community in range(membership.max() + 1):
        vertices = account_order[account_bounds[community] : account_bounds[community + 1]]
        if len(vertices) < min_cluster:
            continue
        label[linked[vertices]] = len(members)
        members.append(linked[vertices])
        strength.append(inside_strength[vertices])
    community_cluster = np.full(membership.max() + 1, -1, dtype=np.int64)
    kept = np.flatnonzero(np.bincount(membership) >= min_cluster)
    community_cluster[kept] = np.arange(len(kept))
    # the kept clusters' edges, one after another (communities are in order, so only the dropped ones are cut out)
    edge_cluster = community_cluster[edge_community[edge_order]]
    keep_edge = edge_cluster >= 0
    bounds = np.r_[0, np.cumsum(np.bincount(edge_cluster[keep_edge], minlength=len(kept)))]
    value_weight = np.zeros(len(values))
    value_weight[value_vertex] = edge_weight
    return Clusters(
        members,
        strength,
        label,
        values,
        community_cluster[value_membership],
        value_weight,
        (inside_kind[keep_edge], inside_value[keep_edge], inside_weight[keep_edge]),
        bounds,
    )


def _find(keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each wanted key is, or would go, in the sorted `keys`, and whether it is there."""
    at = np.searchsorted(keys, wanted)
    found = at < len(keys)
    found[found] = keys[at[found]] == wanted[found]
    return at, found


# compiled, as below: the probation set holds millions of template uses, and inserting into it with numpy (a pass
# per array per step) was half of a compaction (docs/benchmarks.md)
@numba.njit(cache=True, nogil=True)
def _merged(
    keys: np.ndarray, values: np.ndarray, new_keys: np.ndarray, new_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted `keys` (with their values) and sorted `new_keys` not among them, as one sorted array."""
    n, m = len(keys), len(new_keys)
    out_keys, out_values = np.empty(n + m, keys.dtype), np.empty(n + m, values.dtype)
    i = j = 0
    for k in range(n + m):
        if j == m or (i < n and keys[i] < new_keys[j]):
            out_keys[k], out_values[k] = keys[i], values[i]
            i += 1
        else:
            out_keys[k], out_values[k] = new_keys[j], new_values[j]
            j += 1
    return out_keys, out_values


@numba.njit(cache=True, nogil=True)
def _probation(
    once: np.ndarray,
    once_day: np.ndarray,
    new: np.ndarray,
    new_counts: np.ndarray,
    template: np.ndarray,
    day: int,
    expired: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One merge pass over the templates on probation (sorted `once`, each with the day it was used) and the new
    pairs (sorted `new`, not among the pairs held): entries from day `expired` or before are dropped; a new template
    pair already on probation is used `again` (its count gains the use on probation, `new_counts` in place) and leaves
    probation; a new template pair used once goes on probation with `day`. Returns the new probation set and `again`."""
    n, m = len(once), len(new)
    out, out_day = np.empty(n + m, once.dtype), np.empty(n + m, once_day.dtype)
    again = np.zeros(m, dtype=np.bool_)
    i = j = k = 0
    while i < n or j < m:
        if j == m or (i < n and once[i] < new[j]):
            if once_day[i] > expired:
                out[k], out_day[k] = once[i], once_day[i]
                k += 1
            i += 1
            continue
        if i < n and once[i] == new[j] and once_day[i] > expired and template[j]:
            again[j] = True
            new_counts[j] += 1
        elif template[j] and new_counts[j] == 1:
            out[k], out_day[k] = new[j], day
            k += 1
        if i < n and once[i] == new[j]:
            i += 1
        j += 1
    return out[:k], out_day[:k], again


def _top_of_runs(pairs: np.ndarray, counts: np.ndarray, top: int) -> np.ndarray:
    """Mask of each (account, kind)'s `top` values with the most requests; ties in pair (value hash) order. Pairs
    are sorted by account, then kind, so each (account, kind) is one run of pairs; only runs longer than `top`
    are ranked."""
    return _top_of_runs_kernel(pairs >> np.uint64(VALUE_BITS), counts, top)


# compiled: ranked with numpy (one sort of every pair in a long run) this was a fifth of a linkage over the whole
# `seed-hydra` log; here each long run is ranked alone, in one pass (docs/benchmarks.md)
@numba.njit(cache=True, nogil=True)
def _top_of_runs_kernel(groups: np.ndarray, counts: np.ndarray, top: int) -> np.ndarray:
    kept = np.ones(len(groups), dtype=np.bool_)
    start = 0
    while start < len(groups):
        end = start + 1
        while end < len(groups) and groups[end] == groups[start]:
            end += 1
        if end - start > top:
            # most requests first; a stable sort keeps ties in pair order. Counts rank as 32-bit (saturating).
            order = np.argsort(-np.minimum(counts[start:end], COUNT_MASK), kind="mergesort")
            kept[start:end] = False
            kept[start + order[:top]] = True
        start = end
    return kept


def shared_across_orgs(value: np.ndarray, org: np.ndarray) -> np.ndarray:
    """Per (value, org) element: whether another org holds the same value too. The registry already ties an org's
    accounts together, and a company card or office NAT is not evidence; a card two orgs use is."""
    if len(value) == 0:
        return np.zeros(0, dtype=bool)
    pairs = np.sort((value << np.uint64(ACCOUNT_BITS)) | org.astype(np.uint64))
    held = pairs[np.r_[True, pairs[1:] != pairs[:-1]]] >> np.uint64(ACCOUNT_BITS)  # each (value, org) once
    repeated = held[1:][held[1:] == held[:-1]]  # sorted: a value held by n orgs appears n - 1 times
    if len(repeated) == 0:
        return np.zeros(len(value), dtype=bool)
    at = np.minimum(np.searchsorted(repeated, value), len(repeated) - 1)
    return repeated[at] == value


def lead_over_other_orgs(value: np.ndarray, org: np.ndarray, since: np.ndarray) -> np.ndarray:
    """Per (value, org, since) element: how long it held the value before any element of another org did (0 unless
    its org was the value's first holder, or when no other org holds it). An unknown (NaN) `since` gives no lead
    and counts as earliest against the others: a holder of unknown age could be the first."""
    lead = np.zeros(len(value))
    if len(value) == 0:
        return lead
    at = np.where(np.isnan(since), -np.inf, since)
    order = np.lexsort((at, value))  # by value, each value's holders by time
    held, holder, when = value[order], org[order], at[order]
    starts = np.r_[True, held[1:] != held[:-1]]
    group = np.cumsum(starts) - 1
    first_org = holder[starts][group]
    # each value's earliest holder of another org than its first: the first such element in time order
    rivals = np.flatnonzero(holder != first_org)
    rivals = rivals[np.r_[True, group[rivals][1:] != group[rivals][:-1]]] if len(rivals) else rivals
    rival_at = np.full(int(group[-1]) + 1, np.nan)
    rival_at[group[rivals]] = when[rivals]
    with np.errstate(invalid="ignore"):
        ahead = np.where(holder == first_org, rival_at[group] - when, 0.0)
    lead[order] = np.where(np.isfinite(ahead) & (ahead > 0), ahead, 0.0)
    return lead


def _sorted_distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(values, return_inverse=True)` for values already sorted: one linear pass, no sort."""
    starts = np.r_[True, values[1:] != values[:-1]] if len(values) else np.zeros(0, dtype=bool)
    return values[starts], np.cumsum(starts) - 1


def _leiden(graph: ig.Graph, weights: np.ndarray, resolution: float, seed: int) -> ig.VertexClustering:
    """Leiden communities maximizing modularity, reproducibly: igraph draws from Python's `random` module unless
    given a generator, so each run gets its own, seeded."""
    ig.set_random_number_generator(random.Random(seed))
    try:
        return graph.community_leiden(
            objective_function="modularity", weights=weights.tolist(), resolution=resolution, n_iterations=2
        )
    finally:
        ig.set_random_number_generator(random)


def _top_evidence(
    kind: np.ndarray, value: np.ndarray, weight: np.ndarray, top: int = 8
) -> list[tuple[Evidence, int, int, float]]:
    unique, inverse, members = np.unique(value, return_inverse=True, return_counts=True)
    total = np.bincount(inverse, weights=weight)
    kinds = np.zeros(len(unique), dtype=np.int64)
    kinds[inverse] = kind
    order = np.argsort(-total)[:top]
    return [(Evidence(int(kinds[i])), int(unique[i]), int(members[i]), float(total[i])) for i in order]
