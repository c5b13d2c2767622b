"""What the pages are made of, loaded once per worker: the Jinja2 environment over the
package's templates, and the static files (CSS, icon) held in memory with a content hash.

A template is compiled once per language: ``environment().get_template("en:record.html")``
is record.html with every ``{{ t("key") }}`` (one constant key, no fields) replaced by
the escaped words at compile time, so a page does not call the translator and escape
the same constant words on every row of every render (issue 17: a four-value record
page made 46 translator calls a render, each through Jinja's Context.call). Words with
fields (``t("record_values", n=...)``) are still looked up as the page renders; a
template asked for without a language (``"record.html"``) looks every word up then.

Static files are served from the node itself (no CDN, no external fonts): the pages link
``/static/<name>?v=<hash>``, so a file can be cached for a year (``immutable``) and a new
release still reaches every browser at once; the ETag answers revalidation with a 304.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from markupsafe import escape

from .i18n import LANGUAGES, Translator

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


# "en:record.html": record.html with its constant words in English.
LANGUAGE_SEP = ":"
# {{ t("key") }} as the lexer gives it: these token types, the name "t", one string.
_CONSTANT_WORD = ("variable_begin", "name", "lparen", "string", "rparen", "variable_end")


def language_of(name: str | None) -> str | None:
    lang, sep, _ = (name or "").partition(LANGUAGE_SEP)
    return lang if sep and lang in LANGUAGES else None


class _Loader(FileSystemLoader):
    """The template files, whatever language a name asks them in."""

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        return super().get_source(environment, template.rpartition(LANGUAGE_SEP)[2])


class _Pages(Environment):
    def join_path(self, template: str, parent: str) -> str:
        """``{% extends %}`` and ``{% include %}`` stay in the parent's language."""
        lang = language_of(parent)
        if lang is None or LANGUAGE_SEP in template:
            return template
        return f"{lang}{LANGUAGE_SEP}{template}"


class ConstantWords(Extension):
    """``{{ t("key") }}`` in a template compiled for a language becomes its words,
    escaped as the autoescaping would escape them when the page renders. Sound
    because no template rebinds ``t`` (tests/unit/test_record_page.py checks) and every
    template is autoescaped."""

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        lang = language_of(stream.name)
        if lang is None:
            yield from stream
            return
        t = Translator(lang)
        tokens = list(stream)
        i = 0
        while i < len(tokens):
            window = tokens[i : i + len(_CONSTANT_WORD)]
            if tuple(w.type for w in window) == _CONSTANT_WORD and window[1].value == "t":
                yield Token(window[0].lineno, "data", str(escape(t(window[3].value))))
                i += len(_CONSTANT_WORD)
            else:
                yield tokens[i]
                i += 1


def environment() -> Environment:
    """Autoescaping on for every template: a value's data is whatever an enterprise
    wrote, and must reach the page as text, never as markup. The templates are the
    package's own and never change under a running node: no reload checks."""
    return _Pages(
        loader=_Loader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,  # a misspelt variable is an error in the tests
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        extensions=[ConstantWords],
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
