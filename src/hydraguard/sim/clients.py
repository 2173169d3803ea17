"""Clients: the user-agent catalogue, the legitimate mix of sampling parameters, tool sets, and the book of
distinct sampling profiles that events refer to.

Attackers draw from these same distributions unless a scenario says otherwise: the simulator has no
attacker-only user agent, parameter or tool set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from hydraguard.detect.request import SAMPLING_FIELDS, sampling_fingerprint
from hydraguard.events.schema import ARROW_SCHEMA
from hydraguard.gateway.requests import describe_chat
from hydraguard.sim.bodies import Profile, chat_body
from hydraguard.sim.scenario import FixedSampling, Sampling

# family: (share of legitimate clients, user-agent pattern, versions from oldest to newest)
UA_FAMILIES: dict[str, tuple[float, str, tuple[str, ...]]] = {
    "openai-python": (
        0.34,
        "OpenAI/Python {v}",
        ("1.35.15", "1.40.6", "1.47.1", "1.51.2", "1.54.4", "1.57.4", "1.59.9", "1.61.1", "1.66.3", "1.70.0"),
    ),
    "openai-python-async": (0.08, "AsyncOpenAI/Python {v}", ("1.47.1", "1.54.4", "1.59.9", "1.66.3", "1.70.0")),
    "openai-node": (0.18, "OpenAI/JS {v}", ("4.52.7", "4.67.3", "4.71.1", "4.77.0", "4.85.1", "4.91.1")),
    "python-requests": (0.08, "python-requests/{v}", ("2.28.2", "2.31.0", "2.32.3")),
    "python-httpx": (0.05, "python-httpx/{v}", ("0.25.2", "0.27.0", "0.27.2", "0.28.1")),
    "aiohttp": (0.03, "Python/3.11 aiohttp/{v}", ("3.9.5", "3.10.10", "3.11.11")),
    "axios": (0.04, "axios/{v}", ("1.6.8", "1.7.7", "1.7.9")),
    "go": (0.04, "Go-http-client/{v}", ("1.1", "2.0")),
    "okhttp": (0.03, "okhttp/{v}", ("4.9.3", "4.11.0", "4.12.0")),
    "curl": (0.03, "curl/{v}", ("7.81.0", "7.88.1", "8.5.0", "8.7.1")),
    "browser": (
        0.06,
        "{v}",
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/123.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.4 Safari/605.1.15",
            "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/125.0.0.0 Safari/537.36",
        ),
    ),
    "ruby": (0.02, "ruby-openai/{v}", ("6.3.1", "7.0.1", "7.3.1")),
    "java": (0.02, "Java-http-client/{v}", ("17.0.10", "21.0.3")),
}


def user_agents() -> tuple[list[str], list[str], np.ndarray]:
    """Every catalogue user agent, its family, and its share of legitimate clients (newer versions commoner)."""
    strings, families, weights = [], [], []
    for family, (share, pattern, versions) in UA_FAMILIES.items():
        ramp = np.arange(1, len(versions) + 1, dtype=float)
        for version, w in zip(versions, ramp / ramp.sum(), strict=True):
            strings.append(pattern.format(v=version))
            families.append(family)
            weights.append(share * w)
    return strings, families, np.asarray(weights) / sum(weights)


def ua_distribution(choice: str | dict[str, float]) -> np.ndarray:
    """Weights over the catalogue for a population's `client.user_agents`."""
    _, families, weights = user_agents()
    if choice == "mix":
        return weights
    totals = {f: sum(w for w, g in zip(weights, families, strict=True) if g == f) for f in choice}
    out = np.array([w * choice[f] / totals[f] if f in choice else 0.0 for w, f in zip(weights, families, strict=True)])
    return out / out.sum()


# -- tool sets (our own definitions, shaped like popular agent frameworks' tools) -------------------------------
def _tool(name: str, description: str, **params: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {k: {"type": "string", "description": v} for k, v in params.items()},
                "required": list(params),
            },
        },
    }


