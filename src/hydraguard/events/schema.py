"""The one `RequestEvent` schema, shared by the gateway, the simulator, detection and the benchmarks.

Every request that reaches the gateway, allowed or refused, produces exactly one event. Fields are
flat scalars so that an event log is a plain columnar table (Arrow in memory, Parquet on export).
The Arrow schema is derived from the struct's annotations, so the two cannot drift apart.

Raw prompt text is *not* recorded unless the operator opts in (`[events] keep_prompt_text`);
`prompt_text` is then truncated and purged after the configured retention period.
"""

from __future__ import annotations

import types
import typing

import msgspec
import pyarrow as pa

SCHEMA_VERSION = 2


class RequestEvent(msgspec.Struct, kw_only=True):
    # identity and transport
    time: float  # unix seconds when the request arrived
    request_id: str
    endpoint: str  # route path, e.g. "/v1/chat/completions"
    method: str = "POST"
    client_ip: str | None = None
    user_agent: str | None = None
    key_id: str | None = None
    account_id: str | None = None
    org_id: str | None = None
    tier: str | None = None

    # request content (no raw text unless opted in)
    model: str | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools_count: int = 0
    tools_schema_hash: str | None = None
    response_format: str | None = None
    message_count: int = 0
    prompt_chars: int = 0
    prompt_tokens_est: int = 0
    system_prompt_hash: str | None = None
    prompt_text: str | None = None
    prompt_ref: str | None = None  # simulated traffic: a content hash of the prompt (text by reference)

    # request fingerprints: filled by the detection layer (off the request path)
    template_hash: str | None = None
    template_signature: str | None = None
    reasoning_extraction_score: float | None = None
    capability_area: str | None = None
    sampling_fingerprint: str | None = None
    client_fingerprint: str | None = None
    tls_fingerprint: str | None = None  # recorded by the gateway: from `server.tls_fingerprint_header`

    # threat intelligence and AI-specific controls, recorded by the gateway
    intel_matches: str | None = None  # comma-separated "kind:indicator_id" of the indicators that matched
    controls: str | None = None  # comma-separated controls applied, e.g. "reasoning:sealed,clamp:max_tokens"

    # outcome
    status: int = 0
    refusal_reason: str | None = None  # e.g. "rate_limited:tpm:account", "invalid_request", "blocked"
    decision_type: str | None = None
    decision_id: str | None = None
    prompt_tokens: int | None = None  # as reported by the upstream
    completion_tokens: int | None = None
    finish_reason: str | None = None
    latency_ms: float = 0.0
    upstream_latency_ms: float | None = None


_ARROW_TYPES: dict[type, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
}


def _arrow_type(annotation: object) -> pa.DataType:
    args = [a for a in typing.get_args(annotation) if a is not types.NoneType]
    base = args[0] if args else annotation
    return _ARROW_TYPES[base]  # type: ignore[index]


def _arrow_schema() -> pa.Schema:
    hints = typing.get_type_hints(RequestEvent)
    fields = [pa.field(name, _arrow_type(hints[name])) for name in RequestEvent.__struct_fields__]
    return pa.schema(fields, metadata={b"hydraguard.schema_version": str(SCHEMA_VERSION).encode()})


ARROW_SCHEMA: pa.Schema = _arrow_schema()
FIELD_NAMES: tuple[str, ...] = RequestEvent.__struct_fields__


def events_to_table(events: typing.Sequence[RequestEvent]) -> pa.Table:
    columns = [[getattr(e, name) for e in events] for name in FIELD_NAMES]
    return pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, ARROW_SCHEMA, strict=True)],
        schema=ARROW_SCHEMA,
    )


def table_to_events(table: pa.Table) -> list[RequestEvent]:
    return [RequestEvent(**row) for row in table.to_pylist()]
