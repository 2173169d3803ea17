"""Pictures the console draws on the server, as SVG: outcomes over time, and a campaign's evidence graph.

Drawn here rather than by a browser charting library so that the console needs no JavaScript package and no CDN;
the graph's layout comes from igraph (already what detection links accounts with).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

import igraph as ig

from hydraguard.console.traffic import OUTCOMES, Series

OUTCOME_COLOURS = ("#4c9a5b", "#e0a030", "#8c6bc8", "#c8423b", "#8a8a8a")
KIND_COLOURS = {"payment": "#c8423b", "email": "#3a78c2", "signup subnet": "#e0a030", "client subnet": "#8c6bc8"}


def _clock(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%H:%M:%S")


def outcomes_chart(
    data: Series, *, width: int = 900, height: int = 160, marks: Sequence[tuple[float, str]] = ()
) -> str:
    """Stacked bars of requests per bucket by outcome (served green, refused in the decision's colour), with
    vertical marks (time, label) for events such as detections and decisions."""
    buckets = data.counts.shape[1]
    peak = max(int(data.counts.sum(axis=0).max()), 1)
    bar = width / buckets
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height + 18}" role="img" aria-label="requests over time">']
    for i in range(buckets):
        y = float(height)
        for outcome in range(len(OUTCOMES)):
            n = int(data.counts[outcome, i])
            if not n:
                continue
            h = height * n / peak
            y -= h
            when = _clock(data.start + i * data.bucket)
            parts.append(
                f'<rect x="{i * bar:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}" '
                f'fill="{OUTCOME_COLOURS[outcome]}"><title>{when} UTC: {n} {OUTCOMES[outcome]}</title></rect>'
            )
    end = data.start + buckets * data.bucket
    for at, label in marks:
        if data.start <= at <= end:
            x = width * (at - data.start) / (end - data.start)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}" class="mark">'
                f"<title>{escape(label)}</title></line>"
            )
    parts.append(f'<text x="0" y="{height + 14}" class="axis">{_clock(data.start)} UTC</text>')
    parts.append(f'<text x="{width}" y="{height + 14}" class="axis" text-anchor="end">{_clock(end)} UTC</text>')
    parts.append(f'<text x="4" y="12" class="axis">peak {peak} requests per {data.bucket:.3g} s</text></svg>')
    return "".join(parts)


def legend() -> str:
    return "".join(
        f'<span class="key"><i style="background:{c}"></i>{o}</span>'
        for o, c in zip(OUTCOMES, OUTCOME_COLOURS, strict=True)
    )


@dataclass(frozen=True)
class Member:
    id: str
    indicators: tuple[tuple[str, str], ...]  # (kind, value): what it could share with other members
    enforced: bool


def subnet(address: str | None) -> str | None:
    if not address:
        return None
    try:
        return str(ipaddress.ip_network(f"{address}/{24 if ':' not in address else 48}", strict=False))
    except ValueError:
        return None


def evidence_graph(members: Iterable[Member], *, max_hubs: int = 60, size: int = 720) -> str:
    """Accounts (dots) joined to the indicators they share (squares, coloured by kind). Only values that two or
    more members share are drawn, the most shared first, so a few hundred accounts stay readable."""
    members = list(members)
    holders: dict[tuple[str, str], list[int]] = {}
    for i, member in enumerate(members):
        for indicator in set(member.indicators):
            holders.setdefault(indicator, []).append(i)
    hubs = sorted((k for k, v in holders.items() if len(v) > 1), key=lambda k: -len(holders[k]))[:max_hubs]
    if not members:
        return '<p class="muted">No members.</p>'
    edges = [(len(members) + h, m) for h, hub in enumerate(hubs) for m in holders[hub]]
    graph = ig.Graph(n=len(members) + len(hubs), edges=edges)
    # seeded from a circle, so the same campaign is drawn the same way on every visit
    circle = graph.layout_circle().coords
    layout = graph.layout_fruchterman_reingold(niter=300, seed=circle) if edges else None
    coords = layout.coords if layout is not None else [(i % 20, i // 20) for i in range(graph.vcount())]
    xs, ys = [c[0] for c in coords], [c[1] for c in coords]
    pad = 20
    span_x, span_y = max(max(xs) - min(xs), 1e-9), max(max(ys) - min(ys), 1e-9)

    def at(i: int) -> tuple[float, float]:
        return (
            pad + (size - 2 * pad) * (xs[i] - min(xs)) / span_x,
            pad + (size - 2 * pad) * (ys[i] - min(ys)) / span_y,
        )

    parts = [f'<svg id="evidence-graph" viewBox="0 0 {size} {size}" role="img" aria-label="evidence graph">']
    parts.append('<g class="viewport">')
    for hub, member in edges:
        (x1, y1), (x2, y2) = at(hub), at(member)
        parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="edge" data-hub="{hub}" '
            f'data-member="{member}"/>'
        )
    for i, member in enumerate(members):
        x, y = at(i)
        state = "enforced" if member.enforced else "free"
        parts.append(
            f'<a href="/console/accounts/{escape(member.id)}"><circle cx="{x:.1f}" cy="{y:.1f}" r="4" '
            f'class="account {state}" data-node="{i}"><title>{escape(member.id)} ({state})</title></circle></a>'
        )
    for h, (kind, value) in enumerate(hubs):
        x, y = at(len(members) + h)
        side = 6 + min(len(holders[(kind, value)]), 40) / 4
        parts.append(
            f'<rect x="{x - side / 2:.1f}" y="{y - side / 2:.1f}" width="{side:.1f}" height="{side:.1f}" '
            f'class="hub" fill="{KIND_COLOURS.get(kind, "#555")}" data-node="{len(members) + h}">'
            f"<title>{escape(kind)} {escape(value)}: shared by {len(holders[(kind, value)])} accounts</title></rect>"
        )
    parts.append("</g></svg>")
    return "".join(parts)


def graph_legend() -> str:
    keys = [f'<span class="key"><i style="background:{c}"></i>{k}</span>' for k, c in KIND_COLOURS.items()]
    return "".join(keys) + '<span class="key"><i class="dot enforced"></i>account under a decision</span>'
