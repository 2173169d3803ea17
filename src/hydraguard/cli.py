"""The `hydraguard` command line."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer

from hydraguard import config as config_module
from hydraguard.accounts.models import AccountStatus
from hydraguard.admin.tokens import Role
from hydraguard.decide.model import Decision, DecisionType, ScopeKind
from hydraguard.events import log as event_log
from hydraguard.intel import cli as intel_cli
from hydraguard.limits.policy import LimitSet
from hydraguard.watermark.cli import app as watermark_app

app = typer.Typer(help="hydraguard: protect an LLM API against model-extraction campaigns.", no_args_is_help=True)
orgs_app = typer.Typer(help="Organizations.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: issue, list, rotate, revoke.", no_args_is_help=True)
decisions_app = typer.Typer(help="Decisions the gateway enforces.", no_args_is_help=True)
events_app = typer.Typer(help="The request event log.", no_args_is_help=True)
admin_app = typer.Typer(help="The admin API and its tokens.", no_args_is_help=True)
tokens_app = typer.Typer(help="Admin tokens: create, list, revoke.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log of admin changes.", no_args_is_help=True)
db_app = typer.Typer(help="The registry database's schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(orgs_app, name="orgs")
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(decisions_app, name="decisions")
app.add_typer(events_app, name="events")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(tokens_app, name="token")
app.add_typer(watermark_app, name="watermark")
app.add_typer(intel_cli.app, name="intel")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $HYDRAGUARD_CONFIG or ./hydraguard.toml)."),
]
_state: dict[str, Path | None] = {"config": None}


@app.callback()
def main(config: ConfigOption = None) -> None:
    _state["config"] = config


def _settings() -> config_module.Settings:
    try:
        return config_module.load(_state["config"])
    except config_module.ConfigError as exc:
        _fail(str(exc))


def _registry():  # type: ignore[no-untyped-def]
    from hydraguard.gateway.build import open_registry
    from hydraguard.store.migrate import SchemaError

    try:
        return open_registry(_settings())
    except (config_module.ConfigError, SchemaError) as exc:
        _fail(str(exc))


T = TypeVar("T")


def _admin(operation: Callable[[Any], T]) -> T:
    """Run one admin operation (`AdminServices`, so that changes are audited); a refusal is an error
    message and exit status 2."""
    from hydraguard.admin.app import open_services
    from hydraguard.admin.audit import AuditError
    from hydraguard.admin.services import AdminError
    from hydraguard.decide.store import DecisionStoreUnavailable
    from hydraguard.store.migrate import SchemaError

    try:
        services = open_services(_settings())
    except (config_module.ConfigError, SchemaError) as exc:
        _fail(str(exc))
    try:
        return operation(services)
    except (AdminError, AuditError, DecisionStoreUnavailable) as exc:
        _fail(str(exc))
    finally:
        services.registry.close()


def _actor():  # type: ignore[no-untyped-def]
    from hydraguard.admin.audit import Actor

    return Actor(f"cli:{getpass.getuser()}")


PollIntervalOption = Annotated[
    float | None, typer.Option(min=0.1, help="Seconds between reads of the event log (default: detect.poll_interval).")
]
AnalysisIntervalOption = Annotated[
    float | None,
    typer.Option(min=1, help="Seconds between account-rule analyses (default: detect.analysis_interval)."),
]
LinkageIntervalOption = Annotated[
    float | None,
    typer.Option(
        min=1,
        help="Seconds between linkages (cluster rules); a multiple of the above (default: detect.linkage_interval).",
    ),
]


def _detect_options(
    settings: config_module.Settings,
    poll_interval: float | None,
    analysis_interval: float | None,
    linkage_interval: float | None,
) -> None:
    """The detection options given on the command line, over the config's `[detect]`."""
    given = {
        "poll_interval": poll_interval,
        "analysis_interval": analysis_interval,
        "linkage_interval": linkage_interval,
    }
    detect = settings.detect.model_copy(update={k: v for k, v in given.items() if v is not None})
    if detect.linkage_interval < detect.analysis_interval:
        _fail(
            "--linkage-interval must be at least --analysis-interval "
            f"(here {detect.linkage_interval:g} < {detect.analysis_interval:g}, with [detect] for the ones not given)"
        )
    settings.detect = detect


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _print(data: Any) -> None:
    typer.echo(msgspec.json.encode(data).decode())


