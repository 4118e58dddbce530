"""Workload identity end to end: the real gateway process, local OIDC issuer stand-ins, the ProGet stand-in.

Every issuer is its own server on 127.0.0.1, so fetch counts and outages of one test never touch
another's; the gateway is started once for the module with a jwt client per scenario.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.standin import Recorded
from tests.e2e.conftest import KEY_NATIVE, KEY_PUSH, KEY_READ, Gateway, start_gateway
from tests.oidc_issuer import KUBERNETES_ISSUER, OidcIssuer
from tests.processes import stop

AUD = "proget-gateway"
STANDIN_ONLY = [{"paths": ["/__standin/**"]}]


@dataclass
class World:
    gateway: Gateway
    gh: OidcIssuer  # GitHub Actions-like
    k8s: OidcIssuer  # Kubernetes-like, ES256
    cluster: OidcIssuer  # keys only in a jwks_file; never served
    rot: OidcIssuer
    flood: OidcIssuer
    warm: OidcIssuer
    cold: OidcIssuer  # configured, but down from the start
    other: OidcIssuer  # up and valid, but not configured

    def issuers(self) -> list[OidcIssuer]:
        return [self.gh, self.k8s, self.cluster, self.rot, self.flood, self.warm, self.cold, self.other]


def jwt_client(name: str, issuer: str, key: str, **jwt: Any) -> dict[str, Any]:
    return {
        "name": name,
        "jwt": {"issuer": issuer, "audience": AUD, **jwt},
        "rules": [{**rule, "key": key} for rule in STANDIN_ONLY],
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, standin_server: Any) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("workload-identity")
    issuers = [OidcIssuer(cache_control="max-age=600") for _ in range(6)] + [OidcIssuer(path="/other")]
    for issuer in issuers:
        issuer.start()
    gh, k8s, rot, flood, warm, cold, other = issuers
    cold.stop()
    cluster = OidcIssuer(issuer=KUBERNETES_ISSUER)
    jwks_file = cluster.write_jwks(tmp / "cluster-jwks.json")

    def mutate(config: dict[str, Any]) -> None:
        config["clients"] += [
            jwt_client(
                "payments-main",
                gh.issuer,
                "push",
                claims={"repository": "acme/payments", "ref": "refs/heads/main"},
            ),
            jwt_client("payments-any", gh.issuer, "read", claims={"repository": "acme/payments"}),
            jwt_client(
                "billing-or-docs", gh.issuer, "native", claims={"repository": ["acme/billing", "acme/docs"]}
            ),
            jwt_client(
                "build-pods",
                k8s.issuer,
                "push",
                audience=["https://kubernetes.default.svc", AUD],
                claims={"sub": "system:serviceaccount:ci:builder"},
                algorithms=["ES256"],
            ),
            jwt_client(
                "cluster-file",
                KUBERNETES_ISSUER,
                "read",
                jwks_file=str(jwks_file),
                claims={"sub": "system:serviceaccount:ci:deployer"},
            ),
            jwt_client("rotation", rot.issuer, "read"),
            jwt_client("flood", flood.issuer, "read"),
            jwt_client("warm", warm.issuer, "read"),
            jwt_client("cold", cold.issuer, "read"),
        ]

    gateway = start_gateway(tmp, standin_server.standin, standin_server.url, mutate)
    try:
        yield World(gateway, gh, k8s, cluster, rot, flood, warm, cold, other)
    finally:
        stop(gateway.process)
        for issuer in issuers:
            issuer.stop()


@pytest.fixture
def w(world: World) -> World:
    world.gateway.standin.clear()
    return world


def get(w: World, token: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    with httpx.Client(base_url=w.gateway.url, timeout=15, trust_env=False) as client:
        return client.get("/__standin/echo", headers=sent)


def only_request(w: World) -> Recorded:
    assert len(w.gateway.standin.requests) == 1, [r.raw_path for r in w.gateway.standin.requests]
    return w.gateway.standin.requests[0]


def assert_forwarded_with(w: World, response: httpx.Response, key: str, token: str) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    rec = only_request(w)
    assert rec.header("x-apikey") == [key]
    assert rec.credentials == [("header:x-apikey", key)]
    blob = rec.raw_path + rec.query + json.dumps(rec.headers)
    for part in token.split("."):
        assert part not in blob
    return w.gateway.last_audit(response.headers["x-request-id"])


def assert_refused(w: World, response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-gateway-error"] == code
    assert response.json()["error"] == code
    assert w.gateway.standin.requests == []
    audit = w.gateway.last_audit(response.headers["x-request-id"])
    assert (audit["reason"], audit["client"], audit["sub"]) == (code, None, None)


# --- the good paths -----------------------------------------------------------------------------------


def test_github_token_gets_the_matching_clients_key(w: World) -> None:
    token = w.gh.github_token()
    audit = assert_forwarded_with(w, get(w, token), KEY_PUSH, token)
    assert (audit["client"], audit["sub"], audit["issuer"], audit["key"]) == (
        "payments-main",
        "repo:acme/payments:ref:refs/heads/main",
        w.gh.issuer,
        "push",
    )
    assert audit["credential_source"] == "header:authorization-bearer"


def test_jwt_as_basic_password_like_pip_and_twine_send_it(w: World) -> None:
    token = w.gh.github_token()
    basic = "Basic " + base64.b64encode(f"__token__:{token}".encode()).decode()
    audit = assert_forwarded_with(w, get(w, headers={"Authorization": basic}), KEY_PUSH, token)
    assert audit["client"] == "payments-main"


def test_overlapping_clients_config_order_decides_and_explain_shows_it(w: World) -> None:
    feature = w.gh.github_token(ref="refs/heads/feature")
    audit = assert_forwarded_with(w, get(w, feature), KEY_READ, feature)
    assert audit["client"] == "payments-any"
    main = w.gh.github_token()
    out = explain(w, main)
    assert out.returncode == 0, out.stderr
    assert "client:   payments-main  (jwt via header:authorization-bearer)" in out.stdout
    assert f"jwt:      issuer {w.gh.issuer}, sub repo:acme/payments:ref:refs/heads/main" in out.stdout
    (matched,) = [line for line in out.stdout.splitlines() if line.startswith("matched:  ")]
    assert sorted(matched.removeprefix("matched:  ").split(", ")) == sorted(
        [f"iss={w.gh.issuer}", "aud=proget-gateway", "repository=acme/payments", "ref=refs/heads/main"]
    )
    assert "also:     payments-any would match too, but come later (first match wins)" in out.stdout
    assert "key:      push" in out.stdout
    for part in main.split("."):
        assert part not in out.stdout + out.stderr


def test_claim_list_accepts_any_of_its_values(w: World) -> None:
    for repository in ("acme/billing", "acme/docs"):
        w.gateway.standin.clear()
        token = w.gh.github_token(repository=repository)
        assert assert_forwarded_with(w, get(w, token), KEY_NATIVE, token)["client"] == "billing-or-docs"
    w.gateway.standin.clear()
    assert_refused(w, get(w, w.gh.github_token(repository="acme/other")), 401, "token_unknown")


def test_kubernetes_service_account_token(w: World) -> None:
    token = w.k8s.kubernetes_token()
    audit = assert_forwarded_with(w, get(w, token), KEY_PUSH, token)
    assert (audit["client"], audit["sub"]) == ("build-pods", "system:serviceaccount:ci:builder")
    w.gateway.standin.clear()
    assert_refused(w, get(w, w.k8s.kubernetes_token(service_account="intruder")), 401, "token_unknown")


def test_cluster_keys_from_jwks_file_need_no_reachable_issuer(w: World) -> None:
    token = w.cluster.kubernetes_token(service_account="deployer")
    audit = assert_forwarded_with(w, get(w, token), KEY_READ, token)
    assert (audit["client"], audit["issuer"]) == ("cluster-file", KUBERNETES_ISSUER)


# --- refusals -----------------------------------------------------------------------------------------

REFUSALS: dict[str, tuple[Callable[[World], str], str]] = {
    "wrong-audience": (lambda w: w.gh.github_token(audience="https://github.com/acme"), "token_unknown"),
    "expired": (lambda w: w.gh.mint(w.gh.github_claims(**w.gh.times(ttl=300, age=400))), "token_invalid"),
    "not-yet-valid": (
        lambda w: w.gh.mint(w.gh.github_claims(nbf=w.gh.times()["iat"] + 600)),
        "token_invalid",
    ),
    "unconfigured-issuer": (lambda w: w.other.github_token(), "token_unknown"),
    "alg-none": (lambda w: w.gh.forge_none(w.gh.github_claims()), "token_invalid"),
    "hs256-with-public-key": (
        lambda w: w.gh.forge_hs256_with_public_key(w.gh.github_claims()),
        "token_invalid",
    ),
    "unconfigured-key-posing-as-configured-issuer": (
        lambda w: w.other.mint(w.gh.github_claims(), kid=w.gh.signing["rsa"]),
        "token_invalid",
    ),
    "rs256-where-only-es256-is-allowed": (
        lambda w: w.k8s.mint(w.k8s.kubernetes_claims(), kind="rsa"),
        "token_invalid",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_tokens_never_reach_proget(w: World, case: str) -> None:
    make, code = REFUSALS[case]
    response = get(w, make(w))
    assert_refused(w, response, 401, code)
    assert response.headers["www-authenticate"] == 'Basic realm="proget-gateway"'


def test_unconfigured_issuer_is_never_contacted(w: World) -> None:
    assert_refused(w, get(w, w.other.github_token()), 401, "token_unknown")
    assert w.other.fetches.total() == 0


# --- keys -----------------------------------------------------------------------------------------------


def test_key_rotation_refetches_once(w: World) -> None:
    first = w.rot.github_token()
    assert_forwarded_with(w, get(w, first), KEY_READ, first)
    assert w.rot.fetches["jwks"] == 1
    w.rot.rotate("rsa")
    for i in range(3):
        w.gateway.standin.clear()
        token = w.rot.github_token(ref=f"refs/heads/after-rotation-{i}")
        assert_forwarded_with(w, get(w, token), KEY_READ, token)
    assert w.rot.fetches["jwks"] == 2


def test_kid_flood_does_not_flood_the_issuer(w: World) -> None:
    claims = w.flood.github_claims()
    for _ in range(30):
        response = get(w, w.flood.mint(claims, kid=uuid.uuid4().hex))
        assert (response.status_code, response.headers["x-gateway-error"]) == (401, "token_invalid")
    assert w.gateway.standin.requests == []
    assert w.flood.fetches["jwks"] <= 2
    token = w.flood.github_token()
    assert_forwarded_with(w, get(w, token), KEY_READ, token)
    assert w.flood.fetches["jwks"] <= 2


def test_issuer_down_with_warm_cache_keeps_working(w: World) -> None:
    token = w.warm.github_token()
    assert_forwarded_with(w, get(w, token), KEY_READ, token)
    w.warm.stop()
    w.gateway.standin.clear()
    fresh = w.warm.github_token(ref="refs/heads/while-down")  # not in the verified-token cache
    assert_forwarded_with(w, get(w, fresh), KEY_READ, fresh)


def test_issuer_down_with_cold_cache_is_503_and_nothing_is_forwarded(w: World) -> None:
    response = get(w, w.cold.github_token())
    assert_refused(w, response, 503, "identity_provider_unavailable")
    assert w.gateway.last_audit(response.headers["x-request-id"])["decision"] == "error"


# --- commands -------------------------------------------------------------------------------------------


def cli(w: World, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "E2E_KEY_PUSH": KEY_PUSH, "WI_TOKEN": token or ""}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def explain(w: World, token: str) -> subprocess.CompletedProcess[str]:
    config = str(w.gateway.config_path)
    return cli(
        w, "explain", "--config", config, "--token-env", "WI_TOKEN", "GET", "/__standin/echo", token=token
    )


def test_check_fetches_each_issuer_and_reports_the_unreachable_one(w: World) -> None:
    before = w.gh.fetches["jwks"]
    out = cli(w, "check", "--config", str(w.gateway.config_path))
    assert out.returncode == 2, out.stdout + out.stderr
    problems = [line.strip() for line in out.stderr.splitlines()[1:]]
    down = [
        f"clients.{name}.jwt" for name, issuer in (("warm", w.warm), ("cold", w.cold)) if not issuer.running
    ]
    assert "clients.cold.jwt" in down
    assert [p.split(":")[0] for p in problems] == down
    assert all(p.endswith(": cannot connect") for p in problems)  # our words, not ClientConnectorError
    assert w.gh.fetches["jwks"] == before + 1  # one fetch for the three clients of that issuer
    offline = cli(w, "check", "--offline", "--config", str(w.gateway.config_path))
    assert offline.returncode == 0, offline.stderr
    assert "ok — 11 client(s)" in offline.stdout


def test_no_token_in_any_log_line(w: World) -> None:
    """Runs last in this module: the gateway's whole output holds no token, not even a JWT header."""
    assert get(w, w.gh.github_token()).status_code == 200
    assert get(w, w.gh.forge_none(w.gh.github_claims())).status_code == 401
    assert get(w, w.cold.github_token()).status_code == 503
    log = w.gateway.log_path.read_text()
    audits = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert "eyJ" not in log
    for issuer in w.issuers():
        for token in issuer.minted:
            for part in token.split("."):
                if part:
                    assert part not in log
    jwt_lines = [a for a in audits if a.get("issuer")]
    assert jwt_lines and all(a["sub"] and a["client"] for a in jwt_lines)
    assert "identity provider" in log  # the outage was logged (by issuer URL, without a token)


def test_explain_says_per_client_which_check_a_refused_jwt_fails(w: World) -> None:
    wrong_aud = w.gh.github_token(audience="someone-else")
    wrong_repo = w.gh.github_token(repository="acme/other")
    outs = [explain(w, token) for token in (wrong_aud, wrong_repo)]
    assert [o.returncode for o in outs] == [1, 1]
    aud_lines, repo_lines = (o.stdout.splitlines() for o in outs)
    assert (
        "jwt client payments-main: audience: expected proget-gateway, the token has someone-else" in aud_lines
    )
    assert (
        "jwt client payments-main: claim repository: expected acme/payments, the token has acme/other"
        in repo_lines
    )
    assert (
        f"jwt client build-pods: issuer: expected {w.k8s.issuer}, the token has {w.gh.issuer}" in repo_lines
    )
    for token, out in zip((wrong_aud, wrong_repo), outs, strict=True):
        for part in token.split("."):
            assert part not in out.stdout + out.stderr
