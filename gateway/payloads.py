"""Find and cut ProGet key fields out of a query string, an urlencoded form and a JSON document.

ProGet (ASP.NET) reads a key from query ``key``/``API_Key``, form ``key`` and the JSON root's
``API_Key``, matching names case-insensitively. Each scanner returns every value it found and the
input with exactly those fields removed; every other byte is kept as sent, so the rewritten body
means what the client meant (field order, spacing, number spellings, escapes).

A field we cannot read the way ProGet would (broken JSON, a non-ASCII form) is refused, never
forwarded as is: if we cannot see a key, we cannot promise it is gone. So is a name that is a key
name in another spelling (`` key``, ``key[]``, ``apikey``, full-width ``API_Key``) and, in JSON, a
key name anywhere but as a member of the root object: some binder could read either as the key, and
guessing which would decide whether a client's own key reaches ProGet (:func:`classify_name`).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass
from enum import Enum
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Final
from urllib.parse import unquote_to_bytes

from gateway.errors import (
    BodyUnparseable,
    CredentialAmbiguous,
    CredentialMalformed,
    QueryInvalid,
    TooManyParameters,
)

QUERY_NAMES: Final = ("key", "api_key")  # what ProGet reads from a query or a form
JSON_NAMES: Final = ("api_key",)  # what ProGet reads from the JSON root object
# Every credential name, folded (see is_credential_name): ProGet's ``key`` and ``API_Key``, and
# ``apikey``, which a binder ignoring separators, or a camelCase naming policy, would read as API_Key.
CREDENTIAL_NAMES: Final = frozenset({"key", "apikey"})
_INDEX: Final = re.compile(r"\[[^\]]*\]")  # key[], key[0], key[x], [0].key
_NOT_ALNUM: Final = re.compile(r"[\W_]+")  # \w is str.isalnum() plus '_'
_WS: Final = " \t\r\n"
_ODD_ESCAPE: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class Scan:
    found: tuple[tuple[str, str], ...]  # (source, value) for each credential field, in order
    stripped: bytes  # the input without those fields

    def __repr__(self) -> str:  # values are secrets
        return f"Scan(sources={[s for s, _ in self.found]!r}, stripped_len={len(self.stripped)})"


def names_match(name: str, canonical: str) -> bool:
    """Case-insensitive name equality, erring towards a match.

    .NET's OrdinalIgnoreCase upper-cases each character, so ``ap\u0131_key`` (dotless i) equals
    ``API_KEY`` there; comparing upper, lower and casefold forms covers those spellings.
    """
    return (
        name.upper() == canonical.upper()
        or name.lower() == canonical.lower()
        or name.casefold() == canonical.casefold()
    )


class NameClass(Enum):
    EXACT = "exact"  # a spelling ProGet reads: the value is a credential, cut out
    AMBIGUOUS = "ambiguous"  # a credential name in another spelling: refused
    UNRELATED = "unrelated"


def classify_name(name: str, exact: tuple[str, ...]) -> NameClass:
    """Is ``name`` one of the ``exact`` spellings ProGet reads, another spelling of a credential
    name, or unrelated? The one decision used for query, form and JSON names."""
    if any(names_match(name, canonical) for canonical in exact):
        return NameClass.EXACT
    return NameClass.AMBIGUOUS if is_credential_name(name) else NameClass.UNRELATED


def is_credential_name(name: str) -> bool:
    """``name`` equals a credential name after Unicode compatibility folding (NFKC), case folding
    (.NET's upper-casing too), removing index suffixes and every character that is not a letter or
    digit (whitespace, ``_ - .``, invisible format characters), or taking its last dotted segment
    (a model binder's ``prefix.key``)."""
    # JSON documents repeat their member names: short ones are remembered (a bounded cache).
    return _is_credential_short(name) if len(name) <= 64 else _is_credential(name)


def _is_credential(name: str) -> bool:
    if name.isascii():  # the common case, and NFKC and case folding keep ASCII in ASCII
        return "k" in name.lower() and not CREDENTIAL_NAMES.isdisjoint(_stripped(name.lower()))
    text = unicodedata.normalize("NFKC", name)
    folded = unicodedata.normalize("NFKC", text.upper().casefold())
    return not CREDENTIAL_NAMES.isdisjoint(_stripped(folded))


_is_credential_short: Final = functools.lru_cache(maxsize=4096)(_is_credential)


def _stripped(folded: str) -> tuple[str, str]:
    """The name without index suffixes and non-alphanumerics; and its last dotted segment so."""
    text = _INDEX.sub("", folded)
    return _letters(text), _letters(text.rpartition(".")[2])


def _letters(text: str) -> str:
    return _NOT_ALNUM.sub("", text)


def scan_query(query: bytes, *, max_params: int = 256) -> Scan:
    """The query's ``key``/``API_Key`` parameters; the rest of the query byte for byte."""
    return _scan_pairs(query, "query", max_params)


def scan_form(body: bytes, *, max_params: int = 1024) -> Scan:
    """An urlencoded form's ``key``/``API_Key`` fields; anything not printable ASCII is refused."""
    if not all(0x20 < b < 0x7F for b in body):
        raise BodyUnparseable("An urlencoded form must be printable ASCII without spaces.")
    return _scan_pairs(body, "form", max_params)


def _scan_pairs(data: bytes, where: str, max_params: int) -> Scan:
    pieces = data.split(b"&")
    if sum(1 for p in pieces if p) > max_params:
        raise TooManyParameters(f"More than {max_params} {where} parameters.")
    found: list[tuple[str, str]] = []
    kept: list[bytes] = []
    for piece in pieces:
        raw_name, _, raw_value = piece.partition(b"=")
        if _ODD_ESCAPE.search(raw_name):
            # IIS/System.Web decode %u006B as 'k'; ASP.NET Core leaves it: a name we cannot read the
            # way every ProGet host would could be a hidden key parameter.
            raise (BodyUnparseable if where == "form" else QueryInvalid)(
                f"A {where} parameter name uses %u or a '%' that is not a %XX escape."
            )
        name = _form_decode(raw_name)
        kind = classify_name(name, QUERY_NAMES)
        if kind is NameClass.AMBIGUOUS:
            raise CredentialAmbiguous(f"A {where} parameter is a credential name in another spelling.")
        if kind is NameClass.UNRELATED:
            kept.append(piece)
            continue
        canonical = next(c for c in QUERY_NAMES if names_match(name, c))
        found.append((f"{where}:{canonical}", _credential_value(_form_decode(raw_value), where)))
    stripped = data if not found else b"&".join(kept)
    return Scan(tuple(found), stripped)


def _form_decode(raw: bytes) -> str:
    """``+`` is a space and ``%XX`` a byte, as ASP.NET decodes; a stray ``%`` stays literal."""
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")


def _credential_value(value: str, where: str) -> str:
    if not value or not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise CredentialMalformed(f"A {where} credential is empty or not printable ASCII.")
    return value


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, strict=True)
# Objects as tuples of their members in order, duplicates kept (a dict would hide one); arrays stay lists.
_PAIRS: Final = json.JSONDecoder(parse_constant=_reject_constant, strict=True, object_pairs_hook=tuple)


def scan_json(body: bytes) -> Scan:
    """The root object's ``API_Key`` members; every other byte of the document kept.

    A credential name in any other spelling at the root, or in any spelling anywhere else (nested
    objects, arrays, under a non-object root), is refused: binders differ in what they read there.
    """
    text = _strict_text(body)
    try:
        # the whole document must be valid before we trust our walk of it
        _check_names(_PAIRS.decode(text))
        members, close = _root_members(text)
    except (ValueError, RecursionError):
        raise BodyUnparseable("The JSON body is not valid JSON.") from None
    found = [
        (i, _json_value(text, m))
        for i, m in enumerate(members)
        if classify_name(m.name, JSON_NAMES) is NameClass.EXACT
    ]
    if not found:
        return Scan((), body)
    drop = {i for i, _ in found}
    return Scan(
        tuple(("json:API_Key", value) for _, value in found),
        _without(text, members, drop, close).encode("utf-8"),
    )


def _check_names(doc: object) -> None:
    """Walk the parsed document (iteratively: its depth is the parser's, not ours to recurse)."""
    nested: list[object] = [doc]
    if isinstance(doc, tuple):
        if any(classify_name(name, JSON_NAMES) is NameClass.AMBIGUOUS for name, _ in doc):
            raise CredentialAmbiguous("A JSON root member is a credential name in another spelling.")
        nested = [value for _, value in doc]
    stack = [node for node in nested if isinstance(node, tuple | list)]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, tuple | list))
            continue
        for name, value in node:
            if is_credential_name(name):
                raise CredentialAmbiguous("A credential name is in the JSON body below its root object.")
            if isinstance(value, tuple | list):
                stack.append(value)


