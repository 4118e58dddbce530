"""Remember a pure function's answers for the short values that repeat on every request: header
names, media types, ProGet's response header values.

The stages decide the same few things on every request (is ``authorization`` a credential header, is
``application/json`` inspected as JSON, does ``nginx/1.22.1`` echo the key); deciding each afresh cost
0.3 to 1 µs a value (issue 9). The values come from clients or pass through from ProGet, so the memory
is bounded twice: keys longer than ``key_bytes`` are decided every time, and at ``entries`` answers
the memory starts over (values that churn, like ``Date``, cannot crowd out the ones that repeat for
long). An exception is never remembered: it is raised again next time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, cast

V = TypeVar("V")
_MISSING: object = object()


class BoundedMemo(Generic[V]):
    """``fn`` with its answers remembered, per key, within the bounds."""

    def __init__(self, fn: Callable[[bytes], V], entries: int = 1024, key_bytes: int = 64) -> None:
        self.fn, self.entries, self.key_bytes = fn, entries, key_bytes
        self.memo: dict[bytes, V] = {}
        self.__doc__ = fn.__doc__

    def __call__(self, key: bytes) -> V:
        answer = self.memo.get(key, _MISSING)
        if answer is _MISSING:
            answer = self.fn(key)
            if len(key) <= self.key_bytes:
                if len(self.memo) >= self.entries:
                    self.memo.clear()
                self.memo[key] = answer
        return cast(V, answer)
