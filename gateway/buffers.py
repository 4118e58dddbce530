"""The buffers ProGet's answers are read into, so that a download crosses the gateway without a copy.

Why (issue 9, figures in bench/README.md, "Downloads without a copy"): a native profile of a 1 GiB
download put ~21 % of the gateway's CPU in ``memcpy``: uvloop copied every read into a new ``bytes``
and httptools copied the body out of it again for ``on_body``. nginx makes neither copy. The upstream
connection (:mod:`gateway.upstream`) is therefore a ``BufferedProtocol`` reading into these buffers:

- An answer's head, and whatever body arrives with it, is read into one :attr:`ReadBuffers.scratch`
  per thread and parsed at once; httptools copies out what it keeps, so the scratch is free again as
  soon as the parser returns.
- A body of declared length is then counted rather than parsed: each read goes into a
  :meth:`ReadBuffers.body` buffer of 1 MiB and, when it filled at least a quarter of it, is handed on
  as a ``memoryview`` of it, to the client's socket. A smaller read is copied out (one copy, where
  there were two) and its buffer is free again at once: a view never holds more than four times its
  bytes, and a trickling answer does not take a new buffer per read.
- A body buffer is read into again only when no Python object refers to it any more: the views
  handed on (in the body queue, the outbox or uvloop's write queue) each hold a reference to it until
  their bytes have been written. That is checked on the buffer itself (:func:`unreferenced`), not
  inferred from who we think took it, so no path can overwrite bytes still waiting to leave.

Reads of 1 MiB rather than uvloop's 256 KiB: when ProGet is faster than the client, a read takes
what has piled up in the socket, so a GiB costs fewer turns of the loop (0.36 to 0.38 against 0.41 to 0.44
s of CPU per GiB, nginx 0.43 to 0.54 in the same runs). A head is still read 256 KiB at a time: what
arrives before a head is parsed is capped (``upstream.MAX_HEAD``), and a bigger read could carry a
whole head and a large part of the body past that cap. At most :data:`POOLED` buffers per thread are
kept for reuse.
"""

from __future__ import annotations

import sys
import threading

HEAD_SIZE = 256 * 1024  # bytes per read of a head (as uvloop's own read buffer): see upstream.MAX_HEAD
SIZE = 1024 * 1024  # bytes per read of a counted body
POOLED = 4  # body buffers kept per thread for reuse (4 MiB)
COPY_BELOW = SIZE // 4  # a read smaller than this is copied out rather than holding a whole buffer


def _references_when_free() -> int:
    """What ``sys.getrefcount`` says of a buffer only the pool refers to, measured the way
    :meth:`ReadBuffers.body` looks (the pool's list, the loop variable, the call's argument), so the
    count holds on any CPython version rather than being a constant we assumed."""
    pool = [bytearray(1)]
    for buf in pool:
        return sys.getrefcount(buf)
    raise AssertionError("unreachable")


_FREE = _references_when_free()


def unreferenced(pool: list[bytearray]) -> bytearray | None:
    """The first buffer of ``pool`` nothing outside the pool refers to (no view of it is alive)."""
    for buf in pool:
        if sys.getrefcount(buf) == _FREE:
            return buf
    return None


class ReadBuffers(threading.local):
    """One thread's buffers (an event loop runs in one thread; each loop's reads are sequential)."""

    def __init__(self) -> None:
        self.scratch = memoryview(bytearray(HEAD_SIZE))
        self.pool: list[bytearray] = []

    def body(self) -> memoryview:
        """A buffer to read body bytes into: a pooled one nobody refers to, else a new one."""
        buf = unreferenced(self.pool)
        if buf is None:
            buf = bytearray(SIZE)
            if len(self.pool) < POOLED:
                self.pool.append(buf)
        return memoryview(buf)


def piece(view: memoryview, nbytes: int) -> bytes | memoryview:
    """The ``nbytes`` read into ``view``, as a view of the buffer (no copy) when the read is large
    enough to be worth the buffer's memory, else as a copy (and the buffer is free again)."""
    return view[:nbytes] if nbytes >= COPY_BELOW else bytes(view[:nbytes])


def held(part: bytes | memoryview) -> int:
    """The memory a received piece keeps alive: its buffer for a view, its length for bytes."""
    return SIZE if type(part) is memoryview else len(part)


buffers = ReadBuffers()