TOOL_SETS: dict[str, list[dict[str, Any]]] = {
    "coding-agent": [
        _tool("read_file", "Read a file from the workspace", path="Path relative to the repository root"),
        _tool("write_file", "Write a file", path="Path", content="New content"),
        _tool("run_command", "Run a shell command in the sandbox", command="The command line"),
        _tool("search_code", "Search the repository", query="Text or regex"),
    ],
    "web-research": [
        _tool("web_search", "Search the web", query="Search query"),
        _tool("open_url", "Fetch a page", url="Absolute URL"),
    ],
    "data-analysis": [
        _tool("run_sql", "Run a read-only SQL query", query="SQL"),
        _tool("plot", "Plot a result set", spec="Vega-Lite spec as JSON"),
    ],
    "customer-support": [
        _tool("lookup_order", "Find an order", order_id="Order number"),
        _tool("issue_refund", "Refund an order", order_id="Order number", reason="Why"),
    ],
}
TOOL_SET_SHARES = {"coding-agent": 0.45, "web-research": 0.25, "data-analysis": 0.15, "customer-support": 0.15}
AGENTIC_TOOL_SET = "coding-agent"

# -- the legitimate mix of sampling parameters (each field drawn independently) ----------------------------------
MIX: dict[str, tuple[tuple[Any, ...], tuple[float, ...]]] = {
    "stream": ((False, True), (0.55, 0.45)),
    "temperature": (
        (None, 0.0, 0.2, 0.3, 0.5, 0.7, 0.8, 1.0, 1.2),
        (0.42, 0.12, 0.06, 0.04, 0.07, 0.17, 0.04, 0.07, 0.01),
    ),
    "top_p": ((None, 0.9, 0.95, 1.0), (0.88, 0.04, 0.04, 0.04)),
    "max_tokens": (
        (None, 256, 512, 1024, 2048, 4096, 8192, 16384),
        (0.48, 0.06, 0.1, 0.12, 0.1, 0.08, 0.04, 0.02),
    ),
    "n": ((None, 1, 2, 4), (0.96, 0.025, 0.01, 0.005)),
    "logprobs": ((None, (True, None), (True, 5)), (0.96, 0.02, 0.02)),
    "response_format": ((None, "json_object", "json_schema"), (0.9, 0.06, 0.04)),
}
FIELDS = ("model", *MIX, "tools")


