"""Append-only local event log: Arrow IPC stream segments written off the request path.

The gateway calls `EventLog.append`, which only puts the event on an in-memory queue. A writer
thread drains the queue every `flush_interval` seconds, lets the `enrich` hook fill the event's
request fingerprints from the prompt content passed along (which is then dropped, never written),
appends one record batch to the current segment and fsyncs it. Durability contract (also in
docs/events.md):

* clean shutdown (`close`): every appended event is on disk;
* crash: at most the events of the last `flush_interval` seconds are lost. A segment cut short by
  a crash stays readable up to its last complete batch.

Each process writes its own segments (the pid is in the name), so several gateway workers can
share one directory. Segments roll over by event count and age.

The writer thread shares the GIL with the gateway's event loop. Left alone, CPython lets it keep the GIL
for a whole switch interval (5 ms) whenever the loop wants it back, which showed as 5 ms stalls at the
gateway's p99; so the writer hands the GIL over after every `ENRICH_PER_YIELD` enriched events and every
`CONVERT_PER_YIELD` converted ones (each under a millisecond of work: a hand-over costs the writer a
context switch and cold caches, a few microseconds per event at these sizes).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hydraguard.events.schema import ARROW_SCHEMA, RequestEvent, events_to_table, table_to_events

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".arrows"
ENRICH_PER_YIELD = 16  # events fingerprinted between two hand-overs of the GIL (about 50 µs each)
CONVERT_PER_YIELD = 256  # events converted to Arrow between two hand-overs (about 4 µs each)


class PromptContent(NamedTuple):
    """What a request asked, for fingerprinting only: held until the writer thread has enriched the event."""

    system_text: str
    user_text: str
    tools_count: int = 0


Enrich = Callable[[RequestEvent, PromptContent | None], None]
_segment_seq = itertools.count()  # keeps names unique when segments start in the same millisecond


class EventLog:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        flush_interval: float = 1.0,
        segment_max_events: int = 500_000,
        segment_max_age: float = 3600.0,
        prompt_text_retention: float | None = None,
        enrich: Enrich | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.flush_interval = flush_interval
        self.segment_max_events = segment_max_events
        self.segment_max_age = segment_max_age
        self.prompt_text_retention = prompt_text_retention
        self.enrich = enrich
        self._queue: collections.deque[tuple[RequestEvent, PromptContent | None]] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._file: pa.OSFile | None = None
        self._path: Path | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._segment_events = 0
        self._segment_started = 0.0
        self._last_purge = 0.0
        self.appended = 0
        self.written = 0
        self.rejected = 0

    # -- producer side (request path) -------------------------------------------------------------
    def append(self, event: RequestEvent, content: PromptContent | None = None) -> None:
        self._queue.append((event, content))
        self.appended += 1

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="hydraguard-eventlog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Flush everything appended so far and close the current segment."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        self._flush()
        self._close_segment()

    def flush(self) -> None:
        """Write queued events now (used by tests and by `close`)."""
        if self._thread is not None:
            raise RuntimeError("flush() is for a log without a writer thread; use close()")
        self._flush()

    # -- writer thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._flush()
                self._maybe_purge_prompt_text()
            except Exception:  # the writer must survive a bad disk moment; events stay queued
                log.exception("event log flush failed")

    def _flush(self) -> None:
        if not self._queue:
            return
        queued: list[tuple[RequestEvent, PromptContent | None]] = []
        while self._queue:
            queued.append(self._queue.popleft())
        batch = self._enriched(queued)
        chunks = []
        for start in range(0, len(batch), CONVERT_PER_YIELD):
            if start:
                _yield_gil()
            chunks.append(self._to_table(batch[start : start + CONVERT_PER_YIELD]))
        table = pa.concat_tables(chunks)
        try:
            self._write(table)
        except Exception:
            # enriched already: requeued without their content, nothing is computed twice
            self._queue.extendleft((event, None) for event in reversed(batch))
            raise

    def _enriched(self, queued: list[tuple[RequestEvent, PromptContent | None]]) -> list[RequestEvent]:
        if self.enrich is None:
            return [event for event, _ in queued]
        for done, (event, content) in enumerate(queued, 1):
            try:
                self.enrich(event, content)
            except Exception:  # a fingerprint is worth less than the event: log it without
                log.exception("could not fingerprint event %s", event.request_id)
            if done % ENRICH_PER_YIELD == 0:
                _yield_gil()
        return [event for event, _ in queued]

    def _to_table(self, batch: list[RequestEvent]) -> pa.Table:
        """The batch as a table; an event that cannot be converted (a value outside the schema's types)
        is logged and left out rather than blocking every event after it."""
        try:
            return events_to_table(batch)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            good = []
            for event in batch:
                try:
                    events_to_table([event])
                except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
                    self.rejected += 1
                    log.error("event %s does not fit the event schema and is not logged: %s", event.request_id, exc)
                else:
                    good.append(event)
            return events_to_table(good)

    def _write(self, table: pa.Table) -> None:
        now = time.time()
        if self._writer is not None and (
            self._segment_events >= self.segment_max_events or now - self._segment_started >= self.segment_max_age
        ):
            self._close_segment()
        if self._writer is None:
            name = f"events-{int(now * 1000):015d}-{os.getpid()}-{next(_segment_seq):06d}{SEGMENT_SUFFIX}"
            self._path = self.directory / name
            self._file = pa.OSFile(str(self._path), "wb")
            self._writer = pa.ipc.new_stream(self._file, ARROW_SCHEMA)
            self._segment_events = 0
            self._segment_started = now
        self._writer.write_table(table)
        self._file.flush()  # type: ignore[union-attr]
        os.fsync(self._file.fileno())  # type: ignore[union-attr]
        self._segment_events += table.num_rows
        self.written += table.num_rows

    def _close_segment(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._file.close()  # type: ignore[union-attr]
        self._writer = None
        self._file = None
        self._path = None

    def _maybe_purge_prompt_text(self) -> None:
        if self.prompt_text_retention is None or time.time() - self._last_purge < 60:
            return
        self._last_purge = time.time()
        current = str(self._path) if self._path is not None else None
        purge_prompt_text(self.directory, older_than=self.prompt_text_retention, skip=current)


def _yield_gil() -> None:
    """Let a thread waiting for the GIL (the event loop) take it now rather than after a switch interval.
    A zero sleep does (the waiter wakes while this thread sleeps out the timer slack); `os.sched_yield`,
    though cheaper, gives the GIL back before the waiter is scheduled."""
    time.sleep(0)


def segments(directory: str | os.PathLike[str]) -> list[Path]:
    return sorted(Path(directory).glob(f"*{SEGMENT_SUFFIX}"))


def read_segment(path: Path) -> pa.Table:
    """Read one segment, keeping every complete batch of a segment that a crash cut short."""
    batches: list[pa.RecordBatch] = []
    try:
        with pa.OSFile(str(path), "rb") as source:
            reader = pa.ipc.open_stream(source)
            for batch in reader:
                batches.append(batch)
    except (pa.ArrowInvalid, OSError) as exc:
        log.warning("segment %s is truncated after %d batches: %s", path.name, len(batches), exc)
    return pa.Table.from_batches(batches, schema=ARROW_SCHEMA)


def read_table(directory: str | os.PathLike[str]) -> pa.Table:
    tables = [read_segment(p) for p in segments(directory)]
    if not tables:
        return ARROW_SCHEMA.empty_table()
    return pa.concat_tables(tables).sort_by([("time", "ascending")])


def iter_events(directory: str | os.PathLike[str]) -> Iterator[RequestEvent]:
    for path in segments(directory):
        yield from table_to_events(read_segment(path))


def export_parquet(directory: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    table = read_table(directory)
    pq.write_table(table, str(out))
    return table.num_rows


def purge_prompt_text(directory: str | os.PathLike[str], *, older_than: float, skip: str | None = None) -> int:
    """Null `prompt_text` in segments last written more than `older_than` seconds ago."""
    purged = 0
    cutoff = time.time() - older_than
    for path in segments(directory):
        if str(path) == skip or path.stat().st_mtime > cutoff:
            continue
        table = read_segment(path)
        if table.num_rows == 0 or table.column("prompt_text").null_count == table.num_rows:
            continue
        idx = ARROW_SCHEMA.get_field_index("prompt_text")
        table = table.set_column(idx, ARROW_SCHEMA.field(idx), pc.cast(pa.nulls(table.num_rows), pa.string()))
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # several gateway processes may purge at once
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, ARROW_SCHEMA) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
        purged += 1
    return purged
