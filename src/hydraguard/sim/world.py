"""The world every population of a scenario shares: the scenario, the prompt and profile books, the simulated
internet and the registry; and the per-population random generators.

Each population draws from its own generator for its set-up, and from a fresh generator seeded with
(scenario seed, population name, day) for each day, so its output does not depend on which other populations
exist or in which order days and populations are processed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from hydraguard.sim.accounts import Registry
from hydraguard.sim.bodies import chat_body
from hydraguard.sim.clients import TOOL_SETS, ProfileBook
from hydraguard.sim.corpora import Texts
from hydraguard.sim.network import Internet
from hydraguard.sim.prompts import Conversations, PromptBook
from hydraguard.sim.scenario import Scenario
from hydraguard.sim.timing import DAY


def rng_for(seed: int, name: str, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), *stream])


@dataclass
class World:
    """What every population shares: the scenario, the books, the internet and the registry."""

    scenario: Scenario
    texts: Texts
    book: PromptBook
    profiles: ProfileBook
    internet: Internet
    registry: Registry
    conversations: Conversations
    conversations_offset: int
    user_agents: list[str]
    model_speed: np.ndarray  # ms per generated token, per model option
    campuses: int = 0

    @property
    def start(self) -> float:
        return self.scenario.start_ts

    @property
    def end(self) -> float:
        return self.start + self.scenario.days * DAY

    def body(self, prompt: int, profile: int) -> bytes:
        """The exact request body behind an event: what a replay sends and what `describe_chat` described."""
        chosen = self.profiles.profiles[profile]
        return chat_body(self.book.messages(prompt), chosen, TOOL_SETS.get(chosen.tools or ""))
