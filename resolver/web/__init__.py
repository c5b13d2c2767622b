"""The node's web face on the HTTP port: pages for people, beside the REST API for
programs. A front door like the others: it reads through the resolver core and checks
credentials through the registry service and the REST door's code, never the store.

- ``pages.py`` — ``WebPages``: the routes (``/``, ``/static/...``, ``GET /{handle}``) and
  the resolution page (redirect, record table, ``?auth``, aliases, JSON by negotiation).
- ``values.py`` — handle values as a person reads them (HS_ADMIN, HS_SITE, binary data).
- ``assets.py`` — the Jinja2 environment and the static files, loaded once per worker.
- ``i18n.py`` — the words of the pages in zh-CN (default) and English.
- ``templates/``, ``static/`` — package data, shipped in the wheel.

The console, the dashboard and search build on ``WebPages.page`` (a template rendered in
the reader's language, with the security headers) and ``base.html``.
"""

from __future__ import annotations

from .pages import WebPages

__all__ = ["WebPages"]
