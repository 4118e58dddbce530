"""The chart's rendered pods, run for real with ``podman kube play`` (runc) and the image .ci/deploy.sh built.

Each pod gets a ProGet stand-in as an extra container (the same image runs ``python -m gateway.standin``),
and ``--network none``: the pod has its own network namespace with only ``lo``, so "from inside the
pod's network" is literal and nothing leaves this machine's loopback.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import CHART
from tests.deploy.helpers import Doc, Helm, Podman, container, fetch, kube_play, listening, one

pytestmark = pytest.mark.deploy

STANDIN_PORT = 18624
STANDIN = f"http://127.0.0.1:{STANDIN_PORT}"
POD_KEY = "pod-key-for-kube-play-0815"
FEEDS_READ_KEY = "central-feeds-read-key-4242"
NUGET_PUSH_KEY = "central-nuget-push-key-4343"
CI_NUGET_TOKEN = "pgw_ci_nuget_token_for_chart_tests_only"  # its hash is in ci/central-values.yaml
BUILDS_TOKEN = "pgw_ci_builds_token_for_chart_tests_only"
HEALTH = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)"


def _image_values(image: str) -> Doc:
    repository, _, tag = image.rpartition(":")
    return {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}


def _with_standin(workload: Doc, image: str, keys: list[str]) -> Doc:
    """Add the ProGet stand-in to the pod (hardened like the rest): it plays ProGet on the pod's loopback."""
    standin = {
        "name": "proget-standin",
        "image": image,
        "command": ["python3", "-m", "gateway.standin", "--port", str(STANDIN_PORT)],
        "args": [arg for key in keys for arg in ("--key", key)],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10002,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    workload["spec"]["template"]["spec"]["containers"].append(standin)
    return workload


@dataclass
class PlayedPod:
    name: str
    manifest: Doc
    podman: Podman

    def ctr(self, container_name: str) -> str:
        return f"{self.name}-{container_name}"


def _wait_for_standin(pod: PlayedPod) -> None:
    pod.podman.wait_until(pod.ctr("proget-standin"), ["python3", "-c", HEALTH, f"{STANDIN}/health"])


def _audit(podman: Podman, container_name: str) -> list[Doc]:
    return [json.loads(line) for line in podman.logs(container_name).splitlines() if line.startswith("{")]


# --- sidecar -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar_pod(
    helm: Helm, podman: Podman, image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PlayedPod]:
    """One played sidecar pod for the checks below (they only read from it)."""
    workdir = tmp_path_factory.mktemp("sidecar-pod")
    overrides = {
        "image": _image_values(image),
        "config": {"upstream": {"url": STANDIN}},
        "keys": {"create": {"app-read": POD_KEY}},
        "sidecar": {"example": {"image": image}},
    }
    docs = helm.render(CHART, [CHART / "ci" / "sidecar-values.yaml"], overrides, release=f"kp{os.getpid()}")
    workload = _with_standin(one(docs, "Deployment"), image, [POD_KEY])
    with kube_play(podman, workdir, workload, [one(docs, "ConfigMap")], [one(docs, "Secret")]) as name:
        yield PlayedPod(name, workload, podman)


def test_sidecar_pod_forwards_a_credential_less_request_with_the_pods_key(sidecar_pod: PlayedPod) -> None:
    podman, spec = sidecar_pod.podman, sidecar_pod.manifest["spec"]["template"]["spec"]
    _wait_for_standin(sidecar_pod)
    sidecar = container(spec, "proget-gateway")
    podman.wait_until(sidecar_pod.ctr("proget-gateway"), sidecar["readinessProbe"]["exec"]["command"])
    app_env = {e["name"]: e["value"] for e in container(spec, "app")["env"]}
    app = sidecar_pod.ctr("app")

    reply = fetch(podman, app, "GET", f"{app_env['PROGET_URL']}/__standin/echo")
    assert reply.status == 200, reply.body
    seen = reply.json()
    assert seen["headers"]["x-apikey"] == POD_KEY, "ProGet got the pod's key"
    assert "authorization" not in seen["headers"]

    native = fetch(podman, app, "GET", f"{app_env['PROGET_URL']}/api/json/Feeds_GetFeeds")
    assert native.status == 200, native.body
    refused = fetch(podman, app, "POST", f"{app_env['PROGET_URL']}/__standin/echo")
    assert refused.status == 403
    assert refused.headers["x-gateway-error"] == "no_matching_rule"

    audit = _audit(podman, sidecar_pod.ctr("proget-gateway"))
    allowed = [a for a in audit if a["decision"] == "allow" and a["path"] == "/__standin/echo"]
    assert allowed and allowed[0]["client"] == "orders-service" and allowed[0]["key"] == "app-read"
    assert allowed[0]["credential_source"] == "none"
    assert POD_KEY not in podman.logs(sidecar_pod.ctr("proget-gateway"))


