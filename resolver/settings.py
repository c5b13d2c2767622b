"""One typed settings object: flags, then IDNODE_* environment, then a TOML file, then defaults.

Every field is documented here; `idnode serve --help` and the README repeat them.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from idnode.errors import IdnodeError


class ConfigError(IdnodeError, ValueError):
    pass


DATABASE_URL = "sqlite:///idnode.db"
DEMO_DATABASE_URL = "sqlite:///idnode-demo.db"  # what `idnode demo` makes and serves


@dataclass(frozen=True)
class Settings:
    database_url: str = field(
        default=DATABASE_URL,
        metadata={
            "help": "registry: sqlite:///PATH (embedded) or postgresql://USER@HOST/DB; "
            "commands other than init and demo use idnode-demo.db when only the demo's "
            "registry is in the working directory"
        },
    )
    database_read_url: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "a PostgreSQL read replica (streaming standby) of database_url; "
            "repeatable (env: comma-separated). Batched lookups go to the replicas that have "
            "replayed every write heard for the keys asked, the rest to the primary",
            "repeat": True,
        },
    )
    database_pool_size: int = field(
        default=10,
        metadata={
            "help": "PostgreSQL connections per worker (and per read replica): the "
            "registry's writes and misses in flight at once. A write holds one for its "
            "round trips (about 1-2 ms each on a nearby server), so this bounds a worker's "
            "write rate; workers x nodes x this must stay under the server's "
            "max_connections"
        },
    )
    replica_max_lag: float = field(
        default=5.0,
        metadata={
            "help": "seconds: a read replica that has not replayed what the primary had "
            "this long ago is skipped (its lookups go elsewhere) until it catches up"
        },
    )
    search_index: bool = field(
        default=False,
        metadata={
            "help": "reverse lookup by value (/hrls/handles): every write keeps the value "
            "index in step (costs storage and write rate: README, Search); run `idnode "
            "search-index build` once, with every node of the registry started so"
        },
    )
    redis_url: str = field(
        default="", metadata={"help": "L2 cache, e.g. redis://127.0.0.1:6379/0; empty = no L2"}
    )
    redis_cluster: bool = field(
        default=False,
        metadata={
            "help": "--redis-url names any node of a Redis Cluster or Valkey cluster: reads "
            "and fills per slot, invalidations on the channel's shard, failovers followed"
        },
    )
    listen: str = field(
        default="127.0.0.1", metadata={"help": "address to listen on (0.0.0.0 for all)"}
    )
    handle_port: int = field(default=2641, metadata={"help": "Handle protocol UDP and TCP port"})
    udp_max_datagrams: int = field(
        default=16,
        metadata={
            "help": "most datagrams of one UDP answer (16 = 7,872 message bytes); a longer "
            "answer is an RC 2 saying to ask over TCP, which the HANDLE.NET library does"
        },
    )
    udp_rrl_bytes: int = field(
        default=262_144,
        metadata={
            "help": "bytes/s of UDP answers per source network (IPv4 /24, IPv6 /56), bursts "
            "of twice that, per worker; past it answers are dropped or slipped (0 = off)"
        },
    )
    udp_rrl_slip: int = field(
        default=2,
        metadata={
            "help": "over the UDP rate, every Nth answer is a small RC 2 saying to ask over "
            "TCP, the others are dropped (0 = drop all)"
        },
    )
    udp_rrl_exempt: str = field(
        default="127.0.0.0/8,::1/128",
        metadata={
            "help": "comma-separated networks not rate-limited over UDP (loopback cannot "
            "be spoofed from the network)"
        },
    )
    udp_reassembly_per_client: int = field(
        default=32,
        metadata={
            "help": "unfinished multi-datagram UDP requests kept per client address, any "
            "port (a NAT shares one; the oldest is dropped; also 512 KiB per client, 16 MiB in all)"
        },
    )
    udp_reassembly_max: int = field(
        default=4096,
        metadata={"help": "unfinished multi-datagram UDP requests kept in all, per worker"},
    )
    udp_batch_io: bool = field(
        default=True,
        metadata={
            "help": "the Handle UDP port read with one recvmmsg per wakeup (up to 64 "
            "datagrams) and each batch's answers sent with one sendmmsg, when the compiled "
            "module idnode.resolver._udp_batch_io is built; answers the kernel cannot take "
            "yet wait in a backlog of at most 4 MiB per worker. Off (--no-udp-batch-io, "
            "IDNODE_UDP_BATCH_IO=0), or without the module, the event loop's datagram "
            "transport serves it; the answers are the same"
        },
    )
    http_port: int = field(
        default=8000, metadata={"help": "HTTP port: POST / tunnel, /healthz, /metrics"}
    )
    dns_port: int = field(
        default=0,
        metadata={"help": "DNS gateway UDP and TCP port (0 = no DNS gateway)"},
    )
    dns_zone: str = field(
        default="id.internal.",
        metadata={"help": "the DNS zone handles are named under (README: DNS gateway)"},
    )
    dns_nameserver: str = field(
        default="",
        metadata={"help": "the DNS zone's NS and SOA primary name (default ns1.<zone>)"},
    )
    dns_hostmaster: str = field(
        default="",
        metadata={"help": "the DNS zone's SOA mailbox name (default hostmaster.<zone>)"},
    )
    grpc_port: int = field(
        default=50051, metadata={"help": "gRPC port (Resolver, Registry, health, reflection)"}
    )
    grpc_tls_cert: str = field(
        default="", metadata={"help": "PEM certificate for gRPC over TLS (with grpc_tls_key)"}
    )
    grpc_tls_key: str = field(default="", metadata={"help": "PEM private key for gRPC TLS"})
    workers: int = field(default=1, metadata={"help": "worker processes sharing the ports"})
    case_sensitive: bool = field(
        default=False,
        metadata={"help": "match handles case-sensitively (default: as the reference)"},
    )
    l1_max_mb: int = field(default=64, metadata={"help": "L1 cache size per worker, MiB"})
    l1_ttl: float = field(default=60.0, metadata={"help": "longest an L1 entry lives, seconds"})
    ready_answers_mb: int = field(
        default=128,
        metadata={
            "help": "per worker, MiB: Handle answers to L1-hit resolutions kept ready to "
            "send again (checked against L1 on every use; counting the values each holds, "
            "about 1 KB an answer: twice L1's per-entry cost); 0 turns them off"
        },
    )
    negative_ttl: float = field(
        default=5.0, metadata={"help": "how long 'not found' is cached, seconds"}
    )
    l2_ttl: int = field(default=3600, metadata={"help": "Redis entry lifetime, seconds"})
    redis_namespace: str = field(default="idnode", metadata={"help": "Redis key prefix"})
    batch_max: int = field(default=256, metadata={"help": "most keys in one MGET / ANY batch"})
    l2_timeout: float = field(
        default=0.25, metadata={"help": "longest a miss waits for Redis before asking SQL, s"}
    )
    tcp_idle_timeout: float = field(
        default=120.0, metadata={"help": "close an idle Handle TCP connection after, seconds"}
    )
    tcp_slow_timeout: float = field(
        default=30.0,
        metadata={
            "help": "close a Handle TCP connection whose unfinished request, or whose "
            "answers it does not read, stay so this long, seconds"
        },
    )
    tcp_buffer_max_mb: int = field(
        default=64,
        metadata={
            "help": "unfinished Handle TCP requests a worker holds over all connections, "
            "MiB; past it a connection adding to a large one is closed"
        },
    )
    conns_per_client: int = field(
        default=256,
        metadata={
            "help": "open Handle TCP and HTTP connections per client address, per worker; "
            "more are closed at once (0 = no cap); also gRPC connections with calls in "
            "flight (calls on more are refused, RESOURCE_EXHAUSTED)"
        },
    )
    grpc_calls_per_client: int = field(
        default=256,
        metadata={
            "help": "gRPC calls (streams included) in flight per client address, per "
            "worker; more are refused with RESOURCE_EXHAUSTED (0 = no cap)"
        },
    )
    grpc_calls_max: int = field(
        default=10_000,
        metadata={
            "help": "gRPC calls in flight in all, per worker; more are refused with "
            "RESOURCE_EXHAUSTED (0 = no cap)"
        },
    )
    http_idle_timeout: float = field(
        default=20.0,
        metadata={
            "help": "close an HTTP connection that has not sent a whole request head this "
            "long after connecting or after its last answer, seconds"
        },
    )
    http_body_timeout: float = field(
        default=30.0,
        metadata={"help": "longest an HTTP request body may take to arrive (then 408), seconds"},
    )
    http_send_timeout: float = field(
        default=30.0,
        metadata={
            "help": "close an HTTP connection whose client does not read the answers "
            "queued for it (over 64 KiB) for this long, seconds (0 = never)"
        },
    )
    http_body_max_mb: int = field(
        default=64,
        metadata={
            "help": "HTTP request bodies being received at once per worker, MiB; past it "
            "new ones get 503"
        },
    )
    site_serial: int = field(default=1, metadata={"help": "serial of this node's HS_SITE"})
    advertise_address: str = field(
        default="", metadata={"help": "address put in HS_SITE (default: the listen address)"}
    )
    site_servers: str = field(
        default="",
        metadata={
            "help": "every server of this node's site when it has several, this one "
            "included: comma-separated ID=HOST:PORT[:HTTP_PORT] (Handle UDP+TCP port, "
            "optional HTTP port); each server holds the handles that hash to it and asks "
            "the responsible one for the others; empty = a site of one server"
        },
    )
    site_server_id: int = field(default=0, metadata={"help": "this server's ID in --site-servers"})
    site_hash: str = field(
        default="handle",
        metadata={
            "help": "what picks the server of a multi-server site: prefix, suffix or "
            "handle (the whole handle), as HS_SITE's hash option"
        },
    )
    site_peer_timeout: float = field(
        default=1.0,
        metadata={
            "help": "longest a lookup waits for the server of the site a handle hashes "
            "to (then RC 2 naming it), seconds"
        },
    )
    site_peer_ttl: float = field(
        default=5.0,
        metadata={
            "help": "longest an answer of another server of the site is kept in L1: a "
            "write there is seen here within this, seconds (0 = not kept)"
        },
    )
    shutdown_grace: float = field(
        default=10.0, metadata={"help": "seconds to finish in-flight requests on SIGTERM"}
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    stall_trace_ms: float = field(
        default=0.0,
        metadata={
            "help": "diagnostics: log the Python stack a worker's event loop was running "
            "when it has not run a timer for this many milliseconds, once per stall "
            "(at least 10; 0 = off). Stalls are counted whether or not this is set "
            "(idnode_event_loop_stalls_total)"
        },
    )
    rate_limit: float = field(
        default=0.0,
        metadata={
            "help": "requests/s allowed per client address, bursts of twice that; "
            "over it: RC 603; counted across nodes through Redis, else per worker (0 = off)"
        },
    )
    # The node in the hierarchy: recursion for clients that allow it (opFlag REC).
    recursion: bool = field(
        default=False,
        metadata={
            "help": "resolve handles under a prefix delegated here at the delegate's node "
            "for clients that set REC (the HANDLE.NET library does by default) and answer "
            "with the result instead of a 302 referral; with --root-info, also any handle "
            "not held here, from the root (default off, as the reference server's "
            "allow_recursion)"
        },
    )
    root_info: str = field(
        default="",
        metadata={
            "help": "root sites for --recursion (the reference's root_info, an HS_SITE "
            "record or siteinfo.json): a handle neither homed nor delegated here is "
            "resolved from them; empty = only delegated prefixes are recursed"
        },
    )
    recursion_limit: int = field(
        default=8,
        metadata={
            "help": "highest recursionCount passed on (a request arriving with it or "
            "more gets RC 6) and most referrals one recursive lookup follows"
        },
    )
    upstream_timeout: float = field(
        default=2.0,
        metadata={"help": "longest one upstream server is waited for (UDP and TCP), seconds"},
    )
    recursion_cache_entries: int = field(
        default=10_000,
        metadata={"help": "answers of recursive lookups kept per worker (LRU)"},
    )
    recursion_max_ttl: float = field(
        default=3600.0,
        metadata={"help": "longest a recursive answer is kept (less when its TTL says so), s"},
    )
    recursion_negative_ttl: float = field(
        default=30.0,
        metadata={"help": "how long a recursive 'not found' is kept, seconds (at most 60)"},
    )
    recursion_stale: float = field(
        default=3600.0,
        metadata={
            "help": "how long past its TTL a recursive answer is still served while its "
            "server is down or does not answer, seconds (0 = never stale)"
        },
    )
    probe_interval: float = field(
        default=5.0,
        metadata={
            "help": "with --recursion: seconds between health probes (GET_SITE_INFO) of "
            "the servers of delegated prefixes (with 20 percent jitter; 0 = no probes)"
        },
    )
    probe_failures: int = field(
        default=2,
        metadata={"help": "probes in a row unanswered before a server is marked down"},
    )
    signatures_per_client: float = field(
        default=20.0,
        metadata={
            "help": "answers signed with the server key (certified, outside a keyed "
            "session) per second per client address (across nodes through Redis, else "
            "per worker); over it the request "
            "gets RC 603, unsigned (0 = no limit)"
        },
    )
    signature_burst: int = field(
        default=40,
        metadata={
            "help": "signed answers a client address may have at once before "
            "--signatures-per-client paces it"
        },
    )
    quota_per_prefix: int = field(
        default=0,
        metadata={
            "help": "identifiers an enterprise prefix may register; over it: RC 604 (0 = off)"
        },
    )
    quota_overrides: str = field(
        default="",
        metadata={"help": "per-prefix quotas, e.g. 88.166.1001=5000000,88.166.1002=100"},
    )
    server_admins: str = field(
        default="",
        metadata={"help": "comma-separated INDEX:HANDLE keys allowed everything, incl. HOME_NA"},
    )
    secret_key_file: str = field(
        default="idnode-secret.key",
        metadata={"help": "node key that seals HS_SECKEY values (created by idnode init)"},
    )
    session_ttl: float = field(
        default=600.0,
        metadata={"help": "longest a session lives idle, seconds (clients may ask for less)"},
    )
    challenge_ttl: float = field(
        default=60.0, metadata={"help": "a 402 challenge must be answered within, seconds"}
    )
    session_cipher: str = field(
        default="aes",
        metadata={
            "help": "cipher of the session keys this node issues: aes, desede or des "
            "(des only for clients that know nothing else)"
        },
    )
    sessions_per_client: int = field(
        default=64,
        metadata={"help": "open sessions and pending challenges allowed per client address"},
    )
    sessions_max: int = field(
        default=100_000,
        metadata={
            "help": "open Handle sessions and pending challenges allowed in all, from every "
            "client (and, separately, anonymous REST sessions); past it setups are refused "
            "with RC 3 (REST: 503) until some expire"
        },
    )
    challenge_mb_per_client: int = field(
        default=4,
        metadata={
            "help": "MiB of requests one client address may have waiting for their 402 "
            "challenges to be answered (kept sealed in the registry; RC 3 beyond)"
        },
    )
    challenge_mb_max: int = field(
        default=32,
        metadata={
            "help": "MiB of requests all clients together may have waiting for their 402 "
            "challenges (RC 3 beyond): what unauthenticated clients can put in the registry"
        },
    )
    auth_failures: int = field(
        default=10,
        metadata={
            "help": "failed authentications a client address may make, on every door, "
            "before it gets one try per --auth-retry-interval (Handle RC 603, REST 429, "
            "gRPC RESOURCE_EXHAUSTED); counted across nodes through Redis, else per "
            "worker; 0 = off"
        },
    )
    auth_identity_failures: int = field(
        default=100,
        metadata={
            "help": "failed authentications for one identity (INDEX:HANDLE), from every "
            "address together, before it gets one try per --auth-retry-interval; across "
            "nodes through Redis, else per worker"
        },
    )
    auth_retry_interval: float = field(
        default=6.0,
        metadata={"help": "seconds per try a throttled client address or identity gets back"},
    )
    # The node above, for registering prefixes approved here (idnode prefix approve).
    upward_top: str = field(
        default="",
        metadata={
            "help": "the node above (HOST:PORT, Handle TCP) where approved prefixes are "
            "registered; empty = not registered upward"
        },
    )
    upward_admin: str = field(
        default="",
        metadata={"help": "the administrator at the node above, INDEX:HANDLE (300:0.NA/88.166)"},
    )
    upward_secret: str = field(
        default="", metadata={"help": "that administrator's secret key (or --upward-key-file)"}
    )
    upward_key_file: str = field(
        default="", metadata={"help": "that administrator's RSA private key, PEM"}
    )
    upward_retry_max: float = field(
        default=300.0,
        metadata={
            "help": "longest wait between attempts of a queued upward registration "
            "(doubling from 2 s), seconds"
        },
    )
    # Statistics reported upward (registry/statistics.py, resolver/upstream/reporting.py).
    upward_http: str = field(
        default="",
        metadata={
            "help": "the node above's HTTP port (HOST:PORT or http(s)://...) statistics are "
            "POSTed to; empty = the HTTP interface its site information publishes"
        },
    )
    statistics_flush: float = field(
        default=10.0,
        metadata={"help": "seconds between a worker's flushes of its per-prefix counts"},
    )
    statistics_report: float = field(
        default=60.0,
        metadata={
            "help": "seconds between reports of per-prefix statistics to --upward-top "
            "(0 = not reported; counted all the same)"
        },
    )

    @property
    def site_address(self) -> str:
        if self.advertise_address:
            return self.advertise_address
        return "127.0.0.1" if self.listen in ("0.0.0.0", "::", "") else self.listen


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _convert(name: str, raw: Any, source: str) -> Any:
    kind = FIELDS[name].type
    try:
        if kind in ("bool", bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind in ("int", int):
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if kind in ("float", float):
            return float(raw)
        if FIELDS[name].metadata.get("repeat"):
            return _repeated(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} = {raw!r} is not a valid {kind}") from None


def _repeated(raw: Any) -> tuple[str, ...]:
    """A repeatable setting's values: a list (repeated flag, TOML array) or one string
    of comma-separated values (environment, TOML string)."""
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    return tuple(s for s in (str(x).strip() for x in items) if s)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    fallback: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from flags (None = not given) over IDNODE_* over the TOML file over
    ``fallback`` (a command's own defaults) over the defaults here."""
    env = os.environ if env is None else env
    values: dict[str, Any] = dict(fallback or {})
    path = config_file or env.get("IDNODE_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        section = data.get("idnode", data)
        for k, v in section.items():
            name = k.replace("-", "_")
            if name not in FIELDS:
                raise ConfigError(f"{path}: unknown setting {k!r}")
            values[name] = _convert(name, v, str(path))
    for name in FIELDS:
        var = "IDNODE_" + name.upper()
        if var in env:
            values[name] = _convert(name, env[var], var)
    for name, v in (flags or {}).items():
        if v is not None and name in FIELDS:
            values[name] = _convert(name, v, "--" + name.replace("_", "-"))
    s = Settings(**values)
    if s.workers < 1:
        raise ConfigError("workers must be at least 1")
    if s.ready_answers_mb < 0:
        raise ConfigError("ready_answers_mb must be 0 (off) or more")
    if s.redis_cluster and not s.redis_url:
        raise ConfigError(
            "redis_cluster (--redis-cluster) needs redis_url (--redis-url) naming any node of "
            "the cluster"
        )
    if s.database_read_url and not s.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "database_read_url (read replicas) needs a PostgreSQL database_url, the primary; "
            f"database_url is {s.database_url.split('://', 1)[0]}"
        )
    if not 1 <= s.database_pool_size <= 1000:
        raise ConfigError("database_pool_size must be 1 to 1000 connections")
    if s.replica_max_lag <= 0:
        raise ConfigError("replica_max_lag must be positive (seconds)")
    if s.session_cipher.lower() not in ("aes", "desede", "des"):
        raise ConfigError("session_cipher must be aes, desede or des")
    if s.challenge_mb_per_client < 1 or s.challenge_mb_max < s.challenge_mb_per_client:
        # a request is up to 256 KiB (sealed, about 350 KB): below 1 MiB a client could
        # not wait for one large write
        raise ConfigError(
            "challenge_mb_per_client must be at least 1, and challenge_mb_max at least that"
        )
    if s.signatures_per_client > 0 and s.signature_burst < 1:
        raise ConfigError("signature_burst must be at least 1")
    if s.auth_retry_interval <= 0:
        raise ConfigError("auth_retry_interval must be positive")
    if s.recursion_limit < 0 or s.recursion_limit > 255:
        raise ConfigError("recursion_limit must be 0-255 (recursionCount is one byte)")
    if s.stall_trace_ms and s.stall_trace_ms < 10:
        raise ConfigError("stall_trace_ms must be 0 (off) or at least 10 (milliseconds)")
    if s.probe_failures < 1:
        raise ConfigError("probe_failures must be at least 1")
    if s.root_info:
        from .upstream.root_info import load_root_info  # read once here: a bad file stops

        try:
            load_root_info(s.root_info)
        except IdnodeError as exc:
            raise ConfigError(f"root_info: {exc}") from None
    if s.upward_top and not (s.upward_admin and (s.upward_secret or s.upward_key_file)):
        raise ConfigError("upward_top needs upward_admin and upward_secret or upward_key_file")
    site_members(s)  # --site-servers, --site-server-id and --site-hash agree
    for port_name in ("handle_port", "http_port", "grpc_port", "dns_port"):
        if not 0 <= getattr(s, port_name) <= 65535:
            raise ConfigError(f"{port_name} must be a port number")
    return s


