"""Debian feed: apt-get update and apt-get download through the gateway, the token in auth.conf.

The repository is a real signed one (dpkg-deb, apt-ftparchive, gpg) served statically by the front at
``/debian/<feed>/``; apt runs with a private APT_CONFIG so the machine's sources are never touched.
"""

from __future__ import annotations

import subprocess
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

FEED = FEEDS["debian"]
PACKAGE = "proxytest-feeds-hello"


def _deb(work: Path) -> Path:
    root = work / "pkgroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "share" / PACKAGE).mkdir(parents=True)
    (root / "usr" / "share" / PACKAGE / "hello.txt").write_text("hello from the debian feed\n")
    (root / "DEBIAN" / "control").write_text(
        f"Package: {PACKAGE}\nVersion: 1.0.0\nArchitecture: all\nMaintainer: CI <ci@example.invalid>\n"
        "Description: gateway feed test\n"
    )
    deb = work / f"{PACKAGE}_1.0.0_all.deb"
    tools.ok(
        tools.run(
            [tools.tool("dpkg-deb"), "--build", "--root-owner-group", root, deb], env=tools.clean_env(work)
        )
    )
    return deb


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, front: Front) -> Path:
    """A signed 'stable main' repository in the front's /debian/<feed>/; returns the public key file."""
    work = tmp_path_factory.mktemp("debian")
    repo = front.feed_dir("debian")
    pool = repo / "pool" / "main"
    pool.mkdir(parents=True)
    (pool / f"{PACKAGE}_1.0.0_all.deb").write_bytes(_deb(work).read_bytes())
    env = tools.clean_env(work, GNUPGHOME=str(work / "gnupg"))
    ftp = tools.tool("apt-ftparchive")
    binary = repo / "dists" / "stable" / "main" / "binary-all"
    binary.mkdir(parents=True)
    packages = tools.ok(tools.run([ftp, "packages", "pool"], env=env, cwd=repo)).stdout
    (binary / "Packages").write_text(packages)
    release_opts = [
        "-o",
        "APT::FTPArchive::Release::Suite=stable",
        "-o",
        "APT::FTPArchive::Release::Codename=stable",
    ]
    release_opts += [
        "-o",
        "APT::FTPArchive::Release::Components=main",
        "-o",
        "APT::FTPArchive::Release::Architectures=all amd64",
    ]
    release = tools.ok(tools.run([ftp, *release_opts, "release", "dists/stable"], env=env, cwd=repo)).stdout
    (repo / "dists" / "stable" / "Release").write_text(release)
    (work / "gnupg").mkdir(mode=0o700)
    gpg = tools.tool("gpg")
    tools.ok(
        tools.run(
            [
                gpg,
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "CI <ci@example.invalid>",
                "ed25519",
                "sign",
                "never",
            ],
            env=env,
        )
    )
    dists = repo / "dists" / "stable"
    tools.ok(
        tools.run(
            [gpg, "--batch", "--yes", "--clearsign", "-o", dists / "InRelease", dists / "Release"], env=env
        )
    )
    key = work / "repo.gpg"
    key.write_bytes(subprocess.run([gpg, "--export"], env=env, capture_output=True, check=True).stdout)
    return key


def apt(gateway: FeedGateway, key: Path, token: str, work: Path) -> tuple[dict[str, str], Path]:
    """A private apt setup: one source (the gateway), the token in auth.conf, state under ``work``."""
    for sub in ("lists/partial", "cache/archives/partial", "auth.d", "dl"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text(f"deb [signed-by={key}] {gateway.url}/debian/{FEED}/ stable main\n")
    auth = work / "auth.conf"
    auth.write_text(f"machine {gateway.url}/debian/{FEED}/\nlogin api\npassword {token}\n")
    auth.chmod(0o600)
    conf = work / "apt.conf"
    conf.write_text(
        f'Dir::Etc::SourceList "{work}/sources.list";\nDir::Etc::SourceParts "/nonexistent";\n'
        f'Dir::Etc::netrc "{auth}";\nDir::Etc::netrcparts "{work}/auth.d";\n'
        f'Dir::State::Lists "{work}/lists";\nDir::Cache "{work}/cache";\nDir::State::status "/dev/null";\n'
        'Acquire::Languages "none";\nAPT::Sandbox::User "root";\nAPT::Architecture "amd64";\n'
    )
    return tools.clean_env(work, APT_CONFIG=str(conf)), work / "dl"


def test_apt_get_update_and_download(
    repository: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    env, dl = apt(gateway, repository, TOKEN_DEV, tmp_path)
    mark = front.mark()
    update = tools.ok(tools.run([tools.tool("apt-get"), "update"], env=env))
    assert "Err" not in update.stdout and "W:" not in update.stderr, update.stdout + update.stderr
    tools.ok(tools.run([tools.tool("apt-get"), "download", PACKAGE], env=env, cwd=dl))
    assert (dl / f"{PACKAGE}_1.0.0_all.deb").read_bytes() == next(
        front.feed_dir("debian").rglob("*.deb")
    ).read_bytes()
    uris = {line["uri"] for line in assert_front_saw_only_the_key(front, mark)}
    assert f"/debian/{FEED}/dists/stable/InRelease" in uris
    assert f"/debian/{FEED}/pool/main/{PACKAGE}_1.0.0_all.deb" in uris


def test_a_token_without_a_rule_for_the_feed_is_refused_and_never_forwarded(
    repository: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    env, _ = apt(gateway, repository, TOKEN_OUTSIDER, tmp_path)
    gw_mark, mark = gateway.mark(), front.mark()
    result = tools.run([tools.tool("apt-get"), "update", "-o", "APT::Update::Error-Mode=any"], env=env)
    tools.failed(result)
    assert "403" in result.stdout + result.stderr
    assert_refused_unseen(front, mark, gateway, gw_mark, "outsider")
