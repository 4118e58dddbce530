"""gateway/memo.py: a remembered answer is the function's, and the memory stays within its bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.memo import BoundedMemo

KEYS = st.lists(st.binary(max_size=12), max_size=60)


def _answer(key: bytes) -> int:
    if key.startswith(b"\xff"):
        raise ValueError("refused")
    return len(key) * 31 + sum(key)


@given(keys=KEYS, entries=st.integers(1, 8), key_bytes=st.integers(0, 12))
def test_answers_are_the_functions_and_the_memory_is_bounded(
    keys: list[bytes], entries: int, key_bytes: int
) -> None:
    calls: list[bytes] = []

    def counted(key: bytes) -> int:
        calls.append(key)
        return _answer(key)

    memo = BoundedMemo(counted, entries=entries, key_bytes=key_bytes)
    for key in keys * 2:
        try:
            expected = _answer(key)
        except ValueError:
            with pytest.raises(ValueError):
                memo(key)
            continue
        assert memo(key) == expected
    assert len(memo) <= entries
    assert all(len(key) <= key_bytes for key in memo)
    assert not any(key.startswith(b"\xff") for key in memo), "an exception was remembered"
    if len(set(keys)) <= entries:  # never full: nothing remembered is computed again
        assert all(calls.count(key) == 1 for key in memo), "a remembered key was computed again"


def test_a_remembered_key_is_not_computed_again() -> None:
    calls: list[bytes] = []

    def length(key: bytes) -> int:
        calls.append(key)
        return len(key)

    memo = BoundedMemo(length)
    assert [memo(b"authorization") for _ in range(3)] == [13, 13, 13]
    assert calls == [b"authorization"]


def test_a_full_memory_starts_over_and_keeps_answering() -> None:
    memo = BoundedMemo(len, entries=4)
    assert [memo(bytes([i])) for i in range(9)] == [1] * 9
    assert list(memo) == [bytes([8])], "full at 4, started over twice"
    assert memo(b"\x08") == 1
