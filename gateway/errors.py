"""One exception tree for everything a request can do wrong, and for upstream failures.

Every class carries its HTTP status and a stable snake_case ``code``. The same string is used in the
JSON error body, the ``X-Gateway-Error`` header, the audit line and the metric label, so an operator
can follow one refusal from a client's screen to a dashboard. Stages raise; ``render`` (in
``responses.py``) is the only place that turns an error into bytes on the wire.

Messages never contain a token, a key or a credential value: callers pass only names and shapes.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """Base of every error the gateway itself produces."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    default_detail: ClassVar[str] = "The request was refused by the gateway."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Extra response headers this error needs (a challenge, an Allow list)."""
        return []


# --- 400: the request is malformed or could be read two ways -------------------------------------


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


class TargetNotOriginForm(BadRequest):
    code = "target_not_origin_form"
    default_detail = "Only origin-form request targets (starting with '/') are accepted."


class PathNotCanonical(BadRequest):
    code = "path_not_canonical"
    default_detail = "The request path could be read differently by the upstream server."


class NativePathInvalid(BadRequest):
    code = "native_path_invalid"
    default_detail = "A Native API path must be /api/json/<Method>."


class HostInvalid(BadRequest):
    code = "host_invalid"
    default_detail = "The Host header is missing, repeated or malformed."


class HeaderInvalid(BadRequest):
    code = "header_invalid"
    default_detail = "A request header is malformed or repeated where it must be single."


class FramingInvalid(BadRequest):
    code = "framing_invalid"
    default_detail = "The request's message framing is malformed or ambiguous."


class CredentialAmbiguous(BadRequest):
    code = "credential_ambiguous"
    default_detail = "Different credentials were sent in several places; send exactly one."


class CredentialMalformed(BadRequest):
    code = "credential_malformed"
    default_detail = "The credential could not be read."


class CredentialLeakBlocked(BadRequest):
    """The egress guard (gateway/egress.py) found a presented credential in what was about to be sent."""

    code = "credential_leak_blocked"
    default_detail = "The request carries the client's credential in a place the gateway does not strip."


class BodyUnparseable(BadRequest):
    code = "body_unparseable"
    default_detail = "The request body could not be parsed for its declared content type."


class QueryInvalid(BadRequest):
    code = "query_invalid"
    default_detail = "The query string could be read differently by the upstream server."


class TooManyParameters(BadRequest):
    code = "too_many_parameters"
    default_detail = "The query string or form body has too many parameters."


# --- 401: who are you? ---------------------------------------------------------------------------

CHALLENGE = (b"www-authenticate", b'Basic realm="proget-gateway"')


class Unauthenticated(GatewayError):
    status = 401
    code = "unauthenticated"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [CHALLENGE]


class CredentialMissing(Unauthenticated):
    code = "credential_missing"
    default_detail = "This gateway needs a credential: send your gateway token."


class TokenUnknown(Unauthenticated):
    code = "token_unknown"
    default_detail = "The credential is not known to this gateway."


class TokenExpired(Unauthenticated):
    """A configured token past its ``not_after``; ``label`` names it in the audit line."""

    code = "token_expired"
    default_detail = "This token has expired: ask for a new one."

    def __init__(self, label: str | None = None) -> None:
        super().__init__(self.default_detail + (f" (token {label!r})" if label else ""))
        self.label = label


class TokenInvalid(Unauthenticated):
    code = "token_invalid"
    default_detail = "The token could not be verified."


# --- 403: known client, not allowed --------------------------------------------------------------


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NoMatchingRule(Forbidden):
    code = "no_matching_rule"
    default_detail = "No rule of this client allows this request."


class NativeMethodNotAllowed(Forbidden):
    code = "native_method_not_allowed"
    default_detail = "This Native API method is not on the gateway's allowlist."


class NativeApiBlocked(Forbidden):
    code = "native_api_blocked"
    default_detail = "This ProGet interface is never reachable through the gateway."


class SecretRouteNotNamed(Forbidden):
    code = "secret_route_not_named"
    default_detail = "ProGet's answers on this route carry secrets; only a rule that names it allows it."


class SecretRouteBlocked(Forbidden):
    code = "secret_route_blocked"
    default_detail = "This ProGet route hands out ProGet's own credentials; the gateway never relays it."


