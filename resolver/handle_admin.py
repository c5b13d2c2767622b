"""Handle administration requests (opcodes 100-105, 300-302, LOGIN_ID_SYSTEM) turned into
registry calls, and the registry's typed results turned back into Handle message bodies.

Who the request acts as is decided before this (handle_service.py); here it is only
translated: the opcode and flags pick the registry operation, and a result becomes an
empty body, the minted handle, a list, or an error message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .codec import (
    CreateHandleResponse,
    Empty,
    ErrorResponse,
    ListResponse,
    Message,
    OpFlag,
    ResponseCode,
)
from .codec import bodies as b

if TYPE_CHECKING:
    from idnode.registry.auth import Identity
    from idnode.registry.results import Listing, WriteResult
    from idnode.registry.service import RegistryService

Answer = tuple[int, b.Body]


def written(result: WriteResult, *, minted: bool = False) -> Answer:
    """A write's answer: empty, or for a mint the handle minted (CreateHandleResponse)."""
    if not result.ok:
        return result.code, ErrorResponse(result.message)
    return result.code, CreateHandleResponse(result.handle) if minted else Empty()


def listed(result: Listing) -> Answer:
    if not result.ok:
        return result.code, ErrorResponse(result.message)
    return result.code, ListResponse(result.handles)


async def perform(registry: RegistryService, m: Message, who: Identity) -> Answer:
    """Carry out one authenticated administration request as ``who``."""
    body = m.body
    if isinstance(body, b.CreateHandleRequest):
        mint = m.has(OpFlag.MINT)
        r = await registry.create(
            body.handle, body.values, who, overwrite=m.has(OpFlag.OVRW), mint=mint
        )
        return written(r, minted=mint)
    if isinstance(body, b.DeleteHandleRequest):
        return written(await registry.delete(body.handle, who))
    if isinstance(body, b.AddValueRequest):
        r = await registry.add_values(body.handle, body.values, who, overwrite=m.has(OpFlag.OVRW))
        return written(r)
    if isinstance(body, b.ModifyValueRequest):
        return written(await registry.modify_values(body.handle, body.values, who))
    if isinstance(body, b.RemoveValueRequest):
        return written(await registry.remove_values(body.handle, body.indexes, who))
    if isinstance(body, b.ListHandlesRequest):
        return listed(await registry.list_handles(body.handle, who))
    if isinstance(body, b.HomeNaRequest):
        return written(await registry.home(body.handle, who))
    if isinstance(body, b.UnhomeNaRequest):
        return written(await registry.unhome(body.handle, who))
    if isinstance(body, b.ListHomedNasRequest):
        return listed(await registry.list_homed(who))
    return ResponseCode.OPERATION_NOT_SUPPORTED, ErrorResponse("operation not supported")


def login_target(body: b.Body) -> str:
    """The handle a request that failed its login was acting on, for the audit log."""
    if isinstance(body, b.LoginIdSystemRequest):
        return body.user_handle
    return str(getattr(body, "handle", ""))
