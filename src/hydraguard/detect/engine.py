"""The detection engine: events in, detections out; one code path for streaming and batch.

`observe` folds a time-ordered batch of events into the account table and the evidence log. Every
`analysis_interval` seconds of event time, `analyze` runs the account rules on accounts active since the last
analysis; every `linkage_interval` it links accounts into clusters (with a `linkage_lag`, Leiden runs in a worker
process and the clusters are applied that much later), computes cluster features and runs the cluster rules. A
detection names the accounts it covers, so a cluster hit covers its confirmed members, and an account created to
replace a banned one is covered as soon as it links to the cluster at the next analysis.
"""

from __future__ import annotations

import math
import multiprocessing
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hydraguard.accounts.models import Account
from hydraguard.accounts.risk import SignupLinks
from hydraguard.config import DetectConfig, Tier, _default_tiers
from hydraguard.decide.model import ScopeKind
from hydraguard.detect.accounts import AREA_SHARE, EVENT_COLUMNS, AccountTable, ClientAddresses, encode
from hydraguard.detect.linkage import (
    EVENT_EVIDENCE,
    FAMILY,
    VALUE_BITS,
    Clusters,
    Evidence,
    EvidenceGraph,
    EvidenceLog,
    clusters_of,
    communities,
    evidence_graph,
    lead_over_other_orgs,
    link,
    shared_across_orgs,
    value_hashes,
)
from hydraguard.detect.request import signature_bands
from hydraguard.detect.rules import (
    REQUEST_TEXT,
    Action,
    FeatureValue,
    Hit,
    Level,
    Rule,
    RuleSet,
    feature_value,
    fired_hit,
)
from hydraguard.detect.samples import RecentTemplates, TemplateSample

if TYPE_CHECKING:
    from hydraguard.intel.index import IntelIndex

COLUMNS = [
    *EVENT_COLUMNS,
    "template_signature",
    "template_hash",
    "request_id",
    "key_id",
    *EVENT_EVIDENCE.values(),
]
SCOPE_COLUMN = {ScopeKind.KEY: "key_id", ScopeKind.ACCOUNT: "account_id", ScopeKind.IP: "client_ip"}
TEMPLATE_CACHE = 200_000  # template signatures whose intel matches are remembered
SEVERITY_WEIGHT = {"low": 0.3, "medium": 0.5, "high": 0.8, "critical": 0.95}
TIMING_FEATURES = ("hour_entropy", "active_hour_share", "phase_concentration", "log_gap_std", "first_day_share")
ENFORCING = frozenset((Action.THROTTLE, Action.DEGRADE, Action.CHALLENGE, Action.BLOCK))
REGISTRY_COLUMNS = ("id", "org_id", "signup_at", "signup_ip", "email_domain", "payment_fingerprint")
SIGNUP_COLUMNS = {"signup_device": "device", "email_pattern": "email_pattern"}  # column: SignupLinks field
REGISTRY_SCHEMA = pa.schema(
    [(name, pa.float64() if name == "signup_at" else pa.string()) for name in (*REGISTRY_COLUMNS, *SIGNUP_COLUMNS)]
)


def registry_table(accounts: Iterable[Account], signups: Mapping[str, SignupLinks] | None = None) -> pa.Table:
    """The registry evidence `Engine.load_registry` reads, from the registry's accounts and what their signups
    stored (`risk.signup_links`)."""
    accounts = list(accounts)
    columns: dict[str, list[object]] = {name: [getattr(a, name) for a in accounts] for name in REGISTRY_COLUMNS}
    signups = signups or {}
    links = [signups.get(a.id) for a in accounts]
    for name, field_name in SIGNUP_COLUMNS.items():
        columns[name] = [None if link is None else getattr(link, field_name) for link in links]
    return pa.table(columns, schema=REGISTRY_SCHEMA)


@dataclass(frozen=True)
class Detection:
    """Rule hits on one subject (an account, or a cluster) at one analysis."""

    at: float  # event time of the analysis
    level: str  # "request", "account" or "cluster"
    # the account id, the cluster's id, or for request rules the key or address as `key:<id>`, `ip:<address>`
    subject: str
    accounts: tuple[str, ...]  # the accounts it covers
    hits: tuple[Hit, ...]
    features: dict[str, FeatureValue]
    evidence: tuple[str, ...] = ()  # in words: what links a cluster
    indicators: tuple[tuple[str, str], ...] = ()  # (evidence kind, value) behind those words: shareable intel
    # per hit, the accounts its own member condition covers (a cluster rule with `members`); () : each hit covers
    # every account of the detection
    covers: tuple[tuple[str, ...], ...] = ()
    # what its accounts asked most among the latest events: a cluster's at every linkage, an account's when its
    # campaign is new to this engine
    templates: tuple[TemplateSample, ...] = ()

    def covered_by(self, hit: int) -> tuple[str, ...]:
        """The accounts the `hit`-th hit covers (sorted, like `accounts`)."""
        return self.covers[hit] if self.covers else self.accounts

    @property
    def score(self) -> float:
        keep = 1.0
        for hit in self.hits:
            keep *= 1.0 - SEVERITY_WEIGHT[str(hit.severity)]
        return round(1.0 - keep, 4)

    @property
    def enforcing(self) -> bool:
        return any(hit.action in ENFORCING and not hit.shadow for hit in self.hits)


