"""An incoming ASGI request as the request path reads it: its headers looked at once, its body on demand.

Starlette's `Request` decodes and scans the header list again for every header asked for; the request path
asks for a handful on every request, so this takes the first value of each header in one pass instead.
Header names arrive lowercased (ASGI servers lowercase them; Starlette's `Headers` relies on that too).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


@dataclass(slots=True)
class Incoming:
    method: str
    path: str
    peer: str | None  # the address of the connection's other end
    raw_headers: list[tuple[bytes, bytes]]  # in the order received, repeats included
    first_values: dict[bytes, bytes]  # the first value of each header name
    receive: Receive

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Incoming:
        raw = list(scope["headers"])
        client: Any = scope.get("client")
        return cls(scope["method"], scope["path"], client[0] if client else None, raw, dict(reversed(raw)), receive)

    def header(self, name: bytes) -> str | None:
        value = self.first_values.get(name)
        return None if value is None else value.decode("latin-1")

    async def body_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (ClientGone when the client disconnects first)."""
        while True:
            message = await self.receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return
            elif message["type"] == "http.disconnect":
                raise ClientGone