class SiteMember(NamedTuple):
    """One server of this node's site, as --site-servers names it."""

    server_id: int
    host: str
    port: int  # Handle UDP and TCP
    http_port: int | None = None


SITE_HASHES = {"prefix": 0, "suffix": 1, "handle": 2}  # HS_SITE's hashOption


def site_members(s: Settings) -> tuple[SiteMember, ...]:
    """The servers of --site-servers in the order given (the hash's order); () for a
    site of one server. ConfigError when the list, the ID or the hash option is wrong."""
    if s.site_hash.lower() not in SITE_HASHES:
        raise ConfigError("site_hash must be prefix, suffix or handle")
    if not s.site_servers.strip():
        return ()
    members: list[SiteMember] = []
    for item in s.site_servers.split(","):
        sid, eq, where = item.strip().partition("=")
        parts = where.rsplit(":", 2) if where.count(":") in (1, 2) else []
        if where.startswith("["):  # [v6]:port[:http]
            host, _, ports = where[1:].partition("]")
            parts = [host, *ports.lstrip(":").split(":")]
        try:
            if not eq or len(parts) not in (2, 3) or not parts[0]:
                raise ValueError(item)
            m = SiteMember(
                int(sid),
                parts[0],
                int(parts[1]),
                int(parts[2]) if len(parts) == 3 else None,
            )
            ipaddress.ip_address(m.host)
        except ValueError:
            raise ConfigError(
                f"site_servers: {item.strip()!r} is not ID=HOST:PORT[:HTTP_PORT] "
                "(HOST an IP address)"
            ) from None
        members.append(m)
    ids = [m.server_id for m in members]
    if len(set(ids)) != len(ids):
        raise ConfigError("site_servers: a server ID appears twice")
    if s.site_server_id not in ids:
        raise ConfigError(
            f"site_server_id {s.site_server_id} is not one of the IDs in site_servers "
            f"({', '.join(map(str, ids))})"
        )
    return tuple(members)


