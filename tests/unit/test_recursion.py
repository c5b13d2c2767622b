"""The recursion stage and the health marks, without real nodes: a stub walker answers as
each test tells it, a stub delegation stage refers everything under 88.166.1001 to one
site. Real nodes: tests/e2e/test_recursion.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from idnode.loadtest.processes import free_port
from idnode.registry.names import PrefixAuthority
from idnode.resolver.codec import (
    ErrorResponse,
    HandleValue,
    Interface,
    Message,
    OpCode,
    OpFlag,
    ResolutionResponse,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    encode_site,
    encode_values,
)
from idnode.resolver.core import Resolver
from idnode.resolver.l1 import Entry, L1Cache
from idnode.resolver.settings import ConfigError, load_settings
from idnode.resolver.stages.delegation import DelegationStage
from idnode.resolver.stages.l1_cache import L1CacheStage
from idnode.resolver.stages.recursion import AnswerCache, Recursion, RecursionStage
from idnode.resolver.stages.stage import Lookup, Resolution, Stage
from idnode.resolver.upstream.health import ServerHealth, server_label
from idnode.resolver.upstream.root_info import write_root_info
from idnode.resolver.upstream.walker import Walker, WalkError, WalkResult

REC = int(OpFlag.REC)
E_PORT = free_port()  # nothing listens: the stub walker answers
E_SERVER = ServerInfo.at("127.0.0.1", 1, (Interface(2, 0, E_PORT), Interface(2, 1, E_PORT)))
E_SITE = SiteInfo((E_SERVER,))


def url(handle: str, ttl: int = 86400) -> tuple[HandleValue, ...]:
    return (HandleValue(1, "URL", f"https://example.com/{handle}".encode(), ttl=ttl),)


class StubWalker:
    """Answers from ``answers`` (handle -> Message or WalkError); records what it was
    asked and with which recursionCount."""

    def __init__(self) -> None:
        self.answers: dict[str, Message | WalkError] = {}
        self.asked: list[tuple[str, int, str]] = []  # (how, count, handle)

    def _answer(self, handle: str) -> WalkResult:
        a = self.answers.get(handle)
        if isinstance(a, WalkError):
            raise a
        if a is None:
            a = Message(OpCode.RESOLUTION, ErrorResponse("no"), ResponseCode.HANDLE_NOT_FOUND)
        return WalkResult(a, E_SITE, E_SERVER, ())

    async def resolve_at(
        self, sites: Sequence[SiteInfo], handle: str, *, recursion_count: int = 0, **_: Any
    ) -> WalkResult:
        self.asked.append(("sites", recursion_count, handle))
        return self._answer(handle)

    async def resolve(self, handle: str, *, recursion_count: int = 0, **_: Any) -> WalkResult:
        self.asked.append(("root", recursion_count, handle))
        return self._answer(handle)

    def found(self, handle: str, ttl: int = 86400) -> None:
        self.answers[handle] = Message(
            OpCode.RESOLUTION, ResolutionResponse(handle, url(handle, ttl)), ResponseCode.SUCCESS
        )


class StubDelegation:
    """Refers 88.166.1001/... (302) to E's site; nothing else."""

    async def lookup(self, q: Lookup) -> Resolution | None:
        if q.key.startswith("88.166.1001/"):
            site = HandleValue(1, "HS_SITE", encode_site(E_SITE))
            return Resolution(
                ResponseCode.SERVICE_REFERRAL,
                encode_values([site]),
                "88.166.1001 is served elsewhere",
                "0.NA/88.166.1001",
            )
        return None


def stage(
    walker: StubWalker,
    *,
    from_root: bool = False,
    health: ServerHealth | None = None,
    stale: float = 3600.0,
    negative_ttl: float = 30.0,
) -> RecursionStage:
    rec = Recursion(
        cast(Walker, walker),
        from_root=from_root,
        health=health,
        limit=8,
        cache=AnswerCache(100, stale),
        negative_ttl=negative_ttl,
    )
    authority = PrefixAuthority(["88.166"], False)
    return RecursionStage(rec, authority, cast(DelegationStage, StubDelegation()))


def look(s: Stage, handle: str, flags: int = REC, count: int = 0) -> Any:
    return asyncio.run(s.lookup(Lookup(handle, handle.lower(), flags, count)))


