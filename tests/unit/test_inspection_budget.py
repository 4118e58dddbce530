"""The process-wide budget of inspected body bytes: never exceeded, strangers held to their share, and
everything given back however a request ends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit import Flow
from gateway.bodies import ANONYMOUS_SHARE, InspectionBudget
from gateway.errors import InspectionBusy

TOTAL = 64 * 1024

step = st.tuples(st.booleans(), st.integers(0, TOTAL // 2), st.booleans())  # anonymous, bytes, end it


@given(st.lists(step, max_size=60))
def test_the_budget_is_never_exceeded_and_always_given_back(steps: list[tuple[bool, int, bool]]) -> None:
    budget = InspectionBudget(TOTAL)
    open_flows: list[Flow] = []
    for anonymous, size, end in steps:
        flow = Flow(request_id="r", method="POST", peer="p")
        hold = budget.hold(flow, anonymous=anonymous)
        try:
            hold.take(size)
        except InspectionBusy:
            assert budget.held + size > budget.total or (
                anonymous and budget.anonymous_held + size > budget.anonymous_total
            )
        open_flows.append(flow)
        assert budget.held <= budget.total
        assert budget.anonymous_held <= budget.anonymous_total
        if end:
            released = open_flows.pop(0)
            assert released.release is not None
            released.release()
    for flow in open_flows:
        assert flow.release is not None
        flow.release()
    assert (budget.held, budget.anonymous_held) == (0, 0)


def test_strangers_get_one_eighth_and_clients_the_rest() -> None:
    budget = InspectionBudget(TOTAL)
    stranger = budget.hold(Flow(request_id="a", method="POST", peer="p"), anonymous=True)
    stranger.take(TOTAL // ANONYMOUS_SHARE)
    with pytest.raises(InspectionBusy):
        budget.hold(Flow(request_id="b", method="POST", peer="p"), anonymous=True).take(1)
    client = budget.hold(Flow(request_id="c", method="POST", peer="p"), anonymous=False)
    client.take(TOTAL - TOTAL // ANONYMOUS_SHARE)
    with pytest.raises(InspectionBusy):
        client.take(1)
    stranger.release()
    client.take(1)
    assert budget.held == TOTAL - TOTAL // ANONYMOUS_SHARE + 1


def test_a_reloaded_total_applies_to_new_bytes_and_keeps_what_is_held() -> None:
    budget = InspectionBudget(TOTAL)
    client = budget.hold(Flow(request_id="c", method="POST", peer="p"), anonymous=False)
    client.take(TOTAL // 2)
    budget.resize(TOTAL // 4)
    assert budget.held == TOTAL // 2 and budget.anonymous_total == TOTAL // 4 // ANONYMOUS_SHARE
    with pytest.raises(InspectionBusy):
        budget.hold(Flow(request_id="d", method="POST", peer="p"), anonymous=False).take(1)
    client.release()
    budget.hold(Flow(request_id="e", method="POST", peer="p"), anonymous=False).take(TOTAL // 4)
