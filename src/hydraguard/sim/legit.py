"""Legitimate populations: accounts with heavy-tailed volume, daily and weekly cycles in their own time zone,
sessions of (multi-turn) conversations, home networks, and their apps' user agents and parameters."""

from __future__ import annotations

import zlib

import numpy as np

from hydraguard.sim import accounts, network, timing
from hydraguard.sim.output import Block
from hydraguard.sim.populations import PopulationSim, rotation_column, weighted_choice
from hydraguard.sim.prompts import EvalSet, Labelling
from hydraguard.sim.scenario import LegitPopulation, Sessions
from hydraguard.sim.timing import DAY
from hydraguard.sim.world import World, rng_for


class LegitSim(PopulationSim):
    def __init__(self, world: World, pop: LegitPopulation) -> None:
        rng = rng_for(world.scenario.seed, pop.name, 0)
        scenario = world.scenario
        created = accounts.signup_times(rng, pop.accounts.signup, pop.accounts.count, world.start, scenario.days)
        n = len(created)
        table = accounts.create(
            world.registry,
            rng,
            pop.name,
            pop.name,
            pop.accounts,
            pop.email,
            pop.payment,
            created,
            np.full(n, np.inf),
            np.full(n, -1, dtype=np.int64),
        )
        accounts.sign_up_devices_and_addresses(
            table, rng_for(scenario.seed, pop.name, 2), world.registry.secret, pop.name, pop.email, pop.device
        )
        super().__init__(world, pop.name, table, pop.sampling, pop.network)
        self.pop = pop
        activity = pop.activity
        self.rate = timing.lognormal(rng, activity.requests_per_day, n)
        share = activity.active_days
        self.p_active = np.ones(n) if share >= 1 else rng.beta(2 * share, 2 * (1 - share), size=n)
        self.offsets = np.array(list(activity.utc_offsets), dtype=float)
        self.offset = weighted_choice(rng, activity.utc_offsets, n)
        campus = world.campuses
        world.campuses += 1
        kinds = self._kinds(rng, n)
        groups = np.where(kinds == network.CAMPUS, campus, table.org)
        self.home = self._endpoints(rng, kinds, groups, legit=True)
        self.mobile = self._endpoints(rng, np.full(n, network.MOBILE), groups, legit=True)
        self.uas = self._user_agents(rng, pop.client.user_agents, pop.client.per_account)
        self.profile_sets = self._profile_sets(rng)
        self._signup_ips(rng, self.home, np.arange(n))
        self.source = _source(world, pop, rng, n)
        self.requests_per_session = timing.mean_conversations(activity.sessions) * self.source.mean_length(
            activity.sessions
        )

    def day(self, day: int) -> Block:
        world, pop, table = self.world, self.pop, self.table
        rng = rng_for(world.scenario.seed, pop.name, 1, day)
        t0 = world.start + day * DAY
        active = np.flatnonzero((table.created < t0 + DAY) & (rng.random(len(table)) < self.p_active))
        weights = timing.hour_weights(pop.activity.hours, pop.activity.weekend, t0, self.offsets)
        rates = (self.rate[active] / self.requests_per_session / 24)[:, None] * weights[self.offset[active]]
        rows, starts = timing.session_starts(rng, rates, t0)
        session_account = active[rows]
        keep = starts >= table.created[session_account]
        session_account, starts = session_account[keep], starts[keep]
        sessions = pop.activity.sessions
        per_session = timing.conversations_per_session(rng, sessions, len(starts))
        conversation_session = np.repeat(np.arange(len(starts)), per_session)
        conversation_account = session_account[conversation_session]
        base, length = self.source.conversations(rng, conversation_account, sessions)
        requests = timing.expand(rng, starts, conversation_session, length, sessions)
        account = conversation_account[requests.conversation]
        session = conversation_session[requests.conversation]
        # endpoints: home network, or the carrier's CGNAT for sessions on a phone
        on_mobile = rng.random(len(starts)) < pop.network.mobile_share
        home_kind, home_id = self.home.pick(rng, session_account)
        mobile_kind, mobile_id = self.mobile.pick(rng, session_account)
        kind = np.where(on_mobile, mobile_kind, home_kind)[session]
        ident = np.where(on_mobile, mobile_id, home_id)[session]
        ua_column = rotation_column(rng, pop.client.rotation, self.uas.shape[1], session, len(starts))
        return self._block(
            rng,
            requests.time,
            account,
            base[requests.conversation] + requests.turn,
            self._pick_profiles(rng, self.profile_sets, account),
            kind,
            ident,
            self.uas[account, ua_column],
        )


class _ConversationSource:
    """Legitimate conversations; an account's app sends one system prompt (or none) with every request."""

    def __init__(self, world: World, rng: np.random.Generator, accounts: int, system_share: float) -> None:
        self.world = world
        conv = world.conversations
        variants = len(conv.answer_tokens) // conv.prefixes
        self.variant = np.where(rng.random(accounts) < system_share, rng.integers(1, variants, size=accounts), 0)

    def mean_length(self, sessions: Sessions) -> float:
        f = min(sessions.follow_up, 0.999)
        turns = self.world.conversations.turns
        return float(np.mean((1 - f**turns) / (1 - f)))

    def conversations(
        self, rng: np.random.Generator, account: np.ndarray, sessions: Sessions
    ) -> tuple[np.ndarray, np.ndarray]:
        conv = self.world.conversations
        record = rng.integers(len(conv.records), size=len(account))
        wanted = rng.geometric(1 - min(sessions.follow_up, 0.999), size=len(account))
        length = np.minimum(conv.turns[record], wanted)
        base = self.world.conversations_offset + self.variant[account] * conv.prefixes + conv.first[record]
        return base, length


class _SingleTurnSource:
    """Single-turn prompts from a catalog: each account draws from its own slice (`slices` per account)."""

    def __init__(self, offset: int, size: int, slice_of: np.ndarray, slices: int) -> None:
        self.offset, self.size, self.slice_of, self.slices = offset, size, slice_of, slices

    def mean_length(self, sessions: Sessions) -> float:
        return 1.0

    def conversations(
        self, rng: np.random.Generator, account: np.ndarray, sessions: Sessions
    ) -> tuple[np.ndarray, np.ndarray]:
        per_slice = self.size // self.slices
        index = self.slice_of[account] * per_slice + rng.integers(per_slice, size=len(account))
        return self.offset + index, np.ones(len(account), dtype=np.int64)


def _source(
    world: World, pop: LegitPopulation, rng: np.random.Generator, n: int
) -> _ConversationSource | _SingleTurnSource:
    prompts = pop.prompts
    seed = zlib.crc32(pop.name.encode()) ^ world.scenario.seed
    if prompts.source == "conversations":
        return _ConversationSource(world, rng, n, prompts.system_prompts)
    if prompts.source == "eval_set":
        catalog = EvalSet(world.texts.legit, prompts.eval_set, seed)
        return _SingleTurnSource(world.book.add(catalog), len(catalog.kind), np.zeros(n, dtype=np.int64), 1)
    labelling = Labelling(world.texts.legit, prompts.templates, seed)
    offset = world.book.add(labelling)
    # a labelling pipeline (account) runs one template over the texts
    return _SingleTurnSource(
        offset, len(labelling.kind), rng.integers(labelling.templates, size=n), labelling.templates
    )
