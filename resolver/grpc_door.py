"""The gRPC front door: services Resolver and Registry (protos/idnode/v1/handles.proto),
the standard health service and server reflection (both grpc.reflection.v1 and v1alpha).

It only translates: reads go through the resolver core, writes through the registry
service. A Handle response code becomes a gRPC status (NOT_FOUND, ALREADY_EXISTS,
PERMISSION_DENIED, UNAUTHENTICATED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...), with
the Handle code in the trailing metadata ``idnode-handle-code`` and in the details.
A referral (302/303: the handle is served by another node) ends Resolve with
FAILED_PRECONDITION, ``idnode-handle-code`` 302 or 303, ``idnode-referral-handle`` the
handle to ask about instead, and details naming it and the sites' Handle TCP addresses
(:func:`referral_text`); a batch or stream item carries the same text in its status.
Registry calls need ``authorization: Bearer <API key>`` (``idnode apikey create``).
Calls in flight per client address and in all, and the connections one address has
calls on, are capped (CallLimits); message sizes, streams per connection, idle
connections and pings are bounded by the server's options (start_grpc).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_alpha_pb2

from idnode.errors import RequestRefused
from idnode.registry.auth import Identity
from idnode.registry.delegations import site_addresses
from idnode.registry.login_guard import Throttled
from idnode.registry.service import OUTCOME_UNKNOWN, UNAVAILABLE, outcome_unknown
from idnode.registry.service import unavailable as registry_unavailable
from idnode.registry.statistics import USAGE

from .codec import HandleValue, ProtocolError, ResponseCode, decode_values
from .codec.codes import TtlType
from .codec.jsonform import loads
from .connlimits import LimitLog
from .core import Resolution, answer
from .grpc_protos import load
from .logs import Repeats

if TYPE_CHECKING:
    from idnode.registry.results import Listing, WriteResult
    from idnode.registry.service import RegistryService

    from .core import Resolver

log = logging.getLogger("idnode.grpc")
pb2, pb2_grpc = load()
RC = ResponseCode
SC = grpc.StatusCode
MAX_BATCH_RESOLVE = 10_000
MAX_BATCH_CREATE = 2000
# An API key check is trusted this long; with the registry's proof of it (up to 2 s old,
# registry/proven_secrets.py) a revoked key stops working within 10 s.
KEY_CHECK_SECONDS = 8.0
# Bounds of the gRPC server (grpc core channel arguments), see start_grpc:
# - the largest request: a BatchResolve of 10,000 handles or a BatchCreate of 2,000
#   records is a few MiB; 16 MiB leaves room for long handles and values and refuses
#   (RESOURCE_EXHAUSTED, before it is buffered whole) the 64 MiB one client could send.
MAX_RECEIVE_BYTES = 16 * 1024 * 1024
# - the largest answer: a BatchResolve of 10,000 large handles (the node builds it).
MAX_SEND_BYTES = 64 * 1024 * 1024
STREAMS_PER_CONNECTION = 100  # HTTP/2 streams one connection may have open at once
IDLE_CONNECTION_MS = 120_000  # a connection with no call this long gets GOAWAY
HANDSHAKE_MS = 20_000  # a connection that has not finished its HTTP/2 (TLS) handshake
KEEPALIVE_MS = 60_000  # the node pings an idle connection: a dead peer's is closed
KEEPALIVE_TIMEOUT_MS = 20_000

_STATUS: dict[int, Any] = {
    RC.HANDLE_NOT_FOUND: SC.NOT_FOUND,
    RC.VALUES_NOT_FOUND: SC.NOT_FOUND,
    RC.HANDLE_ALREADY_EXISTS: SC.ALREADY_EXISTS,
    RC.VALUE_ALREADY_EXISTS: SC.ALREADY_EXISTS,
    RC.INVALID_HANDLE: SC.INVALID_ARGUMENT,
    RC.INVALID_VALUE: SC.INVALID_ARGUMENT,
    RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE: SC.FAILED_PRECONDITION,
    # Served by another node: not an error of the handle (it may exist there) nor of the
    # request; this server is the wrong one to ask, as with 301.
    RC.SERVICE_REFERRAL: SC.FAILED_PRECONDITION,
    RC.PREFIX_REFERRAL: SC.FAILED_PRECONDITION,
    RC.INSUFFICIENT_PERMISSIONS: SC.PERMISSION_DENIED,
    RC.INVALID_ADMIN: SC.PERMISSION_DENIED,
    RC.AUTHENTICATION_NEEDED: SC.UNAUTHENTICATED,
    RC.AUTHENTICATION_FAILED: SC.UNAUTHENTICATED,
    RC.REQUEST_LIMIT_DAILY: SC.RESOURCE_EXHAUSTED,
    RC.REGISTER_COUNT_LIMIT: SC.RESOURCE_EXHAUSTED,
    RC.OPERATION_NOT_SUPPORTED: SC.UNIMPLEMENTED,
    RC.ERROR: SC.INTERNAL,
}


def grpc_status(rc: int) -> grpc.StatusCode:
    return _STATUS.get(rc, SC.FAILED_PRECONDITION if rc != RC.SUCCESS else SC.OK)


async def fail(
    context: grpc.aio.ServicerContext, rc: int, message: str, *extra: tuple[str, str]
) -> NoReturn:
    """End the call with the gRPC status for ``rc`` (abort raises; it never returns);
    ``extra``: more trailing metadata."""
    context.set_trailing_metadata((("idnode-handle-code", str(int(rc))), *extra))
    await context.abort(grpc_status(rc), f"[{int(rc)}] {message}")
    raise RuntimeError("grpc.aio abort returned")  # it raises AbortError; typing cannot say


def referral_text(res: Resolution) -> str:
    """A referral as people read it in a gRPC status: a status carries no values, so the
    handle to ask about and the sites' addresses are spelt out, then the stage's words."""
    try:
        sites = site_addresses(decode_values(res.values_wire))
    except ProtocolError:
        sites = ""
    text = f"referral to {res.referral} at {sites or '(no sites given: resolve it)'}"
    return f"{text}: {res.message}" if res.message else text


def peer_address(peer: str) -> str:
    """The address of a gRPC peer such as ``ipv4:127.0.0.1:5000`` or ``ipv6:[::1]:5000``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def to_value(v: HandleValue) -> Any:
    return pb2.HandleValue(
        index=v.index,
        type=v.type,
        data=v.data,
        ttl=v.ttl,
        ttl_absolute=v.ttl_type == TtlType.ABSOLUTE,
        timestamp=v.timestamp,
        permissions=v.permissions,
    )


