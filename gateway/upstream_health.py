"""ProGet's own component health, as gauges — never as gateway readiness.

ProGet answers /health with a 500 for any component problem (its background service stopped, a license
warning); following that would take every gateway pod out of its Service and turn a partial ProGet problem
into a full outage. So readiness only asks "does ProGet answer HTTP at all", and the component statuses read
from /health/json (the same JSON on ProGet 2025 and 2026) become `proget_upstream_health{component}` and
`proget_upstream_info{version}` for the alerts.
"""

from __future__ import annotations

from typing import Any

from gateway.metrics import UPSTREAM_HEALTH, UPSTREAM_INFO

# JSON field → component label: a fixed set, so a new ProGet field never becomes an unbounded label.
COMPONENTS = {
    "databaseStatus": "database",
    "licenseStatus": "license",
    "serviceStatus": "service",
}
REPLICATION = {"serverStatus": "replication_server", "clientStatus": "replication_client"}


def component_health(doc: Any) -> dict[str, float]:
    """component → 1 (OK) / 0 (anything else) for the fields present in a ProGet health JSON document."""
    if not isinstance(doc, dict):
        return {}
    out = {label: float(doc[field] == "OK") for field, label in COMPONENTS.items() if field in doc}
    replication = doc.get("replicationStatus")
    if isinstance(replication, dict):
        out |= {label: float(replication[f] == "OK") for f, label in REPLICATION.items() if f in replication}
    return out


def record(doc: Any) -> None:
    """Publish one /health/json answer (None: ProGet did not answer JSON → every known component 0)."""
    health = component_health(doc)
    for label in [*COMPONENTS.values(), *REPLICATION.values()]:
        if label in health:
            UPSTREAM_HEALTH.labels(label).set(health[label])
        elif doc is None:
            UPSTREAM_HEALTH.labels(label).set(0)
    version = doc.get("versionNumber") if isinstance(doc, dict) else None
    if isinstance(version, str) and len(version) <= 32:
        UPSTREAM_INFO.clear()
        UPSTREAM_INFO.labels(version).set(1)
