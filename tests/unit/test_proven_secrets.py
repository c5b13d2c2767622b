"""The flights and proofs of registry/proven_secrets.py on their own: one check for the
waiters of one client, its exception for all of them, a cancelled check run anew, the
bound on what is kept. (Against a real registry: tests/integration/test_proven_secrets.py.)"""

from __future__ import annotations

import asyncio

import pytest

from idnode.registry.login_guard import Throttled
from idnode.registry.proven_secrets import ProvenSecrets


class Check:
    """A check that answers when told to, counting its runs."""

    def __init__(self, answer: str | None = "who") -> None:
        self.answer = answer
        self.runs = 0
        self.go = asyncio.Event()

    async def __call__(self) -> str | None:
        self.runs += 1
        await asyncio.sleep(0)  # a lookup yields, even when its answer is at hand
        await self.go.wait()
        return self.answer


def test_waiters_of_one_client_share_one_check_other_clients_run_their_own() -> None:
    async def go() -> None:
        proven: ProvenSecrets[str] = ProvenSecrets(600.0)
        check = Check()
        same = [asyncio.ensure_future(proven.check("d", "c1", check)) for _ in range(20)]
        other = asyncio.ensure_future(proven.check("d", "c2", check))
        await asyncio.sleep(0)
        assert check.runs == 2  # one for c1's twenty, one for c2
        check.go.set()
        assert await asyncio.gather(*same, other) == ["who"] * 21
        assert await proven.check("d", "c1", check) == "who" and check.runs == 2  # proven
        # proofs are per client: another client's proof is not this one's
        assert await proven.check("d", "c3", check) == "who" and check.runs == 3
        assert await proven.check("e", "c1", check) == "who" and check.runs == 4

    asyncio.run(go())


def test_failures_are_shared_but_not_kept_and_exceptions_reach_every_waiter() -> None:
    async def go() -> None:
        proven: ProvenSecrets[str] = ProvenSecrets(600.0)
        wrong = Check(None)
        wrong.go.set()
        waiters = [proven.check("d", "c", wrong) for _ in range(5)]
        assert await asyncio.gather(*waiters) == [None] * 5
        assert await proven.check("d", "c", wrong) is None and wrong.runs == 2
        assert len(proven) == 0

        async def throttled() -> str | None:
            await asyncio.sleep(0)
            raise Throttled("too many", 6.0)

        got = await asyncio.gather(
            *(proven.check("x", "c", throttled) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(g, Throttled) for g in got)

    asyncio.run(go())


def test_a_cancelled_check_is_run_again_by_a_waiter_and_a_cancelled_waiter_leaves_it() -> None:
    async def go() -> None:
        proven: ProvenSecrets[str] = ProvenSecrets(600.0)
        check = Check()
        leader = asyncio.ensure_future(proven.check("d", "c", check))
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(proven.check("d", "c", check))
        gone = asyncio.ensure_future(proven.check("d", "c", check))
        await asyncio.sleep(0)
        gone.cancel()  # a waiter gone: the check goes on
        await asyncio.sleep(0)
        assert check.runs == 1 and not leader.done()
        leader.cancel()  # the check's own request gone: a waiter checks anew
        for _ in range(100):  # loop turns, not time
            if check.runs == 2:
                break
            await asyncio.sleep(0)
        assert check.runs == 2
        check.go.set()
        assert await waiter == "who"
        with pytest.raises(asyncio.CancelledError):
            await leader
        assert gone.cancelled()

    asyncio.run(go())


def test_forget_and_the_bound() -> None:
    async def go() -> None:
        proven: ProvenSecrets[str] = ProvenSecrets(600.0, max_entries=3)
        check = Check()
        check.go.set()
        for d in "abcd":
            await proven.check(d, None, check)
        assert len(proven) == 3 and proven.proven("a") is None  # the oldest went
        proven.forget("d")
        assert proven.proven("d") is None and proven.proven("c") == "who"
        # a check in flight when a forget came does not keep its success
        slow = Check()
        flight = asyncio.ensure_future(proven.check("e", None, slow))
        await asyncio.sleep(0)
        proven.forget("e")
        slow.go.set()
        assert await flight == "who" and proven.proven("e") is None
        # nothing is kept with no time to trust it
        none: ProvenSecrets[str] = ProvenSecrets(0.0)
        await none.check("a", None, check)
        assert len(none) == 0

    asyncio.run(go())
