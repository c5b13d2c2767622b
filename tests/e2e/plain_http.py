"""Plain HTTP to a node, without following redirects: what the web pages' tests ask
beside the browser (status codes, headers, redirects, JSON)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.e2e.node_process import NodeProcess


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer to look at, not to follow."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def request(
    node: NodeProcess,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body. ``body``: bytes as they are, anything else as JSON
    (with its Content-Type unless ``headers`` says otherwise). ``opener``: one of the
    caller's (cookies, say), which should hold NoRedirect."""
    hdrs = dict(headers or {})
    data: bytes | None = None
    if isinstance(body, bytes):
        data = body
    elif body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(node.http + path, data=data, method=method, headers=hdrs)
    try:
        with (opener or urllib.request.build_opener(NoRedirect)).open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
