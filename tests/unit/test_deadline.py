"""gateway.deadline: the action set last runs once, exactly at its deadline, whatever was set,
cleared or moved before; at most one loop timer is pending, and none after ``cancel``."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.deadline import Deadline


class _Timer:
    def __init__(self, at: float, fn: Callable[[], None]) -> None:
        self.at, self.fn, self.cancelled = at, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class _Loop:
    """Virtual time: timers fire exactly at their time, in order, when the test advances the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()
        self.armed = 0  # call_at calls

    def time(self) -> float:
        return self.now

    def call_at(self, at: float, fn: Callable[[], None]) -> _Timer:
        self.armed += 1
        timer = _Timer(at, fn)
        heapq.heappush(self._heap, (at, next(self._order), timer))
        return timer

    def pending(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._heap and self._heap[0][0] <= end:
            at, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                self.now = max(self.now, at)
                timer.fn()
        self.now = end


def _deadline(loop: _Loop) -> Deadline:
    return Deadline(cast(asyncio.AbstractEventLoop, loop))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 40)),  # tenths of a second
        st.tuples(st.just("clear"), st.just(0)),
        st.tuples(st.just("advance"), st.integers(0, 40)),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(operations)
def test_only_the_last_set_action_runs_exactly_at_its_deadline(ops: list[tuple[str, int]]) -> None:
    loop = _Loop()
    deadline = _deadline(loop)
    ran: list[tuple[int, float]] = []
    expected: list[tuple[int, float]] = []
    model: tuple[int, float] | None = None  # (action id, when) of the deadline in force
    for number, (op, tenths) in enumerate(ops):
        if op == "set":
            model = (number, loop.now + tenths / 10)
            deadline.set(tenths / 10, lambda n=number: ran.append((n, loop.now)))
        elif op == "clear":
            model = None
            deadline.clear()
        else:
            end = loop.now + tenths / 10
            if model is not None and model[1] <= end:
                expected.append(model)
                model = None
            loop.advance(tenths / 10)
        assert loop.pending() <= 1
        assert deadline.pending == (model is not None)
    assert [n for n, _ in ran] == [n for n, _ in expected]
    for (_, when), (_, due) in zip(ran, expected, strict=True):
        assert abs(when - due) < 1e-9


def test_moving_a_deadline_later_on_every_request_arms_no_timer_per_request() -> None:
    loop = _Loop()
    deadline = _deadline(loop)
    fired: list[float] = []
    for _ in range(1000):  # a request every 10 ms for 10 s against a 5 s timeout
        deadline.set(5.0, lambda: fired.append(loop.now))
        loop.advance(0.01)
        deadline.clear()
    assert fired == []
    assert loop.armed <= 1 + 10 / 5  # re-armed about once per timeout, not once per request
    deadline.set(5.0, lambda: fired.append(loop.now))
    loop.advance(10)
    assert len(fired) == 1 and abs(fired[0] - 15.0) < 0.02


def test_an_earlier_deadline_rearms_the_timer() -> None:
    loop = _Loop()
    deadline = _deadline(loop)
    fired: list[str] = []
    deadline.set(60, lambda: fired.append("idle"))
    deadline.set(1, lambda: fired.append("head"))
    loop.advance(1.5)
    assert fired == ["head"]
    assert loop.pending() == 0


def test_cancel_leaves_no_timer_behind() -> None:
    loop = _Loop()
    deadline = _deadline(loop)
    deadline.set(1, lambda: None)
    deadline.clear()
    assert loop.pending() == 1  # cleared: the timer stays, and will find nothing to do
    deadline.cancel()
    assert loop.pending() == 0 and not deadline.pending


def test_on_a_real_loop_the_action_waits_for_the_moved_deadline() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop)
        done: asyncio.Future[float] = loop.create_future()
        started = loop.time()
        deadline.set(0.05, lambda: done.set_result(loop.time()))
        await asyncio.sleep(0.03)
        deadline.set(0.1, lambda: done.set_result(loop.time()))  # moved later before the first fired
        return await done - started

    took: Any = asyncio.run(scenario())
    assert 0.125 <= took < 1.0
