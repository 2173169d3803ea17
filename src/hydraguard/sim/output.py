"""Simulated events as columns, and their conversion to the one `RequestEvent` Arrow schema.

A `Block` holds a batch of events as numpy arrays of indices (into the registry, the prompt book, the profile
book, the user-agent catalogue); `Columns.table` turns it into a table with exactly `ARROW_SCHEMA`, building
each string column with one `take` from a small vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hydraguard.detect.request import client_fingerprint
from hydraguard.events.schema import ARROW_SCHEMA
from hydraguard.sim import network
from hydraguard.sim.clients import PROFILE_COLUMNS, ProfileBook
from hydraguard.sim.prompts import PromptBook
from hydraguard.sim.responses import FINISH_REASONS

ENDPOINT = "/v1/chat/completions"
BANNED = "account_banned"  # the gateway's refusal reason for a banned account's request
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass
class Block:
    time: np.ndarray  # float64 unix seconds
    account: np.ndarray  # int32 global account index
    key: np.ndarray  # int32 global key index
    prompt: np.ndarray  # int32 prompt book index; -1: refused before the body was read
    profile: np.ndarray  # int32 profile book index; -1 likewise
    ip: np.ndarray  # uint32 IPv4
    ua: np.ndarray  # int16 user-agent catalogue index
    status: np.ndarray  # int16
    rid: np.ndarray  # (n, 16) random bytes of the request id
    completion: np.ndarray  # int32; -1: none
    prompt_tokens: np.ndarray  # int32; -1: none
    finish: np.ndarray  # int8 index into FINISH_REASONS, -1: none
    latency: np.ndarray  # float32 ms
    upstream: np.ndarray  # float32 ms; NaN: none

    def __len__(self) -> int:
        return len(self.time)

    def slice(self, start: int, stop: int) -> Block:
        return Block(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})

    def take(self, index: np.ndarray) -> Block:
        return Block(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(blocks: list[Block]) -> Block:
        return Block(**{f.name: np.concatenate([getattr(b, f.name) for b in blocks]) for f in fields(Block)})


def _fixed_strings(data: np.ndarray) -> pa.Array:
    """A string array from an (n, width) uint8 matrix of ASCII, without a Python object per row."""
    n, width = data.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data)))


def request_ids(rid: np.ndarray) -> pa.Array:
    """`req_` + 32 hex digits, the gateway's request-id shape."""
    n = len(rid)
    out = np.empty((n, 36), dtype=np.uint8)
    out[:, :4] = np.frombuffer(b"req_", dtype=np.uint8)
    out[:, 4::2], out[:, 5::2] = _HEX[rid >> 4], _HEX[rid & 15]
    return _fixed_strings(out)


