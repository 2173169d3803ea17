#!/usr/bin/env python3
"""Added latency and throughput of the hydraguard gateway against calling the upstream directly.

One run, loopback only, bounded durations. The script

1. starts nginx (one worker) as a fast fake upstream: POST /v1/chat/completions answers `return 200`
   with a fixed OpenAI `chat.completion` JSON body (with `usage`);
2. writes a hydraguard config in a temp dir (fresh secret, SQLite registry, event log dir, memory
   backend, tiers and IP/subnet/group limits far too high to ever refuse), creates an org, an
   account and a key, some background decisions that do not match the bench client, and puts the
   bench account into a decision group, so auth, limits, decisions and event logging are all on;
3. starts `hydraguard serve` (one uvicorn worker, uvloop + httptools);
4. runs wrk (POST body and Authorization header from a small Lua script, `--latency`) at each
   concurrency, first directly against nginx, then through a "floor" relay with no hydraguard code
   (a Starlette route proxying with aiohttp under the same uvicorn set-up; `--floor`), then through
   the gateway, with a warm-up before each; the server's CPU time per request is recorded too (the
   least noisy figure on a shared machine);
5. stops the gateway with SIGINT (its event log flushes on shutdown), and checks that the event log
   recorded one event per request wrk completed, all with status 200;
6. prints a Markdown table (direct vs gateway, added p50/p99, throughput ratio) with the machine,
   date and command, and optionally writes everything as JSON (`--json OUT`).

CPU pinning (2-core machine, the default): the gateway alone on CPU 0 (`taskset -c 0`); wrk and the
nginx worker share CPU 1 (`taskset -c 1`). nginx answers from memory in a few microseconds, so the
upstream costs the load generator's core little, and the gateway's core does nothing but the
gateway. The direct baseline runs with exactly the same pinning (wrk and nginx on CPU 1). With
`--no-pin` nothing is pinned; on a machine with more cores, choose the CPUs with `--gateway-cpu`,
`--wrk-cpu` and `--nginx-cpu`.

Exit status: 0 when every request through the gateway got a 2xx and the event log agrees with wrk,
1 otherwise (or, with `--check-targets`, when a performance target is missed).

Usage (from the repository root, with the project's virtualenv):

    .venv/bin/python bench/gateway_latency.py                       # 10 s per run after 3 s warm-up
    .venv/bin/python bench/gateway_latency.py --duration 3 --warmup 1  # a quick smoke run
    .venv/bin/python bench/gateway_latency.py --rounds 3 --json bench-results.json
    .venv/bin/python bench/gateway_latency.py --py-spy gateway-profile.svg   # where the gateway's CPU goes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

PATH = "/v1/chat/completions"
HUGE = 1_000_000_000_000  # far above anything a bench run can reach: the limits are checked, never hit

# What a client sends: a typical small chat request (max_tokens keeps the token reservation small).
REQUEST_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": "What is the capital of France? Answer in one word."},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
    },
    separators=(",", ":"),
)

# What the upstream answers: an OpenAI chat.completion with usage.
RESPONSE_BODY = json.dumps(
    {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 31,
            "completion_tokens": 2,
            "total_tokens": 33,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "system_fingerprint": "fp_bench",
    },
    separators=(",", ":"),
)

NGINX_CONF = """\
{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-client-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {path} {{
            default_type application/json;
            return 200 '{body}';
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""

GATEWAY_TOML = """\
[server]
host = "127.0.0.1"
port = {port}
upstream = "http://127.0.0.1:{upstream_port}/v1"
secret = "{secret}"

[registry]
url = "sqlite:///{tmp}/registry.db"

[backend]
kind = "memory"

[events]
dir = "{tmp}/events"
flush_interval = 1.0

[limits.ip]
rpm = {huge}
tpm = {huge}
concurrency = 100000

[limits.subnet]
rpm = {huge}
tpm = {huge}
concurrency = 100000

[limits.group]
rpm = {huge}
tpm = {huge}
tpd = {huge}
concurrency = 100000

[tiers.bench.account]
rpm = {huge}
tpm = {huge}
tpd = {huge}
concurrency = 100000

[tiers.bench.key]
rpm = {huge}
tpm = {huge}
concurrency = 100000

[tiers.bench.org]
rpm = {huge}
tpm = {huge}
tpd = {huge}
concurrency = 100000

[logging]
level = "WARNING"
json_format = true
"""

# wrk: the POST body and headers, and a machine-readable summary (latencies in microseconds).
WRK_LUA = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%.1f,"p75":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,' ..
    '"mean":%.1f,"stdev":%.1f,"min":%.1f,"max":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.mean, latency.stdev, latency.min,
    latency.max))
end
"""

TARGETS = {"added_p50_ms": 0.5, "added_p99_ms": 2.0, "rps_c32": 2000.0}

# Minimal ASGI apps with no hydraguard logic, served by the same uvicorn set-up as the gateway: the floor
# under the gateway's own work. `proxy` relays to the upstream with an aiohttp session configured like the
# gateway's (raw ASGI, no framework); `starlette` is the same proxy behind a Starlette route; `plain`
# answers a constant without any upstream. Also used by bench/client_alternatives.py.
FLOOR_APPS = '''\
"""Minimal ASGI apps: the floor under the gateway (written by hydraguard's bench scripts)."""
import os

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM = os.environ["HG_BENCH_UPSTREAM"]
CONSTANT = os.environ["HG_BENCH_CONSTANT"].encode()
_FORWARDED = ("content-type", "accept", "openai-beta")
_session = None


async def _lifespan(receive, send):
    global _session
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=600, sock_connect=5),
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive):
    parts, more = [], True
    while more:
        message = await receive()
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(parts)


