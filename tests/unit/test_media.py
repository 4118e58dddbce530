"""The one media-type classifier, against a table of types (issue 8 §2)."""

from __future__ import annotations

import pytest

from gateway.errors import ContentTypeNotAllowed
from gateway.media import MediaKind, classify

JSON, FORM, MULTIPART, OTHER = MediaKind.JSON, MediaKind.FORM, MediaKind.MULTIPART, MediaKind.OTHER


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        # ASP.NET Core: application/json, text/json, any +json suffix (HasJsonContentType, MVC formatters)
        (b"application/json", JSON),
        (b"Application/JSON ;charset=utf-8", JSON),
        (b"text/json", JSON),
        (b"TEXT/JSON; charset=utf-8", JSON),
        (b"application/problem+json", JSON),
        (b"application/vnd.oci.image.manifest.v1+json; charset=utf-8", JSON),
        (b"application/json-patch+json", JSON),
        (b"application/*+json", JSON),
        (b"text/x-custom+JSON", JSON),
        (b" application / json ", JSON),
        (b"application/json; x=x-www-form-urlencoded", JSON),  # parameters are not the type
        # not JSON for ASP.NET Core, but a reader that searches for 'json' would: inspected as JSON
        (b"application/jsonx", JSON),
        (b"application/x-json", JSON),
        (b"application/json5", JSON),
        # forms: System.Web tests a prefix, ASP.NET Core trims around '/'
        (b"application/x-www-form-urlencoded", FORM),
        (b"application/x-www-form-urlencoded; charset=utf-8", FORM),
        (b"APPLICATION/X-WWW-FORM-URLENCODED", FORM),
        (b"application /x-www-form-urlencoded", FORM),
        (b"application\t/\tx-www-form-urlencoded", FORM),
        (b"application/x-www-form-urlencodedX", FORM),
        (b"multipart/form-data; boundary=x", MULTIPART),
        (b"multipart/mixed", MULTIPART),
        (b"multipart/form-data; boundary=json", MULTIPART),
        (b"text/plain", OTHER),
        (b"application/octet-stream", OTHER),
        (b"application/xml", OTHER),
        (b"text/xml; charset=json", OTHER),
        (b"", OTHER),
        (None, OTHER),
    ],
)
def test_classify(content_type: bytes | None, kind: MediaKind) -> None:
    assert classify(content_type) is kind


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/x-www-form-urlencoded+json",  # seen: a form to us, JSON to ASP.NET Core
        b"Application/X-WWW-Form-Urlencoded+JSON; charset=utf-8",
        b"application/x-www-form-urlencoded-json",
        b"application/x-www-form-urlencoded; x=json",
        b"multipart/form-data+json; boundary=x",
        b"application/x-www-form-urlencoded, text/plain",
        b"application/json, application/x-www-form-urlencoded",
    ],
)
def test_types_read_two_ways_are_refused(content_type: bytes) -> None:
    with pytest.raises(ContentTypeNotAllowed):
        classify(content_type)
