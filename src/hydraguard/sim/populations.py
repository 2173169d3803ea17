"""What every population does alike: set up its accounts' endpoints, user agents and sampling profiles, and
turn a day's requests (times, accounts, prompts, profiles, endpoints) into an event `Block`."""

from __future__ import annotations

import numpy as np

from hydraguard.sim import network
from hydraguard.sim.accounts import AccountTable
from hydraguard.sim.clients import TOOL_SET_SHARES, ua_distribution
from hydraguard.sim.network import Endpoints
from hydraguard.sim.output import Block
from hydraguard.sim.responses import answer
from hydraguard.sim.scenario import Network, Sampling
from hydraguard.sim.world import World

PRIMARY_PROFILE_SHARE = 0.7  # an account sends most requests with its main parameter set
# `per_request` draws from a pool this large, so that it stands for fresh draws from the mix: with a small pool a
# rare combination in it came up hundreds of times more often than the mix gives it, and accounts drawing from one
# pool shared rare parameter sets that legitimate accounts drawing from the mix do not
PER_REQUEST_CANDIDATES = 1 << 20
CARRIERS = 12


def weighted_choice(rng: np.random.Generator, weights: dict, size: int) -> np.ndarray:  # type: ignore[type-arg]
    p = np.array(list(weights.values()), dtype=float)
    return rng.choice(len(p), size=size, p=p / p.sum())


