"""PyPI feed: twine upload, pip and uv installs through the gateway, with only a gateway token."""

from __future__ import annotations

from pathlib import Path

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

FEED = FEEDS["pypi"]
REQUIREMENT = f"{artifacts.WHEEL_NAME}=={artifacts.WHEEL_VERSION}"


def pip_env(home: Path, **extra: str) -> dict[str, str]:
    """pip without the machine's config (its extra index and find-links could satisfy us locally)."""
    return tools.clean_env(
        home,
        PIP_CONFIG_FILE="/dev/null",
        PIP_NO_INPUT="1",
        PIP_NO_CACHE_DIR="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        UV_NO_CONFIG="1",
        UV_CACHE_DIR=str(home / "uv-cache"),
        **extra,
    )


def index(gateway: FeedGateway, token: str | None) -> str:
    userinfo = f"api:{token}@" if token else ""
    return f"http://{userinfo}{gateway.host}/pypi/{FEED}/simple/"


def twine_upload(gateway: FeedGateway, token: str, wheel: Path, home: Path) -> tools.Result:
    cmd = [tools.venv_tool("twine"), "upload", "--non-interactive", "--disable-progress-bar", "--verbose"]
    cmd += ["--repository-url", f"{gateway.url}/pypi/{FEED}/legacy", "-u", "api", "-p", token, str(wheel)]
    return tools.run(cmd, env=pip_env(home))


def pip_download(gateway: FeedGateway, index_url: str, dest: Path, env: dict[str, str]) -> tools.Result:
    cmd = [tools.venv_tool("pip"), "download", "--no-deps", "-v", "-d", str(dest), "--index-url", index_url]
    return tools.run([*cmd, REQUIREMENT], env=env)


@pytest.fixture(scope="module")
def uploaded(
    tmp_path_factory: pytest.TempPathFactory, pypi_backend: Path, front: Front, gateway: FeedGateway
) -> Path:
    """twine uploads a wheel to /pypi/<feed>/legacy with a gateway token; pypiserver stores it."""
    tmp = tmp_path_factory.mktemp("twine")
    wheel = artifacts.wheel(tmp / "dist")
    mark = front.mark()
    tools.ok(twine_upload(gateway, TOKEN_DEV, wheel, tmp))
    assert (pypi_backend / wheel.name).read_bytes() == wheel.read_bytes()
    lines = assert_front_saw_only_the_key(front, mark)
    assert any(line["method"] == "POST" and line["uri"] == f"/pypi/{FEED}/legacy" for line in lines)
    return wheel


def test_twine_upload_lands_in_the_feed(uploaded: Path) -> None:
    assert uploaded.name.startswith("proxytest_feeds_pkg-0.1.0")


def test_pip_download_with_credentials_in_the_url(
    uploaded: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    mark = front.mark()
    tools.ok(pip_download(gateway, index(gateway, TOKEN_DEV), tmp_path / "dl", pip_env(tmp_path)))
    assert (tmp_path / "dl" / uploaded.name).read_bytes() == uploaded.read_bytes()
    uris = [line["uri"] for line in assert_front_saw_only_the_key(front, mark)]
    assert f"/pypi/{FEED}/simple/{artifacts.WHEEL_NAME}/" in uris
    assert any(uri.startswith(f"/pypi/{FEED}/packages/{uploaded.name}") for uri in uris)


def test_pip_reads_the_token_from_netrc(
    uploaded: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    """No credential in the URL; pip (through requests) finds the gateway token in .netrc."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin api\npassword {TOKEN_DEV}\n")
    netrc.chmod(0o600)
    gw_mark, mark = gateway.mark(), front.mark()
    env = pip_env(tmp_path, NETRC=str(netrc))
    tools.ok(pip_download(gateway, index(gateway, None), tmp_path / "dl", env))
    assert (tmp_path / "dl" / uploaded.name).exists()
    assert {(line["client"], line["credential_source"]) for line in gateway.since(gw_mark)} == {
        ("dev", "header:authorization-basic")
    }
    assert_front_saw_only_the_key(front, mark)


def test_pip_without_any_credential_is_challenged_not_forwarded(
    uploaded: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    gw_mark, mark = gateway.mark(), front.mark()
    tools.failed(pip_download(gateway, index(gateway, None), tmp_path / "dl", pip_env(tmp_path)))
    assert front.since(mark) == []
    assert {line["reason"] for line in gateway.since(gw_mark)} == {"credential_missing"}


def test_uv_pip_install(uploaded: Path, front: Front, gateway: FeedGateway, tmp_path: Path) -> None:
    mark = front.mark()
    target = tmp_path / "site"
    cmd = [tools.venv_tool("uv"), "pip", "install", "--no-cache", "--python", tools.venv_tool("python")]
    cmd += ["--target", str(target), "--index-url", index(gateway, TOKEN_DEV), REQUIREMENT]
    tools.ok(tools.run(cmd, env=pip_env(tmp_path)))
    assert (
        target / "proxytest_feeds_pkg" / "__init__.py"
    ).read_text() == 'VALUE = "proxytest-feeds-pkg 0.1.0"\n'
    assert_front_saw_only_the_key(front, mark)


def test_uv_answers_the_gateways_challenge_from_netrc(
    uploaded: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    """The 401-then-credentials path: uv asks anonymously, gets the Basic challenge, retries from .netrc."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin api\npassword {TOKEN_DEV}\n")
    gw_mark, mark = gateway.mark(), front.mark()
    target = tmp_path / "site"
    cmd = [tools.venv_tool("uv"), "pip", "install", "--no-cache", "--python", tools.venv_tool("python")]
    cmd += ["--target", str(target), "--index-url", index(gateway, None), REQUIREMENT]
    tools.ok(tools.run(cmd, env=pip_env(tmp_path, NETRC=str(netrc))))
    assert (target / "proxytest_feeds_pkg" / "__init__.py").is_file()
    audit = gateway.since(gw_mark)
    assert (audit[0]["status"], audit[0]["reason"]) == (401, "credential_missing"), audit
    assert {line["client"] for line in audit} == {None, "dev"}, audit
    assert_front_saw_only_the_key(front, mark)


def test_a_token_without_a_rule_for_the_feed_is_refused_and_never_forwarded(
    uploaded: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    gw_mark, mark = gateway.mark(), front.mark()
    tools.failed(pip_download(gateway, index(gateway, TOKEN_OUTSIDER), tmp_path / "pip", pip_env(tmp_path)))
    cmd = [tools.venv_tool("uv"), "pip", "install", "--no-cache", "--python", tools.venv_tool("python")]
    cmd += ["--target", str(tmp_path / "uv"), "--index-url", index(gateway, TOKEN_OUTSIDER), REQUIREMENT]
    tools.failed(tools.run(cmd, env=pip_env(tmp_path)))
    assert_refused_unseen(front, mark, gateway, gw_mark, "outsider")


def test_a_read_only_token_cannot_upload(
    uploaded: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    wheel = artifacts.wheel(tmp_path / "dist", version="0.2.0")
    gw_mark, mark = gateway.mark(), front.mark()
    result = tools.failed(twine_upload(gateway, TOKEN_READER, wheel, tmp_path))
    assert "403" in result.stdout + result.stderr
    assert_write_refused_unseen(front, mark, gateway, gw_mark)
