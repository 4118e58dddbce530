"""Thin wrappers around the deploy tools: helm, kubernetes-validate and podman (with runc).

Every call captures its output so a failure shows the tool's own message. Nothing here decides what
is correct; the tests do.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

Doc = dict[str, Any]


def find_tool(name: str, env: str) -> str:
    """The tool's path from ``$env`` or PATH; a missing tool FAILS the test (no skips)."""
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found (set {env} or put it on PATH): .ci/deploy.sh installs it")
    return path


def run(
    cmd: Sequence[str | os.PathLike[str]], *, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, never raising on a non-zero exit: the caller asserts on it."""
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )


def ok(cmd: Sequence[str | os.PathLike[str]], *, timeout: float = 120, **kw: Any) -> str:
    """Run a command that must succeed; return its stdout."""
    done = run(cmd, timeout=timeout, **kw)
    assert done.returncode == 0, (
        f"{' '.join(map(str, cmd))} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


# --- helm -------------------------------------------------------------------------------------------


@dataclass
class Helm:
    binary: str
    home: Path

    @property
    def env(self) -> dict[str, str]:
        """helm writes caches and config under $HOME by default; keep them in a scratch dir."""
        return {
            **os.environ,
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }

    def __call__(self, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
        return run([self.binary, *args], env=self.env)

    def template(
        self, chart: Path, values: Sequence[Path] = (), overrides: Doc | None = None, release: str = "rel"
    ) -> subprocess.CompletedProcess[str]:
        args: list[str | os.PathLike[str]] = ["template", release, chart, "--namespace", "apps"]
        for path in values:
            args += ["-f", path]
        if overrides:
            override_file = self.home / f"overrides-{time.monotonic_ns()}.yaml"
            override_file.write_text(yaml.safe_dump(overrides))
            args += ["-f", override_file]
        return self(*args)

    def render(
        self, chart: Path, values: Sequence[Path] = (), overrides: Doc | None = None, release: str = "rel"
    ) -> list[Doc]:
        """``helm template`` that must succeed, parsed into documents."""
        done = self.template(chart, values, overrides, release)
        assert done.returncode == 0, done.stderr
        return [d for d in yaml.safe_load_all(done.stdout) if d]


def one(docs: Sequence[Doc], kind: str, name: str | None = None) -> Doc:
    """The single rendered object of this kind (and name)."""
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(pod_spec: Doc, name: str) -> Doc:
    every: list[Doc] = pod_spec.get("containers", []) + pod_spec.get("initContainers", [])
    found = [c for c in every if c["name"] == name]
    assert len(found) == 1, f"container {name!r} not in {[c['name'] for c in every]}"
    return found[0]


def gateway_config(docs: Sequence[Doc]) -> Doc:
    """The gateway config the chart put in its ConfigMap."""
    config_map = one(docs, "ConfigMap")
    return yaml.safe_load(config_map["data"]["gateway.yaml"])  # type: ignore[no-any-return]


# --- podman -------------------------------------------------------------------------------------------


@dataclass
class Podman:
    """podman as .ci/deploy.sh configured it (CONTAINERS_CONF with runc, private storage)."""

    binary: str

    def __call__(
        self, *args: str | os.PathLike[str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run([self.binary, *args], timeout=timeout)

    def ok(self, *args: str | os.PathLike[str], timeout: float = 120) -> str:
        return ok([self.binary, *args], timeout=timeout)

    def image_exists(self, image: str) -> bool:
        return self("image", "exists", image).returncode == 0

    def exec_python(self, container_name: str, code: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run Python inside a running container (the image has python3; it has no curl)."""
        return self("exec", container_name, "python3", "-c", code, *argv)

    def wait_until(self, container_name: str, command: Sequence[str], timeout: float = 60) -> None:
        """Repeat ``command`` inside the container until it succeeds (a probe, run as kubelet would)."""
        deadline = time.monotonic() + timeout
        while True:
            done = self("exec", container_name, *command)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                logs = self("logs", container_name).stdout + self("logs", container_name).stderr
                pytest.fail(f"{' '.join(command)} never succeeded in {container_name}: {done.stderr}\n{logs}")
            time.sleep(0.5)

    def logs(self, container_name: str) -> str:
        done = self("logs", container_name)
        return done.stdout + done.stderr


def as_podman_secret(secret: Doc) -> Doc:
    """A Kubernetes Secret as podman 4.3's ``kube play`` mounts it.

    The API server base64-decodes ``data`` before a kubelet writes the files; podman 4.3 writes ``data``
    values verbatim (and ignores ``stringData``), so the harness does the API server's decoding here.
    """
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**secret, "data": data}


@contextlib.contextmanager
def kube_play(
    podman: Podman, workdir: Path, workload: Doc, config_maps: Sequence[Doc], secrets: Sequence[Doc]
) -> Iterator[str]:
    """Play a Deployment with ``podman kube play`` in a pod with loopback-only networking.

    ``--network none`` gives the pod its own network namespace with nothing but ``lo``: exactly the
    pod-local view a sidecar has, and no address outside this machine's loopback is ever used.
    Yields the pod's name; tears everything down by name afterwards.
    """
    play = workdir / "play.yaml"
    play.write_text(yaml.safe_dump(workload, sort_keys=False))
    cm_file = workdir / "configmaps.yaml"
    cm_file.write_text(yaml.safe_dump_all(list(config_maps), sort_keys=False))
    secret_names = []
    for secret in secrets:
        name = secret["metadata"]["name"]
        path = workdir / f"secret-{name}.yaml"
        path.write_text(yaml.safe_dump(as_podman_secret(secret)))
        podman("secret", "rm", name)
        podman.ok("secret", "create", name, path)
        secret_names.append(name)
    pod = f"{workload['metadata']['name']}-pod-0"
    try:
        podman.ok("kube", "play", "--network", "none", "--configmap", cm_file, play, timeout=180)
        yield pod
    finally:
        podman("kube", "down", play, timeout=120)
        podman("pod", "rm", "--force", pod, timeout=120)
        for name in secret_names:
            podman("secret", "rm", name)


def listening(podman: Podman, container_name: str) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket in the container's network namespace."""
    code = (
        "import json, socket, struct\n"
        "out = []\n"
        "for line in open('/proc/net/tcp').read().splitlines()[1:]:\n"
        "    local, state = line.split()[1], line.split()[3]\n"
        "    if state == '0A':\n"
        "        addr, port = local.split(':')\n"
        "        out.append([socket.inet_ntoa(struct.pack('<I', int(addr, 16))), int(port, 16)])\n"
        "print(json.dumps(out))\n"
    )
    done = podman.exec_python(container_name, code)
    assert done.returncode == 0, done.stderr
    return {(a, p) for a, p in json.loads(done.stdout)}


_FETCH = """
import json, sys, urllib.error, urllib.request
method, url, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
request = urllib.request.Request(url, method=method, headers=headers, data=b"" if method in ("POST", "PUT") else None)
try:
    response = urllib.request.urlopen(request, timeout=10)
except urllib.error.HTTPError as err:
    response = err
headers = {k.lower(): v for k, v in response.headers.items()}
print(json.dumps({"status": response.status, "headers": headers, "body": response.read().decode()}))
"""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(
    podman: Podman, container_name: str, method: str, url: str, headers: dict[str, str] | None = None
) -> Reply:
    """An HTTP request made from inside the container, i.e. from inside the pod's network namespace."""
    done = podman.exec_python(container_name, _FETCH, method, url, json.dumps(headers or {}))
    assert done.returncode == 0, done.stderr
    return Reply(**json.loads(done.stdout))
