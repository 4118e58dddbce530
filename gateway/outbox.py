"""Socket writes leave together, once per turn of the event loop, when the loop is busy
(flush consolidation).

Every request makes two writes: the request to ProGet and the answer to the client. Each one wakes
the process at the other end. When that process has gone to sleep, waking it costs the writer more
than the write itself: on loopback the kernel delivers the segment inside the sender's ``send``, and
on a VM waking an idle vCPU is a trip through the hypervisor. Between two requests ~100 µs apart,
ProGet (or nginx in the bench) and the client finish their part and sleep, so each write paid for a
wake-up. The writes of one turn of the loop, sent back to back at its end, wake each peer once per
turn instead: at 32 connections the gateway went from ~148 to ~116 µs of CPU per small request and
its p99 from 7 to 5 ms (bench/README.md, "Writes leave together").

Holding writes only pays when a turn has several. With one request at a time it cost 12 % of the
req/s (the gateway went to sleep before the write left, and was woken for the answer), so a write
is held only when the previous turn wrote more than once; otherwise it goes out at once. The mode is
decided at the end of each turn, after everything held has been written.

The bytes are the ones given, in the order given per transport (one FIFO for every transport of the
loop). A turn's held writes are flushed by a callback that runs before the I/O callbacks of the next
turn are processed, so a write waits for the rest of its turn's ready callbacks, never for new input.
Whoever closes a transport calls :meth:`Outbox.flush` first, so nothing written before a close is
lost; a transport that is already closing (the peer left, or we aborted it) gets nothing, as a
direct write would have been dropped. Backpressure holds: at most :data:`FLUSH_AT` bytes are held
back, so a streamed body reaches its transport, and meets its ``pause_writing``, within 64 KiB even
if the producer never yields to the loop.
"""

from __future__ import annotations

import asyncio
import weakref

# Held back at most this many bytes: a body streamed by a producer that never yields to the loop
# must meet the transport's backpressure (pause_writing) at once, not when the turn ends.
FLUSH_AT = 64 * 1024

_outboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Outbox] = weakref.WeakKeyDictionary()


class Outbox:
    """The writes of one event loop's turn: held to its end when the last turn had several."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # not the loop itself: the registry's key must be able to die
        self._pending: list[tuple[asyncio.WriteTransport, bytes | memoryview]] = []
        self._size = 0
        self._writes = 0  # in this turn
        self._turn_open = False  # the end-of-turn callback is scheduled
        self._gather = False  # the last turn wrote more than once: hold this turn's writes

    def write(self, transport: asyncio.WriteTransport, data: bytes | memoryview) -> None:
        if not self._turn_open:
            loop = self._loop()
            if loop is not None:
                self._turn_open = True
                loop.call_soon(self._end_turn)
        self._writes += 1
        if not self._gather:
            transport.write(data)  # one request at a time: nothing to gather, no wait
            return
        self._pending.append((transport, data))
        self._size += len(data)
        if self._size > FLUSH_AT:
            self.flush()  # the transports see the bytes now, and their backpressure with them

    def _end_turn(self) -> None:
        self._turn_open = False
        self.flush()
        self._gather, self._writes = self._writes > 1, 0

    def flush(self) -> None:
        """Write everything pending, in order; safe to call at any time, any number of times."""
        pending, self._pending, self._size = self._pending, [], 0
        for transport, data in pending:
            if not transport.is_closing():
                transport.write(data)


def outbox(loop: asyncio.AbstractEventLoop) -> Outbox:
    """The loop's outbox: one per loop, so a turn's writes to clients and to ProGet leave together."""
    box = _outboxes.get(loop)
    if box is None:
        box = _outboxes[loop] = Outbox(loop)
    return box
