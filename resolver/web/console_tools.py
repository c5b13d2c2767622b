"""The console's tool pages, beside console.py's identifiers: batch upload
(console_batches.py), API keys (console_keys.py), metadata templates
(console_templates.py) and prefix applications (console_applications.py).

Each page calls the same code as its REST endpoint (rest_batches_door.py,
rest_api_keys_door.py, rest_templates_door.py, the registry's prefix applications) with
the signed-in administrator (signin.py), so what a page does a program can do too.
Every state change is a POST carrying the session's CSRF token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .signin import CONSOLE_HEADERS, ConsoleUser, current_user, to_sign_in

if TYPE_CHECKING:
    from idnode.registry.service import RegistryService

    from ..rest_door import RestApi
    from .pages import WebPages


class ToolPage:
    """What every console page shares (the tool pages and console.py's Console): the
    pages' renderer, the REST door, the registry, the signed-in user, the page render."""

    def __init__(self, pages: WebPages, rest: RestApi, registry: RegistryService) -> None:
        self.pages = pages
        self.rest = rest
        self.registry = registry

    async def user(self, request: web.Request) -> ConsoleUser:
        """The signed-in administrator; raises the redirect to the sign-in page."""
        user = await current_user(request)
        if user is None:
            raise _Redirect(to_sign_in(request))
        return user

    def render(
        self,
        request: web.Request,
        template: str,
        user: ConsoleUser,
        *,
        status: int = 200,
        **context: Any,
    ) -> web.Response:
        """A console page: never cached (it names what only this administrator may see)."""
        return self.pages.page(
            request,
            template,
            status=status,
            private=True,
            headers=CONSOLE_HEADERS,
            user=user,
            **self.page_context(request),
            **context,
        )

    def page_context(self, request: web.Request) -> dict[str, Any]:
        """What each page of this kind is given beside its own context: here, the path
        (the tool pages' menu marks the page it is on)."""
        return {"here": request.path}


class _Redirect(web.HTTPSeeOther):
    """The sign-in redirect, raised from deep in a handler."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(location=response.headers["Location"])
        self.headers["Cache-Control"] = "no-store"


def add_tool_routes(
    app: web.Application, pages: WebPages, rest: RestApi, registry: RegistryService
) -> None:
    """Every tool page's routes (before ``WebPages.add_routes``, as the console's)."""
    from .console_applications import ApplicationsPage
    from .console_batches import BatchesPage
    from .console_keys import KeysPage
    from .console_templates import TemplatesPage

    for page in (BatchesPage, KeysPage, TemplatesPage, ApplicationsPage):
        page(pages, rest, registry).add_routes(app)
