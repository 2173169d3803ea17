"""Feed parsing: plain lists, CSV files and STIX 2.1 bundles into indicators, all or nothing.

Parsing never touches the store: it returns every indicator of a feed or raises `FeedError` with a
partial-progress report (how many indicators parsed, the first problems with their line or object id).
Entries that are valid but name nothing hydraguard matches (a file hash, a URL) are skipped and counted,
not errors, so a general-purpose STIX feed can be used as it is.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import stix2
import stix2.exceptions
from stix2.pattern_visitor import create_pattern_object

from hydraguard.intel import stixmap
from hydraguard.intel.indicators import Indicator, IndicatorError, IndicatorKind, make_indicator, parse_time


@dataclass(frozen=True)
class FeedLimits:
    max_bytes: int = 64 * 1024 * 1024
    max_indicators: int = 1_000_000
    problems_reported: int = 10  # the first N problems are kept in a report, all are counted


@dataclass(frozen=True)
class FeedProblem:
    where: str  # "line 12", an object id
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class FeedError(Exception):
    """A feed that was not applied, with what was parsed before or despite the problems."""

    def __init__(self, feed: str, summary: str, *, parsed: int, problems: list[FeedProblem], total: int) -> None:
        self.feed = feed
        self.summary = summary
        self.parsed = parsed
        self.problems = problems
        self.total_problems = total
        lines = [f"feed {feed}: {summary}; nothing applied ({parsed} indicators parsed)"]
        if problems:
            lines.append(f"first {len(problems)} of {total} problems:")
            lines += [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))


@dataclass
class ParsedFeed:
    name: str
    indicators: list[Indicator] = field(default_factory=list)
    skipped: list[FeedProblem] = field(default_factory=list)  # the first few, for the report
    skipped_total: int = 0


class _Collector:
    def __init__(self, name: str, limits: FeedLimits) -> None:
        self.limits = limits
        self.feed = ParsedFeed(name)
        self.problems: list[FeedProblem] = []
        self.problem_total = 0

    def add(self, indicator: Indicator) -> None:
        if len(self.feed.indicators) >= self.limits.max_indicators:
            raise self.error(f"more than {self.limits.max_indicators} indicators (the configured maximum)")
        self.feed.indicators.append(indicator)

    def problem(self, where: str, message: str) -> None:
        self.problem_total += 1
        if len(self.problems) < self.limits.problems_reported:
            self.problems.append(FeedProblem(where, message))

    def skip(self, where: str, message: str) -> None:
        self.feed.skipped_total += 1
        if len(self.feed.skipped) < self.limits.problems_reported:
            self.feed.skipped.append(FeedProblem(where, message))

    def error(self, summary: str) -> FeedError:
        return FeedError(
            self.feed.name,
            summary,
            parsed=len(self.feed.indicators),
            problems=self.problems,
            total=self.problem_total,
        )

    def finish(self) -> ParsedFeed:
        if self.problem_total:
            raise self.error(f"{self.problem_total} invalid entries")
        return self.feed


def read_feed_file(path: str | Path, limits: FeedLimits) -> bytes:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise FeedError(
                str(path), f"{size} bytes, over the {limits.max_bytes} maximum", parsed=0, problems=[], total=0
            )
        return path.read_bytes()
    except OSError as exc:
        raise FeedError(str(path), f"cannot read it: {exc.strerror}", parsed=0, problems=[], total=0) from None


def _text(data: bytes, name: str, limits: FeedLimits) -> str:
    if len(data) > limits.max_bytes:
        raise FeedError(name, f"{len(data)} bytes, over the {limits.max_bytes} maximum", parsed=0, problems=[], total=0)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedError(name, f"not UTF-8 text (byte {exc.start})", parsed=0, problems=[], total=0) from None


# -- plain lists -------------------------------------------------------------------------------------------
def parse_list(
    data: bytes,
    kind: IndicatorKind | str,
    *,
    source: str,
    confidence: int = 50,
    expires_at: float | None = None,
    limits: FeedLimits | None = None,
    now: float | None = None,
) -> ParsedFeed:
    """One value per line; blank lines and lines starting with # are ignored."""
    limits = limits or FeedLimits()
    collect = _Collector(source, limits)
    for line_no, line in enumerate(_text(data, source, limits).splitlines(), start=1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        try:
            collect.add(
                make_indicator(kind, value, source=source, confidence=confidence, expires_at=expires_at, now=now)
            )
        except IndicatorError as exc:
            collect.problem(f"line {line_no}", str(exc))
    return collect.finish()


# -- CSV ---------------------------------------------------------------------------------------------------
CSV_COLUMNS = ("kind", "value", "confidence", "first_seen", "last_seen", "expires_at", "description", "source")


def parse_csv(
    data: bytes,
    *,
    source: str,
    kind: IndicatorKind | str | None = None,
    limits: FeedLimits | None = None,
    now: float | None = None,
) -> ParsedFeed:
    """A header row naming the columns (`CSV_COLUMNS`; `value` required, `kind` unless given), then one
    indicator per row. Times are ISO 8601 or unix seconds; a row's `source` overrides the feed's."""
    limits = limits or FeedLimits()
    collect = _Collector(source, limits)
    reader = csv.DictReader(io.StringIO(_text(data, source, limits), newline=""), strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise FeedError(source, f"line 1: {exc}", parsed=0, problems=[], total=0) from None
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if unknown or "value" not in header or ("kind" not in header and kind is None):
        raise FeedError(
            source,
            f"header {','.join(header)!r}: expected columns among {','.join(CSV_COLUMNS)} with value "
            f"(and kind, unless a kind is given){'; unknown: ' + ','.join(unknown) if unknown else ''}",
            parsed=0,
            problems=[],
            total=0,
        )
    try:
        for row in reader:
            where = f"line {reader.line_num}"
            if None in row:
                collect.problem(where, f"{len(header) + len(row[None])} fields, the header has {len(header)}")
                continue
            try:
                collect.add(_csv_indicator(row, kind, source, now))
            except IndicatorError as exc:
                collect.problem(where, str(exc))
    except csv.Error as exc:
        collect.problem(f"line {reader.line_num}", str(exc))
    return collect.finish()


def _csv_indicator(row: dict[str, str], kind: IndicatorKind | str | None, source: str, now: float | None) -> Indicator:
    def time_of(name: str) -> float | None:
        text = (row.get(name) or "").strip()
        return parse_time(text) if text else None

    confidence = (row.get("confidence") or "").strip()
    if confidence and not confidence.isdigit():
        raise IndicatorError(f"confidence {confidence!r}: expected an integer from 0 to 100")
    return make_indicator(
        (row.get("kind") or "").strip() or kind or "",
        row.get("value") or "",
        source=(row.get("source") or "").strip() or source,
        confidence=int(confidence) if confidence else 50,
        first_seen=time_of("first_seen"),
        last_seen=time_of("last_seen"),
        expires_at=time_of("expires_at"),
        description=(row.get("description") or "").strip(),
        now=now,
    )


# -- STIX 2.1 ----------------------------------------------------------------------------------------------
def parse_stix(data: bytes, *, source: str, limits: FeedLimits | None = None, now: float | None = None) -> ParsedFeed:
    """The Indicator objects of a STIX 2.1 bundle whose patterns name what hydraguard matches."""
    limits = limits or FeedLimits()
    try:
        bundle = json.loads(_text(data, source, limits))
    except json.JSONDecodeError as exc:
        raise FeedError(source, f"not JSON: {exc}", parsed=0, problems=[], total=0) from None
    if not isinstance(bundle, dict) or bundle.get("type") != "bundle" or not isinstance(bundle.get("objects"), list):
        raise FeedError(
            source, "not a STIX 2.1 bundle (a JSON object of type bundle with objects)", parsed=0, problems=[], total=0
        )
    return parse_stix_objects(bundle["objects"], source=source, limits=limits, now=now)


def parse_stix_objects(
    objects: list[object], *, source: str, limits: FeedLimits | None = None, now: float | None = None
) -> ParsedFeed:
    limits = limits or FeedLimits()
    collect = _Collector(source, limits)
    for position, raw in enumerate(objects):
        where = raw.get("id", f"object {position}") if isinstance(raw, dict) else f"object {position}"
        if not isinstance(raw, dict) or raw.get("type") != "indicator":
            continue
        try:
            indicator = stix2.parse(raw, allow_custom=True, version="2.1")
        except (stix2.exceptions.STIXError, ValueError, TypeError) as exc:
            collect.problem(str(where), f"invalid STIX: {_first_line(exc)}")
            continue
        _read_indicator(indicator, collect, source, now)
    return collect.finish()


def _read_indicator(indicator: stix2.Indicator, collect: _Collector, source: str, now: float | None) -> None:
    where = indicator.id
    if indicator.get("revoked"):
        collect.skip(where, "revoked")
        return
    if indicator.pattern_type != "stix":
        collect.skip(where, f"pattern type {indicator.pattern_type} (only stix patterns are read)")
        return
    try:
        values = stixmap.pattern_values(create_pattern_object(indicator.pattern, version="2.1"))
    except stixmap.UnsupportedPattern as exc:
        collect.skip(where, str(exc))
        return
    first_seen = indicator.valid_from.timestamp()
    valid_until = indicator.get("valid_until")
    for kind, value in values:
        try:
            collect.add(
                make_indicator(
                    kind,
                    value,
                    source=source,
                    confidence=indicator.get("confidence", 50),
                    first_seen=first_seen,
                    last_seen=max(first_seen, indicator.modified.timestamp()),
                    expires_at=valid_until.timestamp() if valid_until else None,
                    description=(indicator.get("name") or indicator.get("description") or "")[:2_000],
                    now=now,
                )
            )
        except IndicatorError as exc:
            collect.problem(where, str(exc))


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class FeedFormat(enum.StrEnum):
    LIST = "list"
    CSV = "csv"
    STIX = "stix"


def parse_feed(
    data: bytes,
    format: FeedFormat | str,
    *,
    source: str,
    kind: IndicatorKind | str | None = None,
    confidence: int = 50,
    limits: FeedLimits | None = None,
    now: float | None = None,
) -> ParsedFeed:
    """A feed in any of the formats; a list needs `kind` (FeedError without one)."""
    format = FeedFormat(format)
    if format is FeedFormat.LIST:
        if kind is None:
            raise FeedError(source, "a list needs an indicator kind", parsed=0, problems=[], total=0)
        return parse_list(data, kind, source=source, confidence=confidence, limits=limits, now=now)
    if format is FeedFormat.CSV:
        return parse_csv(data, source=source, kind=kind, limits=limits, now=now)
    return parse_stix(data, source=source, limits=limits, now=now)
