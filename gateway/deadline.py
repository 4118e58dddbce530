"""One connection's deadline, moved on every request without touching the event loop's timers.

A keep-alive connection changes its deadline several times a request: the head must arrive within
``head_timeout``, an idle connection closes after ``keep_alive_timeout``, ProGet must answer within
``timeouts.read``. Arming and cancelling a loop timer for each (``call_later`` then ``cancel``) cost
~1.5 µs a pair, three pairs a request (issue 9, bench/README.md). Here a deadline is a number and an
action; at most one loop timer is pending per connection, and it is re-armed only when it fires
before the deadline (the deadline moved later since) or when a new deadline is earlier than the one
it was armed for. A busy connection re-arms about once per timeout, not once per request.

The action runs once, when the loop's clock has passed the deadline that was set last; a cleared or
replaced deadline never runs its old action.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class Deadline:
    """``set(seconds, action)``: run ``action`` once, ``seconds`` from now, unless set again or cleared."""

    __slots__ = ("_action", "_armed_at", "_at", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._at = math.inf
        self._action: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def set(self, seconds: float, action: Callable[[], None]) -> None:
        """Replace the deadline: ``action`` runs ``seconds`` from now (the previous one never runs)."""
        at = self._loop.time() + seconds
        self._at, self._action = at, action
        if at < self._armed_at:  # no timer, or one that would fire too late: arm one for this
            self._arm(at)

    def clear(self) -> None:
        """No deadline: nothing runs. The pending timer, if any, stays and finds nothing to do."""
        self._at, self._action = math.inf, None

    def cancel(self) -> None:
        """No deadline and no pending timer: nothing of this connection stays referenced by the loop."""
        self.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._armed_at = None, math.inf

    @property
    def pending(self) -> bool:
        """Whether an action is waiting for its deadline."""
        return self._action is not None

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_at = self._loop.call_at(at, self._fire), at

    def _fire(self) -> None:
        self._timer, self._armed_at = None, math.inf
        action = self._action
        if action is None:
            return  # cleared since: nothing to do until the next set
        if self._loop.time() < self._at:
            self._arm(self._at)  # moved later since this timer was armed
            return
        self._at, self._action = math.inf, None
        action()
