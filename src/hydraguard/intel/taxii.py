"""A read-only TAXII 2.1 server for hydraguard's collections (exported campaign bundles).

Serves discovery, the API root, the collection list, one collection and its objects (with `added_after`,
`limit`/`next` pagination and the X-TAXII-Date-Added-First/Last headers), in the TAXII media type.
Writes (POST) are not offered: every collection is `can_write: false`.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import stix2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
MAX_PAGE = 1_000


def taxii_timestamp(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_timestamp(text: str) -> float:
    moment = dt.datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


Entry = tuple[float, dict[str, Any]]  # (date added, STIX object)


class CollectionSource(Protocol):
    """What the server needs of a collection: its description, and its objects in the order they were added."""

    @property
    def id(self) -> str: ...

    def info(self) -> dict[str, Any]: ...

    def page(self, added_after: float | None, start: int, limit: int) -> tuple[list[Entry], bool]: ...


def collection_info(collection_id: str, title: str, description: str) -> dict[str, Any]:
    return {
        "id": collection_id,
        "title": title,
        "description": description,
        "can_read": True,
        "can_write": False,
        "media_types": [STIX_MEDIA_TYPE],
    }


@dataclass
class TaxiiCollection:
    """A collection kept in memory: bundles published to it with `add_bundle`."""

    id: str
    title: str
    description: str = ""
    _entries: list[Entry] = field(default_factory=list)  # (date added, object), in order
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_bundle(self, bundle: stix2.Bundle | dict[str, Any], *, now: float | None = None) -> None:
        """Publish a bundle's objects; a later version of an object is added after the earlier one."""
        objects = msgspec.json.decode(bundle.serialize()) if isinstance(bundle, stix2.Bundle) else bundle
        added = time.time() if now is None else now
        with self._lock:
            if self._entries:  # date_added only moves forward, so `added_after` bookmarks stay exact
                added = max(added, self._entries[-1][0] + 1e-6)
            self._entries += [(added, obj) for obj in objects["objects"]]

    def page(self, added_after: float | None, start: int, limit: int) -> tuple[list[Entry], bool]:
        with self._lock:
            entries = [e for e in self._entries if added_after is None or e[0] > added_after]
        return entries[start : start + limit], start + limit < len(entries)

    def info(self) -> dict[str, Any]:
        return collection_info(self.id, self.title, self.description)


def _taxii(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status, headers=headers, media_type=TAXII_MEDIA_TYPE)


def _error(status: int, title: str, description: str = "") -> Response:
    return _taxii({"title": title, "description": description, "http_status": str(status)}, status)


def taxii_app(
    collections: Mapping[str, CollectionSource],
    *,
    title: str = "hydraguard",
    api_root: str = "hydraguard",
    discovery_path: str = "/taxii2/",
) -> Starlette:
    """The TAXII server: discovery at `discovery_path`, one API root at /{api_root}/. Mounted under /taxii2
    (the admin API), give `discovery_path="/"`: discovery is then /taxii2/ and the root /taxii2/{api_root}/."""

    def acceptable(request: Request) -> bool:
        accept = request.headers.get("accept", TAXII_MEDIA_TYPE).replace(" ", "")
        return any(part.startswith(("application/taxii+json", "*/*", "application/*")) for part in accept.split(","))

    def collection_of(request: Request) -> CollectionSource | None:
        return collections.get(request.path_params["collection"])

    async def discovery(request: Request) -> Response:
        if not acceptable(request):
            return _error(406, "Not Acceptable", f"this server speaks {TAXII_MEDIA_TYPE}")
        # under a Mount, root_path ends with the mount's own path (base_url would leave it out)
        root = str(request.url.replace(path=request.scope.get("root_path", "") + f"/{api_root}/", query=""))
        return _taxii({"title": title, "default": root, "api_roots": [root]})

    async def root_info(request: Request) -> Response:
        if not acceptable(request):
            return _error(406, "Not Acceptable", f"this server speaks {TAXII_MEDIA_TYPE}")
        return _taxii({"title": title, "versions": [TAXII_MEDIA_TYPE], "max_content_length": 0})

    async def list_collections(request: Request) -> Response:
        if not acceptable(request):
            return _error(406, "Not Acceptable", f"this server speaks {TAXII_MEDIA_TYPE}")
        return _taxii({"collections": [c.info() for c in collections.values()]})

    async def one_collection(request: Request) -> Response:
        collection = collection_of(request)
        if collection is None:
            return _error(404, "Collection not found")
        return _taxii(collection.info())

    async def objects(request: Request) -> Response:
        collection = collection_of(request)
        if collection is None:
            return _error(404, "Collection not found")
        if not acceptable(request):
            return _error(406, "Not Acceptable", f"this server speaks {TAXII_MEDIA_TYPE}")
        query = request.query_params
        try:
            added_after = _parse_timestamp(query["added_after"]) if "added_after" in query else None
            limit = min(int(query.get("limit") or MAX_PAGE), MAX_PAGE)
            start = int(query.get("next") or 0)
            if limit < 1 or start < 0:
                raise ValueError("limit must be positive and next is an offset this server gave")
        except ValueError as exc:
            return _error(400, "Bad Request", str(exc))
        entries, more = collection.page(added_after, start, limit)
        body: dict[str, Any] = {"more": more, "objects": [obj for _, obj in entries]}
        if more:
            body["next"] = str(start + limit)
        headers = (
            {
                "X-TAXII-Date-Added-First": taxii_timestamp(entries[0][0]),
                "X-TAXII-Date-Added-Last": taxii_timestamp(entries[-1][0]),
            }
            if entries
            else {}
        )
        return _taxii(body, headers=headers)

    return Starlette(
        routes=[
            Route(discovery_path, discovery),
            Route(f"/{api_root}/", root_info),
            Route(f"/{api_root}/collections/", list_collections),
            Route(f"/{api_root}/collections/{{collection}}/", one_collection),
            Route(f"/{api_root}/collections/{{collection}}/objects/", objects),
        ]
    )