def test_sidecar_listens_on_the_pods_loopback_only(sidecar_pod: PlayedPod) -> None:
    podman, spec = sidecar_pod.podman, sidecar_pod.manifest["spec"]["template"]["spec"]
    sidecar = container(spec, "proget-gateway")
    podman.wait_until(sidecar_pod.ctr("proget-gateway"), sidecar["livenessProbe"]["exec"]["command"])
    sockets = listening(podman, sidecar_pod.ctr("proget-gateway"))
    assert {("127.0.0.1", 8080), ("127.0.0.1", 9090)} <= sockets
    assert not {(a, p) for a, p in sockets if p in (8080, 9090) and a != "127.0.0.1"}


def test_sidecar_container_runs_hardened(sidecar_pod: PlayedPod) -> None:
    podman = sidecar_pod.podman
    name = sidecar_pod.ctr("proget-gateway")
    podman.wait_until(name, ["python3", "-c", "print()"])
    status = podman.ok("exec", name, "python3", "-c", "print(open('/proc/self/status').read())")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[0] == "10001"
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2", "seccomp filter mode (RuntimeDefault)"
    done = podman("exec", name, "python3", "-c", "open('/etc/x', 'w')")
    assert "Read-only file system" in done.stderr


# --- central -------------------------------------------------------------------------------------------------


@pytest.fixture
def central_pod(helm: Helm, podman: Podman, image: str, tmp_path: Path) -> Iterator[PlayedPod]:
    secret_name = f"kp{os.getpid()}-proget-keys"
    overrides = {
        "image": _image_values(image),
        "config": {"upstream": {"url": STANDIN}},
        "keys": {"existingSecret": secret_name},
        "extraVolumes": [],
        "extraVolumeMounts": [],
    }
    docs = helm.render(CHART, [CHART / "ci" / "central-values.yaml"], overrides, release=f"kpc{os.getpid()}")
    secret = {  # what `kubectl create secret generic` would have made
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name},
        "data": {
            "feeds-read": base64.b64encode(FEEDS_READ_KEY.encode()).decode(),
            "nuget-push": base64.b64encode(NUGET_PUSH_KEY.encode()).decode(),
        },
    }
    workload = _with_standin(one(docs, "Deployment"), image, [FEEDS_READ_KEY, NUGET_PUSH_KEY])
    # containerPort only documents a port in Kubernetes; podman 4.3 turns each into a host port
    # mapping, which a pod with no network cannot have. The probes' named port is resolved here too.
    gw = container(workload["spec"]["template"]["spec"], "proget-gateway")
    ports = {p["name"]: p["containerPort"] for p in gw.pop("ports")}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        gw[probe]["httpGet"]["port"] = ports[gw[probe]["httpGet"]["port"]]
    with kube_play(podman, tmp_path, workload, [one(docs, "ConfigMap")], [secret]) as name:
        yield PlayedPod(name, workload, podman)


def test_central_pod_maps_tokens_to_keys(central_pod: PlayedPod) -> None:
    podman = central_pod.podman
    _wait_for_standin(central_pod)
    client = central_pod.ctr("proget-standin")  # any container in the pod shares its network
    podman.wait_until(client, ["python3", "-c", HEALTH, "http://127.0.0.1:9090/readyz"])  # the readinessProbe
    assert fetch(podman, client, "GET", "http://127.0.0.1:9090/healthz").status == 200  # the livenessProbe

    reply = fetch(
        podman,
        client,
        "GET",
        "http://127.0.0.1:8080/__standin/echo",
        {"Authorization": f"Bearer {CI_NUGET_TOKEN}"},
    )
    assert reply.status == 200, reply.body
    assert reply.json()["headers"]["x-apikey"] == FEEDS_READ_KEY
    assert fetch(podman, client, "GET", "http://127.0.0.1:8080/__standin/echo").status == 401
    narrow = fetch(
        podman,
        client,
        "GET",
        "http://127.0.0.1:8080/__standin/echo",
        {"Authorization": f"Bearer {BUILDS_TOKEN}"},
    )
    assert narrow.status == 403, "the builds client may read its feeds only"

    sockets = listening(podman, central_pod.ctr("proget-gateway"))
    assert {("0.0.0.0", 8080), ("0.0.0.0", 9090)} <= sockets, (
        "central mode serves the pod IP (Service, probes)"
    )
    logs = podman.logs(central_pod.ctr("proget-gateway"))
    assert FEEDS_READ_KEY not in logs and NUGET_PUSH_KEY not in logs and CI_NUGET_TOKEN not in logs
