"""HS_SITE data: the servers of a site and their interfaces (handle-protocol.md §4).

Interface type and protocol are plain numbers as the clients parse them, not the
RFC's bit masks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .codes import HashOption, InterfaceProtocol, InterfaceType
from .errors import ProtocolError
from .wire import U16, U32, Reader

PRIMARY = 0x80
MULTI_PRIMARY = 0x40
_V4_PREFIX = bytes(12)
_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class Interface:
    type: int  # InterfaceType
    protocol: int  # InterfaceProtocol
    port: int

    @property
    def serves_queries(self) -> bool:
        return self.type in (InterfaceType.QUERY, InterfaceType.ADMIN_AND_QUERY)

    @property
    def serves_admin(self) -> bool:
        return self.type in (InterfaceType.ADMIN, InterfaceType.ADMIN_AND_QUERY)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    server_id: int
    address: bytes  # 16 bytes; IPv4 as 12 zero bytes + 4 address bytes
    public_key: bytes = b""
    interfaces: tuple[Interface, ...] = ()

    @classmethod
    def at(
        cls,
        ip: str,
        server_id: int = 1,
        interfaces: tuple[Interface, ...] = (),
        public_key: bytes = b"",
    ) -> ServerInfo:
        return cls(server_id, address_to_bytes(ip), public_key, interfaces)

    @property
    def ip(self) -> str:
        return address_to_text(self.address)


@dataclass(frozen=True, slots=True)
class SiteInfo:
    servers: tuple[ServerInfo, ...]
    serial: int = 1
    major_version: int = 2
    minor_version: int = 10
    primary_mask: int = PRIMARY
    hash_option: int = HashOption.BY_HANDLE
    hash_filter: bytes = b""
    attributes: tuple[tuple[str, str], ...] = ()
    data_format_version: int = 1

    @property
    def primary(self) -> bool:
        return bool(self.primary_mask & PRIMARY)

    @property
    def multi_primary(self) -> bool:
        return bool(self.primary_mask & MULTI_PRIMARY)


def address_to_bytes(ip: str) -> bytes:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return _V4_PREFIX + addr.packed
    return addr.packed


def address_to_text(address: bytes) -> str:
    """IPv4 is written as 12 zero bytes + 4 address bytes; ``::ffff:a.b.c.d`` is IPv4 too."""
    if address[:12] in (_V4_PREFIX, _V4_MAPPED_PREFIX) and address != bytes(16):
        return str(ipaddress.IPv4Address(address[12:]))
    return str(ipaddress.IPv6Address(address))


def encode_site(s: SiteInfo) -> bytes:
    parts = [
        U16.pack(s.data_format_version),
        bytes((s.major_version, s.minor_version)),
        U16.pack(s.serial),
        bytes((s.primary_mask, s.hash_option)),
        U32.pack(len(s.hash_filter)),
        s.hash_filter,
        U32.pack(len(s.attributes)),
    ]
    for name, value in s.attributes:
        n, v = name.encode("utf-8"), value.encode("utf-8")
        parts += (U32.pack(len(n)), n, U32.pack(len(v)), v)
    parts.append(U32.pack(len(s.servers)))
    for srv in s.servers:
        if len(srv.address) != 16:
            raise ProtocolError(f"server {srv.server_id}: address must be 16 bytes")
        parts += (
            U32.pack(srv.server_id),
            srv.address,
            U32.pack(len(srv.public_key)),
            srv.public_key,
            U32.pack(len(srv.interfaces)),
        )
        for i in srv.interfaces:
            parts += (bytes((i.type, i.protocol)), U32.pack(i.port))
    return b"".join(parts)


def read_site(r: Reader) -> SiteInfo:
    fmt = r.u16("HS_SITE data format version")
    major = r.u8("HS_SITE major version")
    minor = r.u8("HS_SITE minor version")
    serial = r.u16("HS_SITE serial")
    mask = r.u8("HS_SITE primary mask")
    hash_option = r.u8("HS_SITE hash option")
    if hash_option > HashOption.BY_HANDLE:
        raise ProtocolError(f"HS_SITE hash option: unknown option {hash_option}")
    hash_filter = r.blob("HS_SITE hash filter")
    n_attr = r.count("HS_SITE attribute count", 8)
    attrs = tuple(
        (r.text("HS_SITE attribute name"), r.text("HS_SITE attribute value")) for _ in range(n_attr)
    )
    n_srv = r.count("HS_SITE server count", 28)
    servers = []
    for _ in range(n_srv):
        sid = r.u32("server id")
        addr = r.raw(16, "server address")
        key = r.blob("server public key")
        n_if = r.count("server interface count", 6)
        ifaces = []
        for _ in range(n_if):
            itype = r.u8("interface type")
            proto = r.u8("interface protocol")
            port = r.u32("interface port")
            if itype > InterfaceType.ADMIN_AND_QUERY:
                raise ProtocolError(f"interface type: unknown type {itype}")
            if proto > InterfaceProtocol.HTTPS:
                raise ProtocolError(f"interface protocol: unknown protocol {proto}")
            ifaces.append(Interface(itype, proto, port))
        servers.append(ServerInfo(sid, addr, key, tuple(ifaces)))
    return SiteInfo(
        tuple(servers), serial, major, minor, mask, hash_option, hash_filter, attrs, fmt
    )


def decode_site(data: bytes) -> SiteInfo:
    r = Reader(data)
    s = read_site(r)
    r.expect_end("HS_SITE data")
    return s
