"""The registry service: every write, from any front door, goes through here.

validate (handle syntax, value limits and typed data) → authorise (HS_ADMIN of the
handle, else of its prefix handle ``0.NA/<prefix>``; server admins from the
configuration) → write in one transaction with its audit row → notify (the node
invalidates Redis and every worker's L1 before the caller hears "done").
Refusals leave nothing but their audit row. Results are typed (results.py): each
front door renders them in its own protocol.

The service only puts its parts together, one per seam:

    permissions      who may do what (HS_ADMIN, HS_VLIST groups, server admins)
    prefix_templates metadata templates: publish, cache, check values against them
    writes           one handle: create/mint/overwrite, delete, value changes
    batches          many new handles in one statement
    homed_prefixes   home, unhome and list prefixes; list the handles under one
    credentials      the keys, API keys and tokens that say who a caller is
    rest_sessions    the REST door's sessions, shared by every worker
    console_sessions the web console's sign-in sessions, in the same table
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import asyncpg

from .audit_history import AuditHistory
from .audit_trail import AuditTrail
from .auth import Identity
from .batch_jobs import BatchJobs
from .batches import MAX_BATCH, Batches
from .console_sessions import ConsoleSessionStore
from .credentials import Credentials
from .homed_prefixes import HomedPrefixes
from .key_admin import ApiKeys
from .names import PrefixAuthority
from .own_applications import OwnApplications
from .permissions import Key, Permissions
from .prefix_applications import PrefixApplications
from .prefix_templates import PrefixTemplates
from .quotas import Quotas
from .rest_sessions import RestSessionStore
from .sealing import Sealer
from .statistics import Statistics
from .store import CommitUnknown, Store, StoreError
from .value_search import ValueSearch
from .writes import HandleWrites, OnChange

__all__ = ["MAX_BATCH", "OUTCOME_UNKNOWN", "RegistryService", "outcome_unknown", "unavailable"]

UNAVAILABLE = "The registry is unavailable; try again"
OUTCOME_UNKNOWN = (
    "The registry went away while committing this write: it may have taken effect; "
    "read the handle before you retry"
)


def outcome_unknown(exc: BaseException) -> bool:
    """Whether a write's outcome cannot be known (the connection was lost during COMMIT):
    a door says so, never "failed" (it may have committed) nor "done"."""
    return isinstance(exc, CommitUnknown)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the registry cannot be reached now (a door answers "try
    again": Handle RC 2, REST 503), rather than a fault to report as one."""
    return isinstance(
        exc,
        (
            StoreError,
            OSError,  # refused, reset: the database is down or restarting
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,  # e.g. the connection was closed mid-query
            asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
            asyncpg.TooManyConnectionsError,
            sqlite3.OperationalError,  # locked, or the file cannot be opened
        ),
    )


class RegistryService:
    def __init__(
        self,
        store: Store,
        authority: PrefixAuthority,
        *,
        sealer: Sealer | None = None,
        server_admins: Iterable[Identity] = (),
        on_change: OnChange | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.store = store
        self.authority = authority
        self.sealer = sealer
        self.quotas = quotas
        self.case_sensitive = store.case_sensitive
        self.audit = AuditTrail(store)
        self.permissions = Permissions(store, server_admins)
        self.audit_history = AuditHistory(store, self.permissions, self.audit)
        self.templates = PrefixTemplates(store, authority, self.permissions, self.audit)
        self.writes = HandleWrites(
            store,
            authority,
            self.permissions,
            self.templates,
            self.audit,
            sealer=sealer,
            quotas=quotas,
            on_change=on_change,
        )
        self.batches = Batches(self.writes, self.permissions, self.templates)
        self.prefixes = HomedPrefixes(store, authority, self.permissions, self.audit)
        self.credentials = Credentials(store, self.audit, sealer)
        # The prefix lifecycle: applications, approvals, suspensions (writes under a
        # suspended prefix are refused with the same set the resolver answers from).
        self.applications = PrefixApplications(
            store, authority, self.permissions, self.audit, sealer=sealer, on_change=on_change
        )
        self.writes.suspensions = self.applications.suspensions
        # Statistics reported upward, and (at a top-level node) received from below.
        self.statistics = Statistics(store, authority, self.permissions)
        # Reverse lookup by value (--search-index; /hrls/handles).
        self.search = ValueSearch(store, authority, self.permissions)
        # Uploads run in the background, their progress kept in the registry (any worker
        # reads it); API keys as administrators manage their own (/api/api-keys).
        self.batch_jobs = BatchJobs(store, self.batches, self.permissions)
        self.api_keys = ApiKeys(store, self.permissions, self.audit)
        self.own_applications = OwnApplications(store)  # an applicant's view of its own

        # What the front doors call, by the names they use.
        self.create = self.writes.create
        self.delete = self.writes.delete
        self.add_values = self.writes.add_values
        self.put_values = self.writes.put_values
        self.modify_values = self.writes.modify_values
        self.remove_values = self.writes.remove_values
        self.batch_create = self.batches.create
        self.put_template = self.templates.put
        self.list_handles = self.prefixes.list_handles
        self.home = self.prefixes.home
        self.unhome = self.prefixes.unhome
        self.list_homed = self.prefixes.list_homed
        self.may_read_restricted = self.permissions.may_read_restricted
        self.same_identity = self.permissions.same_identity
        self.is_server_admin = self.permissions.is_server_admin
        self.key_for = self.credentials.key_for
        self.check_password = self.credentials.check_password

    def rest_sessions(
        self, ttl: float, anonymous_ttl: float = 60.0, total: int = 100_000
    ) -> RestSessionStore:
        """The REST sessions kept in this registry, with these lifetimes and cap."""
        return RestSessionStore(self.store, ttl, anonymous_ttl, total)

    def console_sessions(
        self, idle: float, absolute: float, total: int = 100_000
    ) -> ConsoleSessionStore:
        """The web console's sign-in sessions (the REST sessions' table, another key)."""
        return ConsoleSessionStore(self.store, idle, absolute, total)

    @property
    def server_admins(self) -> set[Key]:
        """Server administrators' keys; the set itself, so a change applies at once."""
        return self.permissions.server_admins
