"""What the pages are made of, loaded once per worker: the Jinja2 environment over the
package's templates, and the static files (CSS, icon) held in memory with a content hash.

Static files are served from the node itself (no CDN, no external fonts): the pages link
``/static/<name>?v=<hash>``, so a file can be cached for a year (``immutable``) and a new
release still reaches every browser at once; the ETag answers revalidation with a 304.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
# Versioned URLs change with the content: a year, never revalidated while fresh.
VERSIONED_CACHE = "public, max-age=31536000, immutable"
# Unversioned (someone typed the address): an hour, then revalidated by ETag.
PLAIN_CACHE = "public, max-age=3600"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str  # quoted, as the header carries it


def environment() -> Environment:
    """Autoescaping on for every template: a value's data is whatever an enterprise
    wrote, and must reach the page as text, never as markup."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,  # a misspelt variable is an error in the tests
        trim_blocks=True,
        lstrip_blocks=True,
    )


def load_static() -> dict[str, StaticFile]:
    files = {}
    for path in sorted(STATIC.iterdir()):
        if not path.is_file():
            continue
        body = path.read_bytes()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        digest = hashlib.sha256(body).hexdigest()[:16]
        files[path.name] = StaticFile(body, kind, f'"{digest}"')
    return files


def serve_static(files: dict[str, StaticFile], request: web.Request) -> web.Response:
    f = files.get(request.match_info["name"])
    if f is None:
        raise web.HTTPNotFound(text="no such static file")
    cache = VERSIONED_CACHE if request.query.get("v") == f.etag.strip('"') else PLAIN_CACHE
    headers = {"ETag": f.etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if f.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if f.content_type.startswith("text/") else None
    return web.Response(body=f.body, content_type=f.content_type, charset=charset, headers=headers)
