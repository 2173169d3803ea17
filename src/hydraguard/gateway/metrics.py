"""Prometheus metrics of one gateway, in a registry of its own (several gateways can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hydraguard_requests",
            "Requests by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hydraguard_request_latency_seconds",
            "Time from request arrival to the last byte of the response",
            ["endpoint"],
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
                120,
            ),
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "hydraguard_upstream_latency_seconds",
            "Time the upstream took to answer (to its headers)",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.limiter_denials = Counter(
            "hydraguard_limiter_denials", "Requests refused by a limit", ["limit"], registry=self.registry
        )
        self.limiter_errors = Counter(
            "hydraguard_limiter_errors",
            "Limiter backend failures, by the policy applied",
            ["policy"],
            registry=self.registry,
        )
        self.decisions_applied = Counter(
            "hydraguard_decisions_applied",
            "Requests a decision applied to, by type",
            ["type"],
            registry=self.registry,
        )
        self.intel_matches = Counter(
            "hydraguard_intel_matches",
            "Threat-intel indicator matches on authenticated requests, by indicator kind",
            ["kind"],
            registry=self.registry,
        )
        self.in_flight = Gauge("hydraguard_in_flight_requests", "Requests being served", registry=self.registry)
        self.events = Counter("hydraguard_events", "Events appended to the event log", registry=self.registry)