def test_only_clients_that_set_rec_and_only_handles_served_elsewhere() -> None:
    w = StubWalker()
    w.found("88.166.1001/x")
    s = stage(w)
    assert look(s, "88.166.1001/x", flags=0) is None  # the delegation stage refers it
    assert look(s, "88.166/local") is None  # held here
    assert look(s, "99/x") is None  # not homed, no root: the authority stage says 301
    e = look(s, "88.166.1001/x")
    assert isinstance(e, Entry) and e.values_wire == encode_values(url("88.166.1001/x"))
    # The upstream request carries the client's recursionCount + 1.
    look(s, "88.166.1001/other", count=3)
    assert w.asked == [("sites", 1, "88.166.1001/x"), ("sites", 4, "88.166.1001/other")]


def test_the_recursive_role_resolves_from_the_root() -> None:
    w = StubWalker()
    w.found("99/x")
    s = stage(w, from_root=True)
    assert isinstance(look(s, "99/x"), Entry)
    assert look(s, "88.166/local") is None
    assert w.asked == [("root", 1, "99/x")]


def test_the_recursion_count_bound() -> None:
    w = StubWalker()
    s = stage(w)
    r = look(s, "88.166.1001/x", count=8)
    assert isinstance(r, Resolution) and r.response_code == ResponseCode.RECURSION_COUNT_TOO_HIGH
    assert w.asked == []
    w.answers["88.166.1001/loop"] = WalkError(6, "referral loop")
    r = look(s, "88.166.1001/loop")
    assert r.response_code == ResponseCode.RECURSION_COUNT_TOO_HIGH
    assert "loop" in r.message


def test_answers_and_not_found_are_kept_not_found_at_most_60s() -> None:
    w = StubWalker()
    w.found("88.166.1001/x", ttl=100)
    s = stage(w, negative_ttl=600)
    for _ in range(3):
        assert isinstance(look(s, "88.166.1001/x"), Entry)
        nf = look(s, "88.166.1001/missing")
        assert isinstance(nf, Entry) and nf.values_wire is None
    assert len(w.asked) == 2
    e = s.cache.get("88.166.1001/x", 0.0)
    assert e is not None
    held = {k: v for k, v in s.cache._d.items()}
    gap = held["88.166.1001/x"].expires - held["88.166.1001/missing"].expires
    assert 39 <= gap <= 41  # 100 s (the value's TTL) against 60 s (the bound), not 600
    # A prefix record written here may move a delegation: forgotten.
    s.forget(["88.166/a"])
    assert len(s.cache) == 2
    s.forget(["0.NA/88.166.1001"])
    assert len(s.cache) == 0


def test_other_answers_pass_through_and_are_not_kept() -> None:
    w = StubWalker()
    w.answers["88.166.1001/x"] = Message(
        OpCode.RESOLUTION, ErrorResponse("busy"), ResponseCode.SERVER_TOO_BUSY
    )
    s = stage(w)
    r = look(s, "88.166.1001/x")
    assert r == Resolution(ResponseCode.SERVER_TOO_BUSY, message="busy")
    look(s, "88.166.1001/x")
    assert len(w.asked) == 2


def test_a_down_server_is_answered_at_once_or_from_the_stale_cache() -> None:
    w = StubWalker()
    w.found("88.166.1001/held", ttl=0)  # expired as soon as kept
    health = ServerHealth(interval=1.0, failures=2)
    health.watch([E_SERVER])
    s = stage(w, health=health)
    assert isinstance(look(s, "88.166.1001/held"), Entry)
    health.record(server_label(E_SERVER), None)
    assert not health.is_down(E_SERVER)  # one miss is not down
    health.record(server_label(E_SERVER), None)
    assert health.is_down(E_SERVER) and health.down() == [f"127.0.0.1:{E_PORT}"]
    asked = len(w.asked)
    r = look(s, "88.166.1001/new")
    assert r == Resolution(
        ResponseCode.ERROR,
        message=f"enterprise node 127.0.0.1:{E_PORT} for 88.166.1001 is not answering",
    )
    e = look(s, "88.166.1001/held")  # past its TTL, served while E is down
    assert isinstance(e, Entry) and e.values_wire is not None
    assert len(w.asked) == asked  # E was not asked
    health.record(server_label(E_SERVER), 0.001)
    assert not health.is_down(E_SERVER)
    assert isinstance(look(s, "88.166.1001/held"), Entry)
    assert len(w.asked) == asked + 1  # E asked again once up


