#!/usr/bin/env python3
"""Memory bound of the in-process limiter under many distinct client IPs and accounts.

Drives `MemoryLimiter` exactly the way the gateway does, using the gateway's own code for every step
after authentication: `MemoryDecisionStore.match` + `resolve` (what `Gateway._decide` does),
`LimitPolicy.limits` (tier, override, org, IP, /24 subnet, group and throttle scopes via
`scope_limits`), `MemoryLimiter.acquire`, then `Gateway._settle` (token reconciliation with
`with_cost` and release of the concurrency slots). Each request comes from one of `--ips` distinct
client IPs (spread over many /24s) and one of `--accounts` accounts (principals built in memory, as
the registry's auth cache holds them), with a `MemoryDecisionStore` holding `--decisions` decisions
(addresses, `--cidrs` CIDR blocks, accounts, keys, groups) and `--groups` groups.

By default the limiter's clock is frozen, the worst case for memory: no entry ever expires during the
run, so only `max_keys` bounds the dict. (`--clock real` uses the wall clock, `--clock sim` advances
`1/--rate` s per request.)

Each scenario runs in a fresh child process, so its peak RSS (`getrusage` ru_maxrss) is its own:

* `bounded`   — `--ips` IPs and `--accounts` accounts with the default `max_keys` (2,000,000);
* `overflow`  — 3x the IPs (about 6 million limiter keys generated) with the same `max_keys`:
                 RSS must stay about where `bounded` is;
* `unbounded` — (with `--control`) the `overflow` load with `max_keys` out of reach: what the
                 memory would be without the bound, and the exact number of distinct keys.

Reports peak and sampled RSS, the limiter's entry count over time, evictions, the time spent in
`MemoryLimiter._evict`, and the time per request of each step (log-bucket histograms, ~9% bins).

Usage (repository root):

    .venv/bin/python bench/limiter_memory.py                    # the full run (several minutes)
    .venv/bin/python bench/limiter_memory.py --scale 0.05       # a quick smoke run, everything scaled
    .venv/bin/python bench/limiter_memory.py --control --json limiter.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
PROMPT_TOKENS_EST = 40  # what `describe_chat` estimates for a short chat request
MAX_TOKENS = 256  # the request's max_tokens: reserved = 40 + 256
USED_TOKENS = 40 + 120  # what the upstream reports: the reservation is reconciled down
FROZEN_NOTE = " (nothing expires during the run: the worst case)"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Histogram:
    """Log-bucketed latency histogram in nanoseconds (8 buckets per power of two, ~9% resolution)."""

    def __init__(self) -> None:
        self.buckets = [0] * 400
        self.count = 0
        self.total = 0
        self.max = 0

    def add(self, ns: int) -> None:
        self.buckets[int(math.log2(ns) * 8) if ns > 1 else 0] += 1
        self.count += 1
        self.total += ns
        if ns > self.max:
            self.max = ns

    def percentile(self, p: float) -> float:
        if not self.count:
            return float("nan")
        rank = p / 100 * self.count
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                return 2 ** ((i + 0.5) / 8)
        return float(self.max)

    def summary_us(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean_us": self.total / self.count / 1e3 if self.count else float("nan"),
            "p50_us": self.percentile(50) / 1e3,
            "p99_us": self.percentile(99) / 1e3,
            "p999_us": self.percentile(99.9) / 1e3,
            "max_us": self.max / 1e3,
        }


def ip_of(index: int, hosts_per_subnet: int) -> str:
    """The index-th bench client IP: `hosts_per_subnet` addresses in each of many /24s from 11.0.0.0."""
    subnet, host = divmod(index, hosts_per_subnet)
    return f"{11 + (subnet >> 16)}.{(subnet >> 8) & 255}.{subnet & 255}.{1 + host}"


def coprime_step(n: int, start: int = 2_654_435_761) -> int:
    step = start % n or 1
    while math.gcd(step, n) != 1:
        step += 1
    return step


# -- one scenario, in a child process ------------------------------------------------------------------
def run_scenario(spec: dict[str, object]) -> dict[str, object]:
    from hydraguard import config as config_module
    from hydraguard.accounts.models import Account, AccountStatus, ApiKey, Org, Principal
    from hydraguard.decide.model import Decision, DecisionType, ScopeKind, resolve
    from hydraguard.decide.store import MemoryDecisionStore
    from hydraguard.gateway.app import Admission, Gateway
    from hydraguard.limits.memory import MemoryLimiter
    from hydraguard.limits.policy import LimitSet, charged
    from hydraguard.limits.scopes import LimitPolicy

    n_ips = int(spec["ips"])  # type: ignore[call-overload]
    n_accounts = int(spec["accounts"])  # type: ignore[call-overload]
    n_orgs = max(1, int(spec["orgs"]))  # type: ignore[call-overload]
    n_requests = int(spec["requests"])  # type: ignore[call-overload]
    hosts = int(spec["hosts_per_subnet"])  # type: ignore[call-overload]
    max_keys = int(spec["max_keys"])  # type: ignore[call-overload]
    rng = random.Random(int(spec["seed"]))  # type: ignore[call-overload]
    rss_start = rss_mib()

    # The gateway's settings: the defaults (tiers, IP/subnet/group limits), loaded as `hydraguard serve` does.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hydraguard.toml"
        if spec.get("config"):
            path = Path(str(spec["config"]))
        else:
            path.write_text(f'[server]\nsecret = "bench"\n\n[backend]\nmemory_max_keys = {max_keys}\n')
        settings = config_module.load(path)
    if spec.get("config"):
        settings.backend.memory_max_keys = max_keys
    tier_names = [t for t in ("free", "standard", "enterprise") if t in settings.tiers] or list(settings.tiers)

    def hexid(prefix: str) -> str:
        return f"{prefix}_{rng.getrandbits(80):020x}"

    orgs = [
        Org(id=hexid("org"), name=f"org {i}", tier=tier_names[min(i % 20 // 16, len(tier_names) - 1)], created_at=0.0)
        for i in range(n_orgs)
    ]
    principals: list[Principal] = []
    for i in range(n_accounts):
        org = orgs[i % n_orgs]
        r = i % 100
        tier = tier_names[0 if r < 80 else 1 if r < 95 else 2] if len(tier_names) >= 3 else tier_names[0]
        overrides = LimitSet(rpm=1_000) if i % 50 == 0 else None  # some accounts with per-account overrides
        account = Account(
            id=hexid("acct"),
            org_id=org.id,
            tier=tier,
            status=AccountStatus.ACTIVE,
            signup_at=0.0,
            limit_overrides=overrides,
        )
        key = ApiKey(id=hexid("key"), account_id=account.id, hint="hg_xxxx…xxxx", created_at=0.0)
        principals.append(Principal(key, account, org))

    # Decisions: addresses (some of them bench clients), CIDRs, accounts, keys, groups; and groups.
    store = MemoryDecisionStore()
    n_groups = int(spec["groups"])  # type: ignore[call-overload]
    group_size = int(spec["group_size"])  # type: ignore[call-overload]
    grouped = rng.sample(range(n_accounts), min(n_accounts, n_groups * group_size))
    for g in range(n_groups):
        members = grouped[g * group_size : (g + 1) * group_size]
        if members:
            store.put_group(f"grp_{g}", {principals[m].account.id for m in members})
    n_decisions = int(spec["decisions"])  # type: ignore[call-overload]
    n_cidrs = min(int(spec["cidrs"]), n_decisions)  # type: ignore[call-overload]
    future = time.time() + 30 * 86_400
    types_cycle = (
        DecisionType.BLOCK,
        DecisionType.THROTTLE,
        DecisionType.CHALLENGE,
        DecisionType.DEGRADE,
        DecisionType.ALLOW,
    )
    for i in range(n_decisions):
        dtype = types_cycle[i % len(types_cycle)]
        if i < n_cidrs:
            # one CIDR in ten covers a few bench clients (a /28../30); the rest lie elsewhere
            scope = ScopeKind.IP
            if i % 10 == 0:
                value = f"{ip_of(rng.randrange(n_ips), hosts)}/{rng.choice((28, 29, 30))}"
            else:
                value = f"100.{rng.randrange(64, 128)}.{rng.randrange(256)}.0/{rng.choice((16, 20, 22, 24, 26, 28))}"
            dtype = DecisionType.BLOCK if i % 3 else DecisionType.THROTTLE
        else:
            kind = i % 10
            if kind < 5:  # addresses: one in five is a bench client
                scope = ScopeKind.IP
                value = ip_of(rng.randrange(n_ips), hosts) if kind == 0 else f"198.18.{(i >> 8) & 255}.{i & 255}"
            elif kind < 8:
                scope = ScopeKind.ACCOUNT
                value = principals[rng.randrange(n_accounts)].account.id if kind == 5 else hexid("acct")
            elif kind == 8:
                scope = ScopeKind.KEY
                value = principals[rng.randrange(n_accounts)].key.id
            else:
                scope = ScopeKind.GROUP
                value = f"grp_{rng.randrange(max(n_groups, 1))}"
        store.put(
            Decision(
                type=dtype,
                scope=scope,
                value=value,
                reason="bench",
                expires_at=future,
                limits=LimitSet(rpm=30, tpm=20_000) if dtype is DecisionType.THROTTLE else None,
                profile="bench" if dtype is DecisionType.DEGRADE else None,
            )
        )

    clock_kind = str(spec["clock"])
    frozen_now = time.time()
    rate = float(spec["rate"])  # type: ignore[arg-type]
    state = {"i": 0}
    if clock_kind == "frozen":

        def clock() -> float:
            return frozen_now

    elif clock_kind == "sim":

        def clock() -> float:
            return frozen_now + state["i"] / rate

    else:
        clock = time.time
    limiter = MemoryLimiter(max_keys=settings.backend.memory_max_keys, clock=clock)
    shrinks: list[float] = []
    original_evict = limiter._evict

    def timed_evict() -> None:
        started = time.perf_counter()
        original_evict()
        shrinks.append(time.perf_counter() - started)

    limiter._evict = timed_evict  # type: ignore[method-assign]
    gateway = types.SimpleNamespace(settings=settings, decisions=store, limiter=limiter)
    rss_setup = rss_mib()

    h_match, h_limits, h_acquire, h_settle, h_total = (Histogram() for _ in range(5))
    counts = {"allowed": 0, "denied": 0, "refused_by_decision": 0, "key_insertions": 0}
    denied_by: dict[str, int] = {}
    samples: list[dict[str, float]] = []
    sample_every = max(1, n_requests // int(spec["samples"]))  # type: ignore[call-overload]
    ip_step = coprime_step(n_ips)
    acct_step = coprime_step(n_accounts, 40_503)
    reserved = PROMPT_TOKENS_EST + MAX_TOKENS
    perf = time.perf_counter_ns
    started = time.perf_counter()
    policy = LimitPolicy(settings)
    settle = Gateway._settle

    async def drive() -> None:
        for i in range(n_requests):
            state["i"] = i
            ip = ip_of((i * ip_step) % n_ips, hosts)
            principal = principals[(i * acct_step) % n_accounts]
            t0 = perf()
            resolution = resolve(store.match(key_id=principal.key.id, account_id=principal.account.id, ip=ip))
            t1 = perf()
            h_match.add(t1 - t0)
            refusal = resolution.refusal
            if refusal is not None:
                counts["refused_by_decision"] += 1
                h_total.add(t1 - t0)
            else:
                throttles = [(d.id, d.limits or LimitSet()) for d in resolution.throttles]
                groups = store.groups_of(principal.account.id)
                request_quotas, token_quotas, slots = policy.limits(principal, ip, groups, throttles)
                quotas = request_quotas + charged(token_quotas, reserved)
                t2 = perf()
                current = limiter._tat  # peeked at (outside the timed spans) to count new keys
                new_keys = sum(1 for q in quotas if q.key not in current)
                lease = f"req_{i}"
                t2b = perf()
                verdict = await limiter.acquire(quotas, slots, lease)
                t3 = perf()
                if verdict.allowed:
                    counts["allowed"] += 1
                    counts["key_insertions"] += new_keys
                    await settle(gateway, Admission(verdict, token_quotas, reserved), USED_TOKENS)
                else:
                    counts["denied"] += 1
                    name = verdict.denied_by or "?"
                    denied_by[name] = denied_by.get(name, 0) + 1
                t4 = perf()
                h_limits.add(t2 - t1)
                h_acquire.add(t3 - t2b)
                h_settle.add(t4 - t3)
                h_total.add(t4 - t0 - (t2b - t2))
            if i % sample_every == 0 or i == n_requests - 1:
                samples.append(
                    {
                        "requests": i + 1,
                        "elapsed_s": round(time.perf_counter() - started, 2),
                        "entries": len(limiter),
                        "held": len(limiter._held),
                        "evictions": limiter.evictions,
                        "shrinks": len(shrinks),
                        "rss_mib": round(rss_mib(), 1),
                    }
                )

    asyncio.run(drive())
    elapsed = time.perf_counter() - started
    return {
        "scenario": spec["name"],
        "spec": spec,
        "settings": {
            "max_keys": settings.backend.memory_max_keys,
            "ip_limits": settings.limits.ip.model_dump(),
            "subnet_limits": settings.limits.subnet.model_dump(),
            "subnet_v4_prefix": settings.limits.subnet_v4_prefix,
            "group_limits": settings.limits.group.model_dump(),
            "tiers": sorted(settings.tiers),
        },
        "decisions": len(store._by_id),
        "cidr_decisions": len(store._networks),
        "groups": len(store._groups),
        "grouped_accounts": len(store._account_groups),
        "elapsed_s": elapsed,
        "requests_per_s": n_requests / elapsed,
        "counts": counts,
        "denied_by": dict(sorted(denied_by.items(), key=lambda kv: -kv[1])),
        "entries_final": len(limiter),
        "entries_max_sampled": max(s["entries"] for s in samples),
        "held_final": len(limiter._held),
        "evictions": limiter.evictions,
        "shrinks": {"count": len(shrinks), "total_s": sum(shrinks), "max_s": max(shrinks, default=0.0)},
        "rss_start_mib": rss_start,
        "rss_setup_mib": rss_setup,
        "rss_final_mib": rss_mib(),
        "rss_peak_mib": peak_rss_mib(),
        "timing": {
            "match+resolve": h_match.summary_us(),
            "limits": h_limits.summary_us(),
            "acquire": h_acquire.summary_us(),
            "settle": h_settle.summary_us(),
            "total": h_total.summary_us(),
        },
        "samples": samples,
    }


# -- parent: scenarios and report ------------------------------------------------------------------------
def scenarios(args: argparse.Namespace) -> list[dict[str, object]]:
    def scaled(n: int) -> int:
        return max(1, round(n * args.scale))

    base = {
        "accounts": scaled(args.accounts),
        "orgs": scaled(args.orgs),
        "decisions": scaled(args.decisions),
        "cidrs": args.cidrs,
        "groups": scaled(args.groups),
        "group_size": args.group_size,
        "hosts_per_subnet": args.hosts_per_subnet,
        "clock": args.clock,
        "rate": args.rate,
        "seed": args.seed,
        "samples": args.samples,
        "config": str(args.config) if args.config else None,
        "max_keys": scaled(args.max_keys),
    }
    ips = scaled(args.ips)
    out = [
        {**base, "name": "bounded", "ips": ips, "requests": ips},
        {**base, "name": "overflow", "ips": ips * args.overflow, "requests": ips * args.overflow},
    ]
    if args.control:
        out.append(
            {
                **base,
                "name": "unbounded",
                "ips": ips * args.overflow,
                "requests": ips * args.overflow,
                "max_keys": 10**12,
            }
        )
    return [s for s in out if args.only is None or s["name"] in args.only]


def machine_info() -> dict[str, object]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


def report(results: list[dict[str, object]], args: argparse.Namespace, command: str) -> str:
    machine = machine_info()
    lines = ["### Limiter memory (MemoryLimiter, driven through LimitPolicy.limits / _settle)", ""]
    lines.append(
        "| scenario | IPs | accounts | requests | max_keys | key insertions | entries final (max) | evictions "
        "| shrinks (total s, max s) | RSS setup MiB | RSS peak MiB | RSS final MiB | limiter growth MiB |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        spec, sh = r["spec"], r["shrinks"]
        lines.append(
            f"| {r['scenario']} | {spec['ips']:,} | {spec['accounts']:,} | {spec['requests']:,} "  # type: ignore[index]
            f"| {r['settings']['max_keys']:,} | {r['counts']['key_insertions']:,} "  # type: ignore[index]
            f"| {r['entries_final']:,} ({r['entries_max_sampled']:,}) | {r['evictions']:,} "
            f"| {sh['count']} ({sh['total_s']:.1f}, {sh['max_s']:.2f}) | {r['rss_setup_mib']:.0f} "  # type: ignore[index]
            f"| {r['rss_peak_mib']:.0f} | {r['rss_final_mib']:.0f} | {r['rss_peak_mib'] - r['rss_setup_mib']:.0f} |"  # type: ignore[operator]
        )
    lines.append("")
    lines.append("Time per request step, µs (p50 / p99 / p99.9 / max):")
    lines.append("")
    lines.append("| scenario | match+resolve | limits | acquire | settle | total | requests/s |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        t = r["timing"]

        def cell(name: str, t: dict[str, dict[str, float]] = t) -> str:  # type: ignore[assignment]
            s = t[name]
            return f"{s['p50_us']:.1f} / {s['p99_us']:.1f} / {s['p999_us']:.1f} / {s['max_us']:,.0f}"

        lines.append(
            f"| {r['scenario']} | {cell('match+resolve')} | {cell('limits')} | {cell('acquire')} "
            f"| {cell('settle')} | {cell('total')} | {r['requests_per_s']:,.0f} |"
        )
    lines.append("")
    for r in results:
        c = r["counts"]
        lines.append(
            f"- {r['scenario']}: allowed {c['allowed']:,}, denied by a limit {c['denied']:,}, "  # type: ignore[index]
            f"refused by a decision {c['refused_by_decision']:,}; decisions {r['decisions']:,} "  # type: ignore[index]
            f"({r['cidr_decisions']} CIDRs), groups {r['groups']:,} ({r['grouped_accounts']:,} accounts); "
            f"top denials {dict(list(r['denied_by'].items())[:4])}"  # type: ignore[attr-defined]
        )
    lines.append("")
    lines.append("Entries and RSS over time:")
    lines.append("")
    lines.append("| scenario | requests | elapsed s | entries | evictions | shrinks | RSS MiB |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        samples = r["samples"]
        step = max(1, len(samples) // args.table_rows)  # type: ignore[arg-type]
        shown = samples[::step]  # type: ignore[index]
        if shown[-1] is not samples[-1]:  # type: ignore[index]
            shown.append(samples[-1])  # type: ignore[index]
        for s in shown:
            lines.append(
                f"| {r['scenario']} | {s['requests']:,} | {s['elapsed_s']} | {s['entries']:,} "
                f"| {s['evictions']:,} | {s['shrinks']} | {s['rss_mib']} |"
            )
    lines.append("")
    lines.append(
        f"- clock: {args.clock}{FROZEN_NOTE if args.clock == 'frozen' else ''}; "
        f"{args.hosts_per_subnet} client IPs per /24; default settings (tiers, IP/subnet/group limits)"
        f"{'' if not args.config else ' from ' + str(args.config)}"
    )
    lines.append(
        f"- machine: {machine['nproc']} CPUs, {machine['cpu_model']}, Python {machine['python']}; "
        f"date {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}"
    )
    lines.append(f"- command: `{command}`")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ips", type=int, default=1_000_000, help="distinct client IPs (default 1,000,000)")
    p.add_argument("--accounts", type=int, default=100_000, help="accounts, one key each (default 100,000)")
    p.add_argument("--orgs", type=int, default=20_000, help="orgs (default 20,000)")
    p.add_argument("--decisions", type=int, default=10_000, help="decisions in the store (default 10,000)")
    p.add_argument("--cidrs", type=int, default=100, help="how many of them are CIDR blocks (default 100)")
    p.add_argument("--groups", type=int, default=1_000, help="decision groups (default 1,000)")
    p.add_argument("--group-size", type=int, default=10, help="accounts per group (default 10)")
    p.add_argument("--hosts-per-subnet", type=int, default=16, help="client IPs per /24 (default 16)")
    p.add_argument("--max-keys", type=int, default=2_000_000, help="MemoryLimiter max_keys (default 2,000,000)")
    p.add_argument("--overflow", type=int, default=3, help="IP multiplier of the overflow scenario (default 3)")
    p.add_argument("--control", action="store_true", help="also run the overflow load with no key bound")
    p.add_argument("--only", nargs="+", choices=("bounded", "overflow", "unbounded"), help="run only these")
    p.add_argument("--scale", type=float, default=1.0, help="scale every count (IPs, accounts, max_keys, ...)")
    p.add_argument("--clock", choices=("frozen", "real", "sim"), default="frozen", help="limiter clock")
    p.add_argument("--rate", type=float, default=2_000.0, help="requests per simulated second (--clock sim)")
    p.add_argument("--samples", type=int, default=50, help="samples of entries/RSS per scenario")
    p.add_argument("--table-rows", type=int, default=10, help="samples shown per scenario in the table")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--config", type=Path, help="a hydraguard config to take limits from (default: defaults)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per scenario (default 1800)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON to OUT")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 0 < args.scale <= 10:
        p.error("--scale must be in (0, 10]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        result = run_scenario(json.loads(args.child))
        print("RESULT " + json.dumps(result))
        return 0
    command = " ".join([Path(sys.executable).name, *sys.argv])
    results = []
    for spec in scenarios(args):
        print(
            f"scenario {spec['name']}: {spec['ips']:,} IPs, {spec['accounts']:,} accounts, "
            f"max_keys {spec['max_keys']:,}",
            file=sys.stderr,
            flush=True,
        )
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            print(f"scenario {spec['name']} failed ({out.returncode}):\n{out.stderr}", file=sys.stderr)
            return 1
        result = json.loads(line.removeprefix("RESULT "))
        print(
            f"  {result['elapsed_s']:.0f} s, peak RSS {result['rss_peak_mib']:.0f} MiB, "
            f"entries {result['entries_final']:,}, evictions {result['evictions']:,}",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    print(report(results, args, command))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_info(), "command": command, "results": results}, indent=2))
    bounded = [r for r in results if r["settings"]["max_keys"] < 10**12]  # type: ignore[index]
    over = [r for r in bounded if r["entries_max_sampled"] > r["settings"]["max_keys"] * 1.01]  # type: ignore[index]
    if over:
        print(f"FAILURE: the limiter exceeded max_keys in {[r['scenario'] for r in over]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
