"""gateway.outbox: a busy turn's writes leave together, in order per transport, none lost, none held long."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.outbox import FLUSH_AT, Outbox, outbox


class FakeTransport:
    def __init__(self) -> None:
        self.received = bytearray()
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.received += data


class FakeLoop:
    """Collects call_soon callbacks; ``end_turn`` runs them as the loop's next turn would."""

    def __init__(self) -> None:
        self.soon: list[Callable[[], None]] = []
        self.scheduled = 0

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.scheduled += 1
        self.soon.append(callback)

    def end_turn(self) -> None:
        callbacks, self.soon = self.soon, []
        for callback in callbacks:
            callback()


# a step: write (transport index, size), end the turn, or close a transport the way our code does
STEP = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 3), st.sampled_from([0, 1, 200, 5_000, 70_000])),
    st.tuples(st.just("turn"), st.just(0), st.just(0)),
    st.tuples(st.just("close"), st.integers(0, 3), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(STEP, max_size=60))
def test_every_transport_gets_its_bytes_in_order_and_nothing_waits_beyond_the_cap(
    steps: list[tuple[str, int, int]],
) -> None:
    """Whatever the interleaving of writes to four transports, turn ends and closes: each transport
    receives exactly what was written to it before it was closed, in order; no more than FLUSH_AT
    bytes are ever held."""
    loop = FakeLoop()
    box = Outbox(cast(asyncio.AbstractEventLoop, loop))
    transports = [FakeTransport() for _ in range(4)]
    expected = [bytearray() for _ in range(4)]
    counter = 0
    for action, index, size in steps:
        transport = transports[index]
        if action == "write" and not transport.closing:
            data = bytes([counter % 251]) * size  # distinct bytes per write: order shows
            counter += 1
            box.write(cast(asyncio.WriteTransport, transport), data)
            expected[index] += data
            assert box._size <= FLUSH_AT
        elif action == "turn":
            loop.end_turn()
        elif action == "close" and not transport.closing:
            box.flush()  # what http1.Connection.close does before closing
            transport.closing = True
    loop.end_turn()
    assert [bytes(t.received) for t in transports] == [bytes(e) for e in expected]


def busy(loop: FakeLoop, box: Outbox) -> None:
    """A turn with several writes: the next turn's writes are held to its end."""
    spare = FakeTransport()
    box.write(cast(asyncio.WriteTransport, spare), b"a")
    box.write(cast(asyncio.WriteTransport, spare), b"b")
    loop.end_turn()


def test_after_a_busy_turn_the_writes_of_a_turn_leave_together_at_its_end() -> None:
    loop = FakeLoop()
    box = Outbox(cast(asyncio.AbstractEventLoop, loop))
    busy(loop, box)
    scheduled = loop.scheduled
    transports = [FakeTransport() for _ in range(10)]
    for transport in transports:
        box.write(cast(asyncio.WriteTransport, transport), b"answer")
    assert loop.scheduled == scheduled + 1 and all(t.received == b"" for t in transports)
    loop.end_turn()
    assert all(t.received == b"answer" for t in transports)


def test_a_turn_with_one_write_makes_the_next_write_go_at_once() -> None:
    """One request at a time (c=1) gains nothing from waiting: 12 % fewer req/s when it waited."""
    loop = FakeLoop()
    box = Outbox(cast(asyncio.AbstractEventLoop, loop))
    transport = FakeTransport()
    box.write(cast(asyncio.WriteTransport, transport), b"first")
    assert transport.received == b"first"  # a new outbox has seen no busy turn
    busy(loop, box)
    box.write(cast(asyncio.WriteTransport, transport), b"held")
    assert transport.received == b"first"
    loop.end_turn()  # this turn had one write
    box.write(cast(asyncio.WriteTransport, transport), b"now")
    assert transport.received == b"firstheldnow"


def test_a_transport_closed_under_us_gets_nothing_and_the_others_still_do() -> None:
    loop = FakeLoop()
    box = Outbox(cast(asyncio.AbstractEventLoop, loop))
    busy(loop, box)
    gone, alive = FakeTransport(), FakeTransport()
    box.write(cast(asyncio.WriteTransport, gone), b"lost")
    box.write(cast(asyncio.WriteTransport, alive), b"kept")
    gone.closing = True  # the peer left before the turn ended
    loop.end_turn()
    assert (gone.received, alive.received) == (bytearray(), bytearray(b"kept"))


def test_small_writes_wait_for_the_end_of_the_turn_and_a_big_one_goes_at_once() -> None:
    loop = FakeLoop()
    box = Outbox(cast(asyncio.AbstractEventLoop, loop))
    busy(loop, box)
    transport = FakeTransport()
    box.write(cast(asyncio.WriteTransport, transport), b"x" * 100)
    assert transport.received == b""
    box.write(cast(asyncio.WriteTransport, transport), b"y" * FLUSH_AT)
    assert transport.received == b"x" * 100 + b"y" * FLUSH_AT


def test_one_outbox_per_loop() -> None:
    async def which() -> Any:
        return outbox(asyncio.get_running_loop())

    first, second = asyncio.run(which()), asyncio.run(which())
    assert first is not second
    loop = asyncio.new_event_loop()
    try:
        assert outbox(loop) is outbox(loop)
    finally:
        loop.close()


def test_the_registry_does_not_keep_a_finished_loop_alive() -> None:
    """Tests (and reloads in a process that runs several loops) make many loops: each one's outbox
    goes with it."""
    loop = asyncio.new_event_loop()
    box = outbox(loop)
    box.write(cast(asyncio.WriteTransport, FakeTransport()), b"x")
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    gone = weakref.ref(loop)
    del loop, box
    gc.collect()
    assert gone() is None