@dataclass
class ProfileBook:
    """Distinct sampling profiles; events refer to them by index. Interning is vectorized: a profile is a
    mixed-radix code over each field's option list."""

    models: list[str]

    def __post_init__(self) -> None:
        self.options: dict[str, list[Any]] = {name: list(values) for name, (values, _) in MIX.items()}
        self.options["model"] = list(self.models)
        self.options["tools"] = [None, *TOOL_SETS]
        self._codes: dict[int, int] = {}
        self.profiles: list[Profile] = []
        self._arrays: dict[str, np.ndarray] | None = None

    def option(self, field: str, value: Any) -> int:
        values = self.options[field]
        if value not in values:
            if self._codes:
                raise RuntimeError("profile options must be registered before the first profile")
            values.append(value)
        return values.index(value)

    def _radix(self) -> list[int]:
        return [len(self.options[f]) for f in FIELDS]

    def intern(self, choices: np.ndarray) -> np.ndarray:
        """Profile indices for rows of option indices (one column per field, in `FIELDS` order)."""
        code = np.zeros(len(choices), dtype=np.int64)
        for column, radix in enumerate(self._radix()):
            code = code * radix + choices[:, column]
        unique, first, inverse = np.unique(code, return_index=True, return_inverse=True)
        ids = np.empty(len(unique), dtype=np.int32)
        for i, (c, row) in enumerate(zip(unique.tolist(), choices[first], strict=True)):
            found = self._codes.get(c)
            if found is None:
                found = self._codes[c] = len(self.profiles)
                self.profiles.append(self._profile(row))
            ids[i] = found
        return ids[inverse]

    def _profile(self, row: np.ndarray) -> Profile:
        values = {f: self.options[f][int(i)] for f, i in zip(FIELDS, row, strict=True)}
        logprobs = values.pop("logprobs")
        return Profile(
            **values,
            logprobs=logprobs[0] if logprobs else None,
            top_logprobs=logprobs[1] if logprobs else None,
        )

    def draw(self, rng: np.random.Generator, count: int, models: np.ndarray, tools: np.ndarray) -> np.ndarray:
        """`count` option rows from the legitimate mix, with the given model and tool-set option indices."""
        rows = np.empty((count, len(FIELDS)), dtype=np.int64)
        rows[:, 0] = models
        for column, name in enumerate(MIX, start=1):
            _, weights = MIX[name]
            p = np.zeros(len(self.options[name]))
            p[: len(weights)] = weights
            rows[:, column] = rng.choice(len(p), size=count, p=p)
        rows[:, -1] = tools
        return rows

    def fixed_row(self, fixed: FixedSampling, model: int) -> np.ndarray:
        logprobs = (True, fixed.top_logprobs) if fixed.logprobs else None
        values = {
            "model": model if fixed.model is None else self.option("model", fixed.model),
            "stream": self.option("stream", fixed.stream),
            "temperature": self.option("temperature", fixed.temperature),
            "top_p": self.option("top_p", fixed.top_p),
            "max_tokens": self.option("max_tokens", fixed.max_tokens),
            "n": self.option("n", fixed.n),
            "logprobs": self.option("logprobs", logprobs),
            "response_format": self.option("response_format", fixed.response_format),
            "tools": self.option("tools", fixed.tools),
        }
        return np.array([values[f] for f in FIELDS], dtype=np.int64)

    def register(self, sampling: Sampling) -> None:
        """Add the option values a population's fixed profile uses (before any profile is interned)."""
        if sampling.fixed is not None:
            self.fixed_row(sampling.fixed, 0)
        for name in sampling.models or {}:
            self.option("model", name)

    def with_tools(self, profiles: np.ndarray, tool_set: str) -> np.ndarray:
        """The same profiles with `tool_set` attached (agentic tasks)."""
        unique, inverse = np.unique(profiles, return_inverse=True)
        tools = self.options["tools"].index(tool_set)
        rows = np.array([self._row(self.profiles[p]) for p in unique.tolist()], dtype=np.int64).reshape(-1, len(FIELDS))
        rows[:, -1] = tools
        return self.intern(rows)[inverse]

    def _row(self, profile: Profile) -> list[int]:
        logprobs = (True, profile.top_logprobs) if profile.logprobs else None
        values = {**{f: getattr(profile, f) for f in FIELDS if f != "logprobs"}, "logprobs": logprobs}
        return [self.options[f].index(values[f]) for f in FIELDS]

    def table(self) -> pa.Table:
        """Per-profile event columns, from `describe_chat` on a body with each profile's parameters."""
        infos = [describe_chat(chat_body(_PROBE, p, TOOL_SETS.get(p.tools or "")), 1) for p in self.profiles]
        columns = {name: [getattr(info, name) for info in infos] for name in PROFILE_COLUMNS[:-1]}
        columns["sampling_fingerprint"] = [sampling_fingerprint(info) for info in infos]
        return pa.table({name: pa.array(values, ARROW_SCHEMA.field(name).type) for name, values in columns.items()})

    def arrays(self) -> dict[str, np.ndarray]:
        """What completions and latencies depend on: max_tokens (-1: none), n, model index, stream, tools."""
        if self._arrays is None or len(self._arrays["n"]) != len(self.profiles):
            profiles = self.profiles
            self._arrays = {
                "max_tokens": np.array([p.max_tokens or -1 for p in profiles], dtype=np.int64),
                "n": np.array([p.n or 1 for p in profiles], dtype=np.int64),
                "model": np.array([self.options["model"].index(p.model) for p in profiles], dtype=np.int64),
                "stream": np.array([p.stream for p in profiles], dtype=bool),
                "tools": np.array([p.tools is not None for p in profiles], dtype=bool),
                "tools_count": np.array([len(TOOL_SETS[p.tools]) if p.tools else 0 for p in profiles], dtype=np.int64),
            }
        return self._arrays


_PROBE = [{"role": "user", "content": "x"}]
# the event columns a sampling profile decides; "sampling_fingerprint" last: computed from the others
PROFILE_COLUMNS = (*SAMPLING_FIELDS, "tools_count", "sampling_fingerprint")
