"""The event schema and the append-only event log: durability, crashes, rotation, export, purge."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import typing
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hydraguard.events.log import (
    EventLog,
    export_parquet,
    iter_events,
    purge_prompt_text,
    read_segment,
    read_table,
    segments,
)
from hydraguard.events.schema import (
    ARROW_SCHEMA,
    FIELD_NAMES,
    SCHEMA_VERSION,
    RequestEvent,
    events_to_table,
    table_to_events,
)

DAY = 86_400.0


def make_event(i: int, *, t0: float = 1_700_000_000.0, prompt: str | None = None, **extra: typing.Any) -> RequestEvent:
    return RequestEvent(
        time=t0 + i,
        request_id=f"req-{i:05d}",
        endpoint="/v1/chat/completions",
        client_ip="203.0.113.7",
        key_id="key_abc",
        account_id="acct_abc",
        org_id="org_abc",
        tier="free",
        model="mock-small",
        stream=bool(i % 2),
        temperature=0.5 if i % 3 else None,
        max_tokens=100 + i,
        logprobs=i % 2 == 0,
        tools_count=i % 4,
        message_count=2,
        prompt_chars=10 * i,
        prompt_text=prompt,
        status=200 if i % 5 else 429,
        refusal_reason=None if i % 5 else "rate_limited:rpm:account",
        prompt_tokens=i,
        completion_tokens=2 * i,
        latency_ms=1.5 * i,
        **extra,
    )


def full_event() -> RequestEvent:
    """Every field set to a non-default value, so a round trip exercises every column."""
    return RequestEvent(
        time=1_700_000_123.25,
        request_id="req-full",
        endpoint="/v1/completions",
        method="GET",
        client_ip="2001:db8::1",
        user_agent="openai-python/1.0",
        key_id="key_1",
        account_id="acct_1",
        org_id="org_1",
        tier="enterprise",
        model="mock-large",
        stream=True,
        temperature=0.7,
        top_p=0.9,
        max_tokens=256,
        n=3,
        logprobs=True,
        top_logprobs=5,
        tools_count=2,
        tools_schema_hash="tsh",
        response_format="json_object",
        message_count=4,
        prompt_chars=1234,
        prompt_tokens_est=300,
        system_prompt_hash="sph",
        prompt_text="hello world",
        template_hash="th",
        template_signature="ts",
        reasoning_extraction_score=0.25,
        capability_area="code",
        sampling_fingerprint="sf",
        client_fingerprint="cf",
        tls_fingerprint="tf",
        status=403,
        refusal_reason="blocked",
        decision_type="block",
        decision_id="dec_1",
        prompt_tokens=310,
        completion_tokens=0,
        finish_reason="stop",
        latency_ms=12.5,
        upstream_latency_ms=10.25,
    )


def ids(directory: Path) -> list[str]:
    return read_table(directory).column("request_id").to_pylist()


def wait_for(predicate: typing.Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- schema -----------------------------------------------------------------------------------------------
EXPECTED_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def test_arrow_schema_has_one_field_per_event_field_with_matching_type():
    hints = typing.get_type_hints(RequestEvent)
    assert ARROW_SCHEMA.names == list(RequestEvent.__struct_fields__) == list(FIELD_NAMES)
    for name in RequestEvent.__struct_fields__:
        annotation = hints[name]
        base = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
        assert len(base) == 1, f"{name}: only `T` or `T | None` fields fit a flat table"
        assert ARROW_SCHEMA.field(name).type == EXPECTED_ARROW[base[0]], name
        assert ARROW_SCHEMA.field(name).nullable
    assert ARROW_SCHEMA.metadata[b"hydraguard.schema_version"] == str(SCHEMA_VERSION).encode()


def test_events_to_table_and_back_round_trip():
    events = [full_event(), RequestEvent(time=1.0, request_id="r", endpoint="/v1/models")] + [
        make_event(i, prompt=f"p{i}") for i in range(7)
    ]
    table = events_to_table(events)
    assert table.schema.equals(ARROW_SCHEMA)
    assert table.num_rows == len(events)
    assert table_to_events(table) == events
    # defaults and nulls survive as such
    bare = table_to_events(table)[1]
    assert bare.client_ip is None and bare.stream is False and bare.method == "POST" and bare.tools_count == 0


def test_empty_table_round_trip():
    table = events_to_table([])
    assert table.num_rows == 0 and table.schema.equals(ARROW_SCHEMA)
    assert table_to_events(table) == []


# -- EventLog: clean shutdown -----------------------------------------------------------------------------
def test_close_writes_every_appended_event_without_writer_thread(tmp_path):
    log = EventLog(tmp_path)
    events = [make_event(i) for i in range(25)]
    for e in events:
        log.append(e)
    assert segments(tmp_path) == []  # append only queues
    log.close()
    assert log.written == 25
    assert list(iter_events(tmp_path)) == events


def test_close_with_running_writer_loses_nothing(tmp_path):
    log = EventLog(tmp_path, flush_interval=10.0)  # the thread would not flush by itself during the test
    log.start()
    events = [make_event(i, prompt="x" * i) for i in range(300)]
    for e in events:
        log.append(e)
    started = time.monotonic()
    log.close()
    assert time.monotonic() - started < 5, "close must wake the writer, not wait out the flush interval"
    assert table_to_events(read_table(tmp_path)) == events
    assert log.written == 300


def test_flush_refuses_while_the_writer_thread_runs(tmp_path):
    log = EventLog(tmp_path, flush_interval=10.0)
    log.start()
    try:
        with pytest.raises(RuntimeError):
            log.flush()
    finally:
        log.close()


def test_writer_thread_flushes_within_two_intervals(tmp_path):
    interval = 0.2
    log = EventLog(tmp_path, flush_interval=interval)
    log.start()
    try:
        for i in range(10):
            log.append(make_event(i))
        appended = time.monotonic()
        assert wait_for(lambda: len(ids(tmp_path)) == 10, timeout=2 * interval + 1.0)
        assert time.monotonic() - appended <= 2 * interval + 1.0
        # and a second wave, into the same open segment
        for i in range(10, 15):
            log.append(make_event(i))
        assert wait_for(lambda: len(ids(tmp_path)) == 15, timeout=2 * interval + 1.0)
        assert len(segments(tmp_path)) == 1
    finally:
        log.close()
    assert ids(tmp_path) == [f"req-{i:05d}" for i in range(15)]


# -- crashes -----------------------------------------------------------------------------------------------
CHILD_PRELUDE = textwrap.dedent(
    """
    import os, sys, time
    from hydraguard.events.log import EventLog
    from hydraguard.events.schema import RequestEvent

    def ev(i):
        return RequestEvent(time=1_700_000_000.0 + i, request_id=f"req-{i:05d}", endpoint="/v1/x",
                            prompt_text="p" * 50)
    """
)


def run_child(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_crash_without_close_keeps_events_flushed_before_the_last_interval(tmp_path):
    interval = 0.1
    result = run_child(
        f"""
        log = EventLog({str(tmp_path)!r}, flush_interval={interval})
        log.start()
        for i in range(50):
            log.append(ev(i))
        deadline = time.monotonic() + 10
        while log.written < 50 and time.monotonic() < deadline:  # > flush_interval: the first wave is flushed
            time.sleep({interval})
        print(log.written, flush=True)
        for i in range(50, 80):
            log.append(ev(i))
        os._exit(1)  # no close, no atexit, no flush of the second wave
        """
    )
    assert result.returncode == 1, result.stderr
    assert int(result.stdout.strip()) == 50
    got = ids(tmp_path)  # never raises, even though the segment has no end-of-stream marker
    assert got[:50] == [f"req-{i:05d}" for i in range(50)]
    assert len(got) <= 80
    assert got == [f"req-{i:05d}" for i in range(len(got))]  # a prefix, nothing invented or reordered


def test_sigkill_while_writing_keeps_every_event_reported_written(tmp_path):
    """SIGKILL at an arbitrary moment of a busy writer: every event fsynced before the kill is readable."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD_PRELUDE
            + textwrap.dedent(
                f"""
                log = EventLog({str(tmp_path)!r}, flush_interval=0.01, segment_max_events=300)
                log.start()
                i = 0
                while True:
                    for _ in range(50):
                        log.append(ev(i))
                        i += 1
                    print(log.written, flush=True)
                    time.sleep(0.005)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        reported = 0
        deadline = time.monotonic() + 20
        assert proc.stdout is not None
        while reported < 1_300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            reported = int(line)
        assert reported >= 1_300  # flushes of up to 250 events: three segments of 300 by then
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    got = ids(tmp_path)
    assert len(got) >= reported
    assert got == [f"req-{i:05d}" for i in range(len(got))]
    assert len(segments(tmp_path)) >= 3  # it rotated while running


def test_segment_truncated_mid_batch_is_read_up_to_its_last_complete_batch(tmp_path):
    log = EventLog(tmp_path)
    sizes = []
    for wave in range(3):
        for i in range(wave * 10, wave * 10 + 10):
            log.append(make_event(i, prompt="q" * 40))
        log.flush()
        sizes.append(segments(tmp_path)[0].stat().st_size)
    log.close()
    (path,) = segments(tmp_path)
    data = path.read_bytes()
    # cut inside the third batch: the first two batches survive
    for cut in (1, 10, (sizes[2] - sizes[1]) // 2, sizes[2] - sizes[1] - 1):
        path.write_bytes(data[: sizes[2] - cut])
        assert ids(tmp_path) == [f"req-{i:05d}" for i in range(20)], cut
    # cut inside the second batch: only the first survives
    path.write_bytes(data[: sizes[1] - 5])
    assert ids(tmp_path) == [f"req-{i:05d}" for i in range(10)]
    assert [e.request_id for e in iter_events(tmp_path)] == [f"req-{i:05d}" for i in range(10)]
    # only the end-of-stream marker missing: everything is there
    path.write_bytes(data[: sizes[2]])
    assert len(ids(tmp_path)) == 30


@pytest.mark.parametrize("content", [b"", b"\xff", b"\xff\xff\xff\xff\x10\x00", b"garbage that is not arrow"])
def test_segment_cut_inside_its_header_reads_as_empty(tmp_path, content):
    good = EventLog(tmp_path)
    good.append(make_event(1))
    good.close()
    (tmp_path / "events-000000000000001-99999-000000.arrows").write_bytes(content)
    assert read_segment(tmp_path / "events-000000000000001-99999-000000.arrows").num_rows == 0
    table = read_table(tmp_path)
    assert table.num_rows == 1 and table.schema.equals(ARROW_SCHEMA)


def test_read_of_an_empty_or_missing_directory(tmp_path):
    assert read_table(tmp_path).num_rows == 0
    assert read_table(tmp_path / "nope").schema.equals(ARROW_SCHEMA)
    assert list(iter_events(tmp_path / "nope")) == []


# -- rotation and several writers ---------------------------------------------------------------------------
def test_segments_rotate_by_event_count(tmp_path):
    log = EventLog(tmp_path, segment_max_events=10)
    for wave in range(5):
        for i in range(wave * 6, wave * 6 + 6):
            log.append(make_event(i))
        log.flush()
    log.close()
    # 6 + 6 >= 10 closes a segment: waves (0,1) (2,3) (4)
    counts = [read_segment(p).num_rows for p in segments(tmp_path)]
    assert counts == [12, 12, 6]
    assert ids(tmp_path) == [f"req-{i:05d}" for i in range(30)]


def test_segments_rotate_by_age(tmp_path):
    log = EventLog(tmp_path, segment_max_age=0.0)
    for i in range(4):
        log.append(make_event(i))
        log.flush()
    log.close()
    assert [read_segment(p).num_rows for p in segments(tmp_path)] == [1, 1, 1, 1]


def test_rapid_rotation_never_overwrites_a_segment(tmp_path):
    """Segments started within the same millisecond still get distinct names."""
    log = EventLog(tmp_path, segment_max_events=1)
    for i in range(200):
        log.append(make_event(i))
        log.flush()
    log.close()
    assert len(segments(tmp_path)) == 200
    assert ids(tmp_path) == [f"req-{i:05d}" for i in range(200)]


def test_several_instances_in_one_process_share_a_directory(tmp_path):
    logs = [EventLog(tmp_path) for _ in range(4)]
    for n, log in enumerate(logs):
        for i in range(n, 40, 4):  # interleaved times
            log.append(make_event(i))
    for log in logs:
        log.flush()
    for log in logs:
        log.close()
    assert len(segments(tmp_path)) == 4
    table = read_table(tmp_path)
    assert table.column("request_id").to_pylist() == [f"req-{i:05d}" for i in range(40)]
    times = table.column("time").to_pylist()
    assert times == sorted(times)


def test_several_processes_share_a_directory_and_read_table_merges_by_time(tmp_path):
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD_PRELUDE
                + textwrap.dedent(
                    f"""
                    log = EventLog({str(tmp_path)!r}, flush_interval=0.02)
                    log.start()
                    for i in range({n}, 60, 3):
                        log.append(ev(i))
                        time.sleep(0.001)
                    log.close()
                    print(os.getpid())
                    """
                ),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    pids = set()
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        pids.add(out.strip())
    names = [p.name for p in segments(tmp_path)]
    assert {re.match(r"events-\d+-(\d+)", name).group(1) for name in names} == pids  # pid in the name
    table = read_table(tmp_path)
    assert table.column("request_id").to_pylist() == [f"req-{i:05d}" for i in range(60)]


# -- export and purge ---------------------------------------------------------------------------------------
def test_export_parquet_has_the_same_rows(tmp_path):
    events_dir = tmp_path / "events"
    for part in range(2):
        log = EventLog(events_dir)
        for i in range(part, 20, 2):
            log.append(make_event(i, prompt=f"prompt {i}"))
        log.close()
    out = tmp_path / "out.parquet"
    assert export_parquet(events_dir, out) == 20
    exported = pq.read_table(out)
    assert exported.num_rows == 20
    assert exported.schema.names == ARROW_SCHEMA.names
    assert exported.equals(read_table(events_dir))
    assert table_to_events(exported) == [make_event(i, prompt=f"prompt {i}") for i in range(20)]


def _write_segment(directory: Path, events: list[RequestEvent]) -> Path:
    before = set(segments(directory))
    log = EventLog(directory)
    for e in events:
        log.append(e)
    log.close()
    (path,) = set(segments(directory)) - before
    return path


def test_purge_prompt_text_nulls_only_old_segments_and_keeps_other_columns(tmp_path):
    old_events = [make_event(i, prompt=f"secret prompt {i}") for i in range(5)]
    new_events = [make_event(i, prompt=f"fresh prompt {i}") for i in range(5, 10)]
    old = _write_segment(tmp_path, old_events)
    new = _write_segment(tmp_path, new_events)
    ten_days_ago = time.time() - 10 * DAY
    os.utime(old, (ten_days_ago, ten_days_ago))
    before_old = read_segment(old)

    assert purge_prompt_text(tmp_path, older_than=7 * DAY) == 1

    after_old = read_segment(old)
    assert after_old.column("prompt_text").null_count == 5
    assert b"secret prompt" not in old.read_bytes()
    others = [n for n in ARROW_SCHEMA.names if n != "prompt_text"]
    assert after_old.select(others).equals(before_old.select(others))
    assert read_segment(new).column("prompt_text").to_pylist() == [f"fresh prompt {i}" for i in range(5, 10)]
    assert not list(tmp_path.glob("*.tmp"))
    # nothing left to purge; the freshly written segment is left alone
    assert purge_prompt_text(tmp_path, older_than=7 * DAY) == 0
    assert read_table(tmp_path).num_rows == 10


def test_purge_skips_the_named_segment(tmp_path):
    old = _write_segment(tmp_path, [make_event(1, prompt="keep me")])
    past = time.time() - 2 * DAY
    os.utime(old, (past, past))
    assert purge_prompt_text(tmp_path, older_than=DAY, skip=str(old)) == 0
    assert read_segment(old).column("prompt_text").to_pylist() == ["keep me"]


def test_writer_thread_purges_old_segments_but_not_its_own(tmp_path):
    other = _write_segment(tmp_path, [make_event(1, prompt="old prompt")])
    log = EventLog(tmp_path, flush_interval=0.02, prompt_text_retention=3600.0)
    log.append(make_event(2, prompt="current prompt"))
    log.flush()  # opens this log's own segment
    (own,) = set(segments(tmp_path)) - {other}
    past = time.time() - 7200
    for path in (other, own):
        os.utime(path, (past, past))
    log.start()
    try:
        assert wait_for(lambda: read_segment(other).column("prompt_text").null_count == 1, timeout=5)
        log.append(make_event(3, prompt="later prompt"))
    finally:
        log.close()
    assert read_segment(own).column("prompt_text").to_pylist() == ["current prompt", "later prompt"]
    assert ids(tmp_path) == ["req-00001", "req-00002", "req-00003"]


def test_an_event_outside_the_schema_does_not_block_the_others(tmp_path):
    from hydraguard.events.log import EventLog, read_table
    from hydraguard.events.schema import RequestEvent

    log = EventLog(tmp_path)
    log.append(RequestEvent(time=1.0, request_id="ok-1", endpoint="/v1/models"))
    log.append(RequestEvent(time=2.0, request_id="huge", endpoint="/v1/models", completion_tokens=10**30))
    log.append(RequestEvent(time=3.0, request_id="ok-2", endpoint="/v1/models"))
    log.close()
    assert read_table(tmp_path).column("request_id").to_pylist() == ["ok-1", "ok-2"]
    assert log.rejected == 1


# -- EventLog: sharing the GIL with the event loop ---------------------------------------------------------
def test_a_large_flush_hands_the_gil_over_and_keeps_every_event_in_order(tmp_path, monkeypatch):
    """A flush bigger than the hand-over chunks writes every event once, in order, enriched, and lets the
    event loop's thread run between chunks instead of holding the GIL for the whole flush."""
    from hydraguard.events import log as event_log

    handovers = []
    monkeypatch.setattr(event_log, "_yield_gil", lambda: handovers.append(1))
    enriched = []

    def enrich(event: RequestEvent, content: typing.Any) -> None:
        event.capability_area = content.user_text
        enriched.append(event.request_id)

    n = 2 * event_log.CONVERT_PER_YIELD + 7
    log = EventLog(tmp_path, enrich=enrich)
    events = [make_event(i) for i in range(n)]
    for e in events:
        log.append(e, event_log.PromptContent("", f"area-{e.request_id}"))
    log.close()
    written = list(iter_events(tmp_path))
    assert [e.request_id for e in written] == [e.request_id for e in events] == enriched
    assert [e.capability_area for e in written] == [f"area-{e.request_id}" for e in events]
    # one hand-over per ENRICH_PER_YIELD enriched events and one between two converted chunks
    assert len(handovers) == n // event_log.ENRICH_PER_YIELD + 2


def test_an_event_outside_the_schema_in_a_later_chunk_is_the_only_one_left_out(tmp_path, monkeypatch):
    from hydraguard.events import log as event_log

    monkeypatch.setattr(event_log, "CONVERT_PER_YIELD", 4)
    log = EventLog(tmp_path)
    for i in range(10):
        extra = {"completion_tokens": 10**30} if i == 6 else {}
        log.append(RequestEvent(time=float(i), request_id=f"r{i}", endpoint="/v1/models", **extra))
    log.close()
    assert read_table(tmp_path).column("request_id").to_pylist() == [f"r{i}" for i in range(10) if i != 6]
    assert log.rejected == 1 and log.written == 9
