"""Where the real clients and servers live, and how the feed tests run them.

`.ci/feeds.sh` installs them (Debian packages on PATH; Python and npm tools under ``FEEDS_TOOLS``).
A missing tool is a test FAILURE that names the install script, never a skip: these tests are the
proof that package clients work through the gateway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from tests.processes import stop as stop  # re-exported: feed tests stop what they start via tools.stop

FEEDS_TOOLS = Path(os.environ.get("FEEDS_TOOLS", "/opt/proget-gateway-feeds"))
VENV_BIN = FEEDS_TOOLS / "venv" / "bin"
NPM_MODULES = FEEDS_TOOLS / "npm" / "node_modules"
REAL_HOME = Path(os.environ.get("HOME", "/root"))
Result = subprocess.CompletedProcess[str]


def tool(name_or_path: str | Path) -> str:
    """Absolute path of a tool, or a failing test that says how to install it."""
    path = Path(name_or_path)
    found = str(path) if path.is_absolute() and os.access(path, os.X_OK) else None
    if not path.is_absolute():
        found = shutil.which(str(path))
    if found is None:
        pytest.fail(
            f"{name_or_path} is missing: run `bash .ci/feeds.sh` (feed tests never skip)", pytrace=False
        )
    return found


def venv_tool(name: str) -> str:
    return tool(VENV_BIN / name)


def npm_file(relative: str) -> str:
    path = NPM_MODULES / relative
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash .ci/feeds.sh` (feed tests never skip)", pytrace=False)
    return str(path)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A minimal environment: no proxies, no pip/npm machine config, a private HOME unless given."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }
    env.update(extra)
    return env


def run(
    cmd: Sequence[str | Path],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 180,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a client to completion; stdin is closed (or fed) so no client can sit on a prompt."""
    return subprocess.run(
        [str(c) for c in cmd],
        env=dict(env),
        cwd=cwd,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert success, showing the client's own output when it failed."""
    assert result.returncode == 0, (
        f"{result.args!r} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
        f"--- stderr\n{result.stderr[-4000:]}"
    )
    return result


def failed(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode != 0, f"{result.args!r} unexpectedly succeeded\n{result.stdout[-2000:]}"
    return result


def start(
    cmd: Sequence[str | Path], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(c) for c in cmd],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
        )


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Any HTTP answer (401 included) means the server is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args!r} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=1, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s:\n{log.read_text()[-3000:]}")
