"""The registry schema. Changes go through Alembic migrations (registry/migrations).

One row per handle holding the whole value list, encoded once in Handle wire form
(``int4 n`` + values): at 1.5e9 handles, a row per value would be ~10e9 rows, and
the resolver answers from these bytes without re-encoding them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

prefixes = Table(
    "prefixes",
    metadata,
    Column("prefix", String(64), primary_key=True),  # normalised
    Column("display", String(64), nullable=False),  # as registered
    Column("owner", Text, nullable=False, server_default=""),
    Column("status", String(16), nullable=False, server_default="homed"),
    Column("created_at", BigInteger, nullable=False),  # Unix seconds
)

handles = Table(
    "handles",
    metadata,
    # normalised (case-folded unless configured); COLLATE "C" on PostgreSQL (0007)
    Column("handle", Text, primary_key=True),
    Column("display", Text, nullable=False),  # as registered
    Column("prefix", String(64), nullable=False),  # normalised
    Column("vals", LargeBinary, nullable=False),  # encode_values(...): int4 n + values
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# No (prefix, handle) index since migration 0007: in byte order ("C" collation on
# PostgreSQL) a prefix's handles are one range of the primary key (names.key_range).

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", BigInteger, nullable=False),
    Column("actor", Text, nullable=False),  # INDEX:HANDLE of the key, or "cli"/"import"
    Column("op", String(32), nullable=False),
    Column("handle", Text, nullable=False),  # normalised
    Column("rc", Integer, nullable=False),  # the Handle response code given
    Column("before_sha256", String(64), nullable=False, server_default=""),
    Column("after_sha256", String(64), nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default=""),
)

Index("audit_log_handle", audit_log.c.handle, audit_log.c.id)

templates = Table(
    "templates",
    metadata,
    Column("prefix", String(64), primary_key=True),  # normalised owning prefix
    Column("version", String(64), primary_key=True),
    Column("document", Text, nullable=False),  # the template as JSON (registry/templates.py)
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False, server_default=""),
)

invalidations = Table(
    "invalidations",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("handle", Text, nullable=False),  # normalised key changed by a write
    Column("at", BigInteger, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("identity_handle", Text, nullable=True),  # set once a challenge is answered
    Column("identity_index", Integer, nullable=True),
    Column("nonce", LargeBinary, nullable=True),  # the pending challenge, single-use
    Column("digest", LargeBinary, nullable=True),
    Column("request", LargeBinary, nullable=True),  # the request waiting for it (wire form)
    Column("challenge_expires", Float, nullable=False, server_default="0"),
    Column("expires", Float, nullable=False),  # Unix time
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_sha256", String(64), primary_key=True),  # the key itself is never stored
    Column("identity_handle", Text, nullable=False),  # the admin the key acts as
    Column("identity_index", Integer, nullable=False),
    Column("label", Text, nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
)
