"""GroupCommit: items written together by one thread (holynb.team.group_commit), without a
database: the writes are recorded by a plain function."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from holynb.team.group_commit import GroupCommit


class Writes:
    """A write function that records each group it is given, optionally slowly."""

    def __init__(self, pause: float = 0.0, fail: BaseException | None = None) -> None:
        self.groups: list[list[str]] = []
        self.pause = pause
        self.fail = fail
        self.started = threading.Event()

    def __call__(self, items: list[str]) -> list[str]:
        self.groups.append(list(items))
        self.started.set()
        time.sleep(self.pause)
        if self.fail is not None:
            raise self.fail
        return [item.upper() for item in items]


def test_items_that_arrive_while_a_statement_runs_go_together_in_the_next() -> None:
    writes = Writes(pause=0.2)
    group = GroupCommit(writes, "test")
    first = group.submit("a")
    assert writes.started.wait(5)
    rest = [group.submit(x) for x in "bcd"]
    assert first.result(5) == "A"
    assert [f.result(5) for f in rest] == ["B", "C", "D"]
    assert writes.groups == [["a"], ["b", "c", "d"]]


def test_a_failed_statement_fails_every_item_of_its_group() -> None:
    group = GroupCommit(Writes(fail=RuntimeError("the database went away")), "test")
    futures = [group.submit(x) for x in "ab"]
    for future in futures:
        with pytest.raises(RuntimeError, match="went away"):
            future.result(5)


def test_without_linger_the_first_item_of_a_quiet_moment_is_written_alone() -> None:
    writes = Writes()
    group = GroupCommit(writes, "test")
    first = group.submit("a")
    time.sleep(0.1)
    assert first.done()
    group.submit("b").result(5)
    assert writes.groups == [["a"], ["b"]]


def test_with_linger_items_of_that_span_are_gathered_into_one_statement() -> None:
    writes = Writes()
    group = GroupCommit(writes, "test", linger=0.3)
    first = group.submit("a")
    time.sleep(0.1)  # written at once without linger (the test above)
    assert not first.done()
    rest = [group.submit(x) for x in "bc"]
    assert [f.result(5) for f in (first, *rest)] == ["A", "B", "C"]
    assert writes.groups == [["a", "b", "c"]]


def test_a_task_waits_on_its_loop_and_its_item_is_written_even_if_cancelled() -> None:
    writes = Writes(pause=0.2)
    group = GroupCommit(writes, "test")

    async def main() -> str:
        waiting = asyncio.ensure_future(group.wait("x"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        return await group.wait("y")

    assert asyncio.run(main()) == "Y"
    assert sorted(item for g in writes.groups for item in g) == ["x", "y"]


def test_a_result_whose_loop_closed_goes_to_the_orphan_handler() -> None:
    orphans: list[str] = []
    writes = Writes(pause=0.3)
    group = GroupCommit(writes, "test", orphan=orphans.append)

    async def leave_early() -> None:
        group.wait("lost")
        await asyncio.sleep(0)

    asyncio.run(leave_early())  # the loop closes before the group is written
    deadline = time.monotonic() + 5
    while not orphans and time.monotonic() < deadline:
        time.sleep(0.02)
    assert orphans == ["LOST"]
