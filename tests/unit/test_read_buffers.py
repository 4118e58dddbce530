"""gateway/buffers.py and the counted body of gateway/upstream.py, driven read by read.

The upstream connection reads a body of declared length into buffers it hands on as views, and reads
into a buffer again once nothing refers to it. These tests drive that the way the event loop does
(``get_buffer``, the bytes land in it, ``buffer_updated``) over generated answers and segmentations,
and check what a client would get: the body exactly, every view it still holds unchanged, nothing
after the declared end taken as body, and the connection reused only after a clean answer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.buffers import COPY_BELOW, POOLED, SIZE, ReadBuffers, held, piece, unreferenced
from gateway.upstream import _Connection


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _random_bytes(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


# -- the pool --------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["take", "slice", "drop"]), st.integers(0, 50)), max_size=60))
def test_a_buffer_is_never_handed_out_while_a_view_of_it_lives(steps: list[tuple[str, int]]) -> None:
    buffers = ReadBuffers()
    live: list[memoryview] = []
    for action, n in steps:
        if action == "take":
            free = {id(buf) for buf in buffers.pool if all(other.obj is not buf for other in live)}
            live.append(buffers.body())
            taken = live[-1].obj
            assert all(taken is not other.obj for other in live[:-1])  # never one still referred to
            assert not free or id(taken) in free  # a free pooled one when there is
            del taken
        elif action == "slice" and live:
            live.append(live[n % len(live)][n : n + 100])
        elif action == "drop" and live:
            live.pop(n % len(live))
        assert len(buffers.pool) <= POOLED


def test_a_buffer_is_read_into_again_once_its_views_are_gone() -> None:
    buffers = ReadBuffers()
    first = buffers.body()
    kept = first[:10]
    second = buffers.body()
    assert second.obj is not first.obj  # ``kept`` still refers to the first buffer
    del first, kept, second
    again = buffers.body()
    assert again.obj is buffers.pool[0]  # nothing refers to it: the same memory, still warm


def test_the_pool_is_bounded_and_more_buffers_are_still_given() -> None:
    buffers = ReadBuffers()
    views = [buffers.body() for _ in range(POOLED + 3)]
    assert len(buffers.pool) == POOLED
    assert len({id(v.obj) for v in views}) == POOLED + 3


@given(st.integers(min_value=0, max_value=SIZE))
def test_a_small_read_is_copied_out_and_a_large_one_is_a_view(nbytes: int) -> None:
    buffers = ReadBuffers()
    view = buffers.body()
    view[:nbytes] = _random_bytes(nbytes, nbytes)
    part = piece(view, nbytes)
    assert bytes(part) == _random_bytes(nbytes, nbytes)
    if nbytes < COPY_BELOW:
        assert type(part) is bytes and held(part) == nbytes
        del view
        assert unreferenced(buffers.pool) is not None  # the buffer is free again at once
    else:
        assert type(part) is memoryview and held(part) == SIZE
        del view
        assert unreferenced(buffers.pool) is None  # the piece keeps its buffer


# -- the counted body, read by read ----------------------------------------------------------------------


def _deliver(conn: _Connection, wire: bytes, cuts: list[int]) -> None:
    """Hand ``wire`` to the connection as the event loop would, in reads no larger than asked for."""
    rest = memoryview(wire)
    sizes = iter(cuts)
    while rest and not conn.closed:
        target = conn.get_buffer(-1)
        n = min(len(rest), len(target), next(sizes, len(rest)) or 1)
        target[:n] = rest[:n]
        conn.buffer_updated(n)
        rest = rest[n:]


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=3 * SIZE),
    cuts=st.lists(st.integers(min_value=1, max_value=SIZE), max_size=12),
    extra=st.sampled_from([b"", b"x", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz"]),
    apart=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_a_counted_body_is_the_declared_bytes_and_nothing_after_them(
    loop: asyncio.AbstractEventLoop, size: int, cuts: list[int], extra: bytes, apart: bool, seed: int
) -> None:
    """``apart``: the bytes after the answer come in a read of their own."""
    body = _random_bytes(size, seed)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (size, body)
    conn = _Connection(loop)
    conn.begin(False)
    if apart:
        _deliver(conn, answer, cuts)
        _deliver(conn, extra, [])
    else:
        _deliver(conn, answer + extra, cuts)
    pieces = list(conn.body)
    snapshot = [bytes(p) for p in pieces]
    conn.get_buffer(-1)  # what a next read would be given must not be any held piece's memory
    assert conn.complete and conn.error is None
    assert b"".join(snapshot) == body
    assert [bytes(p) for p in pieces] == snapshot
    assert conn.reusable() == (not extra)


def test_a_counted_body_cut_short_is_an_abort(loop: asyncio.AbstractEventLoop) -> None:
    conn = _Connection(loop)
    conn.begin(False)
    _deliver(conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * SIZE) + bytes(SIZE), [])
    assert conn.remaining == SIZE and not conn.complete
    conn.connection_lost(None)
    assert conn.error is not None and conn.error.code == "upstream_aborted"


@pytest.mark.parametrize("extra", [b"x", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz"])
def test_bytes_after_a_counted_body_in_a_read_of_their_own_are_not_body(
    loop: asyncio.AbstractEventLoop, extra: bytes
) -> None:
    body = _random_bytes(SIZE, 5)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    conn = _Connection(loop)
    conn.begin(False)
    _deliver(conn, head + body[:100], [])  # the head and the start of the body: parsed
    _deliver(conn, body[100:], [])  # the rest: counted
    assert conn.complete
    _deliver(conn, extra, [])  # ProGet writes on after the declared end
    assert b"".join(bytes(p) for p in conn.body) == body
    assert not conn.reusable()
