"""NuGet feed: nuget.exe (mono) push with an API key and install with source credentials.

minchoc (a NuGet v2 server) stands behind the front at ``/nuget/<feed>/``. nuget.exe sends the push
key in ``X-NuGet-ApiKey``; the gateway must replace it with the ProGet key in the same header. Reads
go out without credentials first; nuget.exe answers the gateway's Basic challenge from NuGet.Config.
"""

from __future__ import annotations

import zipfile
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

FEED = FEEDS["nuget"]
PACKAGE = "ProxyTest.Feeds.Demo"
NUSPEC = f"""<?xml version="1.0"?>
<package><metadata><id>{PACKAGE}</id><version>1.0.0</version><authors>CI</authors>
<description>gateway feed test</description></metadata>
<files><file src="hello.txt" target="content/hello.txt" /></files></package>
"""


def nuget(args: list[str], work: Path, timeout: float = 240) -> tools.Result:
    exe = tools.npm_file("nuget-exe/nuget-5.8.0.exe")
    env = tools.clean_env(
        work, XDG_CONFIG_HOME=str(work / "xdg-config"), XDG_DATA_HOME=str(work / "xdg-data")
    )
    env["NUGET_PACKAGES"] = str(work / "nuget-packages")
    return tools.run([tools.tool("mono"), exe, *args, "-NonInteractive"], env=env, cwd=work, timeout=timeout)


def config(work: Path, gateway: FeedGateway, token: str) -> Path:
    path = work / "NuGet.Config"
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<configuration>\n'
        f'<packageSources><clear /><add key="proget" value="{gateway.url}/nuget/{FEED}/" /></packageSources>\n'
        '<packageSourceCredentials><proget><add key="Username" value="api" />'
        f'<add key="ClearTextPassword" value="{token}" /></proget></packageSourceCredentials>\n'
        "</configuration>\n"
    )
    return path


@pytest.fixture(scope="module")
def pushed(
    tmp_path_factory: pytest.TempPathFactory, nuget_backend: Path, front: Front, gateway: FeedGateway
) -> Path:
    work = tmp_path_factory.mktemp("nuget")
    (work / "hello.txt").write_text("hello from the nuget feed\n")
    (work / f"{PACKAGE}.nuspec").write_text(NUSPEC)
    tools.ok(nuget(["pack", f"{PACKAGE}.nuspec", "-OutputDirectory", str(work / "out")], work))
    nupkg = work / "out" / f"{PACKAGE}.1.0.0.nupkg"
    cfg = config(work, gateway, TOKEN_DEV)
    mark = front.mark()
    push = [
        "push",
        str(nupkg),
        "-Source",
        f"{gateway.url}/nuget/{FEED}/",
        "-ApiKey",
        TOKEN_DEV,
        "-ConfigFile",
        str(cfg),
    ]
    tools.ok(nuget(push, work))
    lines = assert_front_saw_only_the_key(front, mark)
    assert any(line["method"] == "PUT" and line["x_nuget_apikey"] for line in lines), lines
    return nupkg


def test_push_with_an_api_key_lands_in_the_feed(pushed: Path, nuget_backend: Path) -> None:
    stored = list((nuget_backend / "media").rglob("*.nupkg"))
    assert len(stored) == 1 and stored[0].read_bytes() == pushed.read_bytes()


def test_install_with_source_credentials(
    pushed: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    cfg = config(tmp_path, gateway, TOKEN_DEV)
    gw_mark, mark = gateway.mark(), front.mark()
    install = ["install", PACKAGE, "-Version", "1.0.0", "-ConfigFile", str(cfg), "-Source", "proget"]
    tools.ok(
        nuget([*install, "-OutputDirectory", str(tmp_path / "out"), "-DirectDownload", "-NoCache"], tmp_path)
    )
    installed = tmp_path / "out" / f"{PACKAGE}.1.0.0"
    assert (installed / "content" / "hello.txt").read_text() == "hello from the nuget feed\n"
    with zipfile.ZipFile(installed / f"{PACKAGE}.1.0.0.nupkg") as zf:
        assert f"{PACKAGE}.nuspec" in zf.namelist()
    assert_front_saw_only_the_key(front, mark)
    audit = gateway.since(gw_mark)
    # nuget.exe asks anonymously first and answers the gateway's Basic challenge from NuGet.Config.
    assert audit[0]["status"] == 401 and audit[0]["reason"] == "credential_missing", audit
    assert {line["client"] for line in audit} == {"dev", None}, audit


def test_a_token_without_a_rule_for_the_feed_is_refused_and_never_forwarded(
    pushed: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    cfg = config(tmp_path, gateway, TOKEN_OUTSIDER)
    gw_mark, mark = gateway.mark(), front.mark()
    push = [
        "push",
        str(pushed),
        "-Source",
        f"{gateway.url}/nuget/{FEED}/",
        "-ApiKey",
        TOKEN_OUTSIDER,
        "-ConfigFile",
        str(cfg),
    ]
    tools.failed(nuget(push, tmp_path))
    install = ["install", PACKAGE, "-Version", "1.0.0", "-ConfigFile", str(cfg), "-Source", "proget"]
    tools.failed(
        nuget([*install, "-OutputDirectory", str(tmp_path / "out"), "-DirectDownload", "-NoCache"], tmp_path)
    )
    assert_refused_unseen(front, mark, gateway, gw_mark, "outsider")
