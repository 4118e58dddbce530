"""Session fixtures: the ProGet-shaped front, the real registries behind it, and the real gateway.

Every server binds 127.0.0.1 on a free port and is stopped by its PID at teardown. Backends start
only when a test module asks for them, so one client's tests can run alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import token_hash
from tests.e2e.conftest import wait_ready
from tests.feeds import tools
from tests.feeds.front import BACKENDS, FEED_KEY, FEEDS, NUGET_BACKEND_KEY, Front, basic_auth, start_front
from tests.processes import free_port

TOKEN_DEV = "pgw_feeds_dev_" + "d" * 40  # may use every test feed
TOKEN_READER = "pgw_feeds_reader_" + "r" * 40  # may only read (GET/HEAD) the test feeds
TOKEN_OUTSIDER = "pgw_feeds_outsider_" + "o" * 40  # may use only a feed no test touches
TOKENS = (TOKEN_DEV, TOKEN_READER, TOKEN_OUTSIDER)


def gateway_config(upstream: str, port: int, admin_port: int) -> dict[str, Any]:
    feeds = sorted(FEEDS.values())
    registry_root = {"methods": ["GET", "HEAD"], "paths": ["/v2/"], "key": "feeds"}  # docker's API ping
    return {
        "upstream": {"url": upstream, "timeouts": {"connect": 5, "read": 120, "write": 120}},
        "listen": {"host": "127.0.0.1", "port": port},
        "public_url": f"http://127.0.0.1:{port}",  # ProGet builds its links from it (Host, X-Forwarded-Host)
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "keys": {"feeds": {"env": "FEEDS_TEST_PROGET_KEY"}},
        "clients": [
            {
                "name": "dev",
                "tokens": [f"sha256:{token_hash(TOKEN_DEV)}"],
                "rules": [{"feeds": feeds, "key": "feeds"}, registry_root],
            },
            {
                "name": "reader",
                "tokens": [f"sha256:{token_hash(TOKEN_READER)}"],
                "rules": [{"methods": ["GET", "HEAD"], "feeds": feeds, "key": "feeds"}, registry_root],
            },
            {
                "name": "outsider",
                "tokens": [f"sha256:{token_hash(TOKEN_OUTSIDER)}"],
                "rules": [{"feeds": ["somebody-elses-feed"], "key": "feeds"}],
            },
        ],
    }


@dataclass
class FeedGateway:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def audit(self) -> list[dict[str, Any]]:
        time.sleep(0.2)  # the audit line is written after the response
        text = self.log_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def mark(self) -> int:
        return len(self.audit())

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.audit()[mark:]


@pytest.fixture(scope="session")
def feed_ports() -> dict[str, int]:
    return {name: free_port() for name in (*BACKENDS, "front")}


@pytest.fixture(scope="session")
def front(tmp_path_factory: pytest.TempPathFactory, feed_ports: dict[str, int]) -> Iterator[Front]:
    root = tmp_path_factory.mktemp("front")
    server = start_front(root, feed_ports["front"], feed_ports)
    try:
        yield server
    finally:
        tools.stop(server.process)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, front: Front) -> Iterator[FeedGateway]:
    tmp = tmp_path_factory.mktemp("feedgw")
    port, admin_port = free_port(), free_port()
    config_path = tmp / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(gateway_config(front.url, port, admin_port)))
    log_path = tmp / "gateway.log"
    env = {**os.environ, "FEEDS_TEST_PROGET_KEY": FEED_KEY, "PYTHONUNBUFFERED": "1"}
    process = tools.start([sys.executable, "-m", "gateway", "serve", "--config", config_path], log_path, env)
    try:
        wait_ready(f"http://127.0.0.1:{admin_port}", process, log_path)
        yield FeedGateway(f"http://127.0.0.1:{port}", port, process, log_path)
    finally:
        tools.stop(process)


# --- backends ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pypi_backend(tmp_path_factory: pytest.TempPathFactory, feed_ports: dict[str, int]) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("pypiserver")
    packages = root / "packages"
    packages.mkdir()
    port = feed_ports["pypi"]
    log = root / "pypiserver.log"
    cmd = [tools.venv_tool("pypi-server"), "run", "-i", "127.0.0.1", "-p", str(port), "-a", ".", "-P", "."]
    cmd += ["--disable-fallback", "--server", "auto", "--server-base-url", f"/pypi/{FEEDS['pypi']}"]
    cmd.append(str(packages))
    process = tools.start(cmd, log)
    try:
        tools.wait_http(f"http://127.0.0.1:{port}/", process, log)
        yield packages
    finally:
        tools.stop(process)


VERDACCIO_CONFIG = """
storage: {root}/storage
auth:
  htpasswd: {{file: {root}/htpasswd, max_users: -1}}
uplinks: {{}}
packages:
  '@*/*': {{access: $all, publish: $all, unpublish: $all}}
  '**': {{access: $all, publish: $all, unpublish: $all}}