def test_an_unanswered_lookup_serves_a_stale_answer_when_held() -> None:
    w = StubWalker()
    w.found("88.166.1001/held", ttl=0)
    s = stage(w)
    assert isinstance(look(s, "88.166.1001/held"), Entry)
    w.answers["88.166.1001/held"] = WalkError(ResponseCode.ERROR, "no server answered")
    assert isinstance(look(s, "88.166.1001/held"), Entry)
    s0 = stage(w, stale=0.0)  # no stale window: the error
    w.answers["88.166.1001/other"] = WalkError(ResponseCode.ERROR, "no server answered")
    r = look(s0, "88.166.1001/other")
    assert isinstance(r, Resolution) and r.response_code == ResponseCode.ERROR


def test_a_certified_request_gets_the_referral_not_our_signature() -> None:
    """CT + REC: the stage does not answer (the delegation stage refers the client to
    the enterprise node, whose own signed answer it then gets)."""
    w = StubWalker()
    w.found("88.166.1001/x")
    s = stage(w)
    assert look(s, "88.166.1001/x", flags=REC | int(OpFlag.CT)) is None
    assert w.asked == []
    core = Resolver([s, cast(Stage, StubDelegation())])
    r = asyncio.run(core.resolve("88.166.1001/x", flags=REC | int(OpFlag.CT)))
    assert r.response_code == ResponseCode.SERVICE_REFERRAL


def test_a_failing_lookup_is_not_repeated_upstream_for_a_while() -> None:
    w = StubWalker()
    s = stage(w, from_root=True)
    no_service = WalkError(ResponseCode.HANDLE_NOT_FOUND, "no service found for prefix 99")
    no_service.prefix_level = True
    w.answers["99/a"] = no_service
    for handle in ("99/a", "99/a", "99/b", "99/c"):
        r = look(s, handle)
        assert isinstance(r, Resolution) and "no service found" in r.message
    assert w.asked == [("root", 1, "99/a")]  # by prefix: the other handles too
    for failure in (
        WalkError(ResponseCode.ERROR, "no server answered"),
        WalkError(ResponseCode.RECURSION_COUNT_TOO_HIGH, "referral loop"),
    ):
        w.asked.clear()
        w.answers["88.166.1001/bad"] = failure
        s.failures.clear()
        for _ in range(3):
            r = look(s, "88.166.1001/bad")
            assert isinstance(r, Resolution) and r.response_code == failure.rc
        assert w.asked == [("sites", 1, "88.166.1001/bad")]
    # after the failure TTL (none here) it is asked again
    s0 = stage(w)
    s0.failures.ttl = 0
    w.asked.clear()
    look(s0, "88.166.1001/bad")
    look(s0, "88.166.1001/bad")
    assert len(w.asked) == 2


def test_l1_does_not_keep_what_recursion_answers() -> None:
    w = StubWalker()
    w.found("88.166.1001/x")
    l1 = L1Cache(1 << 20)
    core = Resolver([L1CacheStage(l1), stage(w)])
    r = asyncio.run(core.resolve("88.166.1001/x", flags=REC))
    assert r.response_code == ResponseCode.SUCCESS
    assert len(l1) == 0 and core.cached("88.166.1001/x") is None


def up(label: str) -> float | None:
    return REGISTRY.get_sample_value("idnode_upstream_server_up", {"server": label})


def test_health_marks_logs_and_metrics(caplog: pytest.LogCaptureFixture) -> None:
    health = ServerHealth(interval=0.2, failures=2, timeout=0.5)
    dead = ServerInfo.at("127.0.0.1", 1, (Interface(2, 0, free_port()),))
    label = server_label(dead)
    health.watch([dead])
    assert up(label) == 1
    with caplog.at_level(logging.INFO, logger="idnode.upstream"):
        asyncio.run(health.probe_all())
        assert not health.is_down(dead)
        asyncio.run(health.probe_all())
        assert health.is_down(dead)
        assert up(label) == 0
        health.record(label, 0.002)
    assert "did not answer 2 probes in a row: marked down" in caplog.text
    assert "answers again: marked up" in caplog.text
    health.watch([])
    assert len(health) == 0


def test_settings(tmp_path: Path) -> None:
    s = load_settings({}, env={})
    assert not s.recursion and s.root_info == "" and s.recursion_limit == 8
    with pytest.raises(ConfigError, match="recursion_limit"):
        load_settings({"recursion_limit": "256"}, env={})
    with pytest.raises(ConfigError, match="root_info"):
        load_settings({"root_info": str(tmp_path / "absent")}, env={})
    root = tmp_path / "root_info"
    write_root_info(root, [E_SITE])
    s = load_settings({"recursion": True, "root_info": str(root)}, env={})
    assert s.recursion and s.root_info == str(root)