def existing_registry_url(cwd: Path | None = None) -> str:
    """The default registry of a command that works on an existing one: idnode.db, or
    the demo's idnode-demo.db when only that one is in the working directory (so the
    commands run beside `idnode demo` find its registry)."""
    here = cwd or Path.cwd()
    own, demo = (here / sqlite_path(u) for u in (DATABASE_URL, DEMO_DATABASE_URL))
    return DEMO_DATABASE_URL if demo.exists() and not own.exists() else DATABASE_URL


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///PATH`` URL ("" for any other URL)."""
    return url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""


def add_setting_flags(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """A flag per setting (``--database-url`` ...), or per setting named in ``only``, each
    with its environment variable and default in its help. A field whose metadata has
    ``"repeat": True`` (typed ``tuple[str, ...]``) is a repeatable flag; its environment
    variable is comma-separated and its TOML key a list or a comma-separated string."""
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (also IDNODE_CONFIG)")
    for name, f in FIELDS.items():
        if only is not None and name not in only:
            continue
        flag = "--" + name.replace("_", "-")
        env = "IDNODE_" + name.upper()
        help_text = f"{f.metadata.get('help', '')} [env {env}; default {f.default!r}]"
        if f.type in ("bool", bool) and f.default is True:
            # on by default: --no-... turns it off
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        elif f.type in ("bool", bool):
            parser.add_argument(
                flag, dest=name, action="store_const", const=True, default=None, help=help_text
            )
        elif f.metadata.get("repeat"):
            # A repeatable setting (metadata "repeat": True, typed tuple[str, ...]): each
            # use of the flag adds a value; given, the flags replace the env's and file's.
            parser.add_argument(
                flag,
                dest=name,
                action="append",
                default=None,
                metavar=name.split("_")[-1].upper(),
                help=help_text + " (repeatable)",
            )
        else:
            parser.add_argument(
                flag, dest=name, default=None, metavar=name.split("_")[-1].upper(), help=help_text
            )


def settings_from_args(
    args: argparse.Namespace, fallback: Mapping[str, Any] | None = None
) -> Settings:
    """The settings of a parsed command line (flags added by add_setting_flags)."""
    flags = {name: getattr(args, name, None) for name in FIELDS}
    return load_settings(flags, config_file=getattr(args, "config", None), fallback=fallback)