def _strict_text(body: bytes) -> str:
    if body.startswith(b"\xef\xbb\xbf"):
        raise BodyUnparseable("The JSON body starts with a byte-order mark.")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyUnparseable("The JSON body is not UTF-8.") from None


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    start: int  # index of the name's opening quote
    value_start: int
    end: int  # index just past the value


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _root_members(text: str) -> tuple[list[_Member], int]:
    """Members of a root object with their spans, and the index of its ``}`` (-1 if not an object)."""
    i = _skip(text, 0)
    if not text.startswith("{", i):
        return [], -1
    members: list[_Member] = []
    i = _skip(text, i + 1)
    while text[i] != "}":
        name, after_name = scanstring(text, i + 1, True)
        colon = _skip(text, after_name)
        value_start = _skip(text, colon + 1)
        _, end = _DECODER.raw_decode(text, value_start)
        members.append(_Member(name, i, value_start, end))
        i = _skip(text, end)
        if text[i] == ",":
            i = _skip(text, i + 1)
    return members, i


def _json_value(text: str, member: _Member) -> str:
    value, _ = _DECODER.raw_decode(text, member.value_start)
    if not isinstance(value, str):
        raise CredentialMalformed("The JSON API_Key must be a string.")
    return _credential_value(value, "JSON")


def _without(text: str, members: list[_Member], drop: set[int], close: int) -> str:
    """Rebuild the root object from the kept members, reusing the original separators."""
    kept = [i for i in range(len(members)) if i not in drop]
    if not kept:
        return text[: members[0].start] + text[close:]
    parts = [text[: members[0].start], _span(text, members[kept[0]])]
    for i in kept[1:]:
        parts.append(text[members[i - 1].end : members[i].start])  # the original ", " before it
        parts.append(_span(text, members[i]))
    parts.append(text[members[-1].end :])
    return "".join(parts)


def _span(text: str, member: _Member) -> str:
    return text[member.start : member.end]
