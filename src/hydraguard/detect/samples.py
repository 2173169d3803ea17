"""Sample templates: what a detection's accounts were asking, from the latest events the engine folded in.

Events carry a template's hash, not its text (text is kept only with `events.keep_prompt_text`), so a sample is
the hash, how many of the accounts' latest requests used it, and the latest request id that did, to look the
request up in the event log. Only the latest `SAMPLE_EVENTS` events are kept (about an hour of `seed-hydra`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SAMPLE_EVENTS = 100_000
SAMPLE_TEMPLATES = 3


@dataclass(frozen=True)
class TemplateSample:
    template_hash: str
    requests: int  # of the accounts' requests among the latest events
    example_request_id: str


class RecentTemplates:
    def __init__(self, size: int = SAMPLE_EVENTS) -> None:
        self._size = size
        self._chunks: list[tuple[np.ndarray, pa.Array, pa.Array]] = []
        self._held = 0
        self._joined: tuple[np.ndarray, pa.ChunkedArray, pa.ChunkedArray] | None = None

    def add(
        self,
        accounts: np.ndarray,
        template_hashes: pa.Array | pa.ChunkedArray,
        request_ids: pa.Array | pa.ChunkedArray,
    ) -> None:
        """The account numbers, template hashes and request ids of a batch's rows (time order), by reference."""
        if len(accounts) == 0:
            return
        if isinstance(template_hashes, pa.ChunkedArray):  # a table's columns
            template_hashes, request_ids = template_hashes.combine_chunks(), request_ids.combine_chunks()
        self._chunks.append((accounts, template_hashes, request_ids))
        self._held += len(accounts)
        while self._held - len(self._chunks[0][0]) >= self._size:
            self._held -= len(self._chunks.pop(0)[0])
        self._joined = None

    def of(self, accounts: np.ndarray, top: int = SAMPLE_TEMPLATES) -> tuple[TemplateSample, ...]:
        """The `top` templates these account numbers used most among the latest events, most used first (ties:
        the template seen first), each with the latest request that used it."""
        if self._joined is None:
            self._joined = (
                np.concatenate([a for a, _, _ in self._chunks] or [np.zeros(0, np.int64)]),
                pa.chunked_array([h for _, h, _ in self._chunks], pa.string()),
                pa.chunked_array([r for _, _, r in self._chunks], pa.string()),
            )
        numbers, hashes, request_ids = self._joined
        mine = numbers == accounts[0] if len(accounts) == 1 else np.isin(numbers, accounts)
        rows = np.flatnonzero(mine)
        used = hashes.take(pa.array(rows))
        templated = pc.is_valid(used).to_numpy(zero_copy_only=False)
        rows, used = rows[templated], used.filter(pa.array(templated))
        counted = pc.value_counts(used)  # in order of first use
        counts, values = counted.field("counts").to_numpy(), counted.field("values")
        samples = []
        for i in np.argsort(-counts, kind="stable")[:top].tolist():
            using = np.flatnonzero(pc.equal(used, values[i]).fill_null(False).to_numpy(zero_copy_only=False))
            latest = request_ids[int(rows[using[-1]])].as_py()
            samples.append(TemplateSample(values[i].as_py(), int(counts[i]), latest))
        return tuple(samples)
