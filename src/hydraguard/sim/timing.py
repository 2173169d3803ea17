"""When requests happen: daily and weekly cycles in local time, sessions of conversations, bursty gaps.

All of it is vectorized: a day's sessions for every account are drawn at once from an (accounts x 24 hours)
rate matrix, then expanded into conversations and requests with segmented cumulative sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hydraguard.sim.scenario import LogNormal, Sessions

DAY = 86_400.0
HOUR = 3_600.0

# relative activity by local hour
_HUMAN = np.array(
    [
        *(0.25, 0.15, 0.1, 0.08, 0.08, 0.12, 0.3, 0.6, 1.0, 1.35, 1.5, 1.5),
        *(1.3, 1.45, 1.55, 1.55, 1.45, 1.3, 1.1, 1.0, 1.0, 0.95, 0.75, 0.45),
    ]
)
_BUSINESS = np.array([*[0.03] * 7, 0.4, 1.2, 2.0, 2.2, 2.2, 1.6, 2.0, 2.2, 2.1, 1.8, 1.0, 0.4, 0.2, *[0.1] * 4])
DIURNAL = {"human": _HUMAN, "business": _BUSINESS, "24/7": np.ones(24)}


def lognormal(rng: np.random.Generator, dist: LogNormal, size: int) -> np.ndarray:
    return dist.median * np.exp(rng.standard_normal(size) * dist.sigma) if dist.sigma else np.full(size, dist.median)


def hour_weights(hours: str, weekend: float, day_start: float, offsets: np.ndarray) -> np.ndarray:
    """(offsets x 24) relative activity in each UTC hour of the day that starts at `day_start`, for users at
    each UTC offset (hours). Normalized so that the average over a week is 1."""
    diurnal = DIURNAL[hours]
    local = day_start + (np.arange(24)[None, :] + 0.5) * HOUR + offsets[:, None] * HOUR
    local_hour = np.floor(local / HOUR).astype(np.int64) % 24
    weekday = (np.floor(local / DAY).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (Mon = 0)
    weights = diurnal[local_hour] * np.where(weekday >= 5, weekend, 1.0)
    return weights / (diurnal.mean() * (5 + 2 * weekend) / 7)


def session_starts(rng: np.random.Generator, rates: np.ndarray, day_start: float) -> tuple[np.ndarray, np.ndarray]:
    """Sessions from an (accounts x 24) matrix of expected sessions per UTC hour: (account row, start time)."""
    counts = rng.poisson(rates)
    rows, hours = np.nonzero(counts)
    repeat = counts[rows, hours]
    rows, hours = np.repeat(rows, repeat), np.repeat(hours, repeat)
    starts = day_start + (hours + rng.random(len(hours))) * HOUR
    order = np.lexsort((starts, rows))
    return rows[order], starts[order]


def conversations_per_session(rng: np.random.Generator, sessions: Sessions, size: int) -> np.ndarray:
    return np.maximum(1, np.rint(lognormal(rng, sessions.conversations, size))).astype(np.int64)


def mean_conversations(sessions: Sessions) -> float:
    return float(conversations_per_session(np.random.default_rng(0), sessions, 20_000).mean())


@dataclass
class Requests:
    """The requests of a batch of sessions: which conversation each belongs to, its turn, its time."""

    conversation: np.ndarray
    turn: np.ndarray
    time: np.ndarray


def expand(
    rng: np.random.Generator,
    session_start: np.ndarray,
    conversation_session: np.ndarray,
    conversation_length: np.ndarray,
    sessions: Sessions,
) -> Requests:
    """Lay out conversations (grouped by session, in order) as requests: think time between turns, a longer
    gap between conversations, nothing before a session's first request."""
    n_conv = len(conversation_length)
    conversation = np.repeat(np.arange(n_conv), conversation_length)
    if not len(conversation):
        return Requests(conversation, conversation.copy(), np.empty(0))
    first_of_conv = np.cumsum(conversation_length) - conversation_length
    turn = np.arange(len(conversation)) - np.repeat(first_of_conv, conversation_length)
    session = conversation_session[conversation]
    new_session = np.ones(n_conv, dtype=bool)
    new_session[1:] = conversation_session[1:] != conversation_session[:-1]
    gaps = np.where(
        turn > 0,
        lognormal(rng, sessions.think_seconds, len(turn)),
        np.where(new_session[conversation], 0.0, lognormal(rng, sessions.gap_seconds, len(turn))),
    )
    elapsed = np.cumsum(gaps)
    first_request = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    per_session = np.repeat(elapsed[first_request], np.diff(np.r_[first_request, len(session)]))
    return Requests(conversation, turn, session_start[session] + elapsed - per_session)


def rounds(rng: np.random.Generator, day_start: float, hourly: np.ndarray, tick: float, jitter: float) -> np.ndarray:
    """Times of a load balancer's requests over one day, `hourly` requests expected in each UTC hour: in
    rounds every `tick` seconds (all accounts fire together, spread by `jitter`), or continuously."""
    if tick <= 0:
        counts = rng.poisson(hourly)
        hours = np.repeat(np.arange(24), counts)
        times = day_start + (hours + rng.random(len(hours))) * HOUR
    else:
        ticks = np.arange(0.0, DAY, tick)
        counts = rng.poisson(hourly[(ticks // HOUR).astype(np.int64)] * tick / HOUR)
        times = day_start + np.repeat(ticks, counts) + rng.exponential(jitter or 1e-3, int(counts.sum()))
    return np.sort(times)
