"""The per-request caches (needle forms, secret-route readings) hold bounded memory whatever clients send.

Both are filled before or regardless of authentication (every presented credential's forms are built
to redact the log), so strangers choose their keys: distinct values at every size up to the largest
a head may carry must leave at most a few MiB retained, measured with tracemalloc.
"""

from __future__ import annotations

import gc
import os
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import needles, secret_routes
from gateway.needles import forms
from gateway.secret_routes import secret_route

BOUND_MIB = 8  # both caches together, at their worst
SIZES = st.lists(st.integers(min_value=1, max_value=32 * 1024), min_size=1, max_size=6)


def retained_mib(fill: object) -> float:
    needles._cached_forms.cache_clear()
    secret_routes._cached_route.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill()  # type: ignore[operator]
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / (1 << 20)
    finally:
        tracemalloc.stop()


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=SIZES)
def test_distinct_credentials_and_paths_of_any_size_stay_bounded(sizes: list[int]) -> None:
    def fill() -> None:
        for size in [*sizes, needles.CACHED_SECRET_BYTES, secret_routes.CACHED_PATH_CHARS]:
            for _ in range(1500):
                value = os.urandom(size // 2 + 1).hex()[:size]
                forms(value.encode())
                secret_route("/" + value)
        # the worst case at the boundary: every cache slot taken by the largest cached entry
        for _ in range(9000):
            forms(os.urandom(needles.CACHED_SECRET_BYTES // 2).hex().encode())
            secret_route("/" + os.urandom(secret_routes.CACHED_PATH_CHARS // 2).hex()[:-1])

    assert retained_mib(fill) < BOUND_MIB


def test_a_repeated_credential_and_path_are_served_from_the_cache() -> None:
    token = b"pgw_ci_" + b"a" * 40
    needles._cached_forms.cache_clear()
    secret_routes._cached_route.cache_clear()
    assert forms(token) is forms(token)
    assert secret_route("/api/api-keys/create") is secret_route("/api/api-keys/create") is not None
    assert needles._cached_forms.cache_info().hits == 1
    assert secret_routes._cached_route.cache_info().hits == 1