def from_value(p: Any) -> HandleValue:
    return HandleValue(
        p.index,
        p.type,
        bytes(p.data),
        p.ttl or 86400,
        int(TtlType.ABSOLUTE if p.ttl_absolute else TtlType.RELATIVE),
        p.timestamp,
        p.permissions or 0x0E,
    )


class ResolverService(pb2_grpc.ResolverServicer):  # type: ignore[misc,name-defined]
    def __init__(self, core: Resolver) -> None:
        self.core = core
        # Proto values of a cached value list: L1 keeps the same bytes object, whose
        # hash Python caches, so a hot handle costs one dict lookup here.
        self._protos: dict[bytes, list[Any]] = {}
        self._items: dict[tuple[str, bytes], bytes] = {}

    def _values(self, wire: bytes) -> list[Any]:
        protos = self._protos.get(wire)
        if protos is None:
            protos = [to_value(v) for v in decode_values(wire)]
            if len(self._protos) > 50_000:
                self._protos.clear()
            self._protos[wire] = protos
        return protos

    async def _resolution(self, r: Any) -> Resolution:
        e = self.core.cached(r.handle)
        if e is not None:
            res = answer(e, tuple(r.indexes), tuple(r.types))
        else:
            res = await self.core.resolve(
                r.handle, tuple(r.indexes), tuple(r.types), l1_checked=True
            )
        USAGE.resolved(r.handle, res.response_code)  # per-prefix statistics
        return res

    def _response(self, r: Any, res: Resolution) -> Any:
        values = self._values(res.values_wire) if res.response_code == RC.SUCCESS else []
        return pb2.ResolveResponse(
            handle=r.handle,
            values=values,
            status=pb2.ItemStatus(
                handle_code=res.response_code,
                message=referral_text(res) if res.referral else res.message,
            ),
        )

    async def Resolve(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        res = await self._resolution(request)
        if res.referral:
            referral = ("idnode-referral-handle", res.referral)
            await fail(context, res.response_code, referral_text(res), referral)
        if res.response_code != RC.SUCCESS:
            await fail(context, res.response_code, res.message)
        return pb2.ResolveResponse(handle=request.handle, values=self._values(res.values_wire))

    def _item(self, r: Any, res: Resolution) -> bytes:
        """One serialised ResolveResponse, cached by (handle, values) when unfiltered."""
        USAGE.resolved(r.handle, res.response_code)  # per-prefix statistics (a batch item)
        if r.indexes or r.types or res.response_code != RC.SUCCESS:
            return bytes(self._response(r, res).SerializeToString())
        key = (r.handle, res.values_wire)
        item = self._items.get(key)
        if item is None:
            item = bytes(self._response(r, res).SerializeToString())
            if len(self._items) > 100_000:
                self._items.clear()
            self._items[key] = item
        return item

    async def BatchResolve(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        """Answers with the wire form of BatchResolveResponse, built from cached items:
        building a thousand nested messages per call cost more than the lookups."""
        reqs = request.requests
        if len(reqs) > MAX_BATCH_RESOLVE:
            await fail(context, RC.INVALID_VALUE, f"at most {MAX_BATCH_RESOLVE} a batch")
        out: list[bytes] = [b""] * len(reqs)
        misses = []
        cached = self.core.cached
        for i, r in enumerate(reqs):
            e = cached(r.handle)
            if e is None:
                misses.append(i)
            else:
                out[i] = self._item(r, answer(e, tuple(r.indexes), tuple(r.types)))
        if misses:  # one coalesced batch per tier for every miss
            found = await asyncio.gather(
                *(
                    self.core.resolve(
                        reqs[i].handle,
                        tuple(reqs[i].indexes),
                        tuple(reqs[i].types),
                        l1_checked=True,
                    )
                    for i in misses
                )
            )
            for i, res in zip(misses, found, strict=True):
                out[i] = self._item(reqs[i], res)
        # repeated ResolveResponse responses = 1: tag 0x0A, varint length, the item.
        return b"".join(b"\x0a" + _varint(len(item)) + item for item in out)

    async def ResolveStream(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for r in request_iterator:
            yield self._response(r, await self._resolution(r))


class RegistryApi(pb2_grpc.RegistryServicer):  # type: ignore[misc,name-defined]
    def __init__(self, registry: RegistryService) -> None:
        self.registry = registry
        # API keys checked in the last KEY_CHECK_SECONDS: a revoked key stops working
        # within that time (idnode apikey revoke), as on the REST door.
        self._keys: dict[str, tuple[float, Identity]] = {}

    async def _who(self, context: grpc.aio.ServicerContext) -> Identity:
        token = ""
        for k, v in context.invocation_metadata() or ():
            if k == "authorization" and isinstance(v, str) and v.lower().startswith("bearer "):
                token = v[7:].strip()
        if not token:
            await fail(
                context,
                RC.AUTHENTICATION_NEEDED,
                "send metadata authorization: Bearer <API key> (idnode apikey create)",
            )
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._keys.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            who = await self.registry.credentials.api_key_identity(
                token, client=peer_address(context.peer()), door="gRPC"
            )
        except Throttled as exc:  # too many unknown keys from this address
            await fail(context, RC.REQUEST_LIMIT_DAILY, str(exc))
        if who is None:
            self._keys.pop(digest, None)
            await fail(context, RC.AUTHENTICATION_FAILED, "unknown API key")
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[digest] = (time.monotonic() + KEY_CHECK_SECONDS, who)
        return who

    async def _done(self, context: grpc.aio.ServicerContext, r: WriteResult | Listing) -> None:
        if not r.ok:
            await fail(context, r.code, r.message or "refused")

    async def CreateHandle(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await self._who(context)
        values = tuple(from_value(v) for v in request.record.values)
        r = await self.registry.create(
            request.record.handle,
            values,
            who,
            overwrite=request.overwrite,
            mint=request.mint_suffix,
        )
        await self._done(context, r)
        return pb2.CreateHandleResponse(handle=r.handle)

    async def DeleteHandle(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await self._who(context)
        await self._done(context, await self.registry.delete(request.handle, who))
        return pb2.Empty()

    async def AddValues(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await self._who(context)
        values = tuple(from_value(v) for v in request.values)
        await self._done(context, await self.registry.add_values(request.handle, values, who))
        return pb2.Empty()

    async def ModifyValues(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await self._who(context)
        values = tuple(from_value(v) for v in request.values)
        await self._done(context, await self.registry.modify_values(request.handle, values, who))
        return pb2.Empty()

    async def RemoveValues(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await self._who(context)
        r = await self.registry.remove_values(request.handle, tuple(request.indexes), who)
        await self._done(context, r)
        return pb2.Empty()

    async def BatchCreate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await self._who(context)
        if len(request.records) > MAX_BATCH_CREATE:
            await fail(context, RC.INVALID_VALUE, f"at most {MAX_BATCH_CREATE} records a batch")
        items = [(r.handle, tuple(from_value(v) for v in r.values)) for r in request.records]
        try:
            results = await self.registry.batch_create(items, who, replace=request.replace)
        except RequestRefused as exc:  # refused whole (too many, or replace by a non-admin)
            await fail(context, exc.rc, exc.message)
            raise
        except Exception as exc:
            if registry_unavailable(exc):
                raise  # the outage's own status (GuardCalls)
            await fail(context, RC.ERROR, str(exc))
        return pb2.BatchCreateResponse(
            items=[
                pb2.BatchItem(
                    handle=r.handle, status=pb2.ItemStatus(handle_code=r.code, message=r.message)
                )
                for r in results
            ]
        )

    async def ListHandles(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await self._who(context)
        size = request.page_size or 1000
        if not 0 < size <= 10_000 or request.page < 0:
            await fail(context, RC.INVALID_VALUE, "page_size must be 1..10000, page >= 0")
        listing = await self.registry.list_handles("0.NA/" + request.prefix, who)
        await self._done(context, listing)
        handles = listing.handles
        start = request.page * size
        return pb2.ListHandlesResponse(handles=handles[start : start + size], total=len(handles))

    async def PutTemplate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await self._who(context)
        try:
            doc = loads(request.document_json)
        except ProtocolError as exc:  # not JSON, or nested too deep to walk
            await fail(context, RC.INVALID_VALUE, f"document_json: {exc.reason}")
        await self._done(context, await self.registry.put_template(doc, who))
        return pb2.Empty()

    async def HomePrefix(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await self._who(context)
        await self._done(context, await self.registry.home("0.NA/" + request.prefix, who))
        return pb2.Empty()

    async def UnhomePrefix(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await self._who(context)
        await self._done(context, await self.registry.unhome("0.NA/" + request.prefix, who))
        return pb2.Empty()

    async def ListPrefixes(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb2.PrefixList(prefixes=sorted(self.registry.authority.homed))


class _Corrupt:
    """What a request deserializer returns for bytes that are not the message (instead
    of raising: grpc.aio would log that with a traceback and answer UNKNOWN)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserialize: Any) -> Any:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return _Corrupt(str(exc))

    return parse


async def _reject(context: grpc.aio.ServicerContext, request: Any) -> None:
    if isinstance(request, _Corrupt):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {request.reason}")


_down = Repeats(log)


async def _registry_down(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """The registry is unreachable: UNAVAILABLE ("try again", as REST's 503), or it went
    away while committing: DEADLINE_EXCEEDED, the one status gRPC documents as "may have
    completed" (REST's 504), never a failure. Both carry Handle RC 2; logged in summary."""
    context.set_trailing_metadata((("idnode-handle-code", str(int(RC.ERROR))),))
    if outcome_unknown(exc):
        _down.warning("gRPC call: outcome unknown (%s)", exc)
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"[{int(RC.ERROR)}] {OUTCOME_UNKNOWN}"
        )
    _down.warning("gRPC call: registry unavailable (%s)", exc)
    await context.abort(grpc.StatusCode.UNAVAILABLE, f"[{int(RC.ERROR)}] {UNAVAILABLE}")
    raise RuntimeError("grpc.aio abort returned")


class _WrapOnce(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor that wraps each method's handler once: the wrapper is kept per
    method and made again only when grpc hands another handler."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method: (handler, its wrapper)

    def _wraps(self, handler: Any) -> bool:
        """Whether ``handler`` gets a wrapper (else it is served as it is)."""
        return True

    def _wrap(self, handler: Any) -> Any:
        raise NotImplementedError

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or not self._wraps(handler):
            return handler
        known = self._wrapped.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(handler)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped


class GuardCalls(_WrapOnce):
    """A request whose bytes do not parse as the method's message gets INVALID_ARGUMENT
    (a client error, logged by no one), not UNKNOWN with a traceback at ERROR; and a
    unary call that meets a registry outage gets the outage's status (_registry_down)."""

    def _wraps(self, handler: Any) -> bool:
        return handler.request_deserializer is not None

    def _wrap(self, handler: Any) -> Any:
        parse = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None and asyncio.iscoroutinefunction(handler.unary_unary):
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await _reject(context, request)
                try:
                    return await inner(request, context)
                except Exception as exc:
                    if registry_unavailable(exc):
                        await _registry_down(context, exc)
                    raise

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=parse, response_serializer=handler.response_serializer
            )
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            stream = handler.stream_stream

            async def checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
                async for request in requests:
                    await _reject(context, request)
                    yield request

            async def streams(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
                async for response in stream(checked(requests, context), context):
                    yield response

            return grpc.stream_stream_rpc_method_handler(
                streams, request_deserializer=parse, response_serializer=handler.response_serializer
            )
        return handler


class CallLimits(_WrapOnce):
    """Calls in flight per client address and in all, and the connections (peer address
    and port) one client address may have calls on, per worker: a call past a cap ends
    at once with RESOURCE_EXHAUSTED and a message saying which, logged in summary
    (connlimits.LimitLog). grpc.aio tells no one of a connection that carries no call;
    those are closed after IDLE_CONNECTION_MS (start_grpc)."""

    def __init__(
        self, per_client: int, total: int, conns_per_client: int, report: LimitLog | None = None
    ) -> None:
        self.per_client = per_client
        self.total = total
        self.conns_per_client = conns_per_client
        self.report = report or LimitLog()
        self.calls: Counter[str] = Counter()  # client address: calls in flight
        self.peers: dict[str, Counter[str]] = {}  # client address: {peer: calls in flight}
        self.count = 0
        self.refused = 0
        super().__init__()

    def refusal(self, peer: str) -> str | None:
        """Why a call from ``peer`` may not start now, or None (it is then counted until
        done())."""
        client = peer_address(peer)
        why = None
        conns = self.peers.get(client)
        if self.total > 0 and self.count >= self.total:
            why = f"{self.total} gRPC calls in flight in this worker"
        elif (
            self.conns_per_client > 0
            and conns is not None
            and peer not in conns
            and len(conns) >= self.conns_per_client
        ):
            why = f"{self.conns_per_client} gRPC connections with calls from one client address"
        elif self.per_client > 0 and self.calls[client] >= self.per_client:
            why = f"{self.per_client} gRPC calls in flight from one client address"
        if why is not None:
            self.refused += 1
            self.report.bite(f"grpc: {why}", client)
            return why
        self.count += 1
        self.calls[client] += 1
        self.peers.setdefault(client, Counter())[peer] += 1
        return None

    def done(self, peer: str) -> None:
        client = peer_address(peer)
        self.count -= 1
        self.calls[client] -= 1
        if self.calls[client] <= 0:
            del self.calls[client]
        conns = self.peers[client]
        conns[peer] -= 1
        if conns[peer] <= 0:
            del conns[peer]
            if not conns:
                del self.peers[client]

    async def _admit(self, context: grpc.aio.ServicerContext) -> str:
        peer = context.peer() or ""
        why = self.refusal(peer)
        if why is not None:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"limit reached: {why}; retry later"
            )
        return peer

    def _wrap(self, handler: Any) -> Any:
        admit, done = self._admit, self.done

        def unary(inner: Any) -> Any:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                peer = await admit(context)
                try:
                    result = inner(request, context)
                    return await result if inspect.isawaitable(result) else result
                finally:
                    done(peer)

            return call

        def streaming(inner: Any) -> Any:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                peer = await admit(context)
                try:
                    result = inner(request, context)
                    if inspect.isawaitable(result):  # a handler that writes with context.write
                        await result
                    else:
                        async for response in result:
                            yield response
                finally:
                    done(peer)

            return call

        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, unary),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, unary),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, streaming),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, streaming),
        )
        for attr, make, wrap in kinds:
            inner = getattr(handler, attr)
            if inner is not None:
                return make(
                    wrap(inner),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


RESOLVER = pb2.DESCRIPTOR.services_by_name["Resolver"].full_name
REGISTRY = pb2.DESCRIPTOR.services_by_name["Registry"].full_name
REFLECTION_V1ALPHA = str(reflection.SERVICE_NAME)
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"


def reflection_v1_descriptor() -> Any:
    """The FileDescriptor of grpc/reflection/v1/reflection.proto, added to the default pool
    on first use.

    grpcio-reflection ships only v1alpha (every release up to 1.85.1 at least), yet current
    grpcurl and Postman speak only v1. Upstream's v1 file is v1alpha's under another package:
    the same messages, field names, numbers and types. So it is derived from the v1alpha
    descriptor grpcio-reflection ships rather than written out by hand, and it has to be in
    the pool because clients describe every listed service (grpcurl describe, Postman)."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(REFLECTION_V1_FILE)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."

    def moved(type_name: str) -> str:
        return new + type_name[len(old) :] if type_name.startswith(old) else type_name

    proto.name, proto.package = REFLECTION_V1_FILE, new.strip(".")
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # even an empty one set on a scalar is rejected
                field.type_name = moved(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type, method.output_type = (
                moved(method.input_type),
                moved(method.output_type),
            )
    # The options upstream's v1 file declares (it drops v1alpha's cc_enable_arenas).
    proto.options.Clear()
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    proto.options.java_multiple_files = True
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    pool.AddSerializedFile(proto.SerializeToString())
    return pool.FindFileByName(REFLECTION_V1_FILE)


def add_reflection(server: grpc.aio.Server, services: tuple[str, ...]) -> None:
    """Serves reflection as both grpc.reflection.v1 and v1alpha, listing both.

    One servicer answers both: v1 messages are wire-identical to v1alpha ones (the same
    fields under the same numbers), so v1alpha's serializers read and write v1 bytes."""
    reflection_v1_descriptor()
    servicer = reflection.aio.ReflectionServicer((*services, REFLECTION_V1, REFLECTION_V1ALPHA))
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": info})
            for name in (REFLECTION_V1, REFLECTION_V1ALPHA)
        )
    )


async def start_grpc(
    core: Resolver,
    registry: RegistryService | None,
    host: str,
    port: int,
    *,
    cert: str = "",
    key: str = "",
    limits: CallLimits | None = None,
) -> grpc.aio.Server:
    """Serve gRPC on ``host:port`` (every worker binds it, with SO_REUSEPORT): calls past
    ``limits`` are refused; connections, streams and messages are bounded as set out at
    MAX_RECEIVE_BYTES."""
    server = grpc.aio.server(
        interceptors=(*((limits,) if limits is not None else ()), GuardCalls()),
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
            ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
            ("grpc.server_handshake_timeout_ms", HANDSHAKE_MS),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            # A client's pings: at most one per 10 s without calls, two strikes and the
            # connection goes (ping floods cost the node CPU and answers).
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 2),
        ],
    )
    resolver = ResolverService(core)
    # Registered by hand (not with the generated helper) for one reason: BatchResolve
    # returns ready-made wire bytes, so its serializer is the identity.
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                RESOLVER,
                {
                    "Resolve": grpc.unary_unary_rpc_method_handler(
                        resolver.Resolve,
                        request_deserializer=pb2.ResolveRequest.FromString,
                        response_serializer=pb2.ResolveResponse.SerializeToString,
                    ),
                    "BatchResolve": grpc.unary_unary_rpc_method_handler(
                        resolver.BatchResolve,
                        request_deserializer=pb2.BatchResolveRequest.FromString,
                        response_serializer=bytes,
                    ),
                    "ResolveStream": grpc.stream_stream_rpc_method_handler(
                        resolver.ResolveStream,
                        request_deserializer=pb2.ResolveRequest.FromString,
                        response_serializer=pb2.ResolveResponse.SerializeToString,
                    ),
                },
            ),
        )
    )
    names = [RESOLVER]
    if registry is not None:
        pb2_grpc.add_RegistryServicer_to_server(RegistryApi(registry), server)
        names.append(REGISTRY)
    checker = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for name in ("", *names):
        res = checker.set(name, health_pb2.HealthCheckResponse.SERVING)
        if asyncio.iscoroutine(res):
            await res
    add_reflection(server, (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if cert and key:
        with open(cert, "rb") as c, open(key, "rb") as k:
            creds = grpc.ssl_server_credentials(((k.read(), c.read()),))
        server.add_secure_port(address, creds)
    else:
        server.add_insecure_port(address)
    await server.start()
    return server
