"""The ProGet-shaped front itself: it accepts only the injected key, so every client test that passes
through it proves that the gateway, not the client, authenticated to "ProGet"."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.feeds.conftest import TOKEN_DEV
from tests.feeds.front import FEED_KEY, FEEDS, Front


def basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"api:{secret}".encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": basic(TOKEN_DEV)},
        {"Authorization": f"Bearer {TOKEN_DEV}"},
        {"X-ApiKey": TOKEN_DEV},
        {"Authorization": basic(FEED_KEY)},  # the key, but not in every place the gateway puts it
        {"X-ApiKey": FEED_KEY},
        {"Authorization": basic(FEED_KEY), "X-ApiKey": TOKEN_DEV},
    ],
)
def test_front_refuses_anything_but_the_injected_key(front: Front, headers: dict[str, str]) -> None:
    path = front.feed_dir("debian") / "probe.txt"
    path.write_text("probe\n")
    url = f"{front.url}/debian/{FEEDS['debian']}/probe.txt"
    response = httpx.get(url, headers=headers, trust_env=False)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="ProGet"'
    accepted = httpx.get(
        url, headers={"Authorization": basic(FEED_KEY), "X-ApiKey": FEED_KEY}, trust_env=False
    )
    assert (accepted.status_code, accepted.text) == (200, "probe\n")
