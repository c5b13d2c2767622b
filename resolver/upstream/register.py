"""Registering a prefix at the node above: its ``0.NA/<prefix>`` there gets the HS_SITE of
the node that serves it, written as an authenticated Handle client (CREATE_HANDLE,
ADD_VALUE or MODIFY_VALUE) only when it is missing or changed.

``idnode register-upward`` runs it for the prefixes a node homes; the node runs it for a
prefix an operator approved (registry/prefix_applications.py), in a thread: the client
is blocking. ``fetch_site`` asks a server for its HS_SITE (GET_SITE_INFO) within an
overall deadline: for ``idnode prefix apply --site-from`` (client side, in the CLI) and
in a thread; the node's REST API never fetches a site from an address a caller names.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idnode.registry.auth import Identity
from idnode.registry.bootstrap import site_update

from ..client import AdminClient, ClientError, parse_server
from ..codec import (
    AddValueRequest,
    CreateHandleRequest,
    FrameBuffer,
    Message,
    ModifyValueRequest,
    OpCode,
    OpFlag,
    ProtocolError,
    ResolutionResponse,
    ResponseCode,
    SiteInfo,
    decode,
    decode_values,
    encode,
    encode_values,
)
from ..codec.bodies import GetSiteInfoRequest, ReferralResponse, SiteInfoResponse
from ..codec.codes import rc_name
from .sites import sites_from_values


class UpwardRefused(ClientError):
    """The node above answered, and not with success."""


def register_one(
    client: AdminClient, prefix: str, site: SiteInfo, own: SiteInfo | None = None
) -> str:
    """Write ``site`` into ``0.NA/<prefix>`` at the node above when missing or changed;
    what was done, for people. ``own`` is this node's site (default ``site``): when the
    node above already delegates an ancestor of ``prefix`` to it, nothing is written.
    Raises UpwardRefused on a refusal, ClientError when the node above does not answer."""
    handle = f"0.NA/{prefix}"
    got = client.resolve(handle)
    if got.response_code == ResponseCode.SUCCESS and isinstance(got.body, ResolutionResponse):
        before = encode_values(got.body.values)
        indexes = {v.index for v in got.body.values}
    elif got.response_code == ResponseCode.HANDLE_NOT_FOUND:
        before, indexes = None, set()
    elif through := _covered_by_us(got, own or site):
        # The node above delegates an ancestor prefix to this very node (its record
        # names our servers): clients already reach ``prefix`` here through that
        # record, and the node above would never serve a record of its own for it.
        return f"{handle}: reachable through {through} at the node above (names this node)"
    else:
        raise UpwardRefused(
            f"{handle} at {client.host}:{client.port}: {rc_name(got.response_code)}"
        )
    after = site_update(before, site)
    if after is None:
        return f"{handle}: HS_SITE up to date"
    old = {v.index: v for v in (decode_values(before) if before is not None else ())}
    (fresh,) = [v for v in decode_values(after) if old.get(v.index) != v]  # the HS_SITE
    if before is None:
        body: Any = CreateHandleRequest(handle, (fresh,))
        op, did = OpCode.CREATE_HANDLE, "created with this node's HS_SITE"
    elif fresh.index in indexes:
        body = ModifyValueRequest(handle, (fresh,))
        op, did = OpCode.MODIFY_VALUE, "HS_SITE updated"
    else:
        body = AddValueRequest(handle, (fresh,))
        op, did = OpCode.ADD_VALUE, "HS_SITE added"
    answer = client.request(Message(op_code=op, body=body))[-1]
    if answer.response_code != ResponseCode.SUCCESS:
        why = getattr(answer.body, "message", "")
        raise UpwardRefused(f"{handle}: {rc_name(answer.response_code)} {why}".strip())
    return f"{handle}: {did} (index {fresh.index})"


def _endpoints(site: SiteInfo) -> set[tuple[str, int]]:
    return {(server.ip, i.port) for server in site.servers for i in server.interfaces}


def _covered_by_us(got: Message, site: SiteInfo) -> str | None:
    """The referral handle of a 303 PREFIX_REFERRAL whose sites include one of this
    node's servers at one of its ports; None for any other answer."""
    body = got.body
    if got.response_code != ResponseCode.PREFIX_REFERRAL or not isinstance(body, ReferralResponse):
        return None
    ours = _endpoints(site)
    named = sites_from_values(body.values or ())
    if any(_endpoints(s) & ours for s in named):
        return body.referral_handle
    return None


