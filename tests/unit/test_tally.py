"""gateway.tally's plain-number metrics expose exactly what prometheus-client's own classes expose."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.tally import PlainCounter, PlainHistogram

BOUNDS = (0.001, 0.01, 0.1, 1.0, 10.0)
LABELS = st.sampled_from(["a", "b", "c"])
VALUES = st.one_of(
    st.sampled_from([0.0, *BOUNDS]),  # exactly on a bound: counted in that bucket (le)
    st.floats(min_value=0, max_value=100, allow_nan=False),
)


def _without_created(text: bytes) -> str:
    """The exposition minus ``_created`` lines: their value is the wall clock at creation."""
    return "\n".join(line for line in text.decode().splitlines() if not re.match(r"\w+_created\{?", line))


def _pair(plain: object, theirs: object) -> tuple[CollectorRegistry, CollectorRegistry]:
    ours, reference = CollectorRegistry(), CollectorRegistry()
    ours.register(plain)  # type: ignore[arg-type]
    reference.register(theirs)  # type: ignore[arg-type]
    return ours, reference


@given(st.lists(st.tuples(LABELS, LABELS, st.integers(min_value=0, max_value=10**6))))
def test_counter_exposes_what_prometheus_client_exposes(increments: list[tuple[str, str, int]]) -> None:
    plain = PlainCounter("t_requests", "Requests.", ["client", "code"])
    theirs = Counter("t_requests", "Requests.", ["client", "code"], registry=None)
    for client, code, amount in increments:
        plain.child(client, code)[0] += amount
        theirs.labels(client, code).inc(amount)
    ours, reference = _pair(plain, theirs)
    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(reference))


@given(st.lists(st.tuples(LABELS, VALUES)))
def test_histogram_exposes_what_prometheus_client_exposes(observations: list[tuple[str, float]]) -> None:
    plain = PlainHistogram("t_seconds", "Durations.", BOUNDS, ["decision"])
    theirs = Histogram("t_seconds", "Durations.", ["decision"], buckets=BOUNDS, registry=None)
    for decision, value in observations:
        plain.observe(plain.child(decision), value)
        theirs.labels(decision).observe(value)
    ours, reference = _pair(plain, theirs)
    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(reference))


def test_unlabelled_metrics_are_exported_from_the_start_with_a_created_time() -> None:
    plain = PlainHistogram("t_upstream_seconds", "Upstream.", BOUNDS)
    theirs = Histogram("t_upstream_seconds", "Upstream.", buckets=BOUNDS, registry=None)
    ours, reference = _pair(plain, theirs)
    text = generate_latest(ours).decode()
    assert _without_created(text.encode()) == _without_created(generate_latest(reference))
    assert re.search(r"^t_upstream_seconds_created \d+\.\d+e\+09$", text, re.M)


def test_a_child_with_the_wrong_number_of_labels_is_refused() -> None:
    plain = PlainCounter("t_requests", "Requests.", ["client", "code"])
    with pytest.raises(ValueError, match="expected labels"):
        plain.child("only-one")
