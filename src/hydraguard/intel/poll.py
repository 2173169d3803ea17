"""Polling a TAXII 2.1 collection (taxii2-client): every page since the last bookmark, applied at once.

The bookmark is the server's X-TAXII-Date-Added-Last of the last page received; it is stored with the
indicators in the same transaction, so a failed poll neither loses nor half-applies anything, and the
next poll asks for `added_after` that point.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import requests
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection, as_pages

from hydraguard.intel.feeds import FeedError, FeedLimits, ParsedFeed, parse_stix_objects
from hydraguard.intel.store import ApplyResult, IntelStore


@dataclass(frozen=True)
class PollResult:
    feed: ParsedFeed
    applied: ApplyResult
    bookmark: str | None
    pages: int


@dataclass
class _Received:
    bytes: int = 0
    last_added: str | None = None


def collection_url(api_root: str, collection_id: str) -> str:
    return f"{api_root.rstrip('/')}/collections/{collection_id}/"


def poll_taxii(
    store: IntelStore,
    api_root: str,
    collection_id: str,
    *,
    user: str | None = None,
    password: str | None = None,
    limits: FeedLimits | None = None,
    per_request: int = 1_000,
    timeout: float = 30.0,
    now: float | None = None,
) -> PollResult:
    """Fetch what the collection added since the stored bookmark and apply it; FeedError (nothing applied)
    if the server cannot be reached, answers wrongly, sends too much, or sends invalid STIX."""
    limits = limits or FeedLimits()
    url = collection_url(api_root, collection_id)
    feed = f"taxii:{url}"
    bookmark = store.bookmark(feed)
    received = _Received()

    def account(response: requests.Response, *args: object, **kwargs: object) -> None:
        received.bytes += len(response.content)
        received.last_added = response.headers.get("X-TAXII-Date-Added-Last") or received.last_added

    collection = Collection(url, user=user, password=password)
    session = collection._conn.session
    session.request = functools.partial(session.request, timeout=timeout)  # type: ignore[method-assign]
    session.hooks["response"].append(account)
    objects: list[object] = []
    pages = 0
    try:
        for envelope in as_pages(collection.get_objects, per_request=per_request, added_after=bookmark):
            pages += 1
            objects += envelope.get("objects", [])
            if received.bytes > limits.max_bytes:
                raise FeedError(feed, f"over {limits.max_bytes} bytes received", parsed=0, problems=[], total=0)
            if len(objects) > limits.max_indicators:
                raise FeedError(
                    feed, f"more than {limits.max_indicators} objects received", parsed=0, problems=[], total=0
                )
    except (requests.RequestException, TAXIIServiceException, ValueError) as exc:
        raise FeedError(
            feed, f"TAXII server failed after {pages} pages: {_reason(exc)}", parsed=0, problems=[], total=0
        ) from None
    finally:
        collection.close()
    parsed = parse_stix_objects(objects, source=feed, limits=limits, now=now)
    new_bookmark = received.last_added or bookmark
    applied = store.apply(parsed.indicators, feed=feed, bookmark=new_bookmark)
    return PollResult(parsed, applied, new_bookmark, pages)


def _reason(exc: Exception) -> str:
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