@dataclass(frozen=True)
class _Matched:
    """One request rule's matches in one batch, per subject (the key, account or address the rule acts on)."""

    batch: int  # the batch's number since the last analysis
    rule: int  # index into the tally's rules
    subjects: list[str]  # distinct
    requests: np.ndarray  # per subject: how many requests matched
    latest: np.ndarray  # per subject: its last matching request's row in `columns`
    columns: dict[str, np.ndarray]  # the batch's request fields
    pair_subject: np.ndarray  # per distinct (subject, account) pair: index into `subjects`
    pair_account: list[str]


@dataclass
class _RequestTally:
    """The request rules' matches since the last analysis, kept as the batches gave them and merged per subject
    only at the analysis (a Python object per subject and batch was most of what request rules cost); requests
    are explained only for the subjects emitted (most are not, between renewals)."""

    rules: tuple[Rule, ...]
    matched: list[_Matched] = field(default_factory=list)
    batches: int = 0

    def merged(self) -> _SubjectHits:
        index: dict[str, int] = {}  # subject -> its number
        numbers = [
            np.array([index.setdefault(subject, len(index)) for subject in m.subjects], dtype=np.int64)
            for m in self.matched
        ]
        return _SubjectHits(self, index, numbers)


class _SubjectHits:
    """The tally merged per subject: per rule, its requests and the latest one; the request the detection shows
    (the latest matched by any rule) and the accounts that sent them."""

    def __init__(self, tally: _RequestTally, index: dict[str, int], numbers: list[np.ndarray]) -> None:
        """`numbers`: for each batch's matches, its subjects' numbers in `index`."""
        self.tally, self.index = tally, index
        subjects, rules = len(index), len(tally.rules)
        self.requests = np.zeros((subjects, rules), dtype=np.int64)
        self._latest_part = np.full((subjects, rules), -1, dtype=np.int64)  # index into `tally.matched`
        self._latest_row = np.zeros((subjects, rules), dtype=np.int64)
        # the latest request of any rule: (batch << 32 | row), and where it is
        self._shown = np.full(subjects, -1, dtype=np.int64)
        self._shown_part = np.zeros(subjects, dtype=np.int64)
        for part, (m, number) in enumerate(zip(tally.matched, numbers, strict=True)):
            self.requests[number, m.rule] += m.requests  # a batch's subjects are distinct: no repeated index
            self._latest_part[number, m.rule] = part
            self._latest_row[number, m.rule] = m.latest
            latest = (m.batch << 32) | m.latest
            newer = latest > self._shown[number]
            self._shown[number[newer]], self._shown_part[number[newer]] = latest[newer], part
        pair_subject = np.concatenate([n[m.pair_subject] for m, n in zip(tally.matched, numbers, strict=True)])
        order = np.argsort(pair_subject, kind="stable")
        self._pair_subject = pair_subject[order]
        self._pair_account = np.array([a for m in tally.matched for a in m.pair_account], dtype=object)[order]

    def accounts(self, subject: int) -> tuple[str, ...]:
        low, high = np.searchsorted(self._pair_subject, [subject, subject + 1]).tolist()
        return tuple(sorted(set(self._pair_account[low:high].tolist())))

    def features(self, subject: int) -> dict[str, FeatureValue]:
        row = int(self._shown[subject] & 0xFFFFFFFF)
        return _request_features(self.tally.matched[self._shown_part[subject]].columns, row)

    def hits(self, subject: int) -> list[Hit]:
        """Per rule it fired, in load order, its hit explained by its latest request, with how many requests
        matched it."""
        hits = []
        for rule in np.flatnonzero(self.requests[subject]).tolist():
            columns = self.tally.matched[self._latest_part[subject, rule]].columns
            features = _request_features(columns, int(self._latest_row[subject, rule]))
            hit = fired_hit(self.tally.rules[rule], features)
            hits.append(replace(hit, reasons=(*hit.reasons, f"{self.requests[subject, rule]} matching requests")))
        return hits


def _request_features(columns: dict[str, np.ndarray], row: int) -> dict[str, FeatureValue]:
    return {name: feature_value(values, row) for name, values in columns.items()}


