"""The console script as a user runs it: check, token new, explain, demo (real processes)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from gateway.demo import DEMO_TOKEN
from tests.e2e.conftest import base_config
from tests.processes import free_port

CLI = [sys.executable, "-m", "gateway"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_check_accepts_the_shipped_configs() -> None:
    assert run("check", "--config", "config/demo.yaml").returncode == 0


def test_check_resolves_key_sources_and_names_what_is_missing() -> None:
    """config/example.yaml is valid except for the secrets it points at, which do not exist here."""
    done = run("check", "--config", "config/example.yaml")
    assert done.returncode == 2
    assert [line.strip() for line in done.stderr.splitlines()[1:]] == [
        "keys.feeds-read.env: environment variable PROGET_KEY_FEEDS_READ is not set",
        "keys.nuget-push.file: cannot read /run/secrets/proget/nuget-push: no such file or directory",
    ]


def test_check_reports_every_problem_without_secrets(tmp_path: Path) -> None:
    config = base_config("http://127.0.0.1:1", 1, 2)
    config["keys"]["read"] = {"value": "secret-value-123", "env": "ALSO"}
    config["keys"]["push"] = {"env": "DOES_NOT_EXIST_ANYWHERE"}
    config["clients"][0]["rules"][0]["key"] = "nope"
    config["bogus"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run("check", "--config", str(path))
    assert done.returncode == 2
    problems = [line.strip() for line in done.stderr.splitlines()[1:]]
    assert any(p.startswith("bogus:") for p in problems)
    assert any(p.startswith("keys.read") for p in problems)
    assert any(p.startswith("clients[0].rules[0].key:") for p in problems)
    assert "secret-value-123" not in done.stderr + done.stdout


def test_token_new_prints_a_token_and_its_hash() -> None:
    done = run("token", "new", "--client", "ci")
    assert done.returncode == 0
    token = re.search(r"token:\s+(pgw_\S+)", done.stdout).group(1)  # type: ignore[union-attr]
    assert len(token) >= 4 + 43  # 32 random bytes, base64url
    assert f"sha256:{hashlib.sha256(token.encode()).hexdigest()}" in done.stdout
    assert run("token", "new").stdout != done.stdout


def test_explain_names_client_rule_and_key_but_no_value() -> None:
    env = {"T": DEMO_TOKEN}
    allowed = run(
        "explain",
        "--config",
        "config/demo.yaml",
        "--token-env",
        "T",
        "GET",
        "/api/json/Feeds_GetFeeds",
        env=env,
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "client:   demo-ci" in allowed.stdout
    assert "demo-proget-key" not in allowed.stdout
    denied = run(
        "explain",
        "--config",
        "config/demo.yaml",
        "--token-env",
        "T",
        "POST",
        "/api/json/Users_DeleteUser",
        env=env,
    )
    assert denied.returncode == 1
    assert "native_method_not_allowed" in denied.stdout
    anonymous = run("explain", "--config", "config/demo.yaml", "--anonymous", "GET", "/nuget/internal/")
    assert "credential_missing" in anonymous.stdout


def test_demo_runs_and_its_first_curl_works() -> None:
    port, admin = free_port(), free_port()
    proc = subprocess.Popen(
        [*CLI, "demo", "--port", str(port), "--admin-port", str(admin)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        echo = httpx.get(
            f"http://127.0.0.1:{port}/__standin/echo", headers={"Authorization": f"Bearer {DEMO_TOKEN}"}
        )
        assert echo.status_code == 200
        assert echo.json()["headers"]["x-apikey"] == "demo-proget-key-read"
        assert "authorization" not in echo.json()["headers"]
        blocked = httpx.post(
            f"http://127.0.0.1:{port}/api/json/Users_CreateOrUpdateUser", headers={"X-ApiKey": DEMO_TOKEN}
        )
        assert blocked.status_code == 403
    finally:
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "ProGet STAND-IN" in out
    assert DEMO_TOKEN in out  # the demo prints its published token in the curls...
    audit = [line for line in out.splitlines() if line.startswith("{")]
    assert audit and all("demo-proget-key" not in line for line in audit)  # ...but never a key


def test_the_command_line_says_its_version_and_refuses_abbreviations_and_missing_configs() -> None:
    version = run("--version")
    assert version.returncode == 0 and re.fullmatch(r"proget-gateway \d+\.\d+\.\d+\n", version.stdout)
    abbreviated = run("check", "--conf", "config/demo.yaml")
    assert abbreviated.returncode == 2 and "unrecognized arguments: --conf" in abbreviated.stderr
    env = {k: v for k, v in os.environ.items() if k != "PROGET_GATEWAY_CONFIG"}
    for command in ("check", "serve"):
        done = subprocess.run([*CLI, command], capture_output=True, text=True, env=env, timeout=30)
        assert done.returncode == 2, (command, done.returncode, done.stderr)
        assert "give --config PATH or set PROGET_GATEWAY_CONFIG" in done.stderr


def test_explain_reads_the_config_from_the_environment() -> None:
    done = run(
        "explain",
        "--anonymous",
        "GET",
        "/nuget/internal/",
        env={"PROGET_GATEWAY_CONFIG": "config/demo.yaml"},
    )
    assert "credential_missing" in done.stdout, done.stderr
