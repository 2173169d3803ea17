"""`hydraguard intel ...`: indicators in the registry database, by hand, from files, from TAXII."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import msgspec
import typer

from hydraguard import config as config_module
from hydraguard.intel.feeds import FeedError, FeedFormat, FeedLimits, ParsedFeed, parse_feed, read_feed_file
from hydraguard.intel.indicators import IndicatorError, IndicatorKind, make_indicator, parse_time
from hydraguard.intel.poll import poll_taxii
from hydraguard.intel.schedule import poll_due
from hydraguard.intel.store import ApplyResult, IntelStore

app = typer.Typer(help="Threat intelligence: indicators (lists, CSV, STIX 2.1, TAXII 2.1).", no_args_is_help=True)
_state: dict[str, str | None] = {"registry": None}

KindOption = Annotated[IndicatorKind | None, typer.Option("--kind", help="Only this kind / the kind of a list.")]
MaxBytes = Annotated[int, typer.Option(min=1, help="Refuse feeds larger than this.")]
MaxIndicators = Annotated[int, typer.Option(min=1, help="Refuse feeds with more indicators than this.")]


@app.callback()
def main(
    ctx: typer.Context,
    registry: Annotated[
        str | None, typer.Option(help="Database URL (default: the configured registry's, `[registry] url`).")
    ] = None,
) -> None:
    _state["registry"] = registry or _configured_registry(ctx)


def _configured_registry(ctx: typer.Context) -> str | None:
    # under `hydraguard`, the root command's --config names the file; otherwise the usual lookup applies
    config = ctx.find_root().params.get("config")
    try:
        return config_module.load(config).registry.url
    except config_module.ConfigError as exc:
        _fail(str(exc))


def _store() -> IntelStore:
    return IntelStore.from_url(_state["registry"] or config_module.RegistryConfig().url)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _print(data: Any) -> None:
    typer.echo(msgspec.json.encode(data).decode())


def _report(feed: ParsedFeed, applied: ApplyResult, **extra: object) -> None:
    _print(
        {
            "feed": feed.name,
            "parsed": len(feed.indicators),
            "added": applied.added,
            "updated": applied.updated,
            "skipped": feed.skipped_total,
            "skipped_first": [str(p) for p in feed.skipped],
            **extra,
        }
    )


@app.command()
def add(
    kind: Annotated[IndicatorKind, typer.Argument(help="What the value is.")],
    value: Annotated[str, typer.Argument(help="Address or CIDR, ASN, domain, hash, user-agent regex, signature.")],
    source: Annotated[str, typer.Option(help="Where it came from.")] = "cli",
    confidence: Annotated[int, typer.Option(min=0, max=100)] = 50,
    expires: Annotated[str | None, typer.Option(help="When it stops matching: ISO 8601 or unix seconds.")] = None,
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Add one indicator (merged with the same kind and value if already known)."""
    try:
        indicator = make_indicator(
            kind,
            value,
            source=source,
            confidence=confidence,
            expires_at=parse_time(expires) if expires else None,
            description=description,
        )
    except IndicatorError as exc:
        _fail(str(exc))
    store = _store()
    try:
        store.apply([indicator])
        _print(store.get(indicator.id))
    finally:
        store.close()


@app.command("import")
def import_feed(
    file: Annotated[Path, typer.Argument(help="The feed file.")],
    format: Annotated[FeedFormat, typer.Option("--format", help="list: one value per line; csv; stix: a bundle.")],
    kind: KindOption = None,
    source: Annotated[str | None, typer.Option(help="Source name (default: the file name).")] = None,
    confidence: Annotated[int, typer.Option(min=0, max=100, help="For list entries.")] = 50,
    max_bytes: MaxBytes = FeedLimits.max_bytes,
    max_indicators: MaxIndicators = FeedLimits.max_indicators,
) -> None:
    """Import a feed file, all or nothing."""
    limits = FeedLimits(max_bytes=max_bytes, max_indicators=max_indicators)
    name = source or file.name
    try:
        if format is FeedFormat.LIST and kind is None:
            _fail("a list needs --kind")
        data = read_feed_file(file, limits)
        feed = parse_feed(data, format, source=name, kind=kind, confidence=confidence, limits=limits)
    except FeedError as exc:
        _fail(str(exc))
    store = _store()
    try:
        _report(feed, store.apply(feed.indicators))
    finally:
        store.close()


@app.command("list")
def list_indicators(
    kind: KindOption = None,
    expired: Annotated[bool, typer.Option(help="Include expired indicators.")] = False,
) -> None:
    """Indicators, one JSON object per line."""
    store = _store()
    try:
        for indicator in store.iter(kind, active_at=None if expired else time.time()):
            _print(indicator)
    finally:
        store.close()


@app.command()
def remove(indicator_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Remove one indicator."""
    store = _store()
    try:
        if not store.remove(indicator_id):
            _fail(f"no indicator {indicator_id}")
    finally:
        store.close()
    typer.echo(f"removed {indicator_id}")


@app.command()
def poll(
    url: Annotated[str, typer.Argument(help="The TAXII 2.1 API root URL.")],
    collection: Annotated[str, typer.Option(help="The collection id.")],
    user: Annotated[str | None, typer.Option(envvar="HYDRAGUARD_TAXII_USER")] = None,
    password: Annotated[str | None, typer.Option(envvar="HYDRAGUARD_TAXII_PASSWORD", show_default=False)] = None,
    max_bytes: MaxBytes = FeedLimits.max_bytes,
    max_indicators: MaxIndicators = FeedLimits.max_indicators,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per HTTP request.")] = 30.0,
) -> None:
    """Fetch a TAXII collection's objects added since the last poll, all or nothing."""
    store = _store()
    try:
        result = poll_taxii(
            store,
            url,
            collection,
            user=user,
            password=password,
            limits=FeedLimits(max_bytes=max_bytes, max_indicators=max_indicators),
            timeout=timeout,
        )
    except FeedError as exc:
        _fail(str(exc))
    finally:
        store.close()
    _report(result.feed, result.applied, pages=result.pages, bookmark=result.bookmark)


@app.command()
def follow(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(help="Poll the feeds that are due once, then exit.")] = False,
    check_every: Annotated[float, typer.Option(min=1, help="Seconds between checks for due feeds.")] = 60.0,
) -> None:
    """Poll the configured TAXII feeds (`[intel] feeds`), each on its interval."""
    try:
        config = config_module.load(ctx.find_root().params.get("config")).intel
    except config_module.ConfigError as exc:
        _fail(str(exc))
    if not config.feeds:
        _fail("no TAXII feeds configured ([[intel.feeds]] in the config file)")
    store = _store()
    try:
        while True:
            for outcome in poll_due(store, config):
                if outcome.result is not None:
                    _report(outcome.result.feed, outcome.result.applied, pages=outcome.result.pages)
                else:
                    typer.echo(f"error: {outcome.error}", err=True)
            if once:
                return
            time.sleep(check_every)
    finally:
        store.close()
