"""`Incoming`: what the request path reads of an ASGI request (headers in one pass, the body on demand)."""

from __future__ import annotations

from typing import Any

import pytest

from hydraguard.gateway.incoming import ClientGone, Incoming


def scope(headers: list[tuple[bytes, bytes]], client: tuple[str, int] | None = ("192.0.2.4", 5123)) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": headers, "client": client}


def receiving(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


async def body(request: Incoming) -> list[bytes]:
    return [chunk async for chunk in request.body_chunks()]


def test_headers_are_read_once_with_the_first_value_of_each_name() -> None:
    raw = [(b"authorization", b"Bearer one"), (b"x-forwarded-for", b"a"), (b"authorization", b"Bearer two")]
    request = Incoming.from_scope(scope(raw), receiving())
    assert (request.method, request.path, request.peer) == ("POST", "/v1/embeddings", "192.0.2.4")
    assert request.header(b"authorization") == "Bearer one"  # as Starlette's Headers.get answers
    assert request.header(b"user-agent") is None
    assert request.raw_headers == raw  # repeats kept, in order
    assert request.header(b"x-forwarded-for") == "a"


def test_latin_1_header_values_and_no_client() -> None:
    request = Incoming.from_scope(scope([(b"user-agent", "café".encode("latin-1"))], client=None), receiving())
    assert request.header(b"user-agent") == "café"
    assert request.peer is None


async def test_the_body_arrives_in_chunks_until_no_more_body() -> None:
    request = Incoming.from_scope(
        scope([]),
        receiving(
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"", "more_body": True},
            {"type": "http.request", "body": b"c"},
        ),
    )
    assert await body(request) == [b"ab", b"c"]


async def test_a_disconnect_before_the_body_ends_is_client_gone() -> None:
    request = Incoming.from_scope(
        scope([]), receiving({"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"})
    )
    with pytest.raises(ClientGone):
        await body(request)
