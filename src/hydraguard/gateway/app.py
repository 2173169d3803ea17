"""The gateway: an OpenAI-compatible reverse proxy that enforces and observes, nothing more.

Per request: authenticate the key, read and validate the body, consult the decision store, check
and charge every limit all-or-nothing, forward, reconcile token usage, and append exactly one
`RequestEvent`. Anything heavier (fingerprints, detection) happens off this path.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from hydraguard.accounts.models import AccountStatus, Principal
from hydraguard.accounts.registry import Registry
from hydraguard.config import Settings
from hydraguard.controls.plan import Controls, Prepared
from hydraguard.controls.refusal import ControlRefusal
from hydraguard.decide.model import DecisionType, Resolution, resolve
from hydraguard.decide.store import DecisionStore
from hydraguard.events.log import EventLog, PromptContent
from hydraguard.events.schema import RequestEvent
from hydraguard.gateway import requests as req
from hydraguard.gateway.errors import error_response, retry_after_header
from hydraguard.gateway.incoming import ClientGone, Incoming
from hydraguard.gateway.metrics import GatewayMetrics
from hydraguard.gateway.ratelimit_headers import format_duration, ratelimit_headers
from hydraguard.gateway.relay import Accounting, RelayResponse, relay_sse
from hydraguard.intel.live import LiveIntel
from hydraguard.limits.base import Limiter, LimiterUnavailable, Verdict
from hydraguard.limits.gcra import Quota
from hydraguard.limits.policy import LimitSet, charged
from hydraguard.limits.scopes import LimitPolicy

log = logging.getLogger("hydraguard.gateway")

Describe = Callable[[bytes, int], req.RequestInfo]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    describe: Describe | None  # None: no body (GET)


ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint("POST", req.describe_chat),
    "/v1/completions": Endpoint("POST", req.describe_completion),
    "/v1/embeddings": Endpoint("POST", req.describe_embedding),
    "/v1/responses": Endpoint("POST", req.describe_response),
    "/v1/models": Endpoint("GET", None),
}

_FORWARDED_HEADERS = frozenset((b"content-type", b"accept", b"openai-beta"))
# a TLS fingerprint as recorded: 1 to 128 printable ASCII characters; any other value is ignored
_TLS_FINGERPRINT = re.compile(rb"[ -~]{1,128}")


class Refusal(Exception):
    """A request the gateway answers itself, with an OpenAI-format error."""

    def __init__(self, response: Response, reason: str) -> None:
        self.response = response
        self.reason = reason


@dataclass(slots=True)
class Admission:
    verdict: Verdict | None  # None when the limiter was unreachable and the policy is fail-open
    token_quotas: list[Quota]
    reserved_tokens: int


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry,
        limiter: Limiter,
        decisions: DecisionStore,
        events: EventLog,
        intel: LiveIntel | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.limiter = limiter
        self.decisions = decisions
        self.events = events
        self.intel = intel
        # prompt content of requests in flight, handed to the event log with their event (never stored)
        self._content: dict[str, PromptContent] = {}
        self.metrics = GatewayMetrics()
        self._session: aiohttp.ClientSession | None = None
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in settings.server.trusted_proxies]
        self._tls_header = settings.server.tls_fingerprint_header.encode() or None
        self._upstream = settings.server.upstream
        self._upstream_path_prefix = "/v1"
        self._operational = {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.metrics_endpoint}
        self.limit_policy = LimitPolicy(settings)
        self.controls = Controls(settings, self._complete)
        # request ids from a generator seeded from the OS: os.urandom per request releases the GIL, and the
        # event log's writer thread then kept it for up to a hand-over interval (ids need not be secret)
        self._request_ids = random.Random(os.urandom(32))
        # Prometheus children by label values: `labels()` costs more than the update itself
        self._request_counters: dict[tuple[str, str], Any] = {}
        self._intel_counters: dict[str, Any] = {}
        self._latency_histograms: dict[str, Any] = {}
        self._upstream_histograms: dict[str, Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Plain ASGI: the request path skips a router and middleware stack it does not need."""
        if scope["type"] == "http":
            handler = self._operational.get(scope["path"])
            if handler is not None:
                response = await handler(Request(scope, receive))
            else:
                response = await self.dispatch(Incoming.from_scope(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # -- lifecycle ----------------------------------------------------------------------------------
    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        server = self.settings.server
        timeout = aiohttp.ClientTimeout(total=server.upstream_timeout, sock_connect=server.upstream_connect_timeout)
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=server.upstream_keepalive),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        self._request_ids.seed(os.urandom(32))  # a process forked after construction gets its own ids
        self.events.start()
        await self.decisions.start()
        if self.intel is not None:
            await self.intel.start()
        gc.freeze()  # start-up objects live for good; keep them out of the collector's scans

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.decisions.close()
        if self.intel is not None:
            await self.intel.close()
        await self.limiter.close()
        self.events.close()
        self.registry.close()

    # -- operational endpoints ------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(self, request: Request) -> Response:
        problems = []
        try:
            with self.registry.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:
            problems.append(f"registry: {exc}")
        probe = Quota("readyz", 1_000_000, 1.0, 0, "readyz")
        try:
            await self.limiter.acquire([probe], [], "readyz")
        except LimiterUnavailable as exc:
            problems.append(f"limiter: {exc}")
        if problems:
            return Response(
                msgspec.json.encode({"status": "unavailable", "problems": problems}),
                503,
                media_type="application/json",
            )
        return Response(b'{"status":"ready"}', media_type="application/json")

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- the request path -----------------------------------------------------------------------------
    async def dispatch(self, request: Incoming) -> Response:
        started = time.time()
        clock = time.perf_counter()
        from_proxy = self._from_trusted_proxy(request)
        event = RequestEvent(
            time=started,
            request_id="req_" + self._request_ids.getrandbits(128).to_bytes(16, "big").hex(),
            endpoint=request.path,
            method=request.method,
            client_ip=self._client_ip(request) if from_proxy else request.peer,
            user_agent=request.header(b"user-agent"),
            tls_fingerprint=self._tls_fingerprint(request) if from_proxy else None,
        )
        admission: Admission | None = None
        try:
            response, admission = await self._serve(request, event)
        except Refusal as refusal:
            event.refusal_reason = refusal.reason
            response = refusal.response
        except Exception:
            log.exception("internal error", extra={"request_id": event.request_id})
            event.refusal_reason = "internal_error"
            response = error_response(
                500,
                f"The gateway failed to process the request ({event.request_id}).",
                type="server_error",
                code="internal_error",
            )
        # appended, not set: no response carries the header yet, and setting it would scan every header first
        response.raw_headers.append((b"x-request-id", event.request_id.encode()))
        if isinstance(response, RelayResponse):
            return response  # its stream finishes the event
        event.status = response.status_code
        if admission is not None:
            await self._settle(admission, 0 if event.refusal_reason else _reported_tokens(event))
        self._finish(event, clock)
        return response

    async def _serve(self, request: Incoming, event: RequestEvent) -> tuple[Response, Admission | None]:
        endpoint = ENDPOINTS.get(event.endpoint)
        if endpoint is None:
            raise Refusal(
                error_response(
                    404,
                    f"Unknown request URL: {request.method} {event.endpoint}. Please check the URL for typos.",
                    code="unknown_url",
                ),
                "unknown_url",
            )
        if request.method != endpoint.method:
            raise Refusal(
                error_response(
                    405,
                    f"Method {request.method} is not allowed for {event.endpoint}; use {endpoint.method}.",
                    code="method_not_allowed",
                    headers={"allow": endpoint.method},
                ),
                "method_not_allowed",
            )
        self._check_headers(request)
        principal = self._authenticate(request, event)
        body = await self._read_body(request) if endpoint.describe is not None else b""
        info = self._describe(endpoint, body, event)
        resolution = self._decide(principal, event)
        prepared = self._prepare_controls(principal, info, body, resolution, event)
        if prepared is not None:
            body = prepared.body
        admission = await self._admit(principal, info, resolution, event)
        try:
            response = await self._forward(request, body, info, event, admission, prepared)
        except BaseException:
            await self._settle(admission, 0)
            raise
        return response, (None if isinstance(response, RelayResponse) else admission)

    def _is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self._trusted)

    def _from_trusted_proxy(self, request: Incoming) -> bool:
        """Whether the peer is in `server.trusted_proxies`: only then are the headers a proxy adds believed
        (X-Forwarded-For, the TLS fingerprint)."""
        peer = request.peer
        if peer is None or not self._trusted:
            return False
        try:
            return self._is_trusted(ipaddress.ip_address(peer))
        except ValueError:
            return False

    def _client_ip(self, request: Incoming) -> str | None:
        """For a request from a trusted proxy: the nearest hop of X-Forwarded-For that is not one."""
        peer = request.peer
        forwarded = request.header(b"x-forwarded-for")
        if not forwarded:
            return peer
        chain = [p.strip() for p in forwarded.split(",")]
        for hop in reversed(chain):
            try:
                address = ipaddress.ip_address(hop)
            except ValueError:
                return peer
            if not self._is_trusted(address):
                return str(address)
        return chain[0]

    def _tls_fingerprint(self, request: Incoming) -> str | None:
        """The TLS fingerprint the edge passed in `server.tls_fingerprint_header`, for a request from a trusted
        proxy; None when unset, absent or not 1 to 128 printable ASCII characters."""
        if self._tls_header is None:
            return None
        value = request.first_values.get(self._tls_header)
        if value is None or _TLS_FINGERPRINT.fullmatch(value) is None:
            return None
        return value.decode("ascii")

    def _check_headers(self, request: Incoming) -> None:
        size = sum(len(k) + len(v) for k, v in request.raw_headers)
        if size > self.settings.server.max_header_bytes:
            raise Refusal(
                error_response(
                    431,
                    f"Request headers are {size} bytes; the limit is {self.settings.server.max_header_bytes}.",
                    code="headers_too_large",
                ),
                "headers_too_large",
            )

    def _authenticate(self, request: Incoming, event: RequestEvent) -> Principal:
        header = request.header(b"authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refusal(
                error_response(
                    401,
                    "You didn't provide an API key. You need to provide your API key in "
                    "an Authorization header using Bearer auth "
                    "(i.e. Authorization: Bearer YOUR_KEY).",
                    code="missing_api_key",
                ),
                "missing_api_key",
            )
        principal = self.registry.authenticate(token.strip())
        if principal is None:
            raise Refusal(
                error_response(
                    401,
                    "Incorrect API key provided. The key is unknown, revoked or expired.",
                    code="invalid_api_key",
                ),
                "invalid_api_key",
            )
        account = principal.account
        event.key_id, event.account_id, event.org_id, event.tier = (
            principal.key.id,
            account.id,
            account.org_id,
            account.tier,
        )
        if account.status is not AccountStatus.ACTIVE:
            raise Refusal(
                error_response(
                    403,
                    f"This account is {account.status.value}. Reference: {event.request_id}.",
                    type="permission_error",
                    code=f"account_{account.status.value}",
                ),
                f"account_{account.status.value}",
            )
        self._match_intel(token.strip(), event)
        return principal

    def _match_intel(self, api_key: str, event: RequestEvent) -> None:
        """Record the threat-intel indicators the client IP, user agent and key match; refuse the request
        where the policy (`[intel] block_on_match`) says so."""
        found = self.intel.match(event.client_ip, event.user_agent, api_key, event.time) if self.intel else None
        if found is None:
            return
        event.intel_matches = ",".join(found.labels)
        for kind in found.kinds:
            counter = self._intel_counters.get(kind)
            if counter is None:
                counter = self._intel_counters[kind] = self.metrics.intel_matches.labels(kind)
            counter.inc()
        if found.block:
            raise Refusal(
                error_response(
                    403,
                    f"Access has been blocked for this client. If you believe this is a mistake, contact "
                    f"support with reference {event.request_id}.",
                    type="permission_error",
                    code="blocked",
                ),
                "intel_blocked",
            )

    async def _read_body(self, request: Incoming) -> bytes:
        limit = self.settings.server.max_body_bytes
        declared = request.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _body_too_large(limit)
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in request.body_chunks():
                size += len(chunk)
                if size > limit:
                    raise _body_too_large(limit)
                parts.append(chunk)
        except ClientGone as exc:
            raise Refusal(
                error_response(400, "The client disconnected while sending the body.", code="client_disconnected"),
                "client_disconnected",
            ) from exc
        return b"".join(parts)

    def _describe(self, endpoint: Endpoint, body: bytes, event: RequestEvent) -> req.RequestInfo | None:
        if endpoint.describe is None:
            return None
        try:
            info = endpoint.describe(body, self.settings.server.default_max_tokens)
        except req.InvalidRequest as exc:
            raise Refusal(
                error_response(400, exc.message, param=exc.param, code="invalid_request"), "invalid_request"
            ) from exc
        event.model = info.model
        event.stream = info.stream
        event.temperature, event.top_p, event.max_tokens, event.n = (
            info.temperature,
            info.top_p,
            info.max_tokens,
            info.n,
        )
        event.logprobs, event.top_logprobs = info.logprobs, info.top_logprobs
        event.tools_count, event.tools_schema_hash = info.tools_count, info.tools_schema_hash
        event.response_format = info.response_format
        event.message_count, event.prompt_chars = info.message_count, info.prompt_chars
        event.prompt_tokens_est, event.system_prompt_hash = info.prompt_tokens_est, info.system_prompt_hash
        if self.settings.events.keep_prompt_text:
            event.prompt_text = info.prompt_text[: self.settings.events.prompt_text_max_chars]
        if info.system_text or info.user_text:
            self._content[event.request_id] = PromptContent(info.system_text, info.user_text, info.tools_count)
        return info

    def _decide(self, principal: Principal, event: RequestEvent) -> Resolution:
        resolution = resolve(
            self.decisions.match(key_id=principal.key.id, account_id=principal.account.id, ip=event.client_ip)
        )
        applied = resolution.applied
        if applied is None:
            return resolution
        event.decision_type, event.decision_id = applied.type.value, applied.id
        self.metrics.decisions_applied.labels(applied.type.value).inc()
        refusal = resolution.refusal
        if refusal is not None and refusal.type is DecisionType.BLOCK:
            raise Refusal(
                error_response(
                    403,
                    f"Access has been blocked for this {refusal.scope.value}. If you "
                    f"believe this is a mistake, contact support with reference "
                    f"{event.request_id}.",
                    type="permission_error",
                    code="blocked",
                ),
                "blocked",
            )
        if refusal is not None:
            url = self.settings.server.verification_url
            raise Refusal(
                error_response(
                    403,
                    f"Additional verification is required to continue using this API. "
                    f"Complete it at {url} (reference {event.request_id}).",
                    type="permission_error",
                    code="verification_required",
                    headers={"x-verification-url": url},
                ),
                "verification_required",
            )
        return resolution

    def _prepare_controls(
        self,
        principal: Principal,
        info: req.RequestInfo | None,
        body: bytes,
        resolution: Resolution,
        event: RequestEvent,
    ) -> Prepared | None:
        if info is None:
            return None
        account = principal.account
        try:
            return self.controls.prepare(
                event.endpoint, account.id, account.tier, info, body, resolution.degrade, event
            )
        except ControlRefusal as exc:
            raise Refusal(
                error_response(
                    exc.status,
                    exc.message,
                    type="permission_error" if exc.status == 403 else "invalid_request_error",
                    code=exc.code,
                    param=exc.param,
                ),
                f"{exc.code}:{exc.param}",
            ) from exc

    async def _admit(
        self, principal: Principal, info: req.RequestInfo | None, resolution: Resolution, event: RequestEvent
    ) -> Admission:
        tokens = info.reserved_tokens if info is not None else 0
        throttles = [(d.id, d.limits or LimitSet()) for d in resolution.throttles]
        groups = self.decisions.groups_of(principal.account.id)
        request_quotas, token_quotas, slots = self.limit_policy.limits(principal, event.client_ip, groups, throttles)
        quotas = request_quotas + charged(token_quotas, tokens)
        try:
            verdict = await self.limiter.acquire(quotas, slots, event.request_id)
        except LimiterUnavailable as exc:
            policy = self.settings.backend.on_redis_error
            self.metrics.limiter_errors.labels(policy).inc()
            log.warning("limiter unavailable, failing %s: %s", policy, exc, extra={"request_id": event.request_id})
            if policy == "closed":
                raise Refusal(
                    error_response(
                        503,
                        "Rate limiting is temporarily unavailable; please retry.",
                        type="server_error",
                        code="limiter_unavailable",
                        headers={"retry-after": "1"},
                    ),
                    "limiter_unavailable",
                ) from exc
            return Admission(None, [], 0)
        if not verdict.allowed:
            self.metrics.limiter_denials.labels(verdict.denied_by or "").inc()
            raise Refusal(self._rate_limited(verdict, tokens), f"rate_limited:{verdict.denied_by}")
        return Admission(verdict, token_quotas, tokens)

    def _rate_limited(self, verdict: Verdict, tokens: int) -> Response:
        denied = verdict.denied_by or ""
        kind, _, scope = denied.partition(":")
        headers = ratelimit_headers(verdict.states)
        headers["retry-after"] = retry_after_header(verdict.retry_after)
        if kind == "concurrency":
            message = f"Too many concurrent requests for this {scope}. Please retry when a request finishes."
        elif verdict.retry_after == float("inf"):
            state = verdict.states[0]
            message = (
                f"Request too large for {kind} on {scope}: Limit {state.limit}, Requested {tokens}. "
                "Reduce the prompt or max_tokens."
            )
        else:
            state = verdict.states[0]
            message = (
                f"Rate limit reached for {kind} on {scope}: Limit {state.limit}, Remaining "
                f"{state.remaining}. Please try again in {format_duration(verdict.retry_after)}."
            )
        return error_response(
            429,
            message,
            type="tokens" if kind in ("tpm", "tpd") else "requests",
            code="rate_limit_exceeded",
            headers=headers,
        )

    async def _settle(self, admission: Admission, used_tokens: int | None) -> None:
        """Reconcile the reserved tokens with those used (None: unknown, keep the reservation) and
        release the concurrency slots."""
        if admission.verdict is None:
            return
        try:
            delta = 0 if used_tokens is None else used_tokens - admission.reserved_tokens
            if delta and admission.token_quotas:
                await self.limiter.adjust(charged(admission.token_quotas, delta))
            if admission.verdict.slots:
                await self.limiter.release(admission.verdict.slots, admission.verdict.lease or "")
        except LimiterUnavailable as exc:
            self.metrics.limiter_errors.labels("settle").inc()
            log.warning("could not settle limits: %s", exc)

    def _finish(self, event: RequestEvent, clock: float) -> None:
        elapsed = time.perf_counter() - clock
        event.latency_ms = elapsed * 1000
        outcome = event.refusal_reason.split(":")[0] if event.refusal_reason else "ok"
        endpoint = event.endpoint if event.endpoint in ENDPOINTS else "other"
        counter = self._request_counters.get((endpoint, outcome))
        if counter is None:
            counter = self._request_counters[(endpoint, outcome)] = self.metrics.requests.labels(endpoint, outcome)
        counter.inc()
        histogram = self._latency_histograms.get(endpoint)
        if histogram is None:
            histogram = self._latency_histograms[endpoint] = self.metrics.latency.labels(endpoint)
        histogram.observe(elapsed)
        self.metrics.events.inc()
        self.events.append(event, self._content.pop(event.request_id, None))

    # -- forwarding -------------------------------------------------------------------------------------
    async def _forward(
        self,
        request: Incoming,
        body: bytes,
        info: req.RequestInfo | None,
        event: RequestEvent,
        admission: Admission,
        prepared: Prepared | None,
    ) -> Response:
        assert self._session is not None, "gateway not started"
        url = self._upstream + event.endpoint.removeprefix(self._upstream_path_prefix)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.raw_headers if k in _FORWARDED_HEADERS}
        if self.settings.server.upstream_api_key:
            headers["authorization"] = f"Bearer {self.settings.server.upstream_api_key}"
        strip_usage = False
        if info is not None and info.stream and info.supports_stream_usage and not info.wants_usage_in_stream:
            body = _with_stream_usage(body)
            strip_usage = True
        rate_headers = ratelimit_headers(admission.verdict.states) if admission.verdict else {}
        sent = time.perf_counter()
        try:
            upstream = await self._session.request(request.method, url, data=body or None, headers=headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _upstream_failure(exc, "did not answer in time", f"is unreachable ({type(exc).__name__})") from exc
        event.upstream_latency_ms = (time.perf_counter() - sent) * 1000
        histogram = self._upstream_histograms.get(event.endpoint)
        if histogram is None:
            histogram = self._upstream_histograms[event.endpoint] = self.metrics.upstream_latency.labels(event.endpoint)
        histogram.observe(event.upstream_latency_ms / 1000)
        streaming = upstream.status == 200 and upstream.content_type == "text/event-stream"
        if not streaming:
            return await self._relay_body(upstream, event, rate_headers, prepared)
        return RelayResponse(
            self._relay_stream(upstream, event, admission, strip_usage, event.time, prepared),
            status_code=200,
            media_type="text/event-stream",
            headers={**rate_headers, "cache-control": "no-cache"},
        )

    async def _relay_body(
        self,
        upstream: aiohttp.ClientResponse,
        event: RequestEvent,
        rate_headers: dict[str, str],
        prepared: Prepared | None,
    ) -> Response:
        try:
            data = await upstream.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _upstream_failure(exc, "did not finish its answer in time", "broke off its answer") from exc
        finally:
            upstream.release()
        if upstream.status >= 500:
            raise Refusal(
                error_response(
                    502,
                    f"The upstream model server failed (HTTP {upstream.status}).",
                    type="server_error",
                    code="upstream_error",
                    headers=rate_headers,
                ),
                "upstream_error",
            )
        if upstream.status == 200:
            accounting = Accounting()
            accounting.read_body(data)
            event.prompt_tokens, event.completion_tokens = (
                accounting.prompt_tokens,
                accounting.completion_tokens,
            )
            event.finish_reason = accounting.finish_reason
            if prepared is not None:
                data = await prepared.answer(data)
        else:
            event.refusal_reason = f"upstream_status_{upstream.status}"
        content_type = upstream.headers.get("content-type", "application/json")
        return Response(data, status_code=upstream.status, headers={**rate_headers, "content-type": content_type})

    async def _relay_stream(
        self,
        upstream: aiohttp.ClientResponse,
        event: RequestEvent,
        admission: Admission,
        strip_usage: bool,
        started: float,
        prepared: Prepared | None,
    ) -> AsyncIterator[bytes]:
        accounting = Accounting()
        rewrite = prepared.stream() if prepared is not None else None
        clock = time.perf_counter() - (time.time() - started)
        completed = False
        try:
            chunks = upstream.content.iter_any()
            async for chunk in relay_sse(chunks, accounting, strip_usage=strip_usage, rewrite=rewrite):
                yield chunk
            completed = True
        except (TimeoutError, aiohttp.ClientError) as exc:
            event.refusal_reason = "upstream_stream_broken"
            log.warning("upstream stream broke off: %s", exc, extra={"request_id": event.request_id})
        finally:
            if not completed and event.refusal_reason is None:
                event.refusal_reason = "client_disconnected"
            with anyio.CancelScope(shield=True):
                if completed:
                    upstream.release()
                else:
                    upstream.close()  # cancels the upstream's generation
                event.status = 200
                event.prompt_tokens, event.completion_tokens = (
                    accounting.prompt_tokens,
                    accounting.completion_tokens,
                )
                event.finish_reason = accounting.finish_reason
                await self._settle(admission, accounting.total)
                self._finish(event, clock)

    async def _complete(self, body: bytes) -> bytes | None:
        """A side request to the upstream's chat completions (reasoning summaries): its answer, or None."""
        assert self._session is not None, "gateway not started"
        headers = {"content-type": "application/json"}
        if self.settings.server.upstream_api_key:
            headers["authorization"] = f"Bearer {self.settings.server.upstream_api_key}"
        timeout = aiohttp.ClientTimeout(total=self.settings.reasoning.summary_timeout)
        try:
            async with self._session.post(
                self._upstream + "/chat/completions", data=body, headers=headers, timeout=timeout
            ) as response:
                if response.status == 200:
                    return await response.read()
                log.warning("summarizer answered HTTP %s", response.status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("summarizer failed: %s", type(exc).__name__)
        return None


def _upstream_failure(exc: BaseException, timed_out: str, failed: str) -> Refusal:
    """504 for a timeout, 502 for any other failure to reach or read the upstream."""
    if isinstance(exc, TimeoutError):
        return Refusal(
            error_response(
                504, f"The upstream model server {timed_out}.", type="server_error", code="upstream_timeout"
            ),
            "upstream_timeout",
        )
    return Refusal(
        error_response(502, f"The upstream model server {failed}.", type="server_error", code="upstream_unavailable"),
        "upstream_unavailable",
    )


def _body_too_large(limit: int) -> Refusal:
    return Refusal(
        error_response(413, f"The request body exceeds the limit of {limit} bytes.", code="request_too_large"),
        "request_too_large",
    )


def _reported_tokens(event: RequestEvent) -> int | None:
    if event.prompt_tokens is None and event.completion_tokens is None:
        return None
    return (event.prompt_tokens or 0) + (event.completion_tokens or 0)


def _with_stream_usage(body: bytes) -> bytes:
    """The body with `stream_options.include_usage` set, so token limits can be reconciled."""
    data = msgspec.json.decode(body)
    options = data.get("stream_options") or {}
    data["stream_options"] = {**options, "include_usage": True}
    return msgspec.json.encode(data)
