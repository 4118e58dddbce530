"""Deployment tests: the Helm chart rendered, validated and checked; the container image run for real.

They need tools that are not Python packages (helm, podman with runc, kubernetes-validate, hadolint) and a
built image, so they run from ``.ci/deploy.sh``, which installs all of that and then calls
``pytest -m deploy tests/deploy``. A plain ``pytest`` deselects them (see the hook below). A missing
tool is a FAILURE, never a skip: a green run must mean the chart and the image were really exercised.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.deploy.helpers import Helm, Podman, find_tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "proget-gateway"
DEFAULT_IMAGE = "localhost/proget-gateway:ci"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the slow, tool-hungry deploy tests out of the default run unless ``-m`` names them."""
    if "deploy" in (config.getoption("markexpr") or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("deploy")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("deploy")]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    home = tmp_path_factory.mktemp("helm-home")
    return Helm(find_tool("helm", "PGW_HELM"), home)


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    return find_tool("kubernetes-validate", "PGW_KUBERNETES_VALIDATE")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return find_tool("hadolint", "PGW_HADOLINT")


@pytest.fixture(scope="session")
def podman() -> Podman:
    return Podman(find_tool("podman", "PGW_PODMAN"))


@pytest.fixture(scope="session")
def image(podman: Podman) -> str:
    """The image .ci/deploy.sh built; a missing image fails the test (build it first)."""
    name = os.environ.get("PGW_DEPLOY_IMAGE", DEFAULT_IMAGE)
    if not podman.image_exists(name):
        pytest.fail(
            f"image {name} not found in podman's storage "
            f"(CONTAINERS_STORAGE_CONF={os.environ.get('CONTAINERS_STORAGE_CONF', '<unset>')}): "
            "build it with .ci/deploy.sh, or source /var/tmp/pgw-deploy/env.sh after running it once"
        )
    return name