class PopulationSim:
    """The part of a population's simulation that legitimate and campaign populations share."""

    def __init__(self, world: World, name: str, table: AccountTable, sampling: Sampling, net: Network) -> None:
        self.world = world
        self.name = name
        self.table = table
        self.net = net
        self.sampling = sampling

    # -- set-up helpers ----------------------------------------------------------------------------------
    def _endpoints(self, rng: np.random.Generator, kinds: np.ndarray, groups: np.ndarray, legit: bool) -> Endpoints:
        """Endpoints of the given kinds; `groups` are the NAT groups for corporate/campus kinds."""
        internet = self.world.internet
        n = len(kinds)
        base = np.zeros(n, dtype=np.int64)
        pool = np.ones(n, dtype=np.int64)
        res, cloud = kinds == network.RESIDENTIAL, kinds == network.CLOUD
        base[res] = internet.new_lines(int(res.sum()))
        base[cloud] = internet.new_hosts(int(cloud.sum()))
        if legit:
            internet.legit_lines.append(base[res])
            internet.legit_hosts.append(base[cloud])
        corp = kinds == network.CORPORATE
        base[corp] = network.pooled(groups[corp], 0)
        pool[corp] = 1 + (groups[corp] % network.EGRESS_MAX)
        campus = kinds == network.CAMPUS
        base[campus] = network.pooled(groups[campus], 0)
        pool[campus] = network.CAMPUS_POOL
        mobile = kinds == network.MOBILE
        base[mobile] = network.pooled(rng.integers(CARRIERS, size=int(mobile.sum())), 0)
        pool[mobile] = network.CGNAT_POOL
        return Endpoints(kinds, base, pool)

    def _kinds(self, rng: np.random.Generator, size: int) -> np.ndarray:
        names = list(self.net.kinds)
        return np.array([network.KINDS.index(k) for k in names])[weighted_choice(rng, self.net.kinds, size)]

    def _user_agents(self, rng: np.random.Generator, choice: str | dict[str, float], per_account: int) -> np.ndarray:
        p = ua_distribution(choice)
        return rng.choice(len(p), size=(len(self.table), per_account), p=p)

    def _profile_sets(self, rng: np.random.Generator) -> np.ndarray:
        """(accounts x k) profile indices: each account's parameter sets (mode `mix`), one shared set (`fixed`),
        or a pool of candidates drawn per request (`per_request`)."""
        book, s = self.world.profiles, self.sampling
        models = s.models or self.world.scenario.models
        model_options = np.array([book.option("model", m) for m in models])
        if s.mode == "fixed":
            assert s.fixed is not None
            pick = model_options[weighted_choice(rng, models, 1)][0]
            return np.full((len(self.table), 1), book.intern(book.fixed_row(s.fixed, pick)[None, :])[0])
        rows = len(self.table) * s.profiles_per_account if s.mode == "mix" else PER_REQUEST_CANDIDATES
        tool_names = list(TOOL_SET_SHARES)
        tools = np.array([book.option("tools", t) for t in tool_names])[weighted_choice(rng, TOOL_SET_SHARES, rows)]
        owners = rows // s.profiles_per_account if s.mode == "mix" else rows
        has_tools = np.repeat(rng.random(owners) < s.tools_share, rows // owners)
        drawn = book.draw(rng, rows, model_options[weighted_choice(rng, models, rows)], np.where(has_tools, tools, 0))
        if s.mode == "mix":
            tools_of_account = drawn[:: s.profiles_per_account, -1]
            drawn[:, -1] = np.repeat(tools_of_account, s.profiles_per_account)  # an app's tools are its own
        return book.intern(drawn).reshape(len(self.table), -1) if s.mode == "mix" else book.intern(drawn)[None, :]

    def _signup_ips(self, rng: np.random.Generator, endpoints: Endpoints, which: np.ndarray) -> None:
        kind, ident = endpoints.pick(rng, which)
        ips = self.world.internet.addresses(kind, ident, self.table.created, self.net.lease_days)
        self.table.signup_ip = network.to_strings(ips)

    # -- per-request helpers -------------------------------------------------------------------------------------
    def _pick_profiles(self, rng: np.random.Generator, sets: np.ndarray, account: np.ndarray) -> np.ndarray:
        if len(sets) == 1:  # fixed, or per-request candidates
            return sets[0][rng.integers(sets.shape[1], size=len(account))]
        k = sets.shape[1]
        column = np.where(rng.random(len(account)) < PRIMARY_PROFILE_SHARE, 0, rng.integers(k, size=len(account)))
        return sets[account, column]

    def _block(
        self,
        rng: np.random.Generator,
        time: np.ndarray,
        account: np.ndarray,
        prompt: np.ndarray,
        profile: np.ndarray,
        kind: np.ndarray,
        ident: np.ndarray,
        ua: np.ndarray,
    ) -> Block:
        """A block from local account indices; refused requests have prompt -1."""
        world, table = self.world, self.table
        n = len(time)
        key = table.key_first[account] + np.floor(rng.random(n) * table.key_count[account]).astype(np.int64)
        served = prompt >= 0
        world.book.ensure(prompt[served])
        world.book.uses += np.bincount(prompt[served], minlength=world.book.size)
        outcome = answer(
            rng,
            prompt,
            profile,
            world.book.answer_tokens,
            world.book.prompt_chars,
            world.book.message_count,
            world.profiles.arrays(),
            world.model_speed,
        )
        return Block(
            time=time,
            account=(table.first + account).astype(np.int32),
            key=key.astype(np.int32),
            prompt=prompt.astype(np.int32),
            profile=np.where(served, profile, -1).astype(np.int32),
            ip=world.internet.addresses(kind, ident, time, self.net.lease_days),
            ua=ua.astype(np.int16),
            status=np.where(served, 200, 403).astype(np.int16),
            rid=np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16),
            completion=outcome.completion_tokens.astype(np.int32),
            prompt_tokens=outcome.prompt_tokens.astype(np.int32),
            finish=outcome.finish.astype(np.int8),
            latency=outcome.latency_ms.astype(np.float32),
            upstream=outcome.upstream_ms.astype(np.float32),
        )


def rotation_column(
    rng: np.random.Generator, rotation: str, choices: int, session: np.ndarray, sessions: int
) -> np.ndarray:
    """Which of an account's user agents each request uses: one per session, or any per request."""
    if rotation == "request":
        return rng.integers(choices, size=len(session))
    return rng.integers(choices, size=sessions)[session]