# --- 4xx: shape and size -------------------------------------------------------------------------


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"
    default_detail = "This HTTP method is not accepted by the gateway."
    ALLOWED: ClassVar[bytes] = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", self.ALLOWED)]


class RequestTimeout(GatewayError):
    status = 408
    code = "request_timeout"
    default_detail = "The request head or the inspected body did not arrive in time."


class BodyTooLarge(GatewayError):
    status = 413
    code = "body_too_large"
    default_detail = "The request body is larger than the gateway inspects."


class InspectionBusy(GatewayError):
    """The bodies the gateway holds for inspection are at their process-wide cap
    (``limits.max_inspected_bytes_in_flight``; a credential-less request gets a small share of it)."""

    status = 503
    code = "inspection_capacity"
    default_detail = "The gateway holds as many request bodies for inspection as it may; retry shortly."

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"1")]


class TargetTooLong(GatewayError):
    status = 414
    code = "target_too_long"
    default_detail = "The request target is longer than the gateway accepts."


class ContentTypeNotAllowed(GatewayError):
    status = 415
    code = "content_type_not_allowed"
    default_detail = "This content type cannot be sent to this route through the gateway."


class HeadersTooLarge(GatewayError):
    status = 431
    code = "headers_too_large"
    default_detail = "The request has too many headers or they are too large."


# --- 5xx: the gateway or what it depends on -------------------------------------------------------


class UpstreamError(GatewayError):
    status = 502
    code = "upstream_error"


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"
    default_detail = "ProGet could not be reached."


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    default_detail = "ProGet did not answer in time."


class UpstreamAborted(UpstreamError):
    """The upstream failed after the response had started: the client's stream is aborted."""

    code = "upstream_aborted"
    default_detail = "ProGet's response ended early; the stream was aborted."


class ClientAborted(GatewayError):
    """The client went away before the exchange finished; nothing is sent, the upstream is cancelled."""

    status = 499
    code = "client_aborted"
    default_detail = "The client closed the connection."


class IdentityProviderUnavailable(GatewayError):
    status = 503
    code = "identity_provider_unavailable"
    default_detail = "The identity provider could not be reached and no keys are cached."


class ShutdownAborted(GatewayError):
    """The gateway was stopping and ``shutdown.timeout`` ran out while this request was still running."""

    status = 503
    code = "shutdown_aborted"
    default_detail = "The gateway shut down before this request finished."


class InternalError(GatewayError):
    status = 500
    code = "internal_error"
    default_detail = "The gateway failed unexpectedly."


# --- 429 / 503: limits that protect ProGet (gateway/admission.py) --------------------------------


class Throttled(GatewayError):
    """A limit refused the request; ``Retry-After`` says when trying again can succeed.

    ``rate_headers`` are the IETF ``RateLimit-Policy`` / ``RateLimit`` fields (see
    ``gateway.ratelimit.rate_headers``) when a token bucket made the decision.
    """

    status = 429

    def __init__(self, retry_after: int = 1, rate_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__()
        self.retry_after = max(1, retry_after)
        self.rate_headers = rate_headers or []

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after).encode()), *self.rate_headers]


class RateLimited(Throttled):
    code = "rate_limited"
    default_detail = "This client sent more requests than its rate allows; retry after the given time."


class ConcurrencyLimited(Throttled):
    code = "concurrency_limited"
    default_detail = "This client has as many requests in flight as it may; retry when one finishes."


class UploadsLimited(Throttled):
    code = "uploads_limited"
    default_detail = "This client is already streaming as many uploads as it may."


class UpstreamQueueFull(Throttled):
    status = 503
    code = "upstream_queue_full"
    default_detail = "ProGet is at the gateway's in-flight cap and the wait queue is full."


class UpstreamQueueTimeout(Throttled):
    status = 503
    code = "upstream_queue_timeout"
    default_detail = "ProGet stayed at the gateway's in-flight cap for longer than the queue waits."


class RateLimitBackendUnavailable(Throttled):
    status = 503
    code = "rate_limit_backend_unavailable"
    default_detail = "The shared rate-limit store did not answer; the gateway is set to refuse then."