async def _upstream(body, headers):
    response = await _session.request("POST", UPSTREAM, data=body, headers=headers)
    try:
        return response.status, await response.read(), response.headers.get("content-type", "application/json")
    finally:
        response.release()


async def plain(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    await _body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": CONSTANT})


async def proxy(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.decode() in _FORWARDED}
    status, data, content_type = await _upstream(await _body(receive), headers)
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type.encode())]}
    )
    await send({"type": "http.response.body", "body": data})


async def _route(request: Request) -> Response:
    headers = {k: v for k, v in request.headers.items() if k in _FORWARDED}
    status, data, content_type = await _upstream(await request.body(), headers)
    return Response(data, status_code=status, headers={"content-type": content_type})


_starlette = Starlette(routes=[Route("/{path:path}", _route, methods=["POST"])])


async def starlette(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    await _starlette(scope, receive, send)
'''


# -- helpers ----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu is not None else argv


def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before answering on port {port}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} within {timeout}s ({last})")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its reaped children don't matter here)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, field_name: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def machine_info() -> dict[str, object]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in ("hydraguard", "uvicorn", "uvloop", "httptools", "starlette", "aiohttp", "msgspec", "pyarrow"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "wrk": version_of(["wrk", "-v"]).split("Copyright")[0].strip(),
        "nginx": version_of(["nginx", "-v"]),
        "packages": packages,
    }


# -- wrk --------------------------------------------------------------------------------------------------
@dataclass
class WrkResult:
    target: str  # "direct" or "gateway"
    connections: int
    threads: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds used by each process during the run
    raw: str = ""

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str, target: str, connections: int, threads: int) -> WrkResult:
    """Parse wrk's report: the Lua summary line when present, the plain text otherwise (or as a check)."""
    text_pct: dict[str, float] = {}
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.M):
        text_pct[pct] = _duration_ms(value)
    rps_match = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if rps_match is None:
        raise RuntimeError(f"wrk printed no Requests/sec line:\n{output}")
    non_2xx_match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock_match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = dict(
        zip(
            ("connect", "read", "write", "timeout"),
            map(int, sock_match.groups()) if sock_match else (0,) * 4,
            strict=True,
        )
    )
    summary_match = re.search(r"^WRKJSON (\{.*\})$", output, re.M)
    if summary_match is not None:
        s = json.loads(summary_match.group(1))
        duration_s = s["duration_us"] / 1e6
        return WrkResult(
            target,
            connections,
            threads,
            duration_s,
            s["requests"],
            s["requests"] / duration_s if duration_s else 0.0,
            s["p50"] / 1e3,
            s["p75"] / 1e3,
            s["p90"] / 1e3,
            s["p99"] / 1e3,
            s["p999"] / 1e3,
            s["mean"] / 1e3,
            s["max"] / 1e3,
            s["status"],
            {k: s[k] for k in ("connect", "read", "write", "timeout")},
            raw=output,
        )
    requests_match = re.search(r"^\s*(\d+) requests in ([\d.]+\w+)", output, re.M)
    if not text_pct or requests_match is None:
        raise RuntimeError(f"could not parse wrk's output:\n{output}")
    return WrkResult(
        target,
        connections,
        threads,
        _duration_ms(requests_match.group(2)) / 1e3,
        int(requests_match.group(1)),
        float(rps_match.group(1)),
        text_pct["50"],
        text_pct["75"],
        text_pct["90"],
        text_pct["99"],
        float("nan"),
        float("nan"),
        float("nan"),
        int(non_2xx_match.group(1)) if non_2xx_match else 0,
        socket_errors,
        raw=output,
    )


def run_wrk(
    *,
    url: str,
    script: Path,
    connections: int,
    threads: int,
    duration: float,
    cpu: str | None,
    timeout_s: float,
) -> str:
    argv = pinned(
        cpu,
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, math.ceil(duration))}s",  # wrk takes whole seconds
            f"--timeout={timeout_s:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=math.ceil(duration) + timeout_s + 30)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr}\n{out.stdout}")
    return out.stdout


# -- set-up -----------------------------------------------------------------------------------------------
def start_nginx(tmp: Path, port: int, cpu: str | None) -> subprocess.Popen[bytes]:
    if "'" in RESPONSE_BODY or "$" in RESPONSE_BODY or "\\" in RESPONSE_BODY:
        raise ValueError("the response body cannot be put in an nginx single-quoted string")
    conf = tmp / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp, port=port, path=PATH, body=RESPONSE_BODY))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    argv = pinned(cpu, [nginx, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c", str(conf)])
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx rejected its config: {check.stderr}")
    proc = subprocess.Popen([*argv, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 10, proc)
    except RuntimeError:
        stop(proc, signal.SIGQUIT)
        raise RuntimeError(f"nginx did not start: {(tmp / 'nginx-error.log').read_text(errors='replace')}") from None
    return proc


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not open after {timeout}s")


def nginx_worker_pids(master: int) -> list[int]:
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return [int(c) for c in children]
    return []


def provision(config_path: Path, decisions: int, group_size: int) -> tuple[str, dict[str, object]]:
    """The org, account and key the bench uses, plus background decisions and a group: (key, summary)."""
    from hydraguard import config as config_module
    from hydraguard.decide.model import Decision, DecisionType, ScopeKind
    from hydraguard.gateway.build import build_decision_store, open_registry
    from hydraguard.limits.policy import LimitSet

    settings = config_module.load(config_path)
    registry = open_registry(settings)
    try:
        org = registry.create_org("bench", tier="bench")
        account = registry.create_account(org.id, tier="bench")
        _record, key = registry.issue_key(account.id)
        others = [registry.create_account(org.id, tier="bench").id for _ in range(max(group_size - 1, 0))]
        store = build_decision_store(settings, registry)

        async def fill() -> None:
            if group_size > 0:
                await store.set_group("grp_bench", [account.id, *others])
            # Background decisions that never match the bench client (127.0.0.1, its account and key):
            # blocked addresses, blocked networks (checked by a scan), and decisions on other accounts.
            kinds = ("ip", "cidr", "account", "throttle")
            for i in range(decisions):
                kind = kinds[i % len(kinds)]
                if kind == "ip":
                    d = Decision(
                        type=DecisionType.BLOCK,
                        scope=ScopeKind.IP,
                        value=f"198.18.{(i >> 8) & 255}.{i & 255}",
                        reason="bench",
                    )
                elif kind == "cidr":
                    d = Decision(
                        type=DecisionType.BLOCK, scope=ScopeKind.IP, value=f"203.{i & 255}.0.0/24", reason="bench"
                    )
                elif kind == "account":
                    d = Decision(
                        type=DecisionType.CHALLENGE, scope=ScopeKind.ACCOUNT, value=f"acct_other_{i}", reason="bench"
                    )
                else:
                    d = Decision(
                        type=DecisionType.THROTTLE,
                        scope=ScopeKind.ACCOUNT,
                        value=f"acct_other_{i}",
                        reason="bench",
                        limits=LimitSet(rpm=10),
                    )
                await store.add(d)
            await store.close()

        asyncio.run(fill())
    finally:
        registry.close()
    return key, {
        "org": org.id,
        "account": account.id,
        "group_members": group_size,
        "background_decisions": decisions,
    }


def start_gateway(config_path: Path, cpu: str | None, log_path: Path) -> tuple[subprocess.Popen[bytes], list[str]]:
    exe = Path(sys.executable).with_name("hydraguard")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "hydraguard.cli"]
    argv = pinned(cpu, [*base, "--config", str(config_path), "serve"])
    log = log_path.open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    return proc, argv


def start_floor(
    tmp: Path, app: str, port: int, upstream_url: str, cpu: str | None, log_path: Path
) -> tuple[subprocess.Popen[bytes], list[str]]:
    """The floor app under uvicorn exactly as `hydraguard serve` runs uvicorn (uvloop, httptools, 1 worker)."""
    (tmp / "hg_bench_floor.py").write_text(FLOOR_APPS)
    argv = [sys.executable, "-m", "uvicorn", f"hg_bench_floor:{app}", "--app-dir", str(tmp), "--port", str(port)]
    argv += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning", "--lifespan", "on"]
    env = {**os.environ, "HG_BENCH_UPSTREAM": upstream_url, "HG_BENCH_CONSTANT": RESPONSE_BODY}
    log = log_path.open("wb")
    proc = subprocess.Popen(pinned(cpu, argv), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    return proc, pinned(cpu, argv)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 30.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def start_py_spy(args: argparse.Namespace, pid: int) -> subprocess.Popen[bytes] | None:
    """Sample the gateway during one run (py-spy on the load generator's CPU; a few % overhead)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        print("warning: py-spy not found (pip install py-spy); not profiling", file=sys.stderr)
        return None
    fmt = (
        "speedscope"
        if str(args.py_spy).endswith(".json")
        else "raw"
        if str(args.py_spy).endswith(".txt")
        else "flamegraph"
    )
    argv = [exe, "record", "-p", str(pid), "-o", str(args.py_spy), "-f", fmt, "-r", "200", "--nonblocking", "--threads"]
    argv += ["-d", str(max(1, math.ceil(args.duration)))]
    return subprocess.Popen(pinned(args.wrk_cpu, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sanity_request(port: int, key: str) -> dict[str, str]:
    """One request through the gateway: it must succeed and carry the rate-limit headers (limits are on)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST", PATH, body=REQUEST_BODY, headers={"content-type": "application/json", "authorization": f"Bearer {key}"}
    )
    response = conn.getresponse()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    conn.close()
    if response.status != 200 or json.loads(body).get("usage", {}).get("total_tokens") != 33:
        raise RuntimeError(f"sanity request through the gateway failed: {response.status} {body[:500]!r}")
    missing = [
        h for h in ("x-request-id", "x-ratelimit-limit-requests", "x-ratelimit-remaining-tokens") if h not in headers
    ]
    if missing:
        raise RuntimeError(f"the gateway's answer lacks {missing}: are limits on? headers: {headers}")
    return headers


# -- report -----------------------------------------------------------------------------------------------
def median_result(results: list[WrkResult]) -> dict[str, float]:
    keys = ("rps", "p50_ms", "p75_ms", "p90_ms", "p99_ms", "p999_ms", "mean_ms", "max_ms")
    return {k: statistics.median(getattr(r, k) for r in results) for k in keys}


def fmt_ms(value: float) -> str:
    return f"{value:.3f}"


def report(
    args: argparse.Namespace,
    results: list[WrkResult],
    machine: dict[str, object],
    extra: dict[str, object],
) -> tuple[str, dict[str, object]]:
    lines: list[str] = []
    summary: dict[str, object] = {"concurrency": {}}
    rounds = args.rounds
    lines.append(
        f"### Gateway vs direct upstream ({'median of ' + str(rounds) + ' rounds' if rounds > 1 else '1 round'})"
    )
    lines.append("")
    lines.append(
        "| concurrency | target | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | non-2xx | socket errors "
        "| server CPU µs/req |"
    )
    lines.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in args.concurrency:
        row: dict[str, dict[str, float]] = {}
        for target in args.targets:
            runs = [r for r in results if r.connections == c and r.target == target]
            med = median_result(runs)
            row[target] = med
            errors = sum(r.non_2xx for r in runs)
            sock = sum(sum(r.socket_errors.values()) for r in runs)
            cpu = ""
            if target != "direct":
                per_req = [r.cpu_s.get("server", 0.0) / r.requests * 1e6 for r in runs if r.requests]
                med["server_cpu_us_per_req"] = statistics.median(per_req) if per_req else float("nan")
                cpu = f"{med['server_cpu_us_per_req']:.0f}"
            label = f"floor ({args.floor})" if target == "floor" else target
            lines.append(
                f"| {c} | {label} | {med['rps']:,.0f} | {fmt_ms(med['p50_ms'])} | {fmt_ms(med['p90_ms'])} "
                f"| {fmt_ms(med['p99_ms'])} | {fmt_ms(med['p999_ms'])} | {fmt_ms(med['max_ms'])} | {errors} | {sock} "
                f"| {cpu} |"
            )
        added = {
            "added_p50_ms": row["gateway"]["p50_ms"] - row["direct"]["p50_ms"],
            "added_p90_ms": row["gateway"]["p90_ms"] - row["direct"]["p90_ms"],
            "added_p99_ms": row["gateway"]["p99_ms"] - row["direct"]["p99_ms"],
            "rps_ratio": row["gateway"]["rps"] / row["direct"]["rps"] if row["direct"]["rps"] else float("nan"),
        }
        if "floor" in row:
            added["gateway_minus_floor_p50_ms"] = row["gateway"]["p50_ms"] - row["floor"]["p50_ms"]
            added["gateway_minus_floor_cpu_us_per_req"] = (
                row["gateway"]["server_cpu_us_per_req"] - row["floor"]["server_cpu_us_per_req"]
            )
        summary["concurrency"][str(c)] = {**row, **added}  # type: ignore[index]
    lines.append("")
    floor_head = " gateway − floor: p50 ms | gateway − floor: CPU µs/req |" if "floor" in args.targets else ""
    lines.append(f"| concurrency | added p50 ms | added p90 ms | added p99 ms | gateway/direct req/s |{floor_head}")
    lines.append("|---:|---:|---:|---:|---:|" + ("---:|---:|" if floor_head else ""))
    for c in args.concurrency:
        s = summary["concurrency"][str(c)]  # type: ignore[index]
        floor_cells = (
            f" {fmt_ms(s['gateway_minus_floor_p50_ms'])} | {s['gateway_minus_floor_cpu_us_per_req']:.0f} |"
            if floor_head
            else ""
        )
        lines.append(
            f"| {c} | {fmt_ms(s['added_p50_ms'])} | {fmt_ms(s['added_p90_ms'])} | {fmt_ms(s['added_p99_ms'])} "
            f"| {s['rps_ratio']:.3f} ({s['gateway']['rps']:,.0f} / {s['direct']['rps']:,.0f}) |{floor_cells}"
        )
    checks = []
    conc = summary["concurrency"]
    if "1" in conc:  # type: ignore[operator]
        checks.append(("added p50 at concurrency 1", conc["1"]["added_p50_ms"], "<=", TARGETS["added_p50_ms"], "ms"))  # type: ignore[index]
        checks.append(("added p99 at concurrency 1", conc["1"]["added_p99_ms"], "<=", TARGETS["added_p99_ms"], "ms"))  # type: ignore[index]
    if "32" in conc:  # type: ignore[operator]
        checks.append(("gateway req/s at concurrency 32", conc["32"]["gateway"]["rps"], ">=", TARGETS["rps_c32"], "/s"))  # type: ignore[index]
    target_rows = []
    for name, value, op, limit, unit in checks:
        ok = value <= limit if op == "<=" else value >= limit
        target_rows.append({"target": name, "value": value, "op": op, "limit": limit, "ok": ok})
        if len(target_rows) == 1:
            lines.append("")
        lines.append(f"- {'PASS' if ok else 'MISS'}: {name} = {value:,.3f} {unit} (target {op} {limit:g} {unit})")
    summary["targets"] = target_rows
    lines.append("")
    lines.append(
        f"- event log: {extra['events_recorded']} events recorded, {extra['requests_completed']} requests completed "
        f"through the gateway (wrk, incl. warm-ups and the sanity request; up to {extra['events_slack']} more events "
        f"expected from requests in flight when wrk stopped), {extra['events_non_200']} events with a status "
        f"other than 200 -> {'OK' if extra['events_ok'] else 'MISMATCH'}"
    )
    lines.append(
        f"- gateway RSS after the run: {extra['gateway_rss_mib']} MiB (peak {extra['gateway_hwm_mib']} MiB); "
        f"background decisions: {extra['provision']['background_decisions']}, "  # type: ignore[index]
        f"bench account in a group of {extra['provision']['group_members']}"  # type: ignore[index]
    )
    lines.append(
        f"- pinning: gateway CPU {args.gateway_cpu}, wrk CPU {args.wrk_cpu}, nginx CPU {args.nginx_cpu} "
        f"(wrk -t{args.threads} per run; {args.warmup:g} s warm-up + {args.duration:g} s per run)"
        if not args.no_pin
        else "- pinning: none (--no-pin)"
    )
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())  # type: ignore[attr-defined]
    lines.append(
        f"- machine: {machine['nproc']} CPUs, {machine['cpu_model']}, Linux {machine['kernel']}, "
        f"Python {machine['python']}; {machine['wrk']}; {machine['nginx']}"
    )
    lines.append(f"- packages: {packages}")
    lines.append(f"- load average before / after: {extra['loadavg_before']} / {extra['loadavg_after']}")
    lines.append(f"- date: {extra['date']}")
    lines.append(f"- command: `{extra['command']}`")
    lines.append(f"- gateway command: `{extra['gateway_command']}`")
    if extra.get("floor_command"):
        lines.append(
            f"- floor: the `{args.floor}` app of FLOOR_APPS in bench/gateway_latency.py (no hydraguard code), "
            f"same pinning: `{extra['floor_command']}`"
        )
    return "\n".join(lines), summary


# -- main -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds measured per wrk run (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="seconds of discarded warm-up before each run (default 3)")
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 32], help="wrk connections per run (default: 1 32)"
    )
    p.add_argument("--threads", type=int, default=1, help="wrk threads (capped at connections; default 1: one core)")
    p.add_argument("--rounds", type=int, default=1, help="repeat direct+gateway runs; medians are reported (default 1)")
    p.add_argument("--decisions", type=int, default=40, help="background decisions that never match (default 40)")
    p.add_argument(
        "--floor",
        choices=("proxy", "starlette", "none"),
        default="starlette",
        help="also measure a minimal relay with no hydraguard code under the same uvicorn: `starlette` (default;\n"
        "the gateway's framework), `proxy` (raw ASGI), or none",
    )
    p.add_argument("--group-size", type=int, default=5, help="decision group of the bench account (0: none)")
    p.add_argument("--gateway-cpu", default="0", help="CPU list for the gateway (taskset -c; default 0)")
    p.add_argument("--wrk-cpu", default="1", help="CPU list for wrk (default 1)")
    p.add_argument("--nginx-cpu", default="1", help="CPU list for nginx (default 1)")
    p.add_argument("--no-pin", action="store_true", help="pin nothing")
    p.add_argument("--wrk-timeout", type=float, default=5.0, help="wrk's per-request timeout in seconds")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON to OUT")
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="OUT",
        help="profile the gateway with py-spy during the highest-concurrency gateway run\n"
        "(OUT.svg: flame graph, OUT.json: speedscope, OUT.txt: collapsed stacks); skews that run a little",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs, event log)")
    p.add_argument("--check-targets", action="store_true", help="exit 1 when a performance target is missed")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.duration > 600 or args.warmup < 0 or args.warmup > 120:
        p.error("--duration must be in (0, 600] and --warmup in [0, 120]")
    if args.rounds < 1 or args.rounds > 20:
        p.error("--rounds must be 1..20")
    if any(c < 1 or c > 1024 for c in args.concurrency):
        p.error("--concurrency values must be 1..1024")
    if args.no_pin:
        args.gateway_cpu = args.wrk_cpu = args.nginx_cpu = None
    args.targets = ["direct", "gateway"] if args.floor == "none" else ["direct", "floor", "gateway"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"error: {tool} is not installed (apt-get install wrk nginx-light)", file=sys.stderr)
            return 2
    if not args.no_pin and shutil.which("taskset") is None:
        print("error: taskset is not installed (util-linux); use --no-pin", file=sys.stderr)
        return 2
    if not args.no_pin and (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; pinning gateway and wrk to different CPUs is impossible", file=sys.stderr)

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="hg-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    results: list[WrkResult] = []
    exit_code = 0
    try:
        upstream_port, gateway_port = free_port(), free_port()
        nginx = start_nginx(tmp, upstream_port, args.nginx_cpu)
        procs.append(nginx)
        config_path = tmp / "hydraguard.toml"
        config_path.write_text(
            GATEWAY_TOML.format(
                port=gateway_port,
                upstream_port=upstream_port,
                secret=secrets.token_urlsafe(32),
                tmp=tmp,
                huge=HUGE,
            )
        )
        config_path.chmod(0o600)
        key, provisioned = provision(config_path, args.decisions, args.group_size)
        gateway, gateway_argv = start_gateway(config_path, args.gateway_cpu, tmp / "gateway.log")
        procs.append(gateway)
        try:
            wait_http(gateway_port, "/healthz", 30, gateway)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{(tmp / 'gateway.log').read_text(errors='replace')}") from None
        sanity_request(gateway_port, key)
        completed_through_gateway = 1
        slack = 0

        script = tmp / "chat.lua"
        script.write_text(WRK_LUA.format(body=REQUEST_BODY, key=key))
        urls = {
            "direct": f"http://127.0.0.1:{upstream_port}{PATH}",
            "gateway": f"http://127.0.0.1:{gateway_port}{PATH}",
        }
        servers = {"gateway": gateway.pid}
        floor_argv: list[str] = []
        if "floor" in args.targets:
            floor_port = free_port()
            floor, floor_argv = start_floor(
                tmp, args.floor, floor_port, urls["direct"], args.gateway_cpu, tmp / "floor.log"
            )
            procs.append(floor)
            try:
                wait_for_port(floor_port, 30, floor)
            except RuntimeError as exc:
                raise RuntimeError(f"floor app: {exc}\n{(tmp / 'floor.log').read_text(errors='replace')}") from None
            urls["floor"] = f"http://127.0.0.1:{floor_port}{PATH}"
            servers["floor"] = floor.pid
        nginx_workers = {f"nginx-{i}": p for i, p in enumerate(nginx_worker_pids(nginx.pid))}
        loadavg_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        for rnd in range(args.rounds):
            for c in args.concurrency:
                threads = max(1, min(args.threads, c))
                for target in args.targets:
                    watched = {**nginx_workers, **({"server": servers[target]} if target in servers else {})}
                    common = dict(
                        url=urls[target],
                        script=script,
                        connections=c,
                        threads=threads,
                        cpu=args.wrk_cpu,
                        timeout_s=args.wrk_timeout,
                    )
                    if args.warmup > 0:
                        warm = parse_wrk(run_wrk(duration=args.warmup, **common), target, c, threads)  # type: ignore[arg-type]
                        if target == "gateway":
                            completed_through_gateway += warm.requests
                            slack += c
                            if warm.errors:
                                print(f"warning: warm-up through the gateway had {warm.errors} errors", file=sys.stderr)
                    spy = None
                    if args.py_spy and target == "gateway" and c == max(args.concurrency) and rnd == 0:
                        spy = start_py_spy(args, gateway.pid)
                    before = {name: cpu_seconds(pid) for name, pid in watched.items()}
                    out = run_wrk(duration=args.duration, **common)  # type: ignore[arg-type]
                    after = {name: cpu_seconds(pid) for name, pid in watched.items()}
                    if spy is not None:
                        spy.wait(30)
                    result = parse_wrk(out, target, c, threads)
                    result.cpu_s = {name: after[name] - before[name] for name in watched}
                    results.append(result)
                    if target == "gateway":
                        completed_through_gateway += result.requests
                        slack += c
                    print(
                        f"round {rnd + 1} c={c:<3} {target:<7}: {result.rps:9,.0f} req/s  p50 {result.p50_ms:.3f} ms  "
                        f"p99 {result.p99_ms:.3f} ms  non-2xx {result.non_2xx}  socket errors "
                        f"{sum(result.socket_errors.values())}",
                        file=sys.stderr,
                        flush=True,
                    )
        loadavg_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        gateway_rss = rss_mib(gateway.pid)
        gateway_hwm = rss_mib(gateway.pid, "VmHWM")

        # Clean shutdown flushes the event log; then count what it recorded.
        code = stop(gateway, signal.SIGINT)
        if code not in (0, -signal.SIGINT):
            print(f"warning: the gateway exited with status {code}", file=sys.stderr)
        from hydraguard.events.log import read_table

        table = read_table(tmp / "events")
        statuses = table.column("status").to_pylist()
        events_recorded = table.num_rows
        events_non_200 = sum(1 for s in statuses if s != 200)
        events_ok = (
            completed_through_gateway <= events_recorded <= completed_through_gateway + slack and events_non_200 == 0
        )
        extra: dict[str, object] = {
            "events_recorded": events_recorded,
            "requests_completed": completed_through_gateway,
            "events_slack": slack,
            "events_non_200": events_non_200,
            "events_ok": events_ok,
            "gateway_rss_mib": f"{gateway_rss:.0f}" if gateway_rss else "?",
            "gateway_hwm_mib": f"{gateway_hwm:.0f}" if gateway_hwm else "?",
            "provision": provisioned,
            "loadavg_before": loadavg_before,
            "loadavg_after": loadavg_after,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": command,
            "gateway_command": shlex.join(gateway_argv),
            "floor_command": shlex.join(floor_argv) if floor_argv else None,
        }
        markdown, summary = report(args, results, machine, extra)
        print(markdown)

        gateway_failures = [r for r in results if r.target == "gateway" and r.errors]
        if gateway_failures:
            exit_code = 1
            for r in gateway_failures:
                print(
                    f"FAILURE: {r.non_2xx} non-2xx responses and {r.socket_errors} socket errors through the "
                    f"gateway at concurrency {r.connections}",
                    file=sys.stderr,
                )
        if not events_ok:
            exit_code = 1
            print("FAILURE: the event log does not match the requests wrk completed", file=sys.stderr)
        if args.check_targets and not all(t["ok"] for t in summary["targets"]):  # type: ignore[attr-defined]
            exit_code = 1
        if args.json:
            payload = {
                "machine": machine,
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "summary": summary,
                "runs": [{**asdict(r), "raw": r.raw} for r in results],
                **extra,
                "ok": exit_code == 0,
            }
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
        return exit_code
    finally:
        for proc in reversed(procs):
            stop(proc, signal.SIGQUIT if proc is procs[0] else signal.SIGINT)
        if args.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
