"""The Helm chart: lint, render, validate against the Kubernetes schemas, and check what it renders."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from gateway import settings
from tests.deploy.conftest import CHART, ROOT
from tests.deploy.helpers import Doc, Helm, container, gateway_config, ok, one, run

pytestmark = pytest.mark.deploy

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CENTRAL = CHART / "ci" / "central-values.yaml"
SIDECAR = CHART / "ci" / "sidecar-values.yaml"
KUBE_VERSIONS = ("1.25.0", "1.37.0")  # the chart's lowest supported version and the newest schemas
ADMIN_PORT = 9090


def test_ci_values_cover_both_modes() -> None:
    assert {p.name for p in CI_VALUES} >= {"central-values.yaml", "sidecar-values.yaml"}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_lint_strict(helm: Helm, values: Path) -> None:
    done = helm("lint", "--strict", CHART, "-f", values)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_rendered_manifests_pass_kubernetes_schemas(
    helm: Helm, kubernetes_validate: str, values: Path, tmp_path: Path
) -> None:
    done = helm.template(CHART, [values])
    assert done.returncode == 0, done.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(done.stdout)
    kinds = {d["kind"] for d in yaml.safe_load_all(done.stdout) if d}
    for version in KUBE_VERSIONS:
        result = run([kubernetes_validate, "--strict", "--quiet", "-k", version, rendered])
        assert result.returncode == 0, f"Kubernetes {version}:\n{result.stdout}{result.stderr}"
    assert kinds >= {"ConfigMap", "Deployment"}


def test_validator_really_rejects_a_bad_manifest(kubernetes_validate: str, tmp_path: Path) -> None:
    """The schema check above can fail: an unknown field in a container is refused under --strict."""
    bad = tmp_path / "bad.yaml"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}
    pod["spec"] = {"containers": [{"name": "c", "image": "i", "readinessProbes": {}}]}
    bad.write_text(yaml.safe_dump(pod))
    assert run([kubernetes_validate, "--strict", "--quiet", "-k", "1.30.0", bad]).returncode != 0


# --- the schema follows the gateway's own config model -------------------------------------------------

_SCHEMA = json.loads((CHART / "values.schema.json").read_text())
_CONFIG = _SCHEMA["properties"]["config"]
_CLIENT = _CONFIG["properties"]["clients"]["items"]
_PAIRS: list[tuple[str, Doc, type[BaseModel], set[str]]] = [
    ("config", _CONFIG, settings.Settings, {"listen", "admin", "keys"}),  # the chart sets these three
    ("config.upstream", _CONFIG["properties"]["upstream"], settings.UpstreamSettings, set()),
    (
        "config.upstream.timeouts",
        _CONFIG["properties"]["upstream"]["properties"]["timeouts"],
        settings.Timeouts,
        set(),
    ),
    ("config.upstream.tls", _CONFIG["properties"]["upstream"]["properties"]["tls"], settings.Tls, set()),
    ("config.native_api", _CONFIG["properties"]["native_api"], settings.NativeApi, set()),
    ("config.clients[]", _CLIENT, settings.ClientSettings, set()),
    ("config.clients[].jwt", _CLIENT["properties"]["jwt"], settings.JwtSettings, set()),
    ("config.clients[].rules[]", _CLIENT["properties"]["rules"]["items"], settings.Rule, set()),
    (
        "sidecar.client.rules[]",
        _SCHEMA["properties"]["sidecar"]["properties"]["client"]["properties"]["rules"]["items"],
        settings.Rule,
        set(),
    ),
    ("config.limits", _CONFIG["properties"]["limits"], settings.Limits, set()),
    ("config.shutdown", _CONFIG["properties"]["shutdown"], settings.Shutdown, set()),
    ("config.tracing", _CONFIG["properties"]["tracing"], settings.Tracing, set()),
    (
        "config.clients[].tokens[]",
        _CLIENT["properties"]["tokens"]["items"]["oneOf"][1],
        settings.TokenEntry,
        set(),
    ),
    (
        "config.limits.default_client",
        _CONFIG["properties"]["limits"]["properties"]["default_client"],
        settings.ClientLimits,
        set(),
    ),
    ("config.clients[].limits", _CLIENT["properties"]["limits"], settings.ClientLimits, set()),
    (
        "config.clients[].limits.rate",
        _CLIENT["properties"]["limits"]["properties"]["rate"],
        settings.Rate,
        set(),
    ),
    (
        "config.upstream.queue",
        _CONFIG["properties"]["upstream"]["properties"]["queue"],
        settings.UpstreamQueue,
        set(),
    ),
    ("config.rate_limit", _CONFIG["properties"]["rate_limit"], settings.RateLimitSettings, set()),
    (
        "config.rate_limit.redis",
        _CONFIG["properties"]["rate_limit"]["properties"]["redis"],
        settings.RedisSettings,
        set(),
    ),
]


@pytest.mark.parametrize(("where", "schema", "model", "chart_owned"), _PAIRS, ids=[p[0] for p in _PAIRS])
def test_values_schema_matches_the_gateway_config_model(
    where: str, schema: Doc, model: type[BaseModel], chart_owned: set[str]
) -> None:
    """A field added to gateway/settings.py must be added to values.schema.json, or the chart refuses it."""
    assert schema["additionalProperties"] is False, f"{where}: typos must be refused"
    assert set(schema["properties"]) == set(model.model_fields) - chart_owned, where


# --- central mode -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def central(helm: Helm) -> list[Doc]:
    return helm.render(CHART, [CENTRAL])


def _pod_spec(docs: list[Doc], name: str | None = None) -> Doc:
    return one(docs, "Deployment", name)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_central_probes_point_at_the_admin_port(central: list[Doc]) -> None:
    gw = container(_pod_spec(central), "proget-gateway")
    ports = {p["name"]: p["containerPort"] for p in gw["ports"]}
    assert ports == {"http": 8080, "admin": ADMIN_PORT}
    assert gw["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert gw["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert gw["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}


def test_central_listens_on_all_interfaces_and_admin_is_separate(central: list[Doc]) -> None:
    config = gateway_config(central)
    assert config["listen"] == {"host": "0.0.0.0", "port": 8080, "keep_alive_timeout": 5}
    assert config["admin"] == {"host": "0.0.0.0", "port": ADMIN_PORT}
    service = one(central, "Service")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "http": "http",
        "metrics": "admin",
    }


def _assert_hardened(pod_security: Doc | None, container_security: Doc) -> None:
    merged = {**(pod_security or {}), **container_security}
    assert merged["runAsNonRoot"] is True
    assert merged["runAsUser"] == 10001
    assert merged["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container_security["readOnlyRootFilesystem"] is True
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["capabilities"] == {"drop": ["ALL"]}


def test_central_security_context(central: list[Doc]) -> None:
    spec = _pod_spec(central)
    _assert_hardened(spec["securityContext"], container(spec, "proget-gateway")["securityContext"])
    assert spec["automountServiceAccountToken"] is False
    assert container(spec, "proget-gateway")["resources"]["requests"]


def test_central_keys_are_mounted_from_the_existing_secret_not_inlined(central: list[Doc]) -> None:
    spec = _pod_spec(central)
    gw = container(spec, "proget-gateway")
    keys_volume = next(v for v in spec["volumes"] if v["name"] == "keys")
    assert keys_volume["secret"]["secretName"] == "proget-keys"
    assert {"name": "keys", "mountPath": "/etc/proget-gateway/keys", "readOnly": True} in gw["volumeMounts"]
    assert all("valueFrom" not in e for e in gw["env"]), "no key may travel as an environment variable"
    assert not [d for d in central if d["kind"] == "Secret"], "existingSecret: the chart must not make one"
    keys = gateway_config(central)["keys"]
    assert keys == {
        "feeds-read": {"file": "/etc/proget-gateway/keys/feeds-read"},
        "nuget-push": {"file": "/etc/proget-gateway/keys/nuget-push"},
    }


def test_redis_url_comes_from_an_existing_secret_as_a_file(helm: Helm) -> None:
    """rateLimitRedis: the URL (it may hold a password) is mounted from the Secret, never in the ConfigMap."""
    docs = helm.render(
        CHART, [CENTRAL], {"rateLimitRedis": {"existingSecret": "redis-url-secret", "key": "u"}}
    )
    spec = _pod_spec(docs)
    volume = next(v for v in spec["volumes"] if v["name"] == "redis-url")
    assert volume["secret"]["secretName"] == "redis-url-secret"
    assert volume["secret"]["items"] == [{"key": "u", "path": "u"}]
    mount = {"name": "redis-url", "mountPath": "/etc/proget-gateway/redis", "readOnly": True}
    assert mount in container(spec, "proget-gateway")["volumeMounts"]
    limit = gateway_config(docs)["rate_limit"]
    assert limit["backend"] == "redis" and limit["redis"]["url_file"] == "/etc/proget-gateway/redis/u"
    assert "redis-url" not in {v["name"] for v in _pod_spec(helm.render(CHART, [CENTRAL]))["volumes"]}


def test_central_availability_objects(central: list[Doc]) -> None:
    deployment = one(central, "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count when autoscaling is on"
    hpa = one(central, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "rel-proget-gateway",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = one(central, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    monitor = one(central, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_central_network_policy(central: list[Doc]) -> None:
    policy = one(central, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = [rule["ports"][0]["port"] for rule in policy["ingress"]]
    assert ingress_ports == ["http", "admin"]
    assert policy["ingress"][0]["from"][0]["namespaceSelector"]
    assert policy["egress"][0]["ports"] == [{"port": 8625, "protocol": "TCP"}], (
        "ProGet's port, from upstream.url"
    )


def test_defaults_give_two_replicas_and_a_pdb(helm: Helm) -> None:
    docs = helm.render(CHART, overrides=_minimal_central())
    assert one(docs, "Deployment")["spec"]["replicas"] >= 2
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy"}, (
        "optional parts are off"
    )


def _minimal_central() -> Doc:
    rule = {"methods": ["GET"], "key": "read"}
    client = {"name": "c", "tokens": ["sha256:" + "0" * 64], "rules": [rule]}
    return {"config": {"clients": [client]}, "keys": {"create": {"read": "k"}}}


# --- sidecar mode ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar(helm: Helm) -> list[Doc]:
    return helm.render(CHART, [SIDECAR])


def test_sidecar_binds_loopback_only(sidecar: list[Doc]) -> None:
    config = gateway_config(sidecar)
    assert config["listen"] == {"host": "127.0.0.1", "port": 8080, "keep_alive_timeout": 5}
    assert config["admin"] == {"host": "127.0.0.1", "port": ADMIN_PORT}
    gw = container(_pod_spec(sidecar), "proget-gateway")
    assert "ports" not in gw, "nothing of the sidecar is published on the pod IP"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = gw[probe]["exec"]["command"]
        assert command[-1].startswith(f"http://127.0.0.1:{ADMIN_PORT}/"), probe
    assert gw["readinessProbe"]["exec"]["command"][-1].endswith("/readyz")
    assert gw["livenessProbe"]["exec"]["command"][-1].endswith("/healthz")


def test_sidecar_client_is_anonymous_and_bound_to_the_pods_key(sidecar: list[Doc]) -> None:
    config = gateway_config(sidecar)
    assert len(config["clients"]) == 1
    client = config["clients"][0]
    assert client["anonymous"] is True
    assert "tokens" not in client
    assert {rule["key"] for rule in client["rules"]} == {"app-read"}
    assert config["keys"] == {"app-read": {"file": "/etc/proget-gateway/keys/app-read"}}


def test_sidecar_security_context(sidecar: list[Doc]) -> None:
    spec = _pod_spec(sidecar)
    _assert_hardened(None, container(spec, "proget-gateway")["securityContext"])


def test_sidecar_key_lives_only_in_the_secret(sidecar: list[Doc]) -> None:
    value = "ci-only-not-a-real-proget-key"
    secret = one(sidecar, "Secret")
    assert secret["data"] == {"app-read": "Y2ktb25seS1ub3QtYS1yZWFsLXByb2dldC1rZXk="}
    others = [d for d in sidecar if d["kind"] != "Secret"]
    assert value not in yaml.safe_dump_all(others), "the key must not appear outside the Secret"
    spec = _pod_spec(sidecar)
    keys_volume = next(v for v in spec["volumes"] if v["name"] == "proget-gateway-keys")
    assert keys_volume["secret"]["secretName"] == secret["metadata"]["name"]
    app = container(spec, "app")
    assert {"name": "PROGET_URL", "value": "http://127.0.0.1:8080"} in app["env"]
    assert "volumeMounts" not in app, "the application container does not see the key files"


def test_native_sidecar_is_an_init_container_that_keeps_running(helm: Helm) -> None:
    docs = helm.render(CHART, [SIDECAR], {"sidecar": {"native": True}})
    spec = _pod_spec(docs)
    assert [c["name"] for c in spec["initContainers"]] == ["proget-gateway"]
    assert spec["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["app"]


# --- both modes ------------------------------------------------------------------------------------------


def _checksums(docs: list[Doc]) -> dict[str, str]:
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    return {
        k.rsplit("-", 1)[-1].rsplit("/", 1)[-1]: v
        for k, v in annotations.items()
        if k.startswith("checksum/")
    }


ROLL = {"rollOnConfigChange": True}


@pytest.mark.parametrize("values", [CENTRAL, SIDECAR], ids=["central", "sidecar"])
def test_checksum_annotations_change_with_the_config(helm: Helm, values: Path) -> None:
    base = _checksums(helm.render(CHART, [values], ROLL))
    assert set(base) == {"config", "secret"}
    other = {**ROLL, "config": {"upstream": {"url": "http://other:8624"}}}
    changed = _checksums(helm.render(CHART, [values], other))
    assert changed["config"] != base["config"]
    assert changed["secret"] == base["secret"]
    again = _checksums(helm.render(CHART, [values], ROLL))
    assert again == base, "rendering is deterministic: an unchanged release does not roll the pods"


@pytest.mark.parametrize("values", [CENTRAL, SIDECAR], ids=["central", "sidecar"])
def test_reload_makes_the_roll_out_optional(helm: Helm, values: Path) -> None:
    """Default: reload on, no checksum (a ConfigMap edit reaches the pods without a roll); reload off:
    serve --no-reload, and the checksums roll the pods."""
    docs = helm.render(CHART, [values])
    spec = _pod_spec(docs)
    assert container(spec, "proget-gateway")["args"] == ["serve"]
    assert _checksums(docs) == {}
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["proget-gateway/config-reload"] == "on"
    off = helm.render(CHART, [values], {"reload": False})
    spec = _pod_spec(off)
    assert container(spec, "proget-gateway")["args"] == ["serve", "--no-reload"]
    assert set(_checksums(off)) == {"config", "secret"}


@pytest.mark.parametrize(
    ("overrides", "grace"),
    [
        ({}, 5 + 5 + 25 + 5),
        ({"preStopSleepSeconds": 0, "config": {"shutdown": {"drain_delay": 2.5, "timeout": 300}}}, 308),
        ({"terminationGracePeriodSeconds": 600}, 600),
    ],
)
def test_termination_grace_outlasts_the_drain(helm: Helm, overrides: Doc, grace: int) -> None:
    spec = _pod_spec(helm.render(CHART, [CENTRAL], overrides))
    assert spec["terminationGracePeriodSeconds"] == grace
    shutdown = {"drain_delay": 5, "timeout": 25, **overrides.get("config", {}).get("shutdown", {})}
    assert gateway_config(helm.render(CHART, [CENTRAL], overrides))["shutdown"] == shutdown


def test_checksum_secret_changes_with_a_chart_managed_key(helm: Helm) -> None:
    base = _checksums(helm.render(CHART, [SIDECAR], ROLL))
    rotated = _checksums(
        helm.render(CHART, [SIDECAR], {**ROLL, "keys": {"create": {"app-read": "rotated-key-value"}}})
    )
    assert rotated["secret"] != base["secret"]
    assert rotated["config"] == base["config"], "the config names key files, not key values"


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"replicaCont": 3}, "replicaCont"),
        ({"config": {"upstream": {"urll": "http://x"}}}, "urll"),
        ({"config": {"listen": {"host": "0.0.0.0"}}}, "listen"),
        ({"sidecar": {"clinet": {}}}, "clinet"),
        ({"keys": {"existingSecrets": "x"}}, "existingSecrets"),
        ({"mode": "daemonset"}, "mode"),
        (
            {"config": {"clients": [{"name": "c", "tokens": ["pgw_plaintext"], "rules": [{"key": "k"}]}]}},
            "tokens",
        ),
    ],
)
def test_schema_rejects_typos_and_wrong_values(helm: Helm, overrides: Doc, complaint: str) -> None:
    done = helm.template(CHART, [CENTRAL], overrides)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert complaint in done.stderr


@pytest.mark.parametrize(
    ("values", "overrides", "complaint"),
    [
        (CENTRAL, {"config": {"clients": []}}, "central mode needs at least one client"),
        (
            SIDECAR,
            {"sidecar": {"client": {"name": "p", "rules": [{"key": "nope"}]}}},
            '"nope" is not one of the keys',
        ),
        (SIDECAR, {"keys": {"create": None}}, "no ProGet key defined"),
        (
            SIDECAR,
            {"config": {"clients": [{"name": "x", "anonymous": True, "rules": [{"key": "app-read"}]}]}},
            "must be empty in sidecar mode",
        ),
        (
            CENTRAL,
            {
                "config": {
                    "clients": [{"name": "x", "tokens": ["sha256:" + "0" * 64], "rules": [{"key": "nope"}]}]
                }
            },
            'config.clients[0].rules[0].key: "nope" is not one of the keys',
        ),
        (CENTRAL, {"ports": {"http": 8080, "admin": 8080}}, "ports.admin: 8080 is also ports.http"),
        (
            SIDECAR,
            {"sidecar": {"port": 8080, "adminPort": 8080}},
            "sidecar.adminPort: 8080 is also sidecar.port",
        ),
        (CENTRAL, {"terminationGracePeriodSeconds": 30}, "terminationGracePeriodSeconds: 30 is below"),
    ],
    ids=[
        "central-no-client",
        "sidecar-unknown-key",
        "no-keys",
        "sidecar-extra-client",
        "central-unknown-key",
        "central-admin-port",
        "sidecar-admin-port",
        "grace-too-short",
    ],
)
def test_render_refuses_configs_that_could_not_start(
    helm: Helm, values: Path, overrides: Doc, complaint: str
) -> None:
    done = helm.template(CHART, [values], overrides)
    assert done.returncode != 0
    assert complaint in done.stderr


TRACED = {
    "config": {"tracing": {"otlp_endpoint": "http://otel-collector.observability:4318", "sample_ratio": 0.05}}
}


@pytest.mark.parametrize(
    ("values", "overrides"),
    [(CENTRAL, {}), (SIDECAR, {}), (CENTRAL, TRACED)],
    ids=["central", "sidecar", "central-traced"],
)
def test_rendered_gateway_config_passes_check(
    helm: Helm, values: Path, overrides: Doc, tmp_path: Path
) -> None:
    """`proget-gateway check` accepts the ConfigMap's config, with its key files where the pod has them."""
    config = gateway_config(helm.render(CHART, [values], overrides))
    assert config.get("tracing") == overrides.get("config", {}).get("tracing")
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    for name, source in config["keys"].items():
        assert source["file"] == f"/etc/proget-gateway/keys/{name}"
        (keys_dir / name).write_text(f"placeholder-key-{name}\n")
        source["file"] = str(keys_dir / name)  # the one change: where the Secret's files are on this machine
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    out = ok(
        [sys.executable, "-m", "gateway", "check", "--offline", "--config", path]
    )  # no cluster issuer here
    assert ": ok" in out