# -- set-up and serving --------------------------------------------------------------------------------
@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config.")] = Path("hydraguard.toml"),
) -> None:
    """Write a commented starter config with a fresh server secret."""
    try:
        written = config_module.write_starter(path)
    except config_module.ConfigError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {written} (keep it private: it holds the server secret)")


@app.command()
def serve(
    upstream: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL to protect.")] = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    detect: Annotated[
        bool | None,
        typer.Option(
            "--detect/--no-detect",
            help="Also run streaming detection, in a supervised background process (default: detect.in_serve).",
        ),
    ] = None,
    poll_interval: PollIntervalOption = None,
    analysis_interval: AnalysisIntervalOption = None,
    linkage_interval: LinkageIntervalOption = None,
) -> None:
    """Run the gateway in front of an upstream model server (and, with --detect, streaming detection beside it)."""

    settings = _settings()
    if upstream:
        settings.server.upstream = upstream.rstrip("/")
    if host:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    if detect is not None:
        settings.detect.in_serve = detect
    _detect_options(settings, poll_interval, analysis_interval, linkage_interval)
    _run_gateway(settings)


def _run_gateway(settings: config_module.Settings) -> None:
    import uvicorn

    from hydraguard import logs
    from hydraguard.gateway.build import build_gateway
    from hydraguard.store.migrate import SchemaError

    logs.configure(settings.logging.level, settings.logging.json_format)
    try:
        gateway = build_gateway(settings)
    except (config_module.ConfigError, SchemaError) as exc:
        _fail(str(exc))
    with _detection_beside(settings):
        uvicorn.run(
            gateway,
            host=settings.server.host,
            port=settings.server.port,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            lifespan="on",
            proxy_headers=False,  # X-Forwarded-For is believed only from `server.trusted_proxies`, by the gateway
        )


def _detection_beside(settings: config_module.Settings) -> contextlib.AbstractContextManager[object]:
    if not settings.detect.in_serve:
        return contextlib.nullcontext()
    from hydraguard.detect.background import beside_server

    return beside_server(settings)