def _with_accounts(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """The batch's requests that have an account (a batch without nulls as it is: a filter copies every column)."""
    accounts = batch.column("account_id")
    return batch.filter(pc.is_valid(accounts)) if accounts.null_count else batch


@dataclass(frozen=True)
class _Linking:
    """A linkage whose communities the worker process is finding: the graph taken at `at`, applied from `due`."""

    graph: EvidenceGraph
    template_share: np.ndarray  # `Engine._template_shares()` at `at`
    at: float
    due: float
    communities: Future[np.ndarray]


@dataclass(frozen=True)
class _Cards:
    """Per account number: whether its card is also used by an account of another org, and for how many days it
    paid with it before any such account signed up (0 unless its org was the card's first holder)."""

    shared: np.ndarray
    lead_days: np.ndarray


@dataclass
class _Joinable:
    """A cluster detected at the last linkage: new accounts can join it until the next one (`Engine._join`)."""

    detection: Detection
    bar: float  # the strength a joining account needs, as a member that sends traffic


def tier_tokens_per_day(tiers: dict[str, Tier]) -> dict[str, float]:
    return {name: float(tier.account.tpd) for name, tier in tiers.items() if tier.account.tpd is not None}


def default_tier_tokens_per_day() -> dict[str, float]:
    return tier_tokens_per_day(_default_tiers())


@dataclass
class EngineSettings:
    analysis_interval: float = 3600.0  # seconds of event time between analyses (account rules)
    linkage_interval: float = 6 * 3600.0  # seconds of event time between linkages (cluster rules); a multiple
    # seconds of event time from a linkage's graph to its clusters, at most half the linkage interval: when > 0,
    # Leiden runs in a worker process while the events of that time are folded in (a second core), and the cluster
    # rules run at the first analysis after
    linkage_lag: float = 0.0
    min_requests: int = 20  # accounts with fewer requests are not judged alone
    min_member_strength: float = 0.5  # a cluster member links at least this share of the median member's weight
    new_account_days: float = 3.0  # first request within this long of signup: a new account at work
    # an account still firing the same rules is emitted again after this long, or half its rules' shortest TTL if
    # sooner, so that its decisions are renewed before they lapse (0: at every analysis)
    renew_interval: float = 12 * 3600.0
    evidence_weights: dict[Evidence, float] | None = None  # None: linkage.DEFAULT_WEIGHTS
    # ablations: evidence families left out (payment, ip, identity, templates) and "timing" (timing features)
    families_off: frozenset[str] = field(default_factory=frozenset)
    # each tier's tokens-per-day limit for an account (`tiers.<name>.account.tpd`): `account.tier_usage` is the
    # account's busiest day against it
    tier_tokens_per_day: dict[str, float] = field(default_factory=default_tier_tokens_per_day)


def batch_settings(linkage_interval: float | None = None, linkage_lag: float | None = None) -> EngineSettings:
    """The product's default settings as batch analysis runs them: a linkage every `linkage_interval` seconds of
    event time, its clusters `linkage_lag` later, by default `detect.batch_linkage_interval`'s and
    `detect.batch_linkage_lag`'s defaults (daily, 12 hours)."""
    defaults = DetectConfig()
    return EngineSettings(
        linkage_interval=defaults.batch_linkage_interval if linkage_interval is None else linkage_interval,
        linkage_lag=defaults.batch_linkage_lag if linkage_lag is None else linkage_lag,
    )


class Engine:
    def __init__(
        self, rules: RuleSet | None = None, settings: EngineSettings | None = None, intel: IntelIndex | None = None
    ) -> None:
        self.rules = rules or RuleSet.default()
        self.settings = settings or EngineSettings()
        if self.settings.linkage_lag < 0:
            raise ValueError("linkage_lag must be at least 0")
        self.intel = intel  # shared template signatures are matched here; IPs, agents, keys by the gateway
        self._template_intel: dict[str, str] = {}
        self.accounts = AccountTable()
        self.evidence = EvidenceLog()
        self.org_of: dict[str, str] = {}
        self._org_numbers: dict[str, int] = {}
        self._orgs = np.zeros(0, dtype=np.int64)
        self._active = np.zeros(0, dtype=bool)  # active since the cluster rules last ran
        self._account_active = np.zeros(0, dtype=bool)  # active since the last analysis
        self._emitted_rules = np.zeros(0, dtype=np.uint64)  # per account: digest of the rules last emitted (0: none)
        self._emitted_at = np.zeros(0)  # per account: when they were
        self._next_linkage = -math.inf
        self._next_analysis = -math.inf
        self.now = -math.inf
        self.cluster_of: dict[str, str] = {}
        self._payment = np.zeros(0, dtype=np.uint64)  # per account number: its card's hash as linkage keeps it, or 0
        self._signup = np.zeros(0)  # per account number: its registry signup time (NaN: unknown)
        self._cards_now: _Cards | None = None  # `_cards()` until the registry changes
        self._clusters: Clusters | None = None  # the last linkage's
        self._linked_at = -math.inf  # when its graph was taken
        self._linking: _Linking | None = None  # a linkage in the worker process (`linkage_lag`)
        self._worker: ProcessPoolExecutor | None = None
        self._joinable: dict[int, _Joinable] = {}  # by cluster index of the last linkage
        self._kinds = frozenset(k for k in Evidence if FAMILY[k] not in self.settings.families_off)
        # per account number, as of the last linkage: the share of its requests on its most used template
        self._template_share = np.zeros(0)
        self._recent_templates = RecentTemplates()
        self._sampled: dict[str, int] = {}  # subjects whose templates were sampled: their accounts then
        self._request_rules = tuple(r for r in self.rules.rules if r.level is Level.REQUEST)
        # only the fields request rules name are read: a text column costs a Python string per request
        self._request_fields = sorted(
            {f.removeprefix("request.") for r in self._request_rules for f in r.when.features()}
        )
        self._request_tally = _RequestTally(self._request_rules)  # since the last analysis
        self._request_emitted: dict[str, tuple[frozenset[str], float]] = {}  # by subject: its rules, when emitted

    # -- input ------------------------------------------------------------------------------------------------
    def load_registry(self, accounts: pa.Table) -> None:
        """Registry evidence: `accounts` with `id`, `org_id`, `signup_at`, `signup_ip`, `email_domain`,
        `payment_fingerprint`, and optionally `signup_device` and `email_pattern` (as `registry/accounts.parquet` or
        `registry_table`)."""
        numbers = self.accounts.numbers(accounts.column("id"))
        self.org_of.update(zip(accounts.column("id").to_pylist(), accounts.column("org_id").to_pylist(), strict=True))
        self.evidence.observe_registry(numbers, accounts, self._kinds)
        grow = len(self.accounts) - len(self._payment)
        if grow > 0:
            self._payment = np.concatenate([self._payment, np.zeros(grow, np.uint64)])
            self._signup = np.concatenate([self._signup, np.full(grow, np.nan)])
        self._signup[numbers] = accounts.column("signup_at").to_numpy(zero_copy_only=False).astype(np.float64)
        self._cards_now = None
        cards = accounts.column("payment_fingerprint")
        valid = pc.is_valid(cards).to_numpy(zero_copy_only=False)
        self._payment[numbers] = 0
        hashes = value_hashes(cards.filter(pa.array(valid)).to_pylist())
        self._payment[numbers[valid]] = hashes & np.uint64((1 << VALUE_BITS) - 1)

    def observe(self, batch: pa.RecordBatch | pa.Table) -> list[Detection]:
        """Fold in a time-ordered batch; runs the analyses that fall due in it. Returns their detections."""
        detections: list[Detection] = []
        batch = batch.select(COLUMNS) if set(batch.schema.names) != set(COLUMNS) else batch
        if not self._request_rules:  # only request rules read requests without an account
            batch = _with_accounts(batch)
        if batch.num_rows == 0:
            return detections
        times = batch.column("time").to_numpy()
        if self._next_analysis == -math.inf:
            self._next_analysis = (times[0] // self.settings.analysis_interval + 1) * self.settings.analysis_interval
        # split the batch at analysis times so that every analysis sees exactly the events before it
        while len(times) and times[-1] >= self._next_analysis:
            cut = int(np.searchsorted(times, self._next_analysis))
            self._fold(batch.slice(0, cut))
            detections += self.analyze(self._next_analysis)
            self._next_analysis += self.settings.analysis_interval
            batch, times = batch.slice(cut), times[cut:]
        self._fold(batch)
        return detections

    def use_intel(self, index: IntelIndex | None) -> None:
        """Match template signatures against this indicator set from now on (None: none)."""
        self.intel = index
        self._template_intel.clear()

    def _with_template_intel(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
        """The batch with the intel template signatures its prompts match added to `intel_matches`."""
        if self.intel is None or Evidence.INTEL not in self._kinds:
            return batch
        signatures = batch.column("template_signature")
        now = float(batch.column("time")[-1].as_py())
        found = False
        for signature in pc.unique(signatures.drop_null()).to_pylist():
            if signature not in self._template_intel:
                if len(self._template_intel) >= TEMPLATE_CACHE:
                    self._template_intel.clear()
                self._template_intel[signature] = ",".join(self.intel.match_templates(signature_bands(signature), now))
            found = found or bool(self._template_intel[signature])
        if not found:  # the usual case: leave the batch as it is, no per-row pass
            return batch
        matched = [self._template_intel.get(s) if s else None for s in signatures.to_pylist()]
        merged = [
            ",".join(m for m in pair if m) or None
            for pair in zip(batch.column("intel_matches").to_pylist(), matched, strict=True)
        ]
        index = batch.schema.get_field_index("intel_matches")
        return batch.set_column(index, batch.schema.field(index), pa.array(merged, pa.string()))

    def _fold(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        self.now = max(self.now, float(batch.column("time")[-1].as_py()))
        if self._request_rules:
            self._match_requests(batch)
            batch = _with_accounts(batch)  # the rest is about accounts
            if batch.num_rows == 0:
                return
        batch = self._with_template_intel(batch)
        addresses = ClientAddresses.of(batch.column("client_ip"))
        numbers = self.accounts.update(batch, addresses)
        self._recent_templates.add(numbers, batch.column("template_hash"), batch.column("request_id"))
        grow = len(self.accounts) - len(self._active)
        if grow > 0:
            self._active = np.concatenate([self._active, np.zeros(grow, bool)])
            self._account_active = np.concatenate([self._account_active, np.zeros(grow, bool)])
            self._emitted_rules = np.concatenate([self._emitted_rules, np.zeros(grow, np.uint64)])
            self._emitted_at = np.concatenate([self._emitted_at, np.zeros(grow)])
        self._active[numbers] = True
        self._account_active[numbers] = True
        self.evidence.observe_events(numbers, batch, self._kinds, addresses)

    def advance(self, now: float) -> list[Detection]:
        """Run the analysis that is due by `now` even if no event has arrived since (live traffic can stop; a
        campaign's last hour must still be judged). One analysis however long the pause, then back on schedule."""
        if self._next_analysis == -math.inf or now < self._next_analysis:
            return []
        detections = self.analyze(now)
        self._next_analysis = (now // self.settings.analysis_interval + 1) * self.settings.analysis_interval
        return detections

    # -- analysis ---------------------------------------------------------------------------------------------
    def analyze(self, at: float, link: bool | None = None) -> list[Detection]:
        """Run the account rules on accounts active since the last analysis and, when `link` (default: when a
        linkage interval has passed), link accounts and run the cluster rules: at once, or with a `linkage_lag`
        at the first analysis that lag later (`link=True`: at once, after a linkage in the worker is applied)."""
        due = at >= self._next_linkage if link is None else link
        detections = self._request_detections(at) + self._account_detections(at)
        linked = self._linking is not None and (at >= self._linking.due or bool(link))
        if linked:
            detections += self._linked(at)
        if due:
            self._next_linkage = (at // self.settings.linkage_interval + 1) * self.settings.linkage_interval
            if self.settings.linkage_lag > 0 and link is None:
                self._start_linkage(at)
            else:
                clusters = self.clusters()
                detections += self._cluster_detections(at, clusters, at, self._template_shares())
                linked = True
        if not linked:
            detections += self._join(at)
        self._account_active[:] = False
        return detections

    def _linked(self, at: float) -> list[Detection]:
        """The cluster rules on the clusters of the linkage in the worker (waiting for it if need be)."""
        assert self._linking is not None
        linking, self._linking = self._linking, None
        clusters = clusters_of(linking.graph, linking.communities.result())
        return self._cluster_detections(at, clusters, linking.at, linking.template_share)

    def _start_linkage(self, at: float) -> None:
        graph = self._graph()
        if self._worker is None:
            # spawned, not forked: the engine's process may run threads (a server's), which a fork would copy mid-state
            self._worker = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        found = self._worker.submit(communities, graph.vertices, graph.edges(), graph.weight)
        lag = min(self.settings.linkage_lag, self.settings.linkage_interval / 2)
        self._linking = _Linking(graph, self._template_shares(), at, at + lag, found)

    def _template_shares(self) -> np.ndarray:
        """Per account number: the share of its requests on its most used template, from the evidence as it is (taken
        with a linkage's graph, when the evidence log has just been compacted for it)."""
        count = len(self.accounts)
        requests = np.maximum(self.accounts.counts["requests"][:count], 1)
        # each request carries one key per signature band, so a band key's count is requests of one near-template
        return self.evidence.top_counts(Evidence.TEMPLATE, count) / requests

    def _match_requests(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Run the request rules on every request of the batch; tally their hits per subject (the key, account or
        address each rule acts on) until the next analysis."""
        columns: dict[str, np.ndarray] = {}
        for name in self._request_fields:
            column = batch.column(name)
            if name in REQUEST_TEXT:
                columns[f"request.{name}"] = column.to_numpy(zero_copy_only=False).astype(object)
            else:
                columns[f"request.{name}"] = (
                    column.cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)
                )
        firing = self.rules.fire("request", columns, batch.num_rows)
        accounts = batch.column("account_id")
        for index, mask in enumerate(firing.masks):
            rows = np.flatnonzero(mask)
            if len(rows) == 0:
                continue
            scope, taken = self._request_rules[index].scope, pa.array(rows)
            # per subject (key, account or address): its requests, its latest row and the accounts that sent them
            subject_of, values = encode(batch.column(SCOPE_COLUMN[scope]).take(taken))
            owner_of, owners = encode(accounts.take(taken))
            last = len(rows) - 1 - np.unique(subject_of[::-1], return_index=True)[1]  # rows ascend: the last one
            latest = np.zeros(len(values), dtype=np.int64)
            latest[subject_of[last]] = rows[last]
            named = np.array([value is not None for value in values], dtype=bool)  # unauthenticated: no key
            renumber = np.cumsum(named) - 1
            sent = np.unique(subject_of * len(owners) + owner_of)
            pair_subject, pair_owner = sent // len(owners), sent % len(owners)
            real = named[pair_subject] & np.array([bool(o) for o in owners], dtype=bool)[pair_owner]  # null, '': none
            self._request_tally.matched.append(
                _Matched(
                    batch=self._request_tally.batches,
                    rule=index,
                    subjects=[v if scope is ScopeKind.ACCOUNT else f"{scope}:{v}" for v in values if v is not None],
                    requests=np.bincount(subject_of, minlength=len(values))[named],
                    latest=latest[named],
                    columns=columns,
                    pair_subject=renumber[pair_subject[real]],
                    pair_account=[owners[o] for o in pair_owner[real].tolist()],
                )
            )
        self._request_tally.batches += 1

    def _request_detections(self, at: float) -> list[Detection]:
        """A subject's request-rule hits since the last analysis, emitted as account detections are: when the rules
        it fires change, and again when its decisions near their TTL (shadow hits: every `renew_interval`)."""
        tally, self._request_tally = self._request_tally, _RequestTally(self._request_rules)
        if not tally.matched:
            return []
        merged = tally.merged()
        detections = []
        # by the rules a subject fires (most fire the same few): their ids, and how soon they are emitted again
        known: dict[bytes, tuple[frozenset[str], float]] = {}
        for subject in sorted(merged.index):
            number = merged.index[subject]
            fired = merged.requests[number] > 0
            key = fired.tobytes()
            if key not in known:
                matched = [tally.rules[i] for i in np.flatnonzero(fired).tolist()]
                enforcing = [r.ttl for r in matched if r.action in ENFORCING and not r.shadow and r.ttl]
                renew = min([self.settings.renew_interval, *(ttl / 2 for ttl in enforcing)])
                known[key] = (frozenset(r.id for r in matched), renew)
            rules, renew = known[key]
            before = self._request_emitted.get(subject)
            if before is not None and before[0] == rules and at - before[1] < renew:
                continue
            self._request_emitted[subject] = (rules, at)
            hits = tuple(merged.hits(number))
            detections.append(Detection(at, "request", subject, merged.accounts(number), hits, merged.features(number)))
        return detections

    def account_features(self, numbers: np.ndarray) -> dict[str, np.ndarray]:
        features = self.accounts.features(numbers, now=self.now)
        limits = self.settings.tier_tokens_per_day
        tier_limit = np.array([limits.get(name, np.nan) for name in self.accounts.tier_names] + [np.nan])
        features["tier_usage"] = features["peak_day_tokens"] / tier_limit[self.accounts.tier[numbers]]
        share = np.zeros(len(numbers))
        known = numbers < len(self._template_share)
        share[known] = self._template_share[numbers[known]]
        features["top_template_share"] = share
        signup = self._signup_of(numbers)
        first = self.accounts.first_seen[numbers]
        with np.errstate(invalid="ignore"):
            since = np.where(np.isnan(signup), np.inf, (first - signup) / 86_400)
        features["days_since_signup_at_first_request"] = since
        if "timing" in self.settings.families_off:
            for name in TIMING_FEATURES:
                features.pop(name, None)
        return features

    def _signup_of(self, numbers: np.ndarray) -> np.ndarray:
        """The accounts' registry signup times (NaN: not in the registry)."""
        signup = np.full(len(numbers), np.nan)
        known = numbers < len(self._signup)
        signup[known] = self._signup[numbers[known]]
        return signup

    def _account_detections(self, at: float) -> list[Detection]:
        active = np.flatnonzero(self._account_active[: len(self.accounts)])
        active = active[self.accounts.counts["requests"][active] >= self.settings.min_requests]
        if len(active) == 0:
            return []
        features = self.account_features(active)
        columns = {f"account.{n}": v.astype(float) for n, v in features.items()}
        firing = self.rules.fire("account", columns, len(active))
        # an account is emitted when the rules it fires change, and again when its decisions near their TTL
        rules = firing.fingerprint()
        renew = np.minimum(self.settings.renew_interval, firing.shortest_ttl() / 2)
        due = (rules != 0) & ((rules != self._emitted_rules[active]) | (at - self._emitted_at[active] >= renew))
        self._emitted_rules[active] = rules
        self._emitted_at[active[due]] = at
        detections = []
        for row, values, hits in firing.explain(np.flatnonzero(due)):
            account = self.accounts.ids[active[row]]
            templates = self._templates_of(account, active[row : row + 1])
            detections.append(Detection(at, "account", account, (account,), tuple(hits), values, templates=templates))
        return detections

    def _org_numbers_for(self) -> np.ndarray:
        ids = self.accounts.ids
        if len(self._orgs) < len(ids):
            extra = []
            for account in ids[len(self._orgs) :]:
                org = self.org_of.get(account, account)  # unknown org: its own
                extra.append(self._org_numbers.setdefault(org, len(self._org_numbers)))
            self._orgs = np.concatenate([self._orgs, np.array(extra, dtype=np.int64)])
        return self._orgs

    def _graph(self) -> EvidenceGraph:
        return evidence_graph(self.evidence, self._org_numbers_for(), weights=self.settings.evidence_weights)

    def clusters(self) -> Clusters:
        """A linkage of every account now, in this process."""
        return link(self.evidence, self._org_numbers_for(), weights=self.settings.evidence_weights)

    def _cluster_detections(
        self, at: float, clusters: Clusters, linked_at: float, template_share: np.ndarray
    ) -> list[Detection]:
        """The cluster rules on `clusters` (a linkage's of the evidence at `linked_at`, with the template shares of
        then: `_template_shares`), with what their members have done until `at`; clusters without a member active
        since the cluster rules last ran are not judged."""
        self._template_share = template_share
        cards = self._cards()
        self._clusters, self._linked_at, self._joinable = clusters, linked_at, {}
        active, self._active[:] = self._active.copy(), False
        judged = []  # (cluster index, its confirmed members, their bar), for clusters with activity to judge
        for index, (members, strength) in enumerate(zip(clusters.members, clusters.strength, strict=True)):
            confirmed, bar = self._confirmed(members, strength)
            if len(confirmed) >= 2 and active[confirmed].any():
                judged.append((index, confirmed, bar))
        if not judged:
            return []
        # every judged member's features in one pass, then each cluster's slice of them
        every = self.account_features(np.concatenate([confirmed for _, confirmed, _ in judged]))
        bounds = np.cumsum([0, *(len(confirmed) for _, confirmed, _ in judged)]).tolist()
        detections = []
        for (index, confirmed, bar), start, end in zip(judged, bounds, bounds[1:], strict=False):
            member_features = {name: values[start:end] for name, values in every.items()}
            features = self.cluster_features(confirmed, cards.shared, member_features)
            features["template_share"] = clusters.most_shared(index, Evidence.TEMPLATE) / len(clusters.members[index])
            values = {f"cluster.{n}": v for n, v in features.items()}
            hits = self.rules.evaluate("cluster", values)
            if not hits:
                continue
            cluster_id = self._cluster_id(tuple(sorted(self.accounts.ids[n] for n in confirmed.tolist())))
            covers = self._covers(confirmed, hits, cards, member_features)
            covered = confirmed[np.logical_or.reduce(covers)]
            if len(covered) == 0:
                continue
            names = self.accounts.ids
            ids = tuple(sorted(names[n] for n in covered.tolist()))
            by_hit = tuple(tuple(sorted(names[n] for n in confirmed[c].tolist())) for c in covers)
            evidence = clusters.evidence(index)
            words = tuple(f"{e.label} shared by {n} accounts" for e, _, n, _ in evidence)
            indicators = tuple((e.name.lower(), self.evidence.name(v)) for e, v, _, _ in evidence)
            templates = self._templates_of(cluster_id, covered)
            detection = Detection(
                at, "cluster", cluster_id, ids, tuple(hits), values, words, indicators, by_hit, templates
            )
            detections.append(detection)
            self._joinable[index] = _Joinable(detection, bar)
        return detections

    def _templates_of(self, subject: str, covered: np.ndarray) -> tuple[TemplateSample, ...]:
        """A subject's sample templates when it is new to this engine or has doubled its accounts since its last
        sample (a campaign keeps the samples it has): sampling every emission would cost more than the rules."""
        before = self._sampled.get(subject)
        if before is not None and len(covered) < 2 * before:
            return ()
        self._sampled[subject] = len(covered)
        return self._recent_templates.of(covered)

    def _join(self, at: float) -> list[Detection]:
        """Between linkages: accounts first seen since the last one that link to a cluster it detected as strongly
        as its members that send traffic, and whose own features meet its hits' member conditions, join it, and
        the cluster's detection is emitted again with them (a replacement for a banned account is covered on its
        first requests, not at the next linkage)."""
        if not self._joinable or self._clusters is None:
            return []
        count = len(self.accounts)
        new = np.flatnonzero(self._account_active[:count] & (self.accounts.first_seen[:count] >= self._linked_at))
        if len(new) == 0:
            return []
        owner, cluster, strength = self._clusters.strengths(*self.evidence.values_of(new))
        detections = []
        cards: _Cards | None = None
        for index in np.unique(cluster).tolist():
            joinable = self._joinable.get(index)
            if joinable is None:
                continue
            earlier = joinable.detection
            ids, members = self.accounts.ids, set(earlier.accounts)
            joining = owner[(cluster == index) & (strength >= joinable.bar)]
            joining = joining[[ids[n] not in members for n in joining.tolist()]]
            if len(joining) == 0:
                continue
            cards = self._cards() if cards is None else cards
            covers = self._covers(joining, list(earlier.hits), cards, self.account_features(joining))
            covered = joining[np.logical_or.reduce(covers)]
            if len(covered) == 0:
                continue
            joined = [ids[n] for n in covered.tolist()]
            for account in joined:
                self.cluster_of[account] = earlier.subject
            by_hit = tuple(
                tuple(sorted((*earlier.covered_by(i), *(ids[n] for n in joining[c].tolist()))))
                for i, c in enumerate(covers)
            )
            accounts = tuple(sorted((*earlier.accounts, *joined)))
            joinable.detection = replace(earlier, at=at, accounts=accounts, covers=by_hit)
            detections.append(joinable.detection)
        return detections

    def _confirmed(self, members: np.ndarray, strength: np.ndarray) -> tuple[np.ndarray, float]:
        """The members a cluster's action covers: those linked at least `min_member_strength` times as strongly
        as its median member. Members that send traffic are held to the median of those that do (traffic adds
        template and subnet evidence, so an active bystander with one shared value falls short), members seen
        only in the registry (not yet active) to the median of all. Also returns the bar for members that send
        traffic."""
        active = self.accounts.counts["requests"][members] > 0
        floor = self.settings.min_member_strength
        active_bar = floor * np.median(strength[active]) if active.any() else 0.0
        bar = np.where(active, active_bar, floor * np.median(strength))
        return members[strength >= bar], float(active_bar)

    def _covers(
        self, members: np.ndarray, hits: list[Hit], cards: _Cards, features: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        """Per hit, a mask over `members` of those it covers: for a rule with a `members` condition, those whose own
        features meet it (a bystander linked by a shared exit or a popular prompt shows none of the campaign's
        behaviour), else all of them. Each hit's action applies to its own members (`decide.policy`)."""
        features = {**features, "payment_shared": cards.shared[members], "payment_lead_days": cards.lead_days[members]}
        columns = {f"account.{n}": v.astype(float) for n, v in features.items()}
        everyone = np.ones(len(members), dtype=bool)
        return [everyone if h.members is None else h.members.holds_each(columns, len(members)) for h in hits]

    def _cluster_id(self, ids: tuple[str, ...]) -> str:
        """A cluster keeps its id while it grows: the id of the earlier cluster most of its members were in."""
        previous = [self.cluster_of[a] for a in ids if a in self.cluster_of]
        # ties go to the id met first (members are sorted): a set's order would change with the hash seed
        cluster_id = Counter(previous).most_common(1)[0][0] if previous else "cl_" + ids[0].split("_")[-1][:12]
        for account in ids:
            self.cluster_of[account] = cluster_id
        return cluster_id

    def cluster_features(
        self,
        members: np.ndarray,
        payment_shared: np.ndarray | None = None,
        member_features: dict[str, np.ndarray] | None = None,
    ) -> dict[str, float]:
        f = self.account_features(members) if member_features is None else member_features
        served = f["served"]
        weight = served / max(served.sum(), 1)
        payment_shared = self._cards().shared if payment_shared is None else payment_shared
        areas = self.accounts.areas[members].sum(axis=0)
        area_share = areas / max(areas.sum(), 1)
        signup = self._signup_of(members)
        features = {
            "accounts": float(len(members)),
            "orgs": float(len({int(o) for o in self._org_numbers_for()[members]})),
            "requests": float(f["requests"].sum()),
            "reasoning_share": float((f["reasoning_share"] * weight).sum()),
            "multi_turn_share": float((f["multi_turn_share"] * weight).sum()),
            "extraction_area_share": float((f["extraction_area_share"] * weight).sum()),
            "new_account_share": float(
                (f["days_since_signup_at_first_request"] <= self.settings.new_account_days).mean()
            ),
            "banned_share": float((f["banned_refusals"] > 0).mean()),
            "shared_payment_share": float(payment_shared[members].mean()),
            "distinct_user_agents": float(np.median(f["distinct_user_agents"])),
            "capability_coverage": float((area_share >= AREA_SHARE).sum()),
            "replacement_share": float((signup >= self.accounts.first_banned_at[members].min()).mean()),
        }
        if "timing" not in self.settings.families_off:
            phase_bins = self.accounts.phase[members].argmax(axis=1)
            in_step = (phase_bins == np.bincount(phase_bins).argmax()) & (f["phase_concentration"] >= 0.5)
            features["hour_entropy"] = float(np.median(f["hour_entropy"]))
            features["phase_sync"] = float(in_step.mean())
        return features

    def _cards(self) -> _Cards:
        """Who shares a card with another org, and who held it first (`_Cards`). Only a registry load changes it
        (accounts that appear in events alone have no card), so it is kept until then."""
        count = len(self.accounts)
        if Evidence.PAYMENT not in self._kinds:
            return _Cards(np.zeros(count, dtype=bool), np.zeros(count))
        if self._cards_now is None:
            paying = np.flatnonzero(self._payment != 0)
            cards, orgs = self._payment[paying], self._org_numbers_for()[paying]
            shared, lead = np.zeros(len(self._payment), dtype=bool), np.zeros(len(self._payment))
            shared[paying] = shared_across_orgs(cards, orgs)
            lead[paying] = lead_over_other_orgs(cards, orgs, self._signup[paying]) / 86_400
            self._cards_now = _Cards(shared, lead)
        known = len(self._cards_now.shared)
        if known == count:
            return self._cards_now
        shared, lead = np.zeros(count, dtype=bool), np.zeros(count)
        shared[:known], lead[:known] = self._cards_now.shared, self._cards_now.lead_days
        return _Cards(shared, lead)

    def close(self) -> None:
        """Stop the worker process of lagged linkages, if one was started (a linkage in it is dropped)."""
        if self._worker is not None:
            self._worker.shutdown(cancel_futures=True)
            self._worker, self._linking = None, None

    def run(self, batches: Iterable[pa.RecordBatch]) -> list[Detection]:
        detections: list[Detection] = []
        for batch in batches:
            detections += self.observe(batch)
        detections += self.analyze(self.now, link=True)
        return detections