def test_check_would_catch_a_broken_rendered_config(tmp_path: Path) -> None:
    """The check above can fail: a missing key file is a problem (exit 2)."""
    path = tmp_path / "gateway.yaml"
    rule = {"methods": ["GET"], "key": "k"}
    config = {"upstream": {"url": "http://x:1"}, "keys": {"k": {"file": str(tmp_path / "absent")}}}
    config["clients"] = [{"name": "p", "anonymous": True, "rules": [rule]}]
    path.write_text(yaml.safe_dump(config))
    assert run([sys.executable, "-m", "gateway", "check", "--config", path]).returncode == 2


# --- an application chart that includes the sidecar -----------------------------------------------------


def test_application_chart_includes_the_sidecar_template(
    helm: Helm, kubernetes_validate: str, tmp_path: Path
) -> None:
    """helm/examples/app-with-sidecar: a chart with this chart as a dependency, as platform teams use it."""
    app = tmp_path / "app-with-sidecar"
    shutil.copytree(ROOT / "helm" / "examples" / "app-with-sidecar", app)
    shutil.copytree(CHART, tmp_path / "proget-gateway")  # the dependency's file:// path, relative to the app
    (app / "Chart.yaml").write_text(
        (app / "Chart.yaml").read_text().replace("../../proget-gateway", "../proget-gateway")
    )
    done = helm("dependency", "build", app)
    assert done.returncode == 0, done.stderr
    done = helm("lint", "--strict", app)
    assert done.returncode == 0, done.stdout + done.stderr
    docs = helm.render(app, release="orders")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    result = run([kubernetes_validate, "--strict", "--quiet", "-k", "1.30.0", rendered])
    assert result.returncode == 0, result.stdout + result.stderr
    spec = _pod_spec(docs, "orders-app")
    gw = container(spec, "proget-gateway")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["proget-gateway-config"]["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    assert volumes["proget-gateway-keys"]["secret"]["secretName"] == "orders-proget-keys"
    assert gw["securityContext"]["readOnlyRootFilesystem"] is True
    annotations = one(docs, "Deployment", "orders-app")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["proget-gateway/config-reload"] == "on"  # a sidecar config edit needs no app roll
    assert not {"checksum/proget-gateway-config", "checksum/proget-gateway-secret"} & set(annotations)
    assert gateway_config(docs)["listen"]["host"] == "127.0.0.1"


@pytest.mark.parametrize("values", [CENTRAL, SIDECAR], ids=["central", "sidecar"])
def test_notes_tell_how_to_reach_it(helm: Helm, values: Path, tmp_path: Path) -> None:
    """NOTES.txt rendered with the release's values (helm prints it only on install, so render it as data)."""
    chart = tmp_path / "proget-gateway"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "notes-preview.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    notes = one(helm.render(chart, [values]), "ConfigMap", "notes")["data"]["notes"]
    if values == CENTRAL:
        assert "http://rel-proget-gateway.apps.svc:80" in notes
        assert "curl -i http://127.0.0.1:8080/health\n" in notes  # no rule can refuse it: no credential
        assert "/health" not in notes.split("Bearer")[1].split("\n")[0]  # feed-only rules would refuse it
    else:
        assert "http://127.0.0.1:8080 with no credential" in notes
        assert '"proget-gateway.sidecar"' in notes
