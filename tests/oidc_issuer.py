"""A local OIDC issuer STAND-IN for the workload-identity tests. It is not GitHub or Kubernetes.

It serves on 127.0.0.1 (a free port) what a real issuer publishes — a discovery document at
``<issuer>/.well-known/openid-configuration`` and a JWKS — from its own RSA and EC keys, and mints
tokens with the claim sets GitHub Actions and Kubernetes put in theirs (same names, same shapes;
only ``iss`` points here). It counts every fetch, rotates keys, and can be stopped to simulate an
outage and started again on the same port.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"  # what the real one is called
KUBERNETES_ISSUER = "https://kubernetes.default.svc.cluster.local"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _new_key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


class OidcIssuer:
    """One issuer. ``issuer`` overrides the ``iss`` it claims (e.g. for a jwks_file-only cluster)."""

    def __init__(self, path: str = "", issuer: str | None = None, cache_control: str | None = None) -> None:
        self.path = path.rstrip("/")
        self._issuer = issuer
        self.cache_control = cache_control
        self.keys: dict[str, PrivateKey] = {"rsa-1": _new_key("rsa"), "ec-1": _new_key("ec")}
        self.signing = {"rsa": "rsa-1", "ec": "ec-1"}
        self.fetches: Counter[str] = Counter()
        self.status = 200  # what the endpoints answer (an issuer that is up but broken: 500)
        self.padding = 0  # bytes of filler added to the JWKS (an oversized answer)
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.minted: list[str] = []  # every token this issuer made, for "never in a log" checks

    # --- serving ---

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def issuer(self) -> str:
        return self._issuer or self.url

    def start(self) -> OidcIssuer:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: connections to the port are refused from now on."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> OidcIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.url}/.well-known/jwks",
            "subject_types_supported": ["public", "pairwise"],
            "response_types_supported": ["id_token"],
            "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "scopes_supported": ["openid"],
        }

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[_alg(key)].to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": _alg(key)})
        return {"keys": keys, **({"filler": "x" * self.padding} if self.padding else {})}

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                routes = {
                    f"{issuer.path}/.well-known/openid-configuration": ("discovery", issuer.discovery),
                    f"{issuer.path}/.well-known/jwks": ("jwks", issuer.jwks),
                }
                name, make = routes.get(self.path, ("other", lambda: {"error": "not found"}))
                with issuer._lock:
                    issuer.fetches[name] += 1
                status = issuer.status if name != "other" else 404
                body = json.dumps(make()).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if issuer.cache_control is not None:
                    self.send_header("Cache-Control", issuer.cache_control)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    # --- keys ---

    def rotate(self, kind: str = "rsa", drop_old: bool = False) -> str:
        """A new signing key of this kind is published and used from now on; returns its kid."""
        old = self.signing[kind]
        kid = f"{kind}-{len(self.keys) + 1}"
        self.keys[kid] = _new_key(kind)
        self.signing[kind] = kid
        if drop_old:
            del self.keys[old]
        return kid

    def public_pem(self, kind: str = "rsa") -> bytes:
        return (
            self.keys[self.signing[kind]]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    # --- tokens ---

    def mint(
        self,
        claims: dict[str, Any],
        *,
        kind: str = "rsa",
        kid: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """Sign ``claims`` with the current key of ``kind``; ``kid`` overrides the header's key id."""
        key = self.keys[self.signing[kind]]
        header = {"typ": "JWT", "kid": kid or self.signing[kind], **(headers or {})}
        token = jwt.encode(claims, key, algorithm=_alg(key), headers=header)
        self.minted.append(token)
        return token

    def times(self, ttl: int = 300, age: int = 0) -> dict[str, int]:
        now = int(time.time()) - age
        return {"iat": now, "nbf": now - 5, "exp": now + ttl}

    def github_claims(
        self,
        repository: str = "acme/payments",
        ref: str = "refs/heads/main",
        audience: str | list[str] = "proget-gateway",
        **extra: Any,
    ) -> dict[str, Any]:
        """What GitHub Actions puts in a job's OIDC token (a push to a branch, no environment)."""
        owner = repository.split("/")[0]
        workflow_ref = f"{repository}/.github/workflows/ci.yml@{ref}"
        return {
            "jti": str(uuid.uuid4()),
            "sub": f"repo:{repository}:ref:{ref}",
            "aud": audience,
            "ref": ref,
            "sha": hashlib.sha1(repository.encode(), usedforsecurity=False).hexdigest(),
            "repository": repository,
            "repository_owner": owner,
            "repository_owner_id": "1342004",
            "run_id": "6123456789",
            "run_number": "42",
            "run_attempt": "1",
            "repository_visibility": "private",
            "repository_id": "700123456",
            "actor_id": "583231",
            "actor": "octocat",
            "workflow": "CI",
            "head_ref": "",
            "base_ref": "",
            "event_name": "push",
            "ref_protected": "true",
            "ref_type": "branch",
            "workflow_ref": workflow_ref,
            "workflow_sha": "0" * 40,
            "job_workflow_ref": workflow_ref,
            "job_workflow_sha": "0" * 40,
            "runner_environment": "github-hosted",
            "iss": self.issuer,
            **self.times(),
            **extra,
        }

    def kubernetes_claims(
        self, namespace: str = "ci", service_account: str = "builder", audience: list[str] | None = None
    ) -> dict[str, Any]:
        """What a projected service-account token of a pod carries (bound to pod and node)."""
        times = self.times(ttl=3600)
        return {
            "aud": audience or ["proget-gateway"],
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": namespace,
                "node": {"name": "worker-1", "uid": str(uuid.uuid4())},
                "pod": {"name": f"{service_account}-7d9f8c6b5-x2k4q", "uid": str(uuid.uuid4())},
                "serviceaccount": {"name": service_account, "uid": str(uuid.uuid4())},
                "warnafter": times["iat"] + 3000,
            },
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            **times,
        }

    def github_token(self, **kwargs: Any) -> str:
        return self.mint(self.github_claims(**kwargs))

    def kubernetes_token(self, **kwargs: Any) -> str:
        return self.mint(self.kubernetes_claims(**kwargs), kind="ec")

    # --- forgeries ---

    def forge_none(self, claims: dict[str, Any]) -> str:
        """An unsigned token (``alg: none``) with otherwise valid claims."""
        token = (
            f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}."
        )
        self.minted.append(token)
        return token

    def forge_hs256_with_public_key(self, claims: dict[str, Any]) -> str:
        """The key-confusion attack: HMAC-SHA256 keyed with the issuer's public RSA key (PEM)."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self.signing["rsa"]}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = hmac.new(self.public_pem("rsa"), signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{_b64(signature)}"
        self.minted.append(token)
        return token


def _alg(key: PrivateKey) -> str:
    return "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
