"""Run N workers sharing the ports; restart a worker that dies; stop them all on SIGTERM."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING

from .settings import Settings

if TYPE_CHECKING:  # the supervisor itself stays small: node.py is imported by workers
    from .listeners import Listeners

log = logging.getLogger("idnode.supervisor")

FAST_FAILURE_SECONDS = 5.0  # a worker that dies this soon after starting failed to start
MAX_FAST_FAILURES = 5
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies (kill -9 included), so no worker
    keeps serving the ports without it; then check it did not die before we asked."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError) as exc:  # no prctl: the parent check still runs
            log.warning("cannot ask to die with the supervisor: %s", exc)
    if os.getppid() != parent:
        raise SystemExit(0)


def _worker(settings: Settings, listeners: Listeners, parent: int) -> None:
    _die_with_parent(parent)
    # Ctrl-C reaches the whole process group; the supervisor alone decides to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .node import run_worker

    raise SystemExit(run_worker(settings, listeners, parent))


def supervise(settings: Settings, listeners: Listeners) -> int:
    """Run the workers on ``listeners`` (bound by the caller; workers get copies of the
    sockets, so none binds a port itself and no other node can join them)."""
    # Metrics from every worker are summed through files in one directory.
    own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    if own_metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="idnode-metrics-")
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.info(
                "received %s; stopping %d workers", signal.Signals(signum).name, settings.workers
            )
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def start(i: int) -> tuple[BaseProcess, float]:
        p = ctx.Process(
            target=_worker,
            args=(settings, listeners.for_worker(i), os.getpid()),
            name=f"idnode-worker-{i}",
        )
        p.start()
        log.info("worker %d started (pid %s)", i, p.pid)
        return p, time.monotonic()

    from .udp_batch_io import choose

    log.info("handle UDP I/O: %s", choose(settings.udp_batch_io)[1])  # each worker's
    workers = {i: start(i) for i in range(settings.workers)}
    fast_failures = 0
    code = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for i, (p, started) in list(workers.items()):
                if p.is_alive() or stopping:
                    continue
                lived = time.monotonic() - started
                log.warning(
                    "worker %d (pid %s) exited with code %s after %.1fs; restarting",
                    i,
                    p.pid,
                    p.exitcode,
                    lived,
                )
                fast_failures = fast_failures + 1 if lived < FAST_FAILURE_SECONDS else 0
                if fast_failures >= MAX_FAST_FAILURES:
                    log.error("workers keep failing at start; giving up (see the errors above)")
                    stopping = True
                    code = 2
                    break
                time.sleep(min(5.0, 0.2 * 2**fast_failures))
                workers[i] = start(i)
    finally:
        for p, _ in workers.values():
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker finishes its requests in flight
        deadline = time.monotonic() + settings.shutdown_grace + 5
        for p, _ in workers.values():
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("worker pid %s did not stop in time; killing it", p.pid)
                p.kill()
                p.join()
        listeners.close()
        if own_metrics_dir:
            shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)
        log.info("all workers stopped")
    return code
