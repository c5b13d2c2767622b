"""Ceiling servers: the same front door with nothing behind it, to measure what the
generator, the kernel and the framework allow on this machine in the same run.

* udp: a bare uvloop datagram echo (the request comes back as the "answer");
* dns: the same echo for DNS: the query comes back with QR set (dnsperf counts it as a
  NOERROR answer), the ceiling of the DNS door (loadtest/dns_bench.py);
* tcp: a bare uvloop stream echo (pipelined requests come back in order);
* http and rest: aiohttp answering every request with fixed bytes (a 181-byte Handle
  answer for the tunnel, a small JSON document for the REST API), no lookup;
* page and redirect: aiohttp answering ``GET /{handle}`` with a fixed HTML page of a
  record page's size (``?noredirect``) or a fixed 302, no lookup and no template;
* grpc, grpc-batch, grpc-stream: grpc.aio serving the Resolver service with fixed
  answers (one ResolveResponse per identifier asked), no lookup.

    python -m idnode.loadtest.ceilings --door tcp --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

REST_BODY = (
    b'{"responseCode":1,"handle":"88.166.1001/X","values":[{"index":1,"type":"URL",'
    b'"data":{"format":"string","value":"https://pim.example.cn/1"},"ttl":86400,'
    b'"timestamp":"2023-11-14T22:13:20Z"}]}'
)

# A record page of the load test's three values: about what the node renders.
_ROW = (
    b"<tr><td>1</td><td>URL</td><td>2023-11-14 22:13:20Z</td><td>86400</td>"
    b"<td><a href=https://pim.example.cn/1>https://pim.example.cn/1</a></td></tr>"
)
PAGE_BODY = (
    b"<!doctype html><html lang=zh-CN><head><meta charset=utf-8><title>88.166.1001/X</title>"
    b"<link rel=stylesheet href=/static/idnode.css></head><body><main><table><tbody>"
    + _ROW * 3
    + b"</tbody></table></main></body></html>"
    + b" " * 2500
)


def _answer_bytes() -> bytes:
    """A Handle resolution answer of the load test's size (three values)."""
    from idnode.resolver.codec import (
        HandleValue,
        Message,
        OpCode,
        ResolutionRequest,
        ResolutionResponse,
        encode,
        response_to,
    )

    handle = "88.166.1001/SN000000000001"
    req = Message(op_code=OpCode.RESOLUTION, body=ResolutionRequest(handle))
    values = (
        HandleValue(1, "URL", b"https://pim.example.cn/1", timestamp=1_700_000_000),
        HandleValue(1001, "TEMPLATE", b"tpl-v1", timestamp=1_700_000_000),
        HandleValue(2001, "productName", "液压阀 HV-001".encode(), timestamp=1_700_000_000),
    )
    return encode(response_to(req, 1, ResolutionResponse(handle, values)))


async def udp_echo(host: str, port: int) -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.DatagramTransport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.t.sendto(data, addr)

    await asyncio.get_running_loop().create_datagram_endpoint(Echo, local_addr=(host, port))
    await asyncio.Event().wait()


async def dns_echo(host: str, port: int) -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.DatagramTransport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: Any) -> None:
            if len(data) > 2:  # QR set: a response, as dnsperf expects
                self.t.sendto(data[:2] + bytes((data[2] | 0x80,)) + data[3:], addr)

    await asyncio.get_running_loop().create_datagram_endpoint(Echo, local_addr=(host, port))
    await asyncio.Event().wait()


async def tcp_echo(host: str, port: int) -> None:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.Transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            self.t.write(data)

    server = await asyncio.get_running_loop().create_server(Echo, host, port)
    await server.serve_forever()


async def http_fixed(host: str, port: int) -> None:
    from aiohttp import web

    answer = _answer_bytes()

    async def tunnel(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/x-hdl-message")

    async def rest(request: web.Request) -> web.Response:
        return web.Response(body=REST_BODY, content_type="application/json")

    async def page(request: web.Request) -> web.Response:
        if "noredirect" in request.query:
            return web.Response(body=PAGE_BODY, content_type="text/html", charset="utf-8")
        raise web.HTTPFound("https://pim.example.cn/1")

    app = web.Application()
    app.router.add_post("/", tunnel)
    app.router.add_get("/api/handles/{tail:.+}", rest)
    app.router.add_get("/{tail:.+}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    await asyncio.Event().wait()


async def grpc_fixed(host: str, port: int) -> None:
    import grpc

    from idnode.resolver.grpc_protos import load

    pb2, pb2_grpc = load()
    value = pb2.HandleValue(index=1, type="URL", data=b"https://pim.example.cn/1", ttl=86400)
    one = pb2.ResolveResponse(handle="88.166.1001/X", values=[value] * 3)

    class Fixed(pb2_grpc.ResolverServicer):  # type: ignore[misc,name-defined]
        async def Resolve(self, request: Any, context: Any) -> Any:
            return one

        async def BatchResolve(self, request: Any, context: Any) -> Any:
            return pb2.BatchResolveResponse(responses=[one] * len(request.requests))

        async def ResolveStream(self, requests: Any, context: Any) -> Any:
            async for _ in requests:
                yield one

    server = grpc.aio.server()
    pb2_grpc.add_ResolverServicer_to_server(Fixed(), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await server.wait_for_termination()


SERVERS = {
    "udp": udp_echo,
    "dns": dns_echo,
    "tcp": tcp_echo,
    "http": http_fixed,
    "rest": http_fixed,
    "page": http_fixed,
    "redirect": http_fixed,
    "grpc": grpc_fixed,
    "grpc-batch": grpc_fixed,
    "grpc-stream": grpc_fixed,
}

DESCRIPTIONS = {
    "udp": "bare uvloop UDP echo",
    "dns": "bare uvloop UDP echo (the query back with QR set)",
    "tcp": "bare uvloop TCP echo",
    "http": "aiohttp answering fixed bytes",
    "rest": "aiohttp answering fixed JSON",
    "page": "aiohttp answering a fixed HTML page",
    "redirect": "aiohttp answering a fixed 302",
    "grpc": "grpc.aio Resolver answering a fixed response",
    "grpc-batch": "grpc.aio Resolver answering fixed responses",
    "grpc-stream": "grpc.aio Resolver answering fixed responses",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--door", choices=sorted(SERVERS), required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    serve = SERVERS[args.door]
    if args.door.startswith("grpc"):
        asyncio.run(serve(args.host, args.port))  # grpc.aio brings its own loop policy
    else:
        import uvloop

        uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
