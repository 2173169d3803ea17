#!/usr/bin/env python3
"""The gateway's building blocks and their alternatives, measured against the same nginx upstream.

Three sections (`--sections`, default all):

* `clients` — upstream HTTP clients inside one asyncio (uvloop) process, each with a keep-alive pool:
  aiohttp `ClientSession` (configured as the gateway configures it), `httpx.AsyncClient`,
  `httpx2.AsyncClient` (if installed) and, as a floor, a minimal asyncio + httptools keep-alive client
  (no timeouts, redirects or error handling: not a production client). Sequential (concurrency 1)
  and concurrency 32: requests/s, p50/p99 latency, and CPU µs per request (process time; the
  least noisy figure on a shared machine).
* `json` — decoding a typical chat request body (a short one and a ~5 KB multi-turn one with tools)
  with msgspec typed decode into the gateway's `ChatCompletionRequest`, msgspec untyped, `json`
  (stdlib) and orjson (if installed); the gateway's whole `describe_chat`; and decoding the upstream's
  answer for usage accounting.
* `servers` — ASGI servers running a minimal app, measured with wrk as in `gateway_latency.py`:
  uvicorn (httptools), uvicorn (h11) and granian (if installed), each serving a constant answer
  (`plain`), a raw-ASGI aiohttp proxy to nginx (`proxy`), and the same proxy behind a Starlette route
  (`starlette`). This is the floor under the gateway's own work on this machine.

Pinning (2 cores): the measured process (this script for `clients`, the server for `servers`) on CPU 0,
nginx and wrk on CPU 1. `--no-pin` pins nothing.

Usage (repository root):

    .venv/bin/python bench/client_alternatives.py                      # everything, 5 s per measurement
    .venv/bin/python bench/client_alternatives.py --duration 2 --sections clients json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_latency as gl  # a sibling script: nginx, wrk and machine helpers

HEADERS = {"content-type": "application/json", "authorization": "Bearer hg_bench"}


# -- clients -----------------------------------------------------------------------------------------------
class Client:
    name = ""

    async def start(self) -> None: ...

    async def post(self, url: str, body: bytes) -> bytes:
        raise NotImplementedError

    async def close(self) -> None: ...


class AiohttpClient(Client):
    name = "aiohttp ClientSession"

    async def start(self) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        # as Gateway.start configures it
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=600, sock_connect=5),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def post(self, url: str, body: bytes) -> bytes:
        # as Gateway._forward / _relay_body use it
        response = await self.session.request("POST", url, data=body, headers=HEADERS)
        try:
            data = await response.read()
        finally:
            response.release()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return data

    async def close(self) -> None:
        await self.session.close()


class HttpxClient(Client):
    module = "httpx"

    def __init__(self) -> None:
        self.name = f"{self.module}.AsyncClient"

    async def start(self) -> None:
        mod = __import__(self.module)
        self.client = mod.AsyncClient(
            limits=mod.Limits(max_connections=None, max_keepalive_connections=256),
            timeout=mod.Timeout(600, connect=5),
        )

    async def post(self, url: str, body: bytes) -> bytes:
        response = await self.client.post(url, content=body, headers=HEADERS)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        return response.content

    async def close(self) -> None:
        await self.client.aclose()


class Httpx2Client(HttpxClient):
    module = "httpx2"


class _RawConnection(asyncio.Protocol):
    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[bytes] | None = None
        self.body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(b"".join(self.body))


class RawHttptoolsClient(Client):
    name = "floor: asyncio + httptools"

    async def start(self) -> None:
        self.idle: collections.deque[_RawConnection] = collections.deque()
        self.loop = asyncio.get_running_loop()

    async def post(self, url: str, body: bytes) -> bytes:
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        conn = None
        while self.idle:
            candidate = self.idle.pop()
            if not candidate.closed:
                conn = candidate
                break
        if conn is None:
            _, conn = await self.loop.create_connection(_RawConnection, host, int(port or 80))
        conn.body = []
        conn.waiter = self.loop.create_future()
        head = (
            f"POST /{path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
            f"Authorization: {HEADERS['authorization']}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        conn.transport.write(head + body)  # type: ignore[union-attr]
        data = await conn.waiter
        if conn.parser.get_status_code() != 200:
            raise RuntimeError(f"HTTP {conn.parser.get_status_code()}")
        if conn.parser.should_keep_alive():
            self.idle.append(conn)
        else:
            conn.transport.close()  # type: ignore[union-attr]
        return data

    async def close(self) -> None:
        while self.idle:
            self.idle.pop().transport.close()  # type: ignore[union-attr]


def available_clients() -> list[Client]:
    clients: list[Client] = [AiohttpClient(), HttpxClient()]
    with contextlib.suppress(ImportError):
        import httpx2  # noqa: F401

        clients.append(Httpx2Client())
    with contextlib.suppress(ImportError):
        import httptools  # noqa: F401

        clients.append(RawHttptoolsClient())
    return clients


async def measure_client(
    client: Client, url: str, body: bytes, concurrency: int, duration: float, warmup: float
) -> dict[str, float]:
    latencies: list[int] = []
    perf = time.perf_counter_ns

    async def worker(until: float, record: bool) -> None:
        while time.monotonic() < until:
            t0 = perf()
            await client.post(url, body)
            if record:
                latencies.append(perf() - t0)

    async def run(seconds: float, record: bool) -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(worker(until, record) for _ in range(concurrency)))

    if warmup > 0:
        await run(warmup, False)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await run(duration, True)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "rps": n / wall,
        "p50_ms": latencies[n // 2] / 1e6,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] / 1e6,
        "cpu_us_per_req": cpu / n * 1e6,
    }


def section_clients(args: argparse.Namespace, url: str) -> tuple[list[str], list[dict[str, object]]]:
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
        loop_name = "uvloop"
    except ImportError:
        loop_factory, loop_name = None, "asyncio"
    body = gl.REQUEST_BODY.encode()
    rows: list[dict[str, object]] = []
    affinity = os.sched_getaffinity(0)
    if args.cpu is not None:
        os.sched_setaffinity(0, {int(c) for c in args.cpu.split(",")})
    try:
        for client in available_clients():
            for concurrency in args.concurrency:

                async def one(client: Client = client, concurrency: int = concurrency) -> dict[str, float]:
                    await client.start()
                    try:
                        return await measure_client(client, url, body, concurrency, args.duration, args.warmup)
                    finally:
                        await client.close()

                with asyncio.Runner(loop_factory=loop_factory) as runner:
                    result = runner.run(one())
                rows.append({"client": client.name, "concurrency": concurrency, **result})
                print(
                    f"  {client.name:<28} c={concurrency:<3} {result['rps']:8,.0f} req/s  p50 {result['p50_ms']:.3f} ms"
                    f"  CPU {result['cpu_us_per_req']:.0f} µs/req",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        os.sched_setaffinity(0, affinity)
    lines = [
        f"### Upstream HTTP clients (one {loop_name} process, keep-alive pools, POST to nginx)",
        "",
        "| client | concurrency | req/s | p50 ms | p99 ms | CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['client']} | {r['concurrency']} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {r['cpu_us_per_req']:.0f} |"
        )
    return lines, rows


# -- JSON --------------------------------------------------------------------------------------------------
def medium_body() -> bytes:
    """A ~5 KB multi-turn chat request with tools, as agents and chat apps send."""
    turns = []
    for i in range(6):
        turns.append({"role": "user", "content": f"Question {i}: " + "explain the trade-offs in detail. " * 12})
        turns.append({"role": "assistant", "content": f"Answer {i}: " + "it depends on the workload. " * 14})
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": "Looks something up in a database and returns the rows.",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                    "required": ["query"],
                },
            },
        }
        for i in range(3)
    ]
    return json.dumps(
        {
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": "You are a careful assistant."}, *turns],
            "tools": tools,
            "temperature": 0.7,
            "top_p": 0.95,
            "max_tokens": 512,
            "stream": False,
        },
        separators=(",", ":"),
    ).encode()


def best_us(stmt: Callable[[], object], number: int, repeat: int = 5) -> float:
    return min(timeit.Timer(stmt).repeat(repeat, number)) / number * 1e6


def section_json(args: argparse.Namespace) -> tuple[list[str], list[dict[str, object]]]:
    import msgspec

    from hydraguard.gateway import requests as req
    from hydraguard.gateway.relay import Accounting, Answer

    try:
        import orjson
    except ImportError:
        orjson = None  # type: ignore[assignment]
    bodies = {"short": gl.REQUEST_BODY.encode(), "medium": medium_body()}
    typed = msgspec.json.Decoder(req.ChatCompletionRequest)
    untyped = msgspec.json.Decoder()
    rows: list[dict[str, object]] = []
    number = args.json_number
    for label, body in bodies.items():
        candidates: dict[str, Callable[[], object]] = {
            "msgspec typed (Decoder(ChatCompletionRequest))": lambda b=body: typed.decode(b),
            "msgspec typed (msgspec.json.decode(type=...), as the gateway calls it)": lambda b=body: (
                msgspec.json.decode(b, type=req.ChatCompletionRequest)
            ),
            "msgspec untyped": lambda b=body: untyped.decode(b),
            "json (stdlib) loads": lambda b=body: json.loads(b),
        }
        if orjson is not None:
            candidates["orjson loads"] = lambda b=body: orjson.loads(b)
        candidates["gateway describe_chat (whole)"] = lambda b=body: req.describe_chat(b, 4096)
        for name, fn in candidates.items():
            rows.append({"what": f"request {label} ({len(body):,} B)", "how": name, "us": best_us(fn, number)})
    answer = gl.RESPONSE_BODY.encode()
    answer_decoder = msgspec.json.Decoder(Answer)

    def accounting() -> object:
        a = Accounting()
        a.read_body(answer)
        return a

    candidates = {
        "msgspec typed (Decoder(Answer))": lambda: answer_decoder.decode(answer),
        "gateway Accounting.read_body": accounting,
        "json (stdlib) loads + usage": lambda: json.loads(answer)["usage"],
    }
    if orjson is not None:
        candidates["orjson loads + usage"] = lambda: orjson.loads(answer)["usage"]
    for name, fn in candidates.items():
        rows.append({"what": f"upstream answer ({len(answer):,} B)", "how": name, "us": best_us(fn, number)})
    lines = ["### JSON decoding (best of 5, µs per call)", "", "| body | decoder | µs |", "|---|---|---:|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['how']} | {r['us']:.2f} |")
    return lines, rows


# -- servers -----------------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children[ppid].append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            total += gl.cpu_seconds(p)
    return total


def server_commands(tmp: Path, port: int) -> dict[str, Callable[[str], list[str]]]:
    py = sys.executable
    commands: dict[str, Callable[[str], list[str]]] = {
        "uvicorn (httptools)": lambda app: [
            py,
            "-m",
            "uvicorn",
            f"hg_bench_apps:{app}",
            "--app-dir",
            str(tmp),
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "on",
        ],
        "uvicorn (h11)": lambda app: [
            py,
            "-m",
            "uvicorn",
            f"hg_bench_apps:{app}",
            "--app-dir",
            str(tmp),
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "h11",
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "on",
        ],
    }
    granian = Path(sys.executable).with_name("granian")
    if granian.exists():
        commands["granian (1 worker, uvloop, st)"] = lambda app: [
            str(granian),
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--runtime-mode",
            "st",
            "--loop",
            "uvloop",
            "--no-ws",
            "--log-level",
            "warning",
            "--working-dir",
            str(tmp),
            f"hg_bench_apps:{app}",
        ]
    return commands


def section_servers(
    args: argparse.Namespace, tmp: Path, upstream_url: str
) -> tuple[list[str], list[dict[str, object]]]:
    (tmp / "hg_bench_apps.py").write_text(gl.FLOOR_APPS)
    script = tmp / "server.lua"
    script.write_text(gl.WRK_LUA.format(body=gl.REQUEST_BODY, key="hg_bench"))
    env = {**os.environ, "HG_BENCH_UPSTREAM": upstream_url, "HG_BENCH_CONSTANT": gl.RESPONSE_BODY}
    rows: list[dict[str, object]] = []
    for server in server_commands(tmp, 0):
        for app in args.apps:
            port = gl.free_port()
            argv = gl.pinned(args.cpu, server_commands(tmp, port)[server](app))
            log = (tmp / "server.log").open("wb")
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
            try:
                gl.wait_for_port(port, 30, proc)
                time.sleep(0.3)  # granian's worker may start after the listener
                url = f"http://127.0.0.1:{port}{gl.PATH}"
                for concurrency in args.concurrency:
                    common = dict(
                        url=url, script=script, connections=concurrency, threads=1, cpu=args.wrk_cpu, timeout_s=5.0
                    )
                    if args.warmup > 0:
                        gl.run_wrk(duration=args.warmup, **common)  # type: ignore[arg-type]
                    pids = process_tree(proc.pid)
                    cpu0 = tree_cpu(pids)
                    out = gl.run_wrk(duration=args.duration, **common)  # type: ignore[arg-type]
                    cpu = tree_cpu(pids) - cpu0
                    r = gl.parse_wrk(out, server, concurrency, 1)
                    row = {
                        "server": server,
                        "app": app,
                        "concurrency": concurrency,
                        "rps": r.rps,
                        "p50_ms": r.p50_ms,
                        "p99_ms": r.p99_ms,
                        "errors": r.errors,
                        "cpu_us_per_req": cpu / r.requests * 1e6 if r.requests else float("nan"),
                    }
                    rows.append(row)
                    print(
                        f"  {server:<32} {app:<9} c={concurrency:<3} {r.rps:8,.0f} req/s  p50 {r.p50_ms:.3f} ms  "
                        f"errors {r.errors}  CPU {row['cpu_us_per_req']:.0f} µs/req",
                        file=sys.stderr,
                        flush=True,
                    )
            except RuntimeError as exc:
                print(f"  {server} {app}: failed: {exc}\n{(tmp / 'server.log').read_text()[-2000:]}", file=sys.stderr)
            finally:
                gl.stop(proc, signal.SIGINT)
                log.close()
    lines = [
        "### ASGI servers (one worker; plain = constant answer, proxy = raw ASGI + aiohttp to nginx, "
        "starlette = the same proxy behind a Starlette route)",
        "",
        "| server | app | concurrency | req/s | p50 ms | p99 ms | errors | CPU µs/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['app']} | {r['concurrency']} | {r['rps']:,.0f} | {r['p50_ms']:.3f} "
            f"| {r['p99_ms']:.3f} | {r['errors']} | {r['cpu_us_per_req']:.0f} |"
        )
    return lines, rows


# -- main --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--sections", nargs="+", choices=("clients", "json", "servers"), default=["clients", "json", "servers"]
    )
    p.add_argument("--duration", type=int, default=5, help="seconds per measurement (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before each (default 1)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], help="default: 1 32")
    p.add_argument(
        "--apps", nargs="+", choices=("plain", "proxy", "starlette"), default=["plain", "proxy", "starlette"]
    )
    p.add_argument("--json-number", type=int, default=20_000, help="calls per timing in the json section")
    p.add_argument("--cpu", default="0", help="CPU list for the measured process (default 0)")
    p.add_argument("--wrk-cpu", default="1", help="CPU list for wrk (default 1)")
    p.add_argument("--nginx-cpu", default="1", help="CPU list for nginx (default 1)")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON to OUT")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 120 or not 0 <= args.warmup <= 30:
        p.error("--duration must be in (0, 120] and --warmup in [0, 30]")
    if args.no_pin:
        args.cpu = args.wrk_cpu = args.nginx_cpu = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    machine = gl.machine_info()
    results: dict[str, object] = {}
    output: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="hg-alt-"))
    nginx = None
    try:
        if "clients" in args.sections or "servers" in args.sections:
            port = gl.free_port()
            nginx = gl.start_nginx(tmp, port, args.nginx_cpu)
            upstream_url = f"http://127.0.0.1:{port}{gl.PATH}"
        if "clients" in args.sections:
            print("clients:", file=sys.stderr)
            lines, results["clients"] = section_clients(args, upstream_url)
            output += [*lines, ""]
        if "json" in args.sections:
            print("json:", file=sys.stderr)
            lines, results["json"] = section_json(args)
            output += [*lines, ""]
        if "servers" in args.sections:
            print("servers:", file=sys.stderr)
            lines, results["servers"] = section_servers(args, tmp, upstream_url)
            output += [*lines, ""]
    finally:
        if nginx is not None:
            gl.stop(nginx, signal.SIGQUIT)
        shutil.rmtree(tmp, ignore_errors=True)
    packages = {**machine["packages"]}  # type: ignore[dict-item]
    for name in ("httpx", "httpx2", "orjson", "granian"):
        try:
            packages[name] = gl.metadata.version(name)
        except gl.metadata.PackageNotFoundError:
            packages[name] = None
    output.append(
        f"- machine: {machine['nproc']} CPUs, {machine['cpu_model']}, Python {machine['python']}; "
        f"{machine['wrk']}; {machine['nginx']}"
    )
    output.append("- packages: " + ", ".join(f"{k} {v}" for k, v in packages.items() if v))
    output.append(
        f"- pinning: measured process CPU {args.cpu}, wrk CPU {args.wrk_cpu}, nginx CPU {args.nginx_cpu}; "
        f"{args.warmup:g} s warm-up + {args.duration:g} s per measurement"
    )
    output.append(f"- load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    output.append(f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}")
    output.append(f"- command: `{command}`")
    print("\n".join(output))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine, "packages": packages, "command": command, **results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
