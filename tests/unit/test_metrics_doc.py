"""docs/metrics.md is the one table of metrics: it must match the registry exactly, both ways."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.registry import Collector

from gateway.metrics import REGISTRY

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\|\s*`(?P<name>[a-z_:]+)`\s*\|\s*(?P<type>\w+)\s*\|(?P<labels>[^|]*)\|")


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed name → (type, label names) for every row of the table."""
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            labels = tuple(re.findall(r"`([a-z_]+)`", match["labels"]))
            assert match["name"] not in rows, f"{match['name']} documented twice"
            rows[match["name"]] = (match["type"], labels)
    return rows


def exposed_name(name: str, kind: str) -> str:
    return f"{name}_total" if kind == "counter" else name


def registered() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed name → (type, label names) for every collector in the registry (labels from the collector,
    since a labelled metric with no sample yet shows none in collect())."""
    collectors: list[Collector] = list(REGISTRY._collector_to_names)  # no public listing of collectors
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for collector in collectors:
        labels = tuple(getattr(collector, "labelnames", None) or getattr(collector, "_labelnames", ()))
        for family in collector.describe():
            out[exposed_name(family.name, family.type)] = (family.type, labels)
    return out


def test_every_registered_metric_is_documented_with_its_type_and_labels() -> None:
    docs, live = documented(), registered()
    assert live, "registry is empty"
    missing = sorted(set(live) - set(docs))
    stale = sorted(set(docs) - set(live))
    assert not missing, f"metrics missing from docs/metrics.md: {missing}"
    assert not stale, f"rows in docs/metrics.md for metrics that no longer exist: {stale}"
    for name, spec in live.items():
        assert docs[name] == spec, f"{name}: documented {docs[name]}, registered {spec}"
