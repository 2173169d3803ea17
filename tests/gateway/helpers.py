"""Small helpers shared by the gateway end-to-end tests: request bodies, error checks, event lookup."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec

USER = [{"role": "user", "content": "Name three colours."}]


def chat_body(model: str = "mock-small", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": USER, **extra}


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def post_chat(gw: Any, key: str | None, body: Any = None, *, path: str = "/chat/completions", **kwargs: Any):
    headers = dict(kwargs.pop("headers", {}))
    kwargs.setdefault("timeout", 10)
    if key is not None:
        headers.update(auth(key))
    if body is None:
        body = chat_body()
    if isinstance(body, bytes):
        return httpx.post(gw.base_url + path, content=body, headers=headers, **kwargs)
    return httpx.post(gw.base_url + path, json=body, headers=headers, **kwargs)


@contextlib.contextmanager
def held_stream(gw: Any, key: str, model: str, max_tokens: int) -> Iterator[tuple[bytes, Iterator[bytes]]]:
    """A chat stream held open after its first chunk: (first chunk, the rest). Leaving the block closes the
    connection, as a client that goes away does."""
    body = msgspec.json.encode(chat_body(model, stream=True, max_tokens=max_tokens))
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", gw.base_url + "/chat/completions", content=body, headers=auth(key)) as response,
    ):
        assert response.status_code == 200
        chunks = response.iter_raw()  # kept referenced: a dropped iterator closes the stream
        yield next(chunks), chunks


def assert_openai_error(
    response: httpx.Response,
    status: int,
    *,
    code: str | None = None,
    type: str | None = None,
    param: Any = ...,  # ... (the default): not checked
) -> dict[str, Any]:
    """The response is `status` with an OpenAI-format error body; returns the `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    assert isinstance(error["type"], str) and error["type"]
    if code is not None:
        assert error["code"] == code, error
    if type is not None:
        assert error["type"] == type, error
    if param is not ...:
        assert error["param"] == param, error
    return error


def events_for(gw: Any, response: httpx.Response) -> list[Any]:
    """Every event recorded for the request that got `response` (by its x-request-id)."""
    request_id = response.headers["x-request-id"]
    return [e for e in gw.events() if e.request_id == request_id]


def one_event(gw: Any, response: httpx.Response) -> Any:
    found = events_for(gw, response)
    assert len(found) == 1, f"expected exactly one event for {response.headers['x-request-id']}, got {found}"
    return found[0]


def wait_for(predicate: Callable[[], Any], *, timeout: float = 3.0, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy (returning it), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
