"""The provider's signed webhooks: signup, verification results, payments. No admin token: the HMAC signature
(admin/signatures.py) is the credential, and each signature is accepted once."""

from __future__ import annotations

import functools
import time
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from hydraguard.accounts.verification import Source
from hydraguard.admin import signatures
from hydraguard.admin.audit import Actor
from hydraguard.admin.auth import Services
from hydraguard.admin.routes.verification import signup, status_out
from hydraguard.admin.services import AdminServices
from hydraguard.admin.verification_schemas import (
    SignupIn,
    SignupResult,
    VerificationStatusOut,
    WebhookLevelIn,
    WebhookPaymentIn,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
PROVIDER = Actor("webhook:provider")
MAX_BODY_BYTES = 64 * 1024
Timestamp = Annotated[str | None, Header(alias=signatures.TIMESTAMP_HEADER, description="Unix seconds.")]
Signature = Annotated[
    str | None, Header(alias=signatures.SIGNATURE_HEADER, description="sha256=<hex HMAC of '<timestamp>.<body>'>")
]
Body = TypeVar("Body", bound=BaseModel)


async def _verified(
    request: Request, admin: AdminServices, timestamp: str | None, signature: str | None, model: type[Body]
) -> tuple[Body, functools.partial[None]]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise HTTPException(413, f"a webhook body is at most {MAX_BODY_BYTES} bytes")
    now = time.time()
    tolerance = admin.verification.webhook_tolerance
    try:
        stamp, claimed = signatures.parse(timestamp, signature)
        secret = admin.webhook_secret()
        if secret is None:
            raise HTTPException(503, f"webhooks are off: set ${admin.verification.webhook_secret_env} to their secret")
        digest = signatures.verify(secret, stamp, claimed, raw, now=now, tolerance=tolerance)
    except signatures.SignatureError as exc:
        raise HTTPException(401, str(exc), {"WWW-Authenticate": "Signature"}) from exc
    try:
        body = model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from exc
    return body, functools.partial(signatures.claim, digest=digest, expires_at=stamp + tolerance, now=now)


@router.post("/signup", status_code=201)
async def signup_webhook(
    request: Request, admin: Services, timestamp: Timestamp = None, signature: Signature = None
) -> SignupResult:
    """A signup from the provider's flow; the body is a `SignupIn`."""
    body, claim = await _verified(request, admin, timestamp, signature, SignupIn)
    return await signup(admin, PROVIDER, body, claim=claim)


@router.post("/verification")
async def verification_webhook(
    request: Request, admin: Services, timestamp: Timestamp = None, signature: Signature = None
) -> VerificationStatusOut:
    """A verification result: `{"account_id", "level", "outcome": "verified"|"failed", "provider_ref"}`."""
    body, claim = await _verified(request, admin, timestamp, signature, WebhookLevelIn)
    status = await admin.report_verification(
        PROVIDER,
        body.account_id,
        body.level,
        body.outcome,
        source=Source.WEBHOOK,
        provider_ref=body.provider_ref,
        claim=claim,
    )
    return status_out(status)


@router.post("/payment")
async def payment_webhook(
    request: Request, admin: Services, timestamp: Timestamp = None, signature: Signature = None
) -> VerificationStatusOut:
    """A payment outcome: `{"account_id", "outcome": "succeeded"|"failed"|"chargeback", "provider_ref"}`."""
    body, claim = await _verified(request, admin, timestamp, signature, WebhookPaymentIn)
    status = await admin.record_payment(
        PROVIDER, body.account_id, body.outcome, source=Source.WEBHOOK, provider_ref=body.provider_ref, claim=claim
    )
    return status_out(status)
