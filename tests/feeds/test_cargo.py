"""Cargo feed: ``cargo build`` against a sparse registry with ``auth-required`` through the gateway.

Cargo fetches ``config.json`` without credentials, expects a 401, and then sends its token raw as
``Authorization: <token>`` (ProGet's documented ``cargo login <key>`` setup). The index's ``dl`` URL
is absolute and built from the request's host, as ProGet builds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.feeds import tools
from tests.feeds.conftest import (
    TOKEN_DEV,
    TOKEN_OUTSIDER,
    FeedGateway,
    assert_front_saw_only_the_key,
    assert_refused_unseen,
)
from tests.feeds.front import FEEDS, Front

FEED = FEEDS["cargo"]
CRATE = "proxytest-feeds-demo"


def cargo_env(cargo_home: Path, token: str | None = None) -> dict[str, str]:
    extra = {"CARGO_HOME": str(cargo_home), "CARGO_TERM_COLOR": "never", "CARGO_NET_RETRY": "0"}
    if token is not None:
        extra["CARGO_REGISTRIES_PROGET_TOKEN"] = token
    return tools.clean_env(tools.REAL_HOME, **extra)  # the real HOME: rustup finds its toolchain there


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, front: Front) -> Path:
    """A sparse index at /cargo/<feed>/ with one crate packaged by cargo itself."""
    work = tmp_path_factory.mktemp("cargo")
    crate = work / CRATE
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        f'[package]\nname = "{CRATE}"\nversion = "0.1.0"\nedition = "2021"\nlicense = "MIT"\n'
        'description = "gateway feed test"\n'
    )
    (crate / "src" / "lib.rs").write_text(
        'pub fn greeting() -> &\'static str { "hello from the cargo feed" }\n'
    )
    cmd = [tools.tool("cargo"), "package", "--no-verify", "--allow-dirty", "--offline"]
    tools.ok(tools.run(cmd, env=cargo_env(work / "cargo-home"), cwd=crate))
    packaged = crate / "target" / "package" / f"{CRATE}-0.1.0.crate"
    root = front.feed_dir("cargo")
    downloads = root / "crates" / CRATE
    downloads.mkdir(parents=True)
    (downloads / packaged.name).write_bytes(packaged.read_bytes())
    entry = {"name": CRATE, "vers": "0.1.0", "deps": [], "features": {}, "yanked": False}
    entry["cksum"] = hashlib.sha256(packaged.read_bytes()).hexdigest()
    (root / CRATE[:2] / CRATE[2:4]).mkdir(parents=True)
    (root / CRATE[:2] / CRATE[2:4] / CRATE).write_text(json.dumps(entry) + "\n")
    config = {
        "dl": f"@ORIGIN@/cargo/{FEED}/crates/{{crate}}/{{crate}}-{{version}}.crate",
        "api": f"@ORIGIN@/cargo/{FEED}",
        "auth-required": True,
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


def consumer(directory: Path, gateway: FeedGateway) -> Path:
    (directory / "src").mkdir(parents=True)
    (directory / ".cargo").mkdir()
    (directory / ".cargo" / "config.toml").write_text(
        '[registry]\nglobal-credential-providers = ["cargo:token"]\n'
        f'[registries.proget]\nindex = "sparse+{gateway.url}/cargo/{FEED}/"\n'
    )
    (directory / "Cargo.toml").write_text(
        '[package]\nname = "consumer"\nversion = "0.0.1"\nedition = "2021"\n\n'
        f'[dependencies]\n{CRATE} = {{ version = "0.1.0", registry = "proget" }}\n'
    )
    (directory / "src" / "main.rs").write_text(
        'fn main() { println!("{}", proxytest_feeds_demo::greeting()); }\n'
    )
    return directory


def test_cargo_build_with_a_sparse_auth_required_registry(
    index: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    app = consumer(tmp_path / "app", gateway)
    gw_mark, mark = gateway.mark(), front.mark()
    tools.ok(
        tools.run([tools.tool("cargo"), "build"], env=cargo_env(tmp_path / "cargo-home", TOKEN_DEV), cwd=app)
    )
    run = tools.ok(tools.run([str(app / "target" / "debug" / "consumer")], env=tools.clean_env(tmp_path)))
    assert run.stdout == "hello from the cargo feed\n"
    uris = {line["uri"] for line in assert_front_saw_only_the_key(front, mark)}
    assert f"/cargo/{FEED}/crates/{CRATE}/{CRATE}-0.1.0.crate" in uris, uris
    audit = gateway.since(gw_mark)
    assert audit[0]["reason"] == "credential_missing" and audit[0]["path"] == f"/cargo/{FEED}/config.json", (
        audit
    )
    assert {line["credential_source"] for line in audit[1:]} == {"header:authorization-raw"}, audit


def test_a_token_without_a_rule_for_the_feed_is_refused_and_never_forwarded(
    index: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    app = consumer(tmp_path / "app", gateway)
    gw_mark, mark = gateway.mark(), front.mark()
    result = tools.failed(
        tools.run([tools.tool("cargo"), "build"], env=cargo_env(tmp_path / "ch", TOKEN_OUTSIDER), cwd=app)
    )
    assert "403" in result.stderr, result.stderr
    assert_refused_unseen(front, mark, gateway, gw_mark, "outsider")
