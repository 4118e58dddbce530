"""npm feed: publish and install through the gateway with ``_authToken`` (Bearer) and ``_auth`` (Basic).

verdaccio stands behind the front at ``/npm/<feed>/`` and builds tarball URLs from the request's Host,
as ProGet does, so the packument's tarball URLs must come back pointing at the gateway.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from tests.feeds import artifacts, tools
from tests.feeds.conftest import (
    TOKEN_DEV,
    TOKEN_OUTSIDER,
    TOKEN_READER,
    FeedGateway,
    assert_front_saw_only_the_key,
    assert_refused_unseen,
    assert_write_refused_unseen,
)
from tests.feeds.front import FEEDS, Front

FEED = FEEDS["npm"]
PLAIN = "proxytest-feeds-lib"
SCOPED = "@proxytest/feeds-scoped"


def npmrc(path: Path, gateway: FeedGateway, token: str, style: str) -> Path:
    """An .npmrc as a user writes it for ProGet: credentials keyed by the nerf-darted feed URL."""
    registry = f"{gateway.url}/npm/{FEED}/"
    nerf = f"//{gateway.host}/npm/{FEED}/"
    if style == "token":
        cred = f"{nerf}:_authToken={token}"
    else:
        cred = f"{nerf}:_auth={base64.b64encode(f'api:{token}'.encode()).decode()}"
    path.write_text(f"registry={registry}\n@proxytest:registry={registry}\n{cred}\n")
    return path


def npm(args: list[str], rc: Path, cwd: Path, home: Path) -> tools.Result:
    env = tools.clean_env(home, NPM_CONFIG_GLOBALCONFIG="/dev/null", NPM_CONFIG_UPDATE_NOTIFIER="false")
    cmd = [tools.tool("npm"), *args, "--userconfig", str(rc), "--cache", str(home / "npm-cache")]
    return tools.run([*cmd, "--no-audit", "--no-fund", "--loglevel=http"], env=env, cwd=cwd)


@pytest.fixture(scope="module")
def published(
    tmp_path_factory: pytest.TempPathFactory, npm_backend: Path, front: Front, gateway: FeedGateway
) -> Path:
    """An unscoped package published with _authToken, a scoped one (depending on it) with _auth."""
    tmp = tmp_path_factory.mktemp("npm-publish")
    mark = front.mark()
    plain = artifacts.npm_package(tmp / "plain", PLAIN, "1.0.0")
    tools.ok(npm(["publish"], npmrc(tmp / "rc-token", gateway, TOKEN_DEV, "token"), plain, tmp))
    scoped = artifacts.npm_package(tmp / "scoped", SCOPED, "1.0.0", {PLAIN: "^1.0.0"})
    tools.ok(
        npm(
            ["publish", "--access", "public"],
            npmrc(tmp / "rc-basic", gateway, TOKEN_DEV, "basic"),
            scoped,
            tmp,
        )
    )
    lines = assert_front_saw_only_the_key(front, mark)
    puts = {line["uri"] for line in lines if line["method"] == "PUT"}
    # npm sends '@proxytest%2ffeeds-scoped'; the gateway forwards the canonical (upper-case hex) spelling.
    assert puts == {f"/npm/{FEED}/{PLAIN}", f"/npm/{FEED}/@proxytest%2Ffeeds-scoped"}, puts
    return tmp


def test_publish_reaches_the_feed(published: Path, npm_backend: Path) -> None:
    stored = npm_backend / "storage"
    assert (stored / PLAIN / f"{PLAIN}-1.0.0.tgz").is_file()
    assert (stored / "@proxytest" / "feeds-scoped" / "feeds-scoped-1.0.0.tgz").is_file()


def test_packument_tarball_urls_point_at_the_gateway(published: Path, gateway: FeedGateway) -> None:
    response = httpx.get(
        f"{gateway.url}/npm/{FEED}/@proxytest%2ffeeds-scoped",
        headers={"Authorization": f"Bearer {TOKEN_DEV}"},
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    tarball = response.json()["versions"]["1.0.0"]["dist"]["tarball"]
    assert tarball.startswith(f"{gateway.url}/npm/{FEED}/@proxytest/feeds-scoped/-/"), tarball


def consumer_project(tmp_path: Path) -> Path:
    """An empty private npm project to install into."""
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "package.json").write_text(
        json.dumps({"name": "consumer", "version": "0.0.0", "private": True})
    )
    return consumer


@pytest.mark.parametrize("style", ["token", "basic"])
def test_install_scoped_package_and_its_dependency(
    style: str, published: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    consumer = consumer_project(tmp_path)
    mark = front.mark()
    tools.ok(
        npm(
            ["install", f"{SCOPED}@1.0.0"],
            npmrc(tmp_path / "rc", gateway, TOKEN_DEV, style),
            consumer,
            tmp_path,
        )
    )
    modules = consumer / "node_modules"
    assert (
        json.loads((modules / "@proxytest" / "feeds-scoped" / "package.json").read_text())["version"]
        == "1.0.0"
    )
    assert (modules / PLAIN / "index.js").read_text() == 'module.exports = "proxytest-feeds-lib 1.0.0";\n'
    uris = {line["uri"] for line in assert_front_saw_only_the_key(front, mark)}
    assert f"/npm/{FEED}/{PLAIN}/-/{PLAIN}-1.0.0.tgz" in uris, uris


@pytest.mark.parametrize("style", ["token", "basic"])
def test_a_token_without_a_rule_for_the_feed_is_refused_and_never_forwarded(
    style: str, published: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    consumer = consumer_project(tmp_path)
    rc = npmrc(tmp_path / "rc", gateway, TOKEN_OUTSIDER, style)
    gw_mark, mark = gateway.mark(), front.mark()
    tools.failed(npm(["install", f"{SCOPED}@1.0.0"], rc, consumer, tmp_path))
    package = artifacts.npm_package(tmp_path / "pkg", "proxytest-feeds-outsider", "1.0.0")
    tools.failed(npm(["publish"], rc, package, tmp_path))
    assert_refused_unseen(front, mark, gateway, gw_mark, "outsider")


def test_a_read_only_token_cannot_publish(
    published: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    package = artifacts.npm_package(tmp_path / "pkg", PLAIN, "2.0.0")
    gw_mark, mark = gateway.mark(), front.mark()
    result = tools.failed(
        npm(["publish"], npmrc(tmp_path / "rc", gateway, TOKEN_READER, "token"), package, tmp_path)
    )
    assert "403" in result.stderr
    assert_write_refused_unseen(front, mark, gateway, gw_mark)
