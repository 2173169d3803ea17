"""Streaming detection in the background of `hydraguard serve`: `worker.follow` in a supervised child process.

A process, not a thread: a detection step (folding events, the rules, a linkage that takes seconds over large
registries) is CPU-bound Python, and on a thread of the gateway's process it would hold the GIL away from the
request path. The child is started with `spawn` (a fresh interpreter: no copy of the gateway's event loop, sockets
or threads). It stops when the parent sets the stop event, and on its own if the parent dies, so it is never left
behind. A child that exits while it should run (it failed to start, was killed, or crashed in native code) is
logged and restarted after a delay that doubles with each crash in a row: detection comes back by itself after a
transient failure, and the gateway never waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from typing import TYPE_CHECKING

from hydraguard.config import Settings

if TYPE_CHECKING:
    from hydraguard.detect.engine import EngineSettings

log = logging.getLogger(__name__)
_CONTEXT = multiprocessing.get_context("spawn")


def engine_settings(settings: Settings, batch: bool = False) -> EngineSettings:
    """The engine's settings from the config: streaming detection's intervals, or with `batch` batch analysis's."""
    # the engine's imports are for the child, not the gateway
    from hydraguard.detect.engine import EngineSettings, tier_tokens_per_day

    detect = settings.detect
    return EngineSettings(
        analysis_interval=detect.analysis_interval,
        linkage_interval=detect.batch_linkage_interval if batch else detect.linkage_interval,
        linkage_lag=detect.batch_linkage_lag if batch else 0.0,
        tier_tokens_per_day=tier_tokens_per_day(settings.tiers),
    )


class _StopOrOrphaned:
    """Set when the parent asks the child to stop, or when the parent is gone (killed without stopping us)."""

    def __init__(self, stop: ProcessEvent) -> None:
        self._stop = stop
        self._parent = multiprocessing.parent_process()

    def is_set(self) -> bool:
        return self._stop.is_set() or (self._parent is not None and not self._parent.is_alive())


def _run_child(settings: Settings, stop: ProcessEvent) -> None:
    from hydraguard import logs

    # Ctrl-C reaches the whole process group: the parent stops the gateway first, then us through `stop`
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.configure(settings.logging.level, settings.logging.json_format)
    from hydraguard.detect.worker import follow  # seconds of imports (pyarrow, igraph): after logging is set up

    follow(
        settings,
        poll_interval=settings.detect.poll_interval,
        engine_settings=engine_settings(settings),
        stop_signal=_StopOrOrphaned(stop),
    )


class BackgroundDetector:
    """Runs and supervises the detection worker's child process; a context manager (`with` starts and stops it)."""

    def __init__(self, settings: Settings, *, stop_timeout: float = 10.0) -> None:
        # a plain `Settings` copy: the loaded one is of a class local to `config.load`, which cannot be pickled
        self._settings = Settings.model_validate(settings.model_dump())
        self._detect = self._settings.detect
        self._stop_timeout = stop_timeout  # after it the child is terminated, mid-step if need be
        self._stop = _CONTEXT.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and `stop` do not interleave
        self._process: BaseProcess | None = None
        self._started_at = 0.0
        self._supervisor = threading.Thread(target=self._supervise, name="detector-supervisor", daemon=True)
        self.starts = 0

    @property
    def process(self) -> BaseProcess | None:
        return self._process

    def start(self) -> BackgroundDetector:
        self._spawn()
        self._supervisor.start()
        return self

    def _spawn(self) -> None:
        process = _CONTEXT.Process(target=_run_child, args=(self._settings, self._stop), name="hydraguard-detect")
        process.start()
        self._process = process
        self._started_at = time.monotonic()
        self.starts += 1
        log.info(
            "background detection started (pid %d): following %s every %.1f s",
            process.pid,
            self._settings.events.dir,
            self._detect.poll_interval,
        )

    def _supervise(self) -> None:
        """The only place the child is waited for (and so reaped); `stop` waits for this thread."""
        delay = self._detect.restart_backoff
        while True:
            assert self._process is not None
            self._process.join()
            if self._stopping.is_set():
                return
            if time.monotonic() - self._started_at >= self._detect.restart_max_backoff:
                delay = self._detect.restart_backoff  # it had been running well: not a crash loop
            log.error(
                "background detection exited unexpectedly (pid %d, exit code %s); restarting in %.1f s",
                self._process.pid,
                self._process.exitcode,
                delay,
            )
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()
            delay = min(2 * delay, self._detect.restart_max_backoff)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            self._stop.set()
            process = self._process
        if process is None:
            return
        self._supervisor.join(self._stop_timeout)
        if self._supervisor.is_alive():
            log.warning(
                "background detection (pid %d) did not stop in %.0f s: terminating it", process.pid, self._stop_timeout
            )
            process.terminate()
            self._supervisor.join(5.0)
        if self._supervisor.is_alive():
            process.kill()
            self._supervisor.join()
        log.info("background detection stopped (pid %d, exit code %s)", process.pid, process.exitcode)

    def __enter__(self) -> BackgroundDetector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def beside_server(settings: Settings) -> Iterator[BackgroundDetector]:
    """The detector for as long as a server runs in the main thread (`with beside_server(s): uvicorn.run(...)`).

    uvicorn, once shut down by SIGTERM, raises the signal again: its default action would end the process before
    the detector is stopped, so here it is a `SystemExit` (status 143) that unwinds through `stop` first."""
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        with BackgroundDetector(settings) as detector:
            yield detector
    finally:
        signal.signal(signal.SIGTERM, previous)