@dataclass(frozen=True)
class Upward:
    """The node above and the administrator this node writes there as (the admin a
    ``grant-prefix`` there made: ``300:0.NA/<this node's prefix>``)."""

    top: str  # HOST:PORT, Handle TCP
    admin: Identity
    secret: bytes | None = None
    key_file: str | None = None
    timeout: float = 5.0

    def client(self) -> AdminClient:
        a = self.admin
        if self.key_file:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            try:
                key = load_pem_private_key(Path(self.key_file).read_bytes(), None)
            except (OSError, ValueError) as exc:
                raise ClientError(f"cannot use {self.key_file}: {exc}") from None
            return AdminClient(self.top, a.handle, a.index, private_key=key, timeout=self.timeout)
        return AdminClient(self.top, a.handle, a.index, secret=self.secret, timeout=self.timeout)

    def register_now(self, prefix: str, site: SiteInfo, own: SiteInfo | None = None) -> str:
        with self.client() as c:
            return register_one(c, prefix, site, own)

    async def register(self, prefix: str, site: SiteInfo, own: SiteInfo | None = None) -> str:
        """:meth:`register_now` off the event loop (the client blocks)."""
        return await asyncio.to_thread(self.register_now, prefix, site, own)


FETCH_SITE_MAX_BYTES = 1 << 20  # an HS_SITE answer is a few KiB; more is not one


def fetch_site(server: str, timeout: float = 5.0) -> SiteInfo:
    """The HS_SITE a Handle server says it is part of (GET_SITE_INFO over TCP), within
    ``timeout`` seconds in all (connecting, sending, every byte of the answer: a server
    trickling bytes or streaming CN frames does not keep the caller longer) and at most
    FETCH_SITE_MAX_BYTES read. Blocking: for the CLI and threads, never the event loop."""
    deadline = time.monotonic() + timeout
    host, port = parse_server(server, 2641)
    request = Message(
        op_code=OpCode.GET_SITE_INFO,
        body=GetSiteInfoRequest("/"),
        request_id=int.from_bytes(os.urandom(3), "big") + 1,
    )

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientError(f"no site information from {server} in {timeout:g}s")
        return remaining

    try:
        with socket.create_connection((host, port), timeout=left()) as s:
            s.settimeout(left())
            s.sendall(encode(request))
            fb, got = FrameBuffer(), 0
            while True:
                s.settimeout(left())
                try:
                    data = s.recv(65536)
                except TimeoutError:
                    left()  # raises: the deadline passed
                    continue
                if not data:
                    raise ClientError(f"{server} closed the connection before answering")
                got += len(data)
                if got > FETCH_SITE_MAX_BYTES:
                    raise ClientError(f"{server} answered with over {FETCH_SITE_MAX_BYTES} bytes")
                for frame in fb.feed(data):
                    m = decode(frame)
                    if m.request_id != request.request_id or m.has(OpFlag.CN):
                        continue
                    if m.response_code != ResponseCode.SUCCESS or not isinstance(
                        m.body, SiteInfoResponse
                    ):
                        raise UpwardRefused(
                            f"{server} gave no site information: {rc_name(m.response_code)}"
                        )
                    return m.body.site
    except ProtocolError as exc:
        raise ClientError(f"the answer from {server} does not decode: {exc.reason}") from None
    except TimeoutError:
        raise ClientError(f"no site information from {server} in {timeout:g}s") from None
    except OSError as exc:
        raise ClientError(f"cannot reach {server}: {exc}") from None
