"""Which request bodies the gateway reads: on feed routes none (npm publishes are JSON but stream)."""

from __future__ import annotations

import pytest

from gateway.canonical import canonicalize
from gateway.credentials import BodyKind, body_kind
from gateway.errors import ContentTypeNotAllowed
from gateway.framing import Head


def head(content_type: bytes | None, encoding: bytes | None = None) -> Head:
    return Head(10_000_000, False, "gw.example", content_type, encoding)


@pytest.mark.parametrize(
    ("target", "content_type"),
    [
        (b"/npm/npm-int/@scope%2fname", b"application/json"),  # npm publish: base64 tarball inside JSON
        (b"/npm/npm-int/-/user/org.couchdb.user:api", b"application/json"),
        (b"/nuget/nuget-int/", b"multipart/form-data; boundary=x"),  # NuGet push
        (b"/pypi/pypi-int/legacy", b"multipart/form-data; boundary=x"),  # twine upload
        (b"/v2/docker-int/app/manifests/1", b"application/vnd.oci.image.manifest.v1+json"),
        (b"/maven2/maven-int/a/b/1/b-1.pom", b"application/x-www-form-urlencoded"),
        (b"/cargo/cargo-int/api/v1/crates/new", b"application/json"),
    ],
)
def test_feed_bodies_stream_whatever_their_type(target: bytes, content_type: bytes) -> None:
    assert body_kind(canonicalize(target), head(content_type)) is BodyKind.STREAM
    assert body_kind(canonicalize(target), head(content_type, b"gzip")) is BodyKind.STREAM


def test_api_json_and_form_bodies_are_read_and_multipart_refused() -> None:
    api = canonicalize(b"/api/packages/internal/upload")
    assert body_kind(api, head(b"application/json")) is BodyKind.JSON
    assert body_kind(api, head(b"application/x-www-form-urlencoded")) is BodyKind.FORM
    with pytest.raises(ContentTypeNotAllowed):
        body_kind(api, head(b"multipart/form-data; boundary=x"))


@pytest.mark.parametrize(
    "target",
    [b"/api/json/Feeds_GetFeeds", b"/api/management/feeds/list", b"/endpoints/dir/metadata/x"],
)
def test_a_type_read_as_form_and_as_json_is_refused(target: bytes) -> None:
    """Seen: scanned as a form, read by ASP.NET Core as JSON, so a JSON root API_Key reached ProGet."""
    with pytest.raises(ContentTypeNotAllowed):
        body_kind(canonicalize(target), head(b"application/x-www-form-urlencoded+json"))


def test_suffixed_json_on_an_api_route_is_inspected() -> None:
    api = canonicalize(b"/api/json/Feeds_GetFeeds")
    assert body_kind(api, head(b"application/json-patch+json")) is BodyKind.JSON
    assert body_kind(api, head(b"text/json")) is BodyKind.JSON