url_prefix: /npm/{feed}/
listen: 127.0.0.1:{port}
web: {{enable: false}}
log: {{type: stdout, format: pretty, level: warn}}
"""


@pytest.fixture(scope="session")
def npm_backend(tmp_path_factory: pytest.TempPathFactory, feed_ports: dict[str, int]) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("verdaccio")
    port = feed_ports["npm"]
    (root / "htpasswd").write_text("")
    config = root / "config.yaml"
    config.write_text(VERDACCIO_CONFIG.format(root=root, port=port, feed=FEEDS["npm"]))
    log = root / "verdaccio.log"
    verdaccio = tools.npm_file(".bin/verdaccio")
    process = tools.start([tools.tool("node"), verdaccio, "--config", config], log)
    try:
        tools.wait_http(f"http://127.0.0.1:{port}/-/ping", process, log)
        yield root
    finally:
        tools.stop(process)


@pytest.fixture(scope="session")
def registry_backend(
    tmp_path_factory: pytest.TempPathFactory, feed_ports: dict[str, int], front: Front
) -> Iterator[Path]:
    """docker-registry configured like ProGet with Web.BaseUrl set to its own (internal) origin:
    upload ``Location`` headers then name the upstream origin, and the gateway must rebase them."""
    root = tmp_path_factory.mktemp("registry")
    port = feed_ports["registry"]
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "host": front.url},
    }
    (root / "config.yml").write_text(yaml.safe_dump(config))
    log = root / "registry.log"
    process = tools.start([tools.tool("docker-registry"), "serve", root / "config.yml"], log)
    try:
        tools.wait_http(f"http://127.0.0.1:{port}/v2/", process, log)
        yield root
    finally:
        tools.stop(process)


MINCHOC_SETTINGS = """
SECRET_KEY = "feeds-test-only"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "feeds_nuget_urls"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "minchoc"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": "{root}/db.sqlite3"}}}}
MEDIA_ROOT = "{root}/media"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
"""
MINCHOC_USER = """
import django
django.setup()
from django.contrib.auth.models import User
from minchoc.models import NugetUser
user = User.objects.create_user("feeds", password="unused")
NugetUser.objects.filter(base=user).update(token="{token}")
"""


@pytest.fixture(scope="session")
def nuget_backend(tmp_path_factory: pytest.TempPathFactory, feed_ports: dict[str, int]) -> Iterator[Path]:
    """minchoc (a NuGet v2 server on Django) mounted at /nuget/<feed>/, pushing with the front's own key."""
    root = tmp_path_factory.mktemp("minchoc")
    (root / "feeds_nuget_settings.py").write_text(MINCHOC_SETTINGS.format(root=root))
    (root / "feeds_nuget_urls.py").write_text(
        "from django.urls import include, path\n"
        f"urlpatterns = [path('nuget/{FEEDS['nuget']}/', include('minchoc.urls'))]\n"
    )
    env = {**tools.clean_env(root), "DJANGO_SETTINGS_MODULE": "feeds_nuget_settings", "PYTHONPATH": str(root)}
    tools.ok(tools.run([tools.venv_tool("django-admin"), "migrate", "-v0"], env=env, cwd=root))
    tools.ok(
        tools.run(
            [tools.venv_tool("python"), "-c", MINCHOC_USER.format(token=NUGET_BACKEND_KEY)], env=env, cwd=root
        )
    )
    port = feed_ports["nuget"]
    log = root / "minchoc.log"
    app = "django.core.wsgi:get_wsgi_application"
    cmd = [tools.venv_tool("waitress-serve"), f"--listen=127.0.0.1:{port}", "--call", app]
    process = tools.start(cmd, log, env, cwd=root)
    try:
        tools.wait_http(f"http://127.0.0.1:{port}/", process, log)
        yield root
    finally:
        tools.stop(process)


# --- shared assertions ------------------------------------------------------------------------------


def assert_front_saw_only_the_key(front: Front, mark: int) -> list[dict[str, Any]]:
    """Every request that reached the front since ``mark`` carried the injected key and nothing else."""
    lines = front.since(mark)
    assert lines, "no request reached the front"
    for line in lines:
        assert line["authorization"] == basic_auth("api", FEED_KEY), line
        assert line["x_apikey"] == FEED_KEY, line
        assert line["x_nuget_apikey"] in ("", FEED_KEY), line
        assert line["cookie"] == "", line
        assert line["status"] != 401, line
    text = json.dumps(lines)
    for token in TOKENS:
        assert token not in text
    return lines


def assert_refused_unseen(
    front: Front, front_mark: int, gateway: FeedGateway, gw_mark: int, client: str
) -> None:
    """The gateway refused ``client`` (403, no rule) and the front saw nothing of it."""
    assert front.since(front_mark) == [], "a refused request reached the front"
    lines = gateway.since(gw_mark)
    assert lines, "the client never reached the gateway"
    assert all(line["client"] in (client, None) for line in lines), lines  # None: a 401 before creds
    assert any(line["status"] == 403 and line["reason"] == "no_matching_rule" for line in lines), lines
    assert all(line["decision"] != "allow" for line in lines), lines


def assert_write_refused_unseen(front: Front, front_mark: int, gateway: FeedGateway, gw_mark: int) -> None:
    """A read-only client's upload was refused by the gateway; only its reads reached the front."""
    assert all(line["method"] in ("GET", "HEAD") for line in front.since(front_mark)), front.since(front_mark)
    lines = gateway.since(gw_mark)
    refused = [line for line in lines if line["status"] == 403 and line["reason"] == "no_matching_rule"]
    assert refused and all(line["client"] == "reader" for line in refused), lines
    assert all(line["method"] not in ("GET", "HEAD") for line in refused), refused