def _take(vocab: pa.Array, index: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    if valid is None:
        return vocab.take(pa.array(index))
    return vocab.take(pa.array(index, mask=~valid))


def _optional(values: np.ndarray, valid: np.ndarray, type: pa.DataType) -> pa.Array:
    return pa.array(values, type=type, mask=~valid)


class Columns:
    """Turns blocks into event tables; holds the vocabularies (ids, user agents, profiles)."""

    def __init__(
        self,
        account_ids: list[str],
        account_org: list[str],
        account_tier: list[str],
        key_ids: list[str],
        user_agents: list[str],
        book: PromptBook,
        profiles: ProfileBook,
        materialize: bool,
    ) -> None:
        self.accounts = pa.array(account_ids, pa.string())
        self.orgs = pa.array(account_org, pa.string())
        self.tiers = pa.array(account_tier, pa.string())
        self.keys = pa.array(key_ids, pa.string())
        self.user_agents = pa.array(user_agents, pa.string())
        self.client_fingerprints = pa.array([client_fingerprint(ua) for ua in user_agents], pa.string())
        self.book = book
        self.profiles = profiles
        self.materialize = materialize
        self._profile_table: pa.Table | None = None

    def _profile_columns(self) -> pa.Table:
        if self._profile_table is None or self._profile_table.num_rows != len(self.profiles.profiles):
            self._profile_table = self.profiles.table()
        return self._profile_table

    def table(self, block: Block) -> pa.Table:
        n = len(block)
        served = block.prompt >= 0
        prompt = np.where(served, block.prompt, 0)
        unique, inverse = np.unique(prompt, return_inverse=True)
        book = self.book
        columns: dict[str, pa.Array] = {
            "time": pa.array(block.time, pa.float64()),
            "request_id": request_ids(block.rid),
            "endpoint": _take(pa.array([ENDPOINT]), np.zeros(n, dtype=np.int64)),
            "method": _take(pa.array(["POST"]), np.zeros(n, dtype=np.int64)),
            "client_ip": _ip_column(block.ip),
            "user_agent": _take(self.user_agents, block.ua),
            "key_id": _take(self.keys, block.key),
            "account_id": _take(self.accounts, block.account),
            "org_id": _take(self.orgs, block.account),
            "tier": _take(self.tiers, block.account),
            "message_count": pa.array(np.where(served, book.message_count[prompt], 0), pa.int64()),
            "prompt_chars": pa.array(np.where(served, book.prompt_chars[prompt], 0), pa.int64()),
            "prompt_tokens_est": pa.array(np.where(served, book.tokens_est[prompt], 0), pa.int64()),
            "system_prompt_hash": _take(
                pa.array([book.system_hash.get(i) for i in unique.tolist()], pa.string()), inverse, served
            ),
            "prompt_ref": _take(pa.array([book.refs.get(i) for i in unique.tolist()], pa.string()), inverse, served),
            "status": pa.array(block.status, pa.int64()),
            "refusal_reason": _take(pa.array([BANNED]), np.zeros(n, dtype=np.int64), block.status == 403),
            "prompt_tokens": _optional(block.prompt_tokens, served, pa.int64()),
            "completion_tokens": _optional(block.completion, served, pa.int64()),
            "finish_reason": _take(pa.array(FINISH_REASONS), np.maximum(block.finish, 0), served),
            "latency_ms": pa.array(block.latency, pa.float64()),
            "upstream_latency_ms": _optional(block.upstream, served, pa.float64()),
        }
        # prompt 0 stands in for refused requests' missing prompt; it may never have been described
        features = [book.features.get(i) for i in unique.tolist()]
        for name in ("template_hash", "template_signature", "capability_area"):
            values = [getattr(f, name) if f else None for f in features]
            columns[name] = _take(pa.array(values, pa.string()), inverse, served)
        scores = np.array([f.reasoning_extraction_score if f else 0.0 for f in features], dtype=np.float64)
        columns["reasoning_extraction_score"] = _optional(scores[inverse], served, pa.float64())
        columns["client_fingerprint"] = _take(self.client_fingerprints, block.ua)
        if self.materialize:
            texts = pa.array([book.texts.get(i) for i in unique.tolist()], pa.string())
            columns["prompt_text"] = _take(texts, inverse, served)
        profile_table = self._profile_columns()
        profile_index = pa.array(np.where(served, block.profile, 0), mask=~served)
        for name in PROFILE_COLUMNS:
            column = profile_table.column(name).take(profile_index)
            if name == "stream":
                column = column.fill_null(False)
            elif name == "tools_count":
                column = column.fill_null(0)
            columns[name] = column
        # a request that carries tools is agentic, as `detect.request.capability_area` decides in the gateway
        columns["capability_area"] = pc.if_else(
            pc.greater(columns["tools_count"], 0), "agentic", columns["capability_area"]
        )
        arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type).cast(f.type) for f in ARROW_SCHEMA]
        return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def _ip_column(addresses: np.ndarray) -> pa.Array:
    unique, inverse = np.unique(addresses, return_inverse=True)
    return _take(pa.array(network.to_strings(unique), pa.string()), inverse)


ROW_GROUP = 1 << 20


def write_parquet(table: pa.Table, path: str) -> None:
    """Deterministic bytes: same table, same file."""
    pq.write_table(table, path, compression="zstd", row_group_size=ROW_GROUP, write_statistics=True)


def write_day(columns: Columns, block: Block, path: str) -> None:
    """A day's events as `write_parquet` writes their table (the same bytes), built and written one row group at a
    time: with `--materialize-text` a whole day's prompt text would otherwise sit in memory at once."""
    with pq.ParquetWriter(path, ARROW_SCHEMA, compression="zstd", write_statistics=True) as writer:
        for start in range(0, max(len(block), 1), ROW_GROUP):
            writer.write_table(columns.table(block.slice(start, start + ROW_GROUP)), row_group_size=ROW_GROUP)
            pa.default_memory_pool().release_unused()
