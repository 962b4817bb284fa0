"""Routes of the chat page: `GET /` (index.html) and `GET /ui/{name}` (its scripts, styles, vendored libraries).

Every file under `static/` is read once when the app is built and kept in a table keyed by its
relative name; a request only ever looks a name up in that table, so no request path reaches the
file system (`..`, encoded slashes, absolute paths and symlinks out of the folder cannot name
anything). Unknown names are the usual 404 envelope. The page and its assets need no API key: the
middleware guards only the API paths, and the page asks for the key on the first 401.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router

from awqserve.entrypoints.openai.errors import APIError

STATIC_DIR = Path(__file__).resolve().with_name("static")
INDEX = "index.html"
VENDOR_PREFIX = "vendor/"

_TEXT = "text/plain; charset=utf-8"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json",
    ".md": _TEXT, ".txt": _TEXT, "": _TEXT,  # "": LICENSE files
}

# Scripts, styles and connections only from this origin; no inline script, no eval, no plugins, not
# framable. Images may also be data:/blob: URLs (markdown from the model cannot load remote images).
CSP = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
    "connect-src 'self'", "font-src 'self'", "manifest-src 'self'", "base-uri 'none'",
    "form-action 'none'", "frame-ancestors 'none'",
])
# Our own files revalidate (cheap 304s, never stale after an upgrade); vendored files live in
# versioned folders, so a name never changes content.
CACHE_OWN = "no-cache"
CACHE_VENDOR = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    """One static file as it is sent."""

    body: bytes
    content_type: str
    etag: str
    cache_control: str


class StaticAssets:
    """The files under `root` with a known content type, read once; `get(name)` is the only way in."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.files: dict[str, Asset] = {}
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            name = path.relative_to(root).as_posix()
            kind = CONTENT_TYPES.get(path.suffix.lower())
            if kind is None or any(part.startswith(".") for part in name.split("/")):
                continue
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            cache = CACHE_VENDOR if name.startswith(VENDOR_PREFIX) else CACHE_OWN
            self.files[name] = Asset(body, kind, etag, cache)
        if INDEX not in self.files:
            raise RuntimeError(f"the chat page is missing: {root / INDEX} (is the package installed with its data?)")

    def get(self, name: str) -> Asset | None:
        return self.files.get(name)

    def respond(self, name: str, request: Request) -> Response:
        asset = self.get(name)
        if asset is None:
            raise APIError(404, f"Unknown page asset: {request.url.path}", code="not_found")
        headers = {"etag": asset.etag, "cache-control": asset.cache_control,
                   "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
        if asset.content_type.startswith("text/html"):
            headers["content-security-policy"] = CSP
        if asset.etag in _etags(request.headers.get("if-none-match")):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.content_type, headers=headers)


def _etags(header: str | None) -> set[str]:
    """The entity tags of an If-None-Match header (weak tags compare equal, as RFC 9110 asks for GET)."""
    if not header:
        return set()
    return {t.strip().removeprefix("W/") for t in header.split(",")}


def add_ui_routes(router: Router, assets: StaticAssets | None = None) -> StaticAssets:
    """`GET /` → the page, `GET /ui/{name}` → its files (HEAD too). Returns the asset table."""
    table = assets or StaticAssets()

    async def page(request: Request) -> Response:
        return table.respond(INDEX, request)

    async def asset(request: Request) -> Response:
        return table.respond(str(request.path_params["name"]), request)

    router.add_route("/", page, methods=["GET"])
    router.add_route("/ui/{name:path}", asset, methods=["GET"])
    return table
