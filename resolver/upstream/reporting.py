"""Reporting statistics upward (registry/statistics.py says what is counted and why a
report is exactly once): each worker's timer flushes its counts into the registry every
``--statistics-flush`` seconds, and every ``--statistics-report`` seconds claims the rows
the node above has not acknowledged (with a lease, so one worker sends each) and POSTs
their cumulative snapshots to the node above's ``/api/statistics``.

The channel is the top's REST API, authenticated as the administrator the node above
granted this node (``--upward-admin``, the same credentials ``register-upward`` uses):
Basic ``INDEX:HANDLE`` and the secret, or with ``--upward-key-file`` a REST session whose
nonce the private key signs. The top checks that this administrator administers each
prefix reported (the ``0.NA/<prefix>`` chain's HS_ADMIN), so a node cannot report for a
prefix it was not granted. A row is marked sent only after the top's acknowledgement;
a failure backs off (2 s doubling to ``--upward-retry-max``) and the row stays queued in
the registry, across restarts.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from idnode.registry.auth import Identity
from idnode.registry.names import PrefixAuthority
from idnode.registry.statistics import flush, report_json, seconds_to_midnight
from idnode.registry.store import StatisticsRow, Store

from .. import metrics
from ..codec.codes import InterfaceProtocol

log = logging.getLogger("idnode.statistics")

MAX_ROWS = 500  # rows in one report
# Test hook (the exactly-once test): after the top acknowledged a report and before the
# rows are marked sent, write this file and block the worker (the test kills the node).
PAUSE_ENV = "IDNODE_TEST_STATISTICS_PAUSE"


class ReportRefused(Exception):
    """The node above answered the report with an error."""


class Reporter:
    def __init__(
        self,
        store: Store,
        top: str,
        admin: Identity,
        *,
        secret: bytes | None = None,
        key_file: str | None = None,
        http: str = "",
        retry_max: float = 300.0,
        timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.top = top
        self.admin = admin
        self.secret = secret
        self.key_file = key_file
        self.http = http
        self.retry_max = retry_max
        self.timeout = timeout
        self._node = ""

    async def base_url(self) -> str:
        if self.http:
            return self.http if "://" in self.http else f"http://{self.http}"
        from .register import fetch_site  # the top's HS_SITE: its HTTP interface

        site = await asyncio.to_thread(fetch_site, self.top, self.timeout)
        host = self.top.rpartition(":")[0].strip("[]")
        servers = sorted(site.servers, key=lambda s: s.ip != host)  # the one asked first
        for s in servers:
            for i in s.interfaces:
                if i.protocol in (InterfaceProtocol.HTTP, InterfaceProtocol.HTTPS):
                    scheme = "https" if i.protocol == InterfaceProtocol.HTTPS else "http"
                    ip = f"[{s.ip}]" if ":" in s.ip else s.ip
                    return f"{scheme}://{ip}:{i.port}"
        raise ReportRefused(f"{self.top} publishes no HTTP interface (set --upward-http)")

    async def _authorization(self, http: aiohttp.ClientSession, base: str) -> str:
        who = quote(str(self.admin), safe="")
        if self.secret is not None:
            token = base64.b64encode(who.encode() + b":" + self.secret).decode()
            return f"Basic {token}"
        # A REST session proved with the private key (as the reference's clients do).
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(Path(self.key_file or "").read_bytes(), None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ReportRefused("--upward-key-file: statistics reports need an RSA key")
        async with http.post(base + "/api/sessions") as r:
            opened = await r.json(content_type=None)
        sid, nonce = opened["sessionId"], base64.b64decode(opened["nonce"])
        cnonce = os.urandom(16)
        signature = key.sign(nonce + cnonce, padding.PKCS1v15(), hashes.SHA256())
        header = (
            f'Handle sessionId="{sid}", id="{who}", type="HS_PUBKEY",'
            f' cnonce="{base64.b64encode(cnonce).decode()}", alg="SHA256",'
            f' signature="{base64.b64encode(signature).decode()}"'
        )
        async with http.put(base + "/api/sessions/this", headers={"Authorization": header}) as r:
            if r.status != 200:
                raise ReportRefused(f"the session at the node above: HTTP {r.status}")
        return f'Handle sessionId="{sid}"'

    async def send(self, node: str, rows: list[StatisticsRow]) -> list[dict[str, Any]]:
        """POST the reports; the top's per-report results (raises when it answered none)."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            base = await self.base_url()
            auth = await self._authorization(http, base)
            body = {"node": node, "reports": [report_json(r) for r in rows]}
            async with http.post(
                base + "/api/statistics", json=body, headers={"Authorization": auth}
            ) as r:
                doc = await r.json(content_type=None)
                if r.status != 200 or not isinstance(doc, dict) or "results" not in doc:
                    msg = doc.get("message", "") if isinstance(doc, dict) else ""
                    raise ReportRefused(f"HTTP {r.status} {msg}".strip())
                results: list[dict[str, Any]] = doc["results"]
                return results

    async def run_once(self) -> int:
        """Send what is due; how many rows the top acknowledged."""
        # A claimed row whose worker died (or was killed) is sent again after the lease:
        # a resend is harmless (the top keeps the highest seq), so the lease is short.
        lease = 2 * self.timeout
        rows = await self.store.claim_statistics(time.time(), lease, MAX_ROWS)
        if not rows:
            metrics.STATISTICS_QUEUED.set(await self.store.statistics_pending())
            return 0
        if not self._node:
            self._node = await self.store.statistics_node()
        try:
            results = await self.send(self._node, rows)
        except Exception as exc:
            await self._failed([(r.prefix, r.day) for r in rows], rows, str(exc) or repr(exc))
            return 0
        acked: list[tuple[str, str, int]] = []
        refused: list[tuple[str, str]] = []
        why = ""
        for res in results:
            key = (str(res.get("prefix", "")), str(res.get("day", "")))
            if res.get("responseCode") == 1:
                acked.append((*key, int(res.get("seq", 0))))
            else:
                refused.append(key)
                why = str(res.get("message", "refused"))
        pause = os.environ.get(PAUSE_ENV)
        if pause and acked:
            Path(pause).write_text(f"{len(acked)}\n")
            log.warning("test hook: the top acknowledged %d reports; blocking", len(acked))
            time.sleep(3600)  # blocks the worker on purpose: the test kills the node here
        await self.store.statistics_sent(acked)
        if refused:
            await self._failed(refused, rows, f"refused by the node above: {why}")
        metrics.STATISTICS_SENT.inc(len(acked))
        if acked:
            metrics.STATISTICS_LAST.set(time.time())
        metrics.STATISTICS_QUEUED.set(await self.store.statistics_pending())
        return len(acked)

    async def _failed(
        self, keys: list[tuple[str, str]], rows: list[StatisticsRow], error: str
    ) -> None:
        attempts = 1 + max((r.attempts for r in rows), default=0)
        wait = min(self.retry_max, 2.0 ** min(attempts, 16))
        log.warning(
            "statistics report of %d rows to %s failed (attempt %d, next in %.0fs): %s",
            len(keys),
            self.top,
            attempts,
            wait,
            error,
        )
        metrics.STATISTICS_FAILED.inc()
        await self.store.statistics_failed(keys, error[:500], time.time() + wait)


async def statistics_timer(
    store: Store,
    authority: PrefixAuthority,
    reporter: Reporter | None,
    flush_every: float,
    report_every: float,
) -> None:
    """A worker's flushes (every ``flush_every`` seconds and at each UTC midnight, so a
    day's counts stay that day's) and, with a reporter, its reports."""
    next_report = time.monotonic() + report_every
    while True:
        await asyncio.sleep(max(0.01, min(flush_every, seconds_to_midnight() + 0.01)))
        try:
            await flush(store, authority)
        except Exception as exc:
            log.warning("cannot store this worker's statistics (kept for the next try): %s", exc)
        if reporter is not None and report_every > 0 and time.monotonic() >= next_report:
            try:
                await reporter.run_once()
            except Exception as exc:
                log.warning("cannot report statistics upward: %s", exc)
            next_report = time.monotonic() + report_every
