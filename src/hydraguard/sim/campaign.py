"""Campaign populations: accounts created in bursts and replaced after bans, one operator's load balancer (or
human-like sessions) spreading its phases' volume over them, proxy exits, and a task list of templated,
chain-of-thought and rubric prompts worked through in order."""

from __future__ import annotations

import zlib

import numpy as np

from hydraguard.sim import accounts, network, timing
from hydraguard.sim.clients import AGENTIC_TOOL_SET
from hydraguard.sim.elicitation import technique_order
from hydraguard.sim.network import Endpoints
from hydraguard.sim.output import Block
from hydraguard.sim.populations import PopulationSim, rotation_column
from hydraguard.sim.prompts import AREAS, KINDS, CampaignTasks
from hydraguard.sim.scenario import CampaignPopulation
from hydraguard.sim.timing import DAY, HOUR
from hydraguard.sim.world import World, rng_for

_QUANTUM = 300.0  # a load balancer notices new and banned accounts within five minutes
ORDINARY_SYSTEM_SHARE = 0.3  # ordinary requests whose app sends a system prompt
_FOREIGN_GROUP = 900_000  # NAT groups of proxy exits in company or campus networks (beyond any org index)


class CampaignSim(PopulationSim):
    def __init__(self, world: World, pop: CampaignPopulation) -> None:
        rng = rng_for(world.scenario.seed, pop.name, 0)
        scenario = world.scenario
        initial = accounts.signup_times(rng, pop.accounts.signup, pop.accounts.count, world.start, scenario.days)
        created, banned, replaces = accounts.lifecycle(rng, initial, pop.bans, world.start, world.end)
        table = accounts.create(
            world.registry, rng, pop.name, pop.campaign, pop.accounts, pop.email, pop.payment, created, banned, replaces
        )
        accounts.sign_up_devices_and_addresses(
            table, rng_for(scenario.seed, pop.name, 2), world.registry.secret, pop.campaign, pop.email, pop.device
        )
        super().__init__(world, pop.name, table, pop.sampling, pop.network)
        self.pop = pop
        n = len(table)
        dispatch = pop.activity.dispatch
        self.weight = np.exp(dispatch.weight_sigma * rng.standard_normal(n))
        self.usable_from = np.ceil(created / _QUANTUM) * _QUANTUM
        self.usable_until = np.floor(banned / _QUANTUM) * _QUANTUM  # inf stays inf
        self.offsets = np.array(list(pop.activity.utc_offsets), dtype=float)
        p = np.array(list(pop.activity.utc_offsets.values()), dtype=float)
        self.offset_share = p / p.sum()
        self.exits, self.exit_of_account = self._exits(rng, n)
        self.uas = self._user_agents(rng, pop.client.user_agents, pop.client.per_account)
        self.profile_sets = self._profile_sets(rng)
        self._signup_ips(rng, self.exits, self.exit_of_account)
        techniques = technique_order(zlib.crc32(pop.name.encode()) ^ scenario.seed)
        self.phases = []
        for i, phase in enumerate(pop.activity.phases):
            config = phase.prompts or pop.prompts
            tasks = CampaignTasks(
                config, world.texts, zlib.crc32(f"{pop.name}/{i}".encode()) ^ scenario.seed, techniques
            )
            self.phases.append((phase, config, world.book.add(tasks), len(tasks.kind)))
        self.requests_per_session = timing.mean_conversations(pop.activity.sessions)

    def _exits(self, rng: np.random.Generator, n: int) -> tuple[Endpoints, np.ndarray]:
        """The proxy network's exits (or each account's own endpoint when there is no pool)."""
        net, internet = self.net, self.world.internet
        if net.pool is None:
            kinds = self._kinds(rng, n)
            groups = np.where(kinds == network.CAMPUS, _FOREIGN_GROUP + n, self.table.org)
            return self._endpoints(rng, kinds, groups, legit=False), np.arange(n)
        kinds = self._kinds(rng, net.pool)
        exits = self._endpoints(rng, kinds, _FOREIGN_GROUP + np.arange(net.pool), legit=False)
        if net.shared_with_legit:
            for kind, known in ((network.RESIDENTIAL, internet.legit_lines), (network.CLOUD, internet.legit_hosts)):
                mask = kinds == kind
                shared = np.concatenate(known) if known else np.empty(0, dtype=np.int64)
                if mask.any() and len(shared):
                    exits.base[mask] = shared[rng.integers(len(shared), size=int(mask.sum()))]
        return exits, rng.integers(net.pool, size=n)

    def _hourly(self, t0: float, volume: float, lo: float, hi: float) -> np.ndarray:
        """Requests expected in each UTC hour of the day, inside the phase's window [lo, hi)."""
        activity = self.pop.activity
        weights = self.offset_share @ timing.hour_weights(activity.hours, activity.weekend, t0, self.offsets)
        starts = t0 + np.arange(24) * HOUR
        inside = np.clip((np.minimum(starts + HOUR, hi) - np.maximum(starts, lo)) / HOUR, 0, 1)
        return volume / 24 * weights * inside

    def _assign(self, rng: np.random.Generator, times: np.ndarray, t0: float) -> np.ndarray:
        """The load balancer: each request goes to a live account, by weight (-1 if none is live)."""
        live_today = np.flatnonzero((self.usable_from < t0 + DAY) & (self.usable_until > t0))
        changes = np.concatenate([self.usable_from[live_today], self.usable_until[live_today]])
        bounds = np.unique(np.r_[t0, changes[(changes > t0) & (changes < t0 + DAY)]])
        segment = np.searchsorted(bounds, times, side="right") - 1
        out = np.full(len(times), -1, dtype=np.int64)
        ramp = self.pop.activity.dispatch.ramp_days * DAY
        for s in np.unique(segment).tolist():
            at = bounds[s]
            live = live_today[(self.usable_from[live_today] <= at) & (self.usable_until[live_today] > at)]
            if not len(live):
                continue
            weight = self.weight[live]
            if ramp > 0:
                weight = weight * np.clip((at - self.usable_from[live] + _QUANTUM) / ramp, 0.01, 1.0)
            cumulative = np.cumsum(weight)
            mask = segment == s
            pick = np.searchsorted(cumulative, rng.random(int(mask.sum())) * cumulative[-1], side="right")
            out[mask] = live[np.minimum(pick, len(live) - 1)]
        return out

    def _independent(
        self, rng: np.random.Generator, hourly: np.ndarray, t0: float, lo: float, hi: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each account keeps its own sessions (human-like), sharing the day's volume by weight."""
        start, end = np.maximum(self.usable_from, lo), np.minimum(self.usable_until, hi)
        alive = np.flatnonzero(end > start)
        if not len(alive) or hourly.sum() <= 0:
            return np.empty(0), np.empty(0, dtype=np.int64)
        share = self.weight[alive] * (end[alive] - start[alive]) / (hi - lo)
        per_account = hourly.sum() * share / share.sum() / self.requests_per_session
        rates = per_account[:, None] * (hourly / hourly.sum())[None, :]
        rows, starts = timing.session_starts(rng, rates, t0)
        sessions = self.pop.activity.sessions
        per_session = timing.conversations_per_session(rng, sessions, len(starts))
        conversation_session = np.repeat(np.arange(len(starts)), per_session)
        requests = timing.expand(rng, starts, conversation_session, np.ones(len(conversation_session), int), sessions)
        account = alive[rows][conversation_session[requests.conversation]]
        ok = (requests.time >= start[account]) & (requests.time < end[account])
        return requests.time[ok], account[ok]

    def day(self, day: int) -> Block:
        world, pop = self.world, self.pop
        rng = rng_for(world.scenario.seed, pop.name, 1, day)
        t0 = world.start + day * DAY
        dispatch = pop.activity.dispatch
        blocks = []
        for phase, config, offset, size in self.phases:
            lo = max(t0, world.start + phase.start_day * DAY)
            hi = min(t0 + DAY, world.start + (phase.end_day or world.scenario.days) * DAY)
            if lo >= hi:
                continue
            hourly = self._hourly(t0, phase.requests_per_day, lo, hi)
            if dispatch.mode == "balanced":
                times = timing.rounds(rng, t0, hourly, dispatch.tick_seconds, dispatch.jitter_seconds)
                times = times[(times >= lo) & (times < hi)]
                account = self._assign(rng, times, t0)
                times, account = times[account >= 0], account[account >= 0]
            else:
                times, account = self._independent(rng, hourly, t0, lo, hi)
            # the operator works through its task list in order, from where the previous day left off
            ordinary = rng.random(len(times)) < config.legit_share
            done = round(max(0.0, day - phase.start_day) * phase.requests_per_day * (1 - config.legit_share))
            position = (done + np.cumsum(~ordinary) - 1) % size
            prompt = np.where(ordinary, self._ordinary_prompts(rng, len(times)), offset + position)
            profile = self._pick_profiles(rng, self.profile_sets, account)
            book = world.book
            agentic = (~ordinary) & (book.area[prompt] == AREAS.index("agentic"))
            agentic &= book.kind[prompt] == KINDS.index("template")
            if agentic.any():
                profile[agentic] = world.profiles.with_tools(profile[agentic], AGENTIC_TOOL_SET)
            blocks.append(self._requests(rng, times, account, prompt, profile))
        blocks.append(self._refused(rng, t0))
        return Block.concat(blocks)

    def _ordinary_prompts(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Random prefixes of legitimate conversations (a proxy's customers, cover traffic)."""
        conv = self.world.conversations
        variants = len(conv.answer_tokens) // conv.prefixes
        variant = np.where(rng.random(size) < ORDINARY_SYSTEM_SHARE, rng.integers(1, variants, size=size), 0)
        return self.world.conversations_offset + variant * conv.prefixes + rng.integers(conv.prefixes, size=size)

    def _requests(
        self, rng: np.random.Generator, times: np.ndarray, account: np.ndarray, prompt: np.ndarray, profile: np.ndarray
    ) -> Block:
        rotation = self.net.rotation
        if rotation == "account":
            exit_ = self.exit_of_account[account]
        elif rotation == "request":
            exit_ = rng.integers(len(self.exits.kind), size=len(times))
        else:  # per session: an account keeps an exit for the hour
            bucket = np.floor(times / HOUR).astype(np.int64)
            exit_ = (network.mix64(account * 1_000_003 + bucket) % np.uint64(len(self.exits.kind))).astype(np.int64)
        kind, ident = self.exits.pick(rng, exit_)
        ua_session = account * 100_000 + np.floor(times / HOUR).astype(np.int64)
        _, session = np.unique(ua_session, return_inverse=True)
        ua_column = rotation_column(
            rng, self.pop.client.rotation, self.uas.shape[1], session, int(session.max(initial=-1)) + 1
        )
        return self._block(rng, times, account, prompt, profile, kind, ident, self.uas[account, ua_column])

    def _refused(self, rng: np.random.Generator, t0: float) -> Block:
        """A banned account's client keeps trying a few times and gets 403 until the dispatcher drops it."""
        banned = np.flatnonzero((self.table.banned >= t0) & (self.table.banned < t0 + DAY))
        tries = rng.poisson(self.pop.bans.retries, size=len(banned))
        account = np.repeat(banned, tries)
        gaps = rng.exponential(20.0, size=len(account))
        total = np.cumsum(gaps)
        first = np.cumsum(tries) - tries
        before = np.r_[0.0, total][first]  # elapsed before each account's first try
        elapsed = total - np.repeat(before, tries)
        times = self.table.banned[account] + elapsed
        none = np.full(len(account), -1, dtype=np.int64)
        return self._requests(rng, times, account, none, none)
