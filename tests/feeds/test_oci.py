"""Docker/OCI feed: skopeo copy, podman push/pull and helm OCI push/pull at ``/v2/<feed>/<repo>``.

docker-registry stands behind the front configured like a ProGet whose ``Web.BaseUrl`` is its own
internal origin, so its upload ``Location`` headers name the upstream; the gateway must rebase them or
the client would go around it (and the front would refuse the client's token). The gateway answers an
anonymous ``/v2/`` with a Basic challenge, which every docker client accepts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.feeds import artifacts, tools
from tests.feeds.conftest import (
    TOKEN_DEV,
    TOKEN_OUTSIDER,
    FeedGateway,
    assert_front_saw_only_the_key,
    assert_refused_unseen,
)
from tests.feeds.front import FEEDS, Front

FEED = FEEDS["docker"]
LAYER_BYTES = 6 * 1024 * 1024


def container_env(work: Path) -> dict[str, str]:
    """podman/skopeo with private storage, config, registries and auth file (never the machine's)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "containers.conf").write_text(
        '[containers]\ndefault_ulimits=["nofile=1024:1024","nproc=1024:1024"]\n'
        '[engine]\nruntime="runc"\ncgroup_manager="cgroupfs"\nevents_logger="file"\n'
        f'events_logfile_path="{work}/events.log"\n'
    )
    (work / "registries.conf").write_text("unqualified-search-registries = []\n")
    (work / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{work}/storage"\nrunroot = "{work}/run"\n'
    )
    (work / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    return tools.clean_env(
        work,
        CONTAINERS_CONF=str(work / "containers.conf"),
        CONTAINERS_REGISTRIES_CONF=str(work / "registries.conf"),
        CONTAINERS_STORAGE_CONF=str(work / "storage.conf"),
        REGISTRY_AUTH_FILE=str(work / "auth.json"),
        XDG_RUNTIME_DIR=str(work / "xdg"),
    )


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """podman refuses a runroot longer than 50 characters, which pytest's tmp_path exceeds."""
    path = Path(tempfile.mkdtemp(prefix="pgw-feeds-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def skopeo(args: list[str], env: dict[str, str], work: Path) -> tools.Result:
    return tools.run([tools.tool("skopeo"), "--policy", str(work / "policy.json"), *args], env=env)


def podman(args: list[str], env: dict[str, str], work: Path) -> tools.Result:
    storage = ["--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]
    return tools.run([tools.tool("podman"), *storage, *args], env=env, timeout=300)


@pytest.fixture(scope="module")
def pushed(
    tmp_path_factory: pytest.TempPathFactory, registry_backend: Path, front: Front, gateway: FeedGateway
) -> Path:
    """skopeo copies a 6 MiB-layer OCI image to <gateway>/<feed>/demo:1 with a gateway token."""
    work = tmp_path_factory.mktemp("skopeo")
    env = container_env(work)
    layout = artifacts.oci_layout(work / "layout", "1", LAYER_BYTES)
    gw_mark, mark = gateway.mark(), front.mark()
    dest = f"docker://{gateway.host}/{FEED}/demo:1"
    tools.ok(
        skopeo(
            ["copy", "--dest-tls-verify=false", "--dest-creds", f"api:{TOKEN_DEV}", f"oci:{layout}:1", dest],
            env,
            work,
        )
    )
    lines = assert_front_saw_only_the_key(front, mark)
    methods = {line["method"] for line in lines if "/blobs/uploads/" in line["uri"]}
    # POST → 202 Location (on the upstream's origin, rebased by the gateway) → PATCH the layer → PUT.
    assert {"POST", "PATCH", "PUT"} <= methods, lines
    # skopeo probes HTTPS first when TLS verification is off; the gateway answers the ClientHello 400.
    first = next(line for line in gateway.since(gw_mark) if line["reason"] != "framing_invalid")
    assert (first["path"], first["status"], first["reason"]) == ("/v2/", 401, "credential_missing")
    assert any(line["method"] == "PUT" and line["uri"] == f"/v2/{FEED}/demo/manifests/1" for line in lines)
    return work


def test_skopeo_inspect_sees_the_pushed_image(pushed: Path, front: Front, gateway: FeedGateway) -> None:
    env = container_env(pushed)
    mark = front.mark()
    src = f"docker://{gateway.host}/{FEED}/demo:1"
    result = tools.ok(
        skopeo(["inspect", "--tls-verify=false", "--creds", f"api:{TOKEN_DEV}", src], env, pushed)
    )
    assert json.loads(result.stdout)["Name"] == f"{gateway.host}/{FEED}/demo"
    assert_front_saw_only_the_key(front, mark)


def test_podman_login_pull_and_push(
    pushed: Path, front: Front, gateway: FeedGateway, short_tmp: Path
) -> None:
    tmp_path = short_tmp
    env = container_env(tmp_path)
    mark = front.mark()
    login = ["login", "--tls-verify=false", "-u", "api", "--password-stdin", gateway.host]
    tools.ok(tools.run([tools.tool("podman"), *login], env=env, input_text=TOKEN_DEV))
    tools.ok(podman(["pull", "--tls-verify=false", f"{gateway.host}/{FEED}/demo:1"], env, tmp_path))
    tools.ok(podman(["tag", f"{gateway.host}/{FEED}/demo:1", f"{gateway.host}/{FEED}/demo:2"], env, tmp_path))
    tools.ok(podman(["push", "--tls-verify=false", f"{gateway.host}/{FEED}/demo:2"], env, tmp_path))
    tags = skopeo(["list-tags", "--tls-verify=false", f"docker://{gateway.host}/{FEED}/demo"], env, tmp_path)
    assert sorted(json.loads(tools.ok(tags).stdout)["Tags"]) == ["1", "2"]
    assert_front_saw_only_the_key(front, mark)


def test_anonymous_registry_ping_gets_a_basic_challenge(
    pushed: Path, front: Front, gateway: FeedGateway
) -> None:
    import httpx

    mark = front.mark()
    response = httpx.get(f"{gateway.url}/v2/", trust_env=False)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert front.since(mark) == []


def test_a_token_without_a_rule_for_the_feed_is_refused_and_never_forwarded(
    pushed: Path, front: Front, gateway: FeedGateway, short_tmp: Path
) -> None:
    tmp_path = short_tmp
    env = container_env(tmp_path)
    layout = artifacts.oci_layout(tmp_path / "layout", "9", 1024)
    gw_mark, mark = gateway.mark(), front.mark()
    creds = f"api:{TOKEN_OUTSIDER}"
    dest = f"docker://{gateway.host}/{FEED}/demo:9"
    tools.failed(
        skopeo(
            ["copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout}:9", dest], env, tmp_path
        )
    )
    pull = ["pull", "--tls-verify=false", "--creds", creds, f"{gateway.host}/{FEED}/demo:1"]
    tools.failed(podman(pull, env, tmp_path))
    assert_refused_unseen(front, mark, gateway, gw_mark, "outsider")
