"""Counters and histograms the request path updates with plain arithmetic, exported at scrape time.

prometheus-client's ``Counter.inc`` and ``Histogram.observe`` take a lock per value (a histogram two:
its sum and one bucket), so recording one request — count, latency, upstream time, bytes — was six
lock round trips and ~3 µs in a loop (~5 µs of the gateway's ~112 µs per request under load, py-spy,
issue 9). The gateway's request path runs on one event-loop thread, so nothing needs the locks: here
a labelled child is a ``list`` of numbers updated in place, and :meth:`collect` turns the lists into
metric families when Prometheus scrapes. The exposition is the one prometheus-client writes for its
own classes (``_total``, ``_created``, cumulative ``_bucket`` with ``le``, ``_count``, ``_sum``):
``tests/unit/test_tally.py`` checks it against them over generated observations.

A scrape from another thread reads ints and floats whole (the GIL); a histogram's ``_count`` is
computed from the same bucket list it exports, so a scrape is always self-consistent.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_le: Callable[[float], str] = floatToGoString  # the bucket labels prometheus-client's Histogram writes


class _Family:
    """What both kinds share: a cell (a list of numbers) per label set, created at 0 on first use."""

    width = 1

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._children: dict[tuple[str, ...], list[float]] = {}
        self._created: dict[tuple[str, ...], float] = {}
        if not self.labelnames:
            self.child()  # an unlabelled metric is exported from the start, like prometheus-client's

    def child(self, *labels: str) -> list[float]:
        """The cell for one label set; exported from its first use on."""
        cell = self._children.get(labels)
        if cell is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labels!r}")
            self._created[labels] = time.time()
            cell = self._children[labels] = [0.0] * self.width
        return cell

    def _cells(self) -> list[tuple[tuple[str, ...], list[float], float]]:
        return [(labels, cell, self._created[labels]) for labels, cell in list(self._children.items())]


class PlainCounter(_Family):
    """A counter family: add to ``child(*labels)[0]``."""

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, cell, created in self._cells():
            family.add_metric(labels, cell[0], created=created)
        yield family


class PlainHistogram(_Family):
    """A histogram family: a child is ``[count per bucket…, count above the last bound, sum]``."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], labelnames: Sequence[str] = ()
    ) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self.width = len(self.bounds) + 2
        super().__init__(name, documentation, labelnames)

    def observe(self, cell: list[float], value: float) -> None:
        """Count ``value`` in the first bucket whose bound is ≥ it (Prometheus's ``le``) and in the sum."""
        cell[bisect_left(self.bounds, value)] += 1
        cell[-1] += value

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [_le(b) for b in self.bounds] + ["+Inf"]
        for labels, cell, created in self._cells():
            counts, total = cell[:-1], cell[-1]  # copied first: buckets, count and sum agree
            family.add_metric(labels, list(zip(edges, accumulate(counts), strict=True)), total)
            named = dict(zip(self.labelnames, labels, strict=True))
            family.samples.append(Sample(f"{self.name}_created", named, created))
        yield family
