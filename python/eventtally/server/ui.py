"""The built-in dashboard: ``GET /ui/`` and its assets, and ``GET /`` pointing there.

Guarantees:
- The page is three static files shipped as package data (``eventtally/server/ui/``:
  ``index.html``, ``dashboard.css``, ``dashboard.js``): no CDN, no build step, no charting
  library.  They are read once and served from memory.
- The page holds no secret: it asks for a Read key, keeps it in ``sessionStorage`` and sends it
  as ``x-api-token`` on the ``/api/v1`` endpoints (relative URLs, so the page works unchanged
  behind any HTTP front or a path prefix).  These routes need no key.
- Every answer carries a ``Content-Security-Policy`` that allows only this origin's scripts,
  styles and fetches (no inline script, no framing), ``X-Content-Type-Options: nosniff`` and
  ``Referrer-Policy: no-referrer``.
- Only ``GET`` is routed here, so ``POST /ui`` still reaches an ingest that happens to be called
  ``ui``.  ``GET /`` and ``GET /ui`` answer ``302`` to
  ``ui/`` with a short HTML body naming the page: the only redirects the server sends (the
  ingest and Metrics APIs never redirect).
"""

from __future__ import annotations

import threading
from importlib import resources

__all__ = ["ASSETS", "handles", "respond"]

Response = tuple[int, list[tuple[str, str]], bytes]

#: Served file name → content type.
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}

_SECURITY_HEADERS: list[tuple[str, str]] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    # The files change with the installed version only; revalidating is cheap and avoids a
    # stale script after an upgrade.
    ("Cache-Control", "no-cache"),
]

_POINTER = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>eventtally</title>"
    b'<p>The eventtally dashboard is at <a href="ui/">/ui/</a>. '
    b"The ingest endpoint is <code>POST /{ingest_id}</code> and the Metrics API is under "
    b"<code>/api/v1/</code>.</p></html>\n"
)

_cache: dict[str, bytes] = {}
_cache_lock = threading.Lock()


def _asset(name: str) -> bytes:
    with _cache_lock:
        data = _cache.get(name)
        if data is None:
            data = resources.files("eventtally.server").joinpath("ui", name).read_bytes()
            _cache[name] = data
        return data


def handles(method: str, path: str) -> bool:
    """True for the requests this module answers."""
    if method != "GET":
        return False
    return path in ("/", "/ui") or path.startswith("/ui/")


def respond(path: str) -> Response:
    """The answer to a ``GET`` that :func:`handles` accepted."""
    if path in ("/", "/ui"):
        # A relative target, so a proxy that mounts the server under a prefix keeps working:
        # from "/" and from "/ui" alike, "ui/" resolves to "/ui/".
        headers = [("Location", "ui/"), ("Content-Type", "text/html; charset=utf-8")]
        return 302, [*headers, *_SECURITY_HEADERS], _POINTER
    name = path[len("/ui/") :] or "index.html"
    content_type = ASSETS.get(name)
    if content_type is None:
        return 404, [("Content-Type", "application/json")], b'{"message":"Not found"}'
    return 200, [("Content-Type", content_type), *_SECURITY_HEADERS], _asset(name)