@app.command()
def quickstart(
    upstream: Annotated[
        str | None, typer.Option(help="Model server to protect (default: the built-in mock model server).")
    ] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Try hydraguard: write a config if there is none, issue a key, and serve the gateway."""

    from hydraguard.sim.upstream import create_app
    from hydraguard.testing.servers import ThreadedServer

    path = _state["config"] or Path(config_module.DEFAULT_PATH)
    if not path.exists():
        config_module.write_starter(path)
        typer.echo(f"wrote {path}")
    _state["config"] = path
    settings = _settings()
    mock = None
    if upstream is None:
        mock = ThreadedServer(create_app()).start()
        upstream = mock.url + "/v1"
        typer.echo(f"mock model server on {upstream}")
    settings.server.upstream = upstream.rstrip("/")
    if port is not None:
        settings.server.port = port

    def first_key(admin):  # type: ignore[no-untyped-def]
        actor = _actor()
        org = next((o for o in admin.list_orgs() if o.name == "quickstart"), None) or admin.create_org(
            actor, "quickstart"
        )
        accounts = admin.list_accounts(org.id)
        account = accounts[0] if accounts else admin.create_account(actor, org.id)
        return account, admin.issue_key(actor, account.id)[1]

    account, key = _admin(first_key)
    base_url = f"http://{settings.server.host}:{settings.server.port}/v1"
    typer.echo(
        f"\nhydraguard gateway on {base_url} (account {account.id})\n"
        f"API key (shown once): {key}\n\n"
        "Try it:\n"
        f"  curl {base_url}/chat/completions -H 'Authorization: Bearer {key}' "
        "-H 'Content-Type: application/json' "
        """-d '{"model": "mock-small", "messages": [{"role": "user", "content": "Hello"}]}'\n\n"""
        "Events: hydraguard events tail    Metrics: "
        f"http://{settings.server.host}:{settings.server.port}/metrics    Stop: Ctrl-C\n"
    )
    try:
        _run_gateway(settings)
    finally:
        if mock is not None:
            mock.stop()


@app.command("mock-upstream")
def mock_upstream(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Run the built-in deterministic OpenAI-compatible model server (for trying hydraguard out)."""
    import uvicorn

    from hydraguard.sim.upstream import app as upstream_app

    uvicorn.run(upstream_app, host=host, port=port, loop="uvloop", http="httptools", access_log=False)


# -- traffic simulation --------------------------------------------------------------------------------
@app.command()
def simulate(
    scenario: Annotated[str, typer.Argument(help="A shipped scenario's name (e.g. seed-hydra-small) or a YAML file.")],
    out: Annotated[Path, typer.Option(help="Output directory (its earlier simulation output is replaced).")],
    materialize_text: Annotated[
        bool, typer.Option(help="Also store each request's prompt text in prompt_text (large).")
    ] = False,
) -> None:
    """Simulate a scenario's traffic: event log, registry, ground truth and manifest (docs/simulator.md)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hydraguard.sim import generate
    from hydraguard.sim import scenario as scenarios

    try:
        loaded, path, text = scenarios.load(scenario)
    except scenarios.ScenarioError as exc:
        _fail(str(exc))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(f"{loaded.name}: days", total=loaded.days)

        def advance(done: int, days: int, events: int) -> None:
            bar.update(task, completed=done, description=f"{loaded.name}: {events:,} events, days")

        manifest = generate.simulate(
            loaded,
            out,
            materialize_text=materialize_text,
            scenario_text=text,
            scenario_source=str(path),
            progress=advance,
        )
    counts: Any = manifest["counts"]
    timings: Any = manifest["timings"]
    typer.echo(
        f"{loaded.name}: {counts['events']:,} events ({counts['campaign_events']:,} campaign), "
        f"{counts['accounts']:,} accounts, {loaded.days} days in {timings['total_s']:.1f} s -> {out}"
    )
    for name, info in manifest["corpora"].items():  # type: ignore[attr-defined]
        source = "built-in generator" if info["builtin"] else f"{info['path']} (sha256 {info['sha256'][:12]}…)"
        typer.echo(f"  {name} prompts: {source}")


@app.command()
def evaluate(
    runs: Annotated[list[Path], typer.Argument(help="Output directories of `hydraguard simulate`.")],
    out: Annotated[
        Path, typer.Option(help="Directory for evaluation.md, evaluation.json and each detector's flags per run.")
    ],
    detector: Annotated[
        list[str] | None,
        typer.Option(
            help="A built-in detector (hydraguard, hydraguard-batch: daily linkage, hydraguard-no-<family>, "
            "rate-limits, prada, mmd, none) or module:factory; repeatable. prada and mmd read their calibration "
            "from $HYDRAGUARD_BASELINE_CALIBRATION."
        ),
    ] = None,
) -> None:
    """Score detectors on simulated runs against their ground truth (docs/simulator.md, "Evaluation")."""
    import importlib

    from hydraguard.sim import detector as detectors
    from hydraguard.sim import evaluate as evaluation

    def make(name: str) -> Any:
        if name in detectors.BUILTIN:
            try:
                return detectors.BUILTIN[name]()
            except (RuntimeError, OSError, ValueError) as exc:  # e.g. a baseline without its calibration
                _fail(f"detector {name}: {exc}")
        if ":" not in name:
            _fail(f"no detector {name!r} (built-in: {', '.join(detectors.BUILTIN)}; or module:factory)")
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)()

    for run in runs:
        if not (run / "truth.parquet").is_file():
            _fail(f"{run} is not a simulation output (no truth.parquet)")
    out.mkdir(parents=True, exist_ok=True)
    try:
        rows = []
        for name in detector or ["rate-limits"]:
            for run in runs:
                made = make(name)
                rows.append(evaluation.evaluate_run(made, run, out / evaluation.flags_file(made.name, run)))
    except ValueError as exc:  # e.g. a detector that needs prompt text on a run simulated without it
        _fail(str(exc))
    table = evaluation.markdown(rows)
    (out / "evaluation.md").write_text(table)
    (out / "evaluation.json").write_text(json.dumps(rows, indent=2) + "\n")
    plots = evaluation.plots(rows, out)
    typer.echo(table, nl=False)
    corpora = sorted({f"{k}: {v}" for r in rows for k, v in r["corpora"].items()})
    written = ", ".join(str(p) for p in [out / "evaluation.md", out / "evaluation.json", *plots])
    typer.echo(f"corpora: {'; '.join(corpora)}\n-> {written}")


@app.command()
def analyze(
    events_dir: Annotated[
        Path, typer.Argument(help="A `hydraguard simulate` output, or the gateway's event log directory.")
    ],
    out: Annotated[Path, typer.Option(help="Directory for campaigns.json and report.md.")],
    linkage_interval: Annotated[
        float | None,
        typer.Option(
            min=1, help="Seconds of event time between linkages (default: detect.batch_linkage_interval, a day)."
        ),
    ] = None,
    linkage_lag: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds of event time from a linkage's graph to its clusters (at most half the linkage "
            "interval), Leiden meanwhile on a second core; 0: at once, on one core (default: "
            "detect.batch_linkage_lag, 12 hours).",
        ),
    ] = None,
) -> None:
    """Batch detection over a finished event log: campaigns and a Markdown report (docs/detection.md)."""
    from dataclasses import replace

    import pyarrow.parquet as pq

    from hydraguard.detect import analyze as analysis
    from hydraguard.detect.background import engine_settings
    from hydraguard.detect.engine import Engine, batch_settings

    if not events_dir.is_dir():
        _fail(f"{events_dir} is not a directory")
    settings = _settings()
    if (events_dir / "events").is_dir():
        batches = analysis.simulated_batches(events_dir)
        registry = pq.read_table(events_dir / "registry" / "accounts.parquet")
        # a simulated world has its own tiers: the product's default ones, and the config's batch interval
        engine_config = batch_settings(settings.detect.batch_linkage_interval, settings.detect.batch_linkage_lag)
    else:
        from hydraguard.accounts.risk import signup_links
        from hydraguard.detect.engine import registry_table

        batches = analysis.log_batches(events_dir)
        product_registry = _registry()
        registry = registry_table(product_registry.list_accounts(), signup_links(product_registry.engine))
        engine_config = engine_settings(settings, batch=True)
    if linkage_interval is not None:
        if linkage_interval < engine_config.analysis_interval:
            _fail(
                f"--linkage-interval must be at least detect.analysis_interval "
                f"(here {linkage_interval:g} < {engine_config.analysis_interval:g})"
            )
        engine_config = replace(engine_config, linkage_interval=linkage_interval)
    if linkage_lag is not None:
        engine_config = replace(engine_config, linkage_lag=linkage_lag)
    engine = Engine(settings=engine_config)
    try:
        campaigns = analysis.analyze(batches, registry, engine)
    finally:
        engine.close()
    analysis.write(campaigns, out, str(events_dir))
    typer.echo(analysis.report(campaigns, str(events_dir)), nl=False)
    typer.echo(f"-> {out / 'campaigns.json'}, {out / 'report.md'}")


@app.command()
def detect(
    follow: Annotated[bool, typer.Option("--follow", help="Keep following the event log (else one pass).")] = False,
    poll_interval: PollIntervalOption = None,
    analysis_interval: AnalysisIntervalOption = None,
    linkage_interval: LinkageIntervalOption = None,
) -> None:
    """Streaming detection on the gateway's event log: campaigns in the registry, decisions to the gateway."""
    from hydraguard import logs
    from hydraguard.detect.background import engine_settings
    from hydraguard.detect.worker import follow as follow_log

    settings = _settings()
    logs.configure(settings.logging.level, settings.logging.json_format)
    _detect_options(settings, poll_interval, analysis_interval, linkage_interval)
    try:
        step = follow_log(
            settings,
            once=not follow,
            poll_interval=settings.detect.poll_interval,
            engine_settings=engine_settings(settings),
        )
    except config_module.ConfigError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return
    typer.echo(
        f"{step.events} events, {step.detections} detections, {step.campaigns} campaigns, {step.decisions} decisions"
    )


@app.command()
def replay(
    scenario: Annotated[str, typer.Argument(help="A shipped scenario's name (e.g. seed-hydra-small) or a YAML file.")],
    gateway: Annotated[str, typer.Option(help="The live gateway's base URL, e.g. http://127.0.0.1:8080.")],
    hours: Annotated[float, typer.Option(min=0.01, help="Replay the scenario's first HOURS hours.")] = 6.0,
    speedup: Annotated[float, typer.Option(min=1, help="Scenario seconds per wall-clock second.")] = 240.0,
    max_requests: Annotated[int | None, typer.Option(min=1, help="At most this many requests.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Requests in flight at most.")] = 64,
) -> None:
    """Drive a live gateway with a scenario's traffic, time-compressed: its accounts are created in the configured
    registry with real keys, and its requests sent with their real prompts, user agents and (as X-Forwarded-For,
    believed from `server.trusted_proxies`) IP addresses."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hydraguard.sim import replay as replaying
    from hydraguard.sim import scenario as scenarios

    try:
        loaded = scenarios.load(scenario)[0]
        window = replaying.plan(loaded, hours, max_requests)
    except (scenarios.ScenarioError, ValueError) as exc:
        _fail(str(exc))
    registry = _registry()
    wall_start = time.time() + 1.0
    try:
        seeded = replaying.seed_registry(registry, window, wall_start=wall_start, speedup=speedup)
    finally:
        registry.close()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(f"{loaded.name}: requests", total=len(window))
        outcome = asyncio.run(
            replaying.send(
                window,
                seeded,
                gateway,
                wall_start=max(wall_start, time.time()),
                speedup=speedup,
                concurrency=concurrency,
                progress=lambda done, _: bar.update(task, completed=done),
            )
        )
    for role in (replaying.LEGIT, replaying.CAMPAIGN):
        statuses = ", ".join(f"{status}: {n:,}" for status, n in sorted(outcome.statuses[role].items()))
        typer.echo(f"{role}: {statuses or 'none'}")
    typer.echo(f"{outcome.sent:,} sent, {outcome.transport_errors} transport errors, {outcome.max_lag_s:.1f} s behind")
    if outcome.transport_errors:
        raise typer.Exit(1)


@app.command()
def demo(
    hours: Annotated[float, typer.Option(min=0.5, max=24 * 44, help="Scenario hours to replay.")] = 8.0,
    speedup: Annotated[float, typer.Option(min=1, help="Scenario seconds per wall-clock second.")] = 320.0,
    stay: Annotated[bool, typer.Option(help="Keep the console running after the summary, until Enter.")] = False,
) -> None:
    """Watch a hydra campaign get caught: gateway, mock model, detection and console in a temporary directory,
    with the first hours of seed-hydra-small replayed through them (docs/console.md)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hydraguard.console import demo as demos

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("replay", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def wait() -> None:
            bar.stop()
            typer.prompt("the console stays up; press Enter to stop and clean up", default="", show_default=False)

        summary = demos.run(
            hours=hours, speedup=speedup, say=bar.console.print, progress=advance, stay=wait if stay else None
        )
    containment = (
        f"{summary.time_to_containment_s / 60:.0f} scenario minutes after its first request"
        if summary.time_to_containment_s is not None
        else "not contained in the window"
    )
    typer.echo(
        f"\ncampaign found: {'yes, ' + str(summary.campaign_id) if summary.campaign_found else 'no'}\n"
        f"accounts: {summary.accounts_found} of its {summary.members} members are campaign accounts "
        f"({summary.campaign_accounts} campaign accounts sent requests)\n"
        f"time to containment: {containment}\n"
        f"tokens served before containment: {summary.tokens_before_containment:,} "
        f"(campaign requests: {summary.campaign_requests:,})\n"
        f"legitimate requests refused: {summary.legit_refused:,} of {summary.legit_requests:,}\n"
        f"replay: {summary.transport_errors} transport errors, at most {summary.max_lag_s:.1f} s behind schedule"
    )
    if not summary.ok:
        raise typer.Exit(1)


# -- orgs and accounts -----------------------------------------------------------------------------------
@orgs_app.command("create")
def orgs_create(name: str, tier: Annotated[str, typer.Option()] = "free") -> None:
    _print(_admin(lambda s: s.create_org(_actor(), name, tier)))


@orgs_app.command("list")
def orgs_list() -> None:
    for org in _admin(lambda s: s.list_orgs()):
        _print(org)


@accounts_app.command("create")
def accounts_create(
    org: Annotated[str, typer.Option(help="Org id.")],
    tier: Annotated[str, typer.Option()] = "free",
    email_domain: Annotated[str | None, typer.Option()] = None,
    signup_ip: Annotated[str | None, typer.Option()] = None,
    payment_method: Annotated[
        str | None,
        typer.Option(help="Payment-method fingerprint from the payment provider; stored only as a keyed hash."),
    ] = None,
) -> None:
    account = _admin(
        lambda s: s.create_account(
            _actor(), org, tier=tier, email_domain=email_domain, signup_ip=signup_ip, payment_method=payment_method
        )
    )
    _print(account)


@accounts_app.command("list")
def accounts_list(org: Annotated[str | None, typer.Option()] = None) -> None:
    for account in _admin(lambda s: s.list_accounts(org)):
        _print(account)


@accounts_app.command("set")
def accounts_set(
    account_id: str,
    status: Annotated[AccountStatus | None, typer.Option()] = None,
    tier: Annotated[str | None, typer.Option()] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Override: requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Override: tokens per minute.")] = None,
    tpd: Annotated[int | None, typer.Option(min=1, help="Override: tokens per day.")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Override: concurrent requests.")] = None,
    clear_overrides: Annotated[bool, typer.Option(help="Remove every per-account override.")] = False,
) -> None:
    """Change an account's status, tier or limit overrides (merged into the current ones)."""
    limits = LimitSet(rpm=rpm, tpm=tpm, tpd=tpd, concurrency=concurrency)
    account = _admin(
        lambda s: s.update_account(
            _actor(),
            account_id,
            status=status,
            tier=tier,
            limits=limits if limits != LimitSet() else None,
            clear_overrides=clear_overrides,
        )
    )
    _print(account)


# -- keys --------------------------------------------------------------------------------------------------
@keys_app.command("issue")
def keys_issue(account_id: str) -> None:
    """Issue a key. The key is printed once and never stored."""
    record, plaintext = _admin(lambda s: s.issue_key(_actor(), account_id))
    _print({"key": plaintext, **msgspec.structs.asdict(record)})


@keys_app.command("list")
def keys_list(account: Annotated[str | None, typer.Option(help="Account id.")] = None) -> None:
    for key in _admin(lambda s: s.list_keys(account)):
        _print(key)


@keys_app.command("rotate")
def keys_rotate(
    key_id: str,
    grace: Annotated[float, typer.Option(min=0, help="Seconds the old key keeps working.")] = 0.0,
) -> None:
    """Issue a successor key and retire the old one (now, or after a grace period)."""
    record, plaintext = _admin(lambda s: s.rotate_key(_actor(), key_id, grace=grace))
    _print({"key": plaintext, **msgspec.structs.asdict(record), "replaces": key_id})


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    _print(_admin(lambda s: s.revoke_key(_actor(), key_id)))


# -- decisions -----------------------------------------------------------------------------------------------
@decisions_app.command("add")
def decisions_add(
    type: Annotated[DecisionType, typer.Option("--type")],
    scope: Annotated[ScopeKind, typer.Option()],
    value: Annotated[str, typer.Option(help="Key id, account id, group id, IP address or CIDR.")],
    reason: Annotated[str, typer.Option()],
    ttl: Annotated[float | None, typer.Option(min=1, help="Seconds until it expires (default: never).")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Throttle: requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Throttle: tokens per minute.")] = None,
    tpd: Annotated[int | None, typer.Option(min=1, help="Throttle: tokens per day.")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Throttle: concurrent requests.")] = None,
    profile: Annotated[str | None, typer.Option(help="Degrade: the output-controls profile.")] = None,
) -> None:
    limits = LimitSet(rpm=rpm, tpm=tpm, tpd=tpd, concurrency=concurrency)
    try:
        decision = Decision(
            type=type,
            scope=scope,
            value=value,
            reason=reason,
            source="cli",
            expires_at=time.time() + ttl if ttl else None,
            limits=limits if limits != LimitSet() else None,
            profile=profile,
        )
    except ValueError as exc:
        _fail(str(exc))
    _print(_admin(lambda s: asyncio.run(s.add_decision(_actor(), decision))))


@decisions_app.command("list")
def decisions_list() -> None:
    for decision in _admin(lambda s: asyncio.run(s.list_decisions())):
        _print(decision)


@decisions_app.command("remove")
def decisions_remove(decision_id: str) -> None:
    _admin(lambda s: asyncio.run(s.remove_decision(_actor(), decision_id)))
    typer.echo(f"removed {decision_id}")


@decisions_app.command("group")
def decisions_group(group_id: str, account_ids: list[str]) -> None:
    """Make the accounts one group (they then share the group budget)."""
    members = _admin(lambda s: asyncio.run(s.set_group(_actor(), group_id, account_ids)))
    typer.echo(f"group {group_id}: {len(members)} accounts")


# -- the admin API and the audit log -------------------------------------------------------------------------
@admin_app.command("serve")
def admin_serve(
    host: Annotated[str | None, typer.Option(help="Default: admin.host (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Default: admin.port (8081).")] = None,
) -> None:
    """Run the admin API (its own port; loopback by default). Calls need an admin token."""
    import uvicorn

    from hydraguard import logs
    from hydraguard.admin.app import build_admin_app

    settings = _settings()
    logs.configure(settings.logging.level, settings.logging.json_format)
    try:
        admin = build_admin_app(settings)
    except config_module.ConfigError as exc:
        _fail(str(exc))
    uvicorn.run(
        admin,
        host=host or settings.admin.host,
        port=settings.admin.port if port is None else port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


@tokens_app.command("create")
def admin_token_create(
    name: Annotated[str, typer.Argument(help="Who or what holds it (letters, digits, _.:@-).")],
    role: Annotated[Role, typer.Option(help="viewer: read; analyst: also decisions; admin: everything.")],
) -> None:
    """Create an admin token. It is printed once and never stored."""
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,100}", name):
        _fail(f"token name {name!r}: use 1 to 100 letters, digits and _.:@-")
    record, plaintext = _admin(lambda s: s.create_token(_actor(), name, role))
    _print({"token": plaintext, **msgspec.structs.asdict(record)})


@tokens_app.command("list")
def admin_token_list() -> None:
    for token in _admin(lambda s: s.list_tokens()):
        _print(token)


@tokens_app.command("revoke")
def admin_token_revoke(token_id: str) -> None:
    _print(_admin(lambda s: s.revoke_token(_actor(), token_id)))


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit log's hash chain; exit 1 if it was edited, cut or reordered."""
    result = _admin(lambda s: s.verify_audit())
    if not result.ok:
        for problem in result.problems:
            typer.echo(f"audit log: {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit log intact: {result.entries} entries, head {result.head_hash}")


@audit_app.command("tail")
def audit_tail(lines: Annotated[int, typer.Option("-n", min=1, help="How many of the latest entries.")] = 20) -> None:
    """Print the latest audit entries as JSON lines."""
    for entry in _admin(lambda s: s.audit_tail(lines)):
        _print(entry)


# -- the registry database's schema ------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the registry database to the schema this version of hydraguard needs."""
    from hydraguard.store import migrate

    before = _schema(migrate.upgrade)
    _print({"from": before.current, "to": before.head})


@db_app.command("current")
def db_current() -> None:
    """Print the registry database's schema revision and the one this version needs; exit 1 if it is behind."""
    from hydraguard.store import migrate

    found = _schema(migrate.state_of)
    _print({"current": found.current, "head": found.head, "up_to_date": found.up_to_date})
    if not found.up_to_date:
        raise typer.Exit(1)


def _schema(operation: Callable[[str], T]) -> T:
    import sqlalchemy as sa

    from hydraguard.store.migrate import SchemaError

    try:
        return operation(_settings().registry.url)
    except SchemaError as exc:
        _fail(str(exc))
    except sa.exc.SQLAlchemyError as exc:  # the driver's own message: it names the server, never the password
        _fail(f"cannot use the registry database: {getattr(exc, 'orig', None) or exc}")


# -- events ----------------------------------------------------------------------------------------------------
@events_app.command("tail")
def events_tail(
    lines: Annotated[int, typer.Option("-n", min=1, help="How many of the latest events.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
) -> None:
    """Print the latest events as JSON lines."""
    directory = _settings().events.dir
    table = event_log.read_table(directory)
    for row in table.slice(max(0, table.num_rows - lines)).to_pylist():
        typer.echo(json.dumps(row))
    seen = {p: event_log.read_segment(p).num_rows for p in event_log.segments(directory)}
    while follow:
        time.sleep(1.0)
        for path in event_log.segments(directory):
            segment = event_log.read_segment(path)
            for row in segment.slice(seen.get(path, 0)).to_pylist():
                typer.echo(json.dumps(row))
            seen[path] = segment.num_rows
        sys.stdout.flush()


@events_app.command("export")
def events_export(
    out: Annotated[Path, typer.Option(help="Output file.")],
    format: Annotated[str, typer.Option("--format", help="parquet")] = "parquet",
) -> None:
    """Export the whole event log to one file."""
    if format != "parquet":
        _fail(f"unsupported format {format!r}; supported: parquet")
    rows = event_log.export_parquet(_settings().events.dir, out)
    typer.echo(f"exported {rows} events to {out}")


if __name__ == "__main__":
    app()
