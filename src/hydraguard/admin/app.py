"""The admin API: a FastAPI app over the admin services, on its own port (loopback by default).

OpenAPI at /openapi.json, docs at /docs. Every route needs an admin token with the route's role: no token is a
401, too small a role a 403. Refused operations are 4xx with a message and change nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hydraguard.admin.audit import AuditError
from hydraguard.admin.routes import (
    accounts,
    audit,
    campaigns,
    decisions,
    intel,
    keys,
    orgs,
    rules,
    tokens,
    verification,
    webhooks,
)
from hydraguard.admin.services import AdminError, AdminServices, Conflict, Invalid, NotFound
from hydraguard.admin.signatures import Replayed
from hydraguard.config import Settings
from hydraguard.console import routes as console
from hydraguard.decide.store import DecisionStoreUnavailable

ROUTERS = (
    orgs.router,
    accounts.router,
    keys.router,
    decisions.router,
    audit.router,
    tokens.router,
    verification.router,
    webhooks.router,
    intel.router,
    campaigns.router,
    rules.router,
    console.router,
)
_STATUS = {NotFound: 404, Conflict: 409, Invalid: 422, Replayed: 409}


def create_app(
    services: AdminServices, *, lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None
) -> FastAPI:
    app = FastAPI(
        title="hydraguard admin API",
        version="1",
        description="Accounts, keys, decisions and the audit log of a hydraguard gateway (docs/admin.md).",
        lifespan=lifespan,
    )
    app.state.services = services
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/taxii2", intel.taxii_server)  # TAXII 2.1 (discovery at /taxii2/), for viewers and above

    @app.exception_handler(AdminError)
    async def refused(_: Request, exc: AdminError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_STATUS.get(type(exc), 400))

    @app.exception_handler(AuditError)
    @app.exception_handler(DecisionStoreUnavailable)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"cannot make changes now: {exc}"}, status_code=503)

    return app


def open_services(settings: Settings) -> AdminServices:
    """The admin services on the gateway's registry and decision store (the same database, or the same Redis):
    what they change, every gateway process sees within `backend.decision_refresh_interval`."""
    from hydraguard.gateway.build import build_decision_store, open_registry

    registry = open_registry(settings)
    services = AdminServices(
        registry,
        build_decision_store(settings, registry),
        secret=settings.secret_bytes(),
        tiers=settings.tiers,
        verification=settings.verification,
    )
    services.intel_settings = settings.intel
    return services


def build_admin_app(settings: Settings) -> FastAPI:
    services = open_services(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await services.decisions.close()
        services.registry.close()

    app = create_app(services, lifespan=lifespan)
    app.state.events_dir = settings.events.dir  # the console's traffic pages read the gateway's event log
    return app
