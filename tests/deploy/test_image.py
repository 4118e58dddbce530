"""The container image: lint-clean, shaped as documented, and proxying for real from a read-only root."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gateway.settings import token_hash
from tests.deploy.conftest import ROOT
from tests.deploy.helpers import Podman, run
from tests.processes import free_port

pytestmark = pytest.mark.deploy

KEY = "proget-key-image-test-4711"
TOKEN = "pgw_image_test_" + "c" * 40


def test_dockerfile_is_hadolint_clean(hadolint: str) -> None:
    done = run([hadolint, ROOT / "Dockerfile"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_metadata(podman: Podman, image: str) -> None:
    info = json.loads(podman.ok("image", "inspect", image))[0]
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["proget-gateway"]
    assert config["Cmd"] == ["serve"]
    assert "PROGET_GATEWAY_CONFIG=/etc/proget-gateway/config.yaml" in config["Env"]
    labels = config["Labels"]
    for label in ("title", "description", "version", "revision", "created", "licenses"):
        assert labels.get(f"org.opencontainers.image.{label}"), label
    healthcheck = info["Healthcheck"]["Test"]
    assert healthcheck[:2] == ["CMD", "python3"], "exec form, with the image's own interpreter"
    assert "PROGET_GATEWAY_HEALTHCHECK_URL" in healthcheck[-1]


def test_runtime_stage_holds_only_the_virtualenv(podman: Podman, image: str) -> None:
    code = (
        "import importlib.util as u, os, sys, gateway\n"
        "print(sys.prefix, gateway.__file__, os.path.exists('/src'), u.find_spec('pip') is not None,"
        " u.find_spec('hatchling') is not None, os.path.exists(os.path.expanduser('~/.cache/pip')))\n"
    )
    out = podman.ok("run", "--rm", "--entrypoint", "python3", image, "-c", code).split()
    prefix, module, src, pip, hatchling, pip_cache = out
    assert prefix == "/opt/proget-gateway"
    assert module.startswith("/opt/proget-gateway/lib/"), "the gateway is installed, not copied as source"
    assert (src, hatchling, pip_cache) == ("False", "False", "False")
    assert pip == "True", (
        "the venv keeps its pip (harmless, ~10 MB); no build backend, no cache, no source tree"
    )


# --- running it ------------------------------------------------------------------------------------------


@dataclass
class Running:
    name: str
    url: str
    admin_url: str


@contextlib.contextmanager
def _standin(workdir: Path) -> Iterator[str]:
    """The ProGet stand-in on the host's loopback, accepting only KEY; yields its URL."""
    port_file = workdir / "standin.port"
    cmd = [
        sys.executable,
        "-m",
        "gateway.standin",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--key",
        KEY,
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            assert process.poll() is None, "the stand-in exited"
            assert time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _write_config(workdir: Path, upstream: str, port: int, admin_port: int) -> None:
    (workdir / "keys").mkdir(mode=0o755)
    (workdir / "keys" / "read").write_text(KEY + "\n")
    (workdir / "keys" / "read").chmod(0o644)
    rule = {"methods": ["GET", "HEAD"], "key": "read"}
    config = {
        "upstream": {"url": upstream},
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "keys": {"read": {"file": "/etc/proget-gateway/keys/read"}},
        "clients": [{"name": "image-test", "tokens": [f"sha256:{token_hash(TOKEN)}"], "rules": [rule]}],
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    (workdir / "config.yaml").chmod(0o644)


@contextlib.contextmanager
def _gateway_container(podman: Podman, image: str, workdir: Path, name: str) -> Iterator[Running]:
    """The image, hardened as the chart runs it, on the host network bound to 127.0.0.1 free ports."""
    workdir.chmod(0o755)
    with _standin(workdir) as upstream:
        port, admin_port = free_port(), free_port()
        _write_config(workdir, upstream, port, admin_port)
        podman("rm", "--force", name)
        podman.ok(
            "run", "--detach", "--name", name, "--network", "host",
            "--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--volume", f"{workdir / 'config.yaml'}:/etc/proget-gateway/config.yaml:ro",
            "--volume", f"{workdir / 'keys'}:/etc/proget-gateway/keys:ro",
            "--env", f"PROGET_GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:{admin_port}/healthz",
            image,
        )  # fmt: skip
        try:
            admin_url = f"http://127.0.0.1:{admin_port}"
            _wait_ready(podman, name, admin_url)
            yield Running(name, f"http://127.0.0.1:{port}", admin_url)
        finally:
            podman("stop", "--time", "10", name)
            podman("rm", "--force", name)


@pytest.fixture(scope="module")
def running(podman: Podman, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One container shared by the read-only checks below (starting one takes a second or two)."""
    with _gateway_container(podman, image, tmp_path_factory.mktemp("image"), f"pgw-image-{os.getpid()}") as r:
        yield r


@pytest.fixture
def own_container(podman: Podman, image: str, tmp_path: Path) -> Iterator[Running]:
    """A container for a test that stops it."""
    with _gateway_container(podman, image, tmp_path, f"pgw-image-stop-{os.getpid()}") as r:
        yield r


def _wait_ready(podman: Podman, name: str, admin_url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{admin_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the container never became ready:\n{podman.logs(name)}")
        time.sleep(0.2)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def test_image_proxies_with_the_mapped_key_from_a_read_only_root(podman: Podman, running: Running) -> None:
    status, _, body = _get(f"{running.url}/__standin/echo", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    seen = json.loads(body)
    assert seen["headers"]["x-apikey"] == KEY, "the stand-in received the key the policy chose"
    assert "authorization" not in seen["headers"], "the client's token never reaches ProGet"
    assert seen["api_key_role"] == ["key0"]

    status, headers, _ = _get(f"{running.url}/__standin/echo")
    assert status == 401
    assert headers["x-gateway-error"] == "credential_missing"

    logs = podman.logs(running.name)
    audit = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(a["client"] == "image-test" and a["key"] == "read" and a["status"] == 200 for a in audit), logs
    assert KEY not in logs and TOKEN not in logs


def test_image_runs_as_its_fixed_user_and_writes_nothing(podman: Podman, running: Running) -> None:
    ids = podman.ok(
        "exec", running.name, "python3", "-c", "import os; print(os.getuid(), os.getgid())"
    ).split()
    assert ids == ["10001", "10001"]
    done = podman("exec", running.name, "python3", "-c", "open('/opt/proget-gateway/x', 'w')")
    assert done.returncode != 0 and "Read-only file system" in done.stderr
    # podman itself creates the bind mounts' mount points before it makes the root read-only.
    mount_points = {
        "C /etc",
        "A /etc/proget-gateway",
        "A /etc/proget-gateway/config.yaml",
        "A /etc/proget-gateway/keys",
    }
    changes = set(podman.ok("diff", running.name).splitlines()) - mount_points
    assert not changes, f"the container changed its filesystem: {changes}"


def test_image_healthcheck_uses_the_admin_port(podman: Podman, running: Running) -> None:
    assert podman("healthcheck", "run", running.name).returncode == 0
    status, _, body = _get(f"{running.admin_url}/metrics")
    assert status == 200 and b"proget_gateway_requests_total" in body


def test_image_stops_cleanly_on_sigterm(podman: Podman, own_container: Running) -> None:
    podman.ok("stop", "--time", "10", own_container.name)
    state = json.loads(podman.ok("inspect", own_container.name))[0]["State"]
    assert state["ExitCode"] == 0, podman.logs(own_container.name)
