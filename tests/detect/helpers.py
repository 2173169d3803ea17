"""Shared set-ups for the detection tests."""

from __future__ import annotations

import time

from hydraguard import config as config_module
from hydraguard.events.log import EventLog
from hydraguard.events.schema import RequestEvent
from hydraguard.gateway.build import open_registry

HOUR = 3600.0


def seed_harvester(settings: config_module.Settings) -> tuple[str, str]:
    """Two accounts of one org in the registry and two hours of their requests in the event log: one harvests
    reasoning traces, the other does not. Returns (harvester, bystander)."""
    registry = open_registry(settings)
    org = registry.create_org("solo")
    harvester, bystander = registry.create_account(org.id).id, registry.create_account(org.id).id
    registry.close()
    log = EventLog(settings.events.dir)
    start = time.time() - 2 * HOUR
    for n in range(40):
        for account, score in ((harvester, 0.9), (bystander, 0.0)):
            log.append(
                RequestEvent(
                    time=start + n * 60.0,
                    request_id=f"req_{account}_{n}",
                    endpoint="/v1/chat/completions",
                    account_id=account,
                    org_id=org.id,
                    status=200,
                    reasoning_extraction_score=score,
                )
            )
    log.close()
    return harvester, bystander
