"""Who calls the admin API: a bearer admin token, and the least role each route needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hydraguard.admin.audit import Actor
from hydraguard.admin.services import AdminServices
from hydraguard.admin.tokens import Role

_bearer = HTTPBearer(auto_error=False, description="An admin token (`hydraguard admin token create`).")


def services(request: Request) -> AdminServices:
    return request.app.state.services  # type: ignore[no-any-return]


Services = Annotated[AdminServices, Depends(services)]


def require(role: Role) -> Callable[..., Actor]:
    def actor(admin: Services, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Actor:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "an admin token is required (Authorization: Bearer …)", challenge
            )
        token = admin.authenticate(credentials.credentials)
        if token is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the admin token is unknown or revoked", challenge)
        if not token.role.allows(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this needs the {role} role; token {token.name!r} has the {token.role} role"
            )
        return Actor(f"token:{token.name}", token.role.value)

    return actor


Viewer = Annotated[Actor, Depends(require(Role.VIEWER))]
Analyst = Annotated[Actor, Depends(require(Role.ANALYST))]
Admin = Annotated[Actor, Depends(require(Role.ADMIN))]
