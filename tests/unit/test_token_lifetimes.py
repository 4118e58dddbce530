"""Token entries with labels and lifetimes, token files, and the expiry an identity check enforces."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import lifetime_warnings
from gateway.credentials import Credentials
from gateway.errors import TokenExpired, TokenUnknown
from gateway.identity import identify
from gateway.settings import ConfigError, TokenRecord, build_config, token_hash

NOW = datetime.now(UTC).replace(microsecond=0)
OLD, NEW, FILED = "pgw_old_" + "o" * 30, "pgw_new_" + "n" * 30, "pgw_file_" + "f" * 30
BASE: dict[str, Any] = {
    "upstream": {"url": "http://proget.internal:8624/"},
    "keys": {"read": {"value": "read-key-0123456789", "expires": (NOW + timedelta(days=3)).isoformat()}},
    "clients": [
        {
            "name": "ci",
            "tokens": [
                {
                    "hash": f"sha256:{token_hash(OLD)}",
                    "label": "ci-old",
                    "not_after": (NOW - timedelta(days=1)).isoformat(),
                },
                {
                    "hash": f"sha256:{token_hash(NEW)}",
                    "label": "ci-new",
                    "not_after": (NOW + timedelta(days=90)).isoformat(),
                },
            ],
            "rules": [{"key": "read"}],
        }
    ],
}


def _identify(config: Any, token: str) -> Any:
    return asyncio.run(
        identify(Credentials(token=token, sources=("header:x-apikey",), query=b"", body=None), config)
    )


def test_an_expired_token_is_refused_as_expired_with_its_label() -> None:
    config = build_config(copy.deepcopy(BASE))
    with pytest.raises(TokenExpired) as info:
        _identify(config, OLD)
    assert info.value.code == "token_expired" and info.value.label == "ci-old"
    assert _identify(config, NEW).label == "ci-new"
    with pytest.raises(TokenUnknown):
        _identify(config, "pgw_never_" + "x" * 30)


def test_not_after_needs_a_time_zone_and_labels_are_names() -> None:
    raw = copy.deepcopy(BASE)
    raw["clients"][0]["tokens"][0]["not_after"] = "2027-03-31T00:00:00"
    raw["clients"][0]["tokens"][1]["label"] = "has space"
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    assert any(p.startswith("clients[0].tokens[0].not_after") for p in info.value.problems), (
        info.value.problems
    )
    assert any(p.startswith("clients[0].tokens[1].label") for p in info.value.problems), info.value.problems


def test_tokens_file_adds_entries_in_both_forms(tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text(
        f'- "sha256:{token_hash(FILED)}"\n- {{hash: "sha256:{token_hash("pgw_other_" + "q" * 30)}", label: filed}}\n'
    )
    raw = copy.deepcopy(BASE)
    raw["clients"][0]["tokens_file"] = "tokens.yaml"
    config = build_config(raw, base=tmp_path)
    assert config.token_index[token_hash(FILED)] == TokenRecord("ci")
    assert _identify(config, FILED).client.name == "ci"


def test_a_bad_tokens_file_is_a_problem_in_words(tmp_path: Path) -> None:
    raw = copy.deepcopy(BASE)
    raw["clients"][0]["tokens_file"] = "missing.yaml"
    with pytest.raises(ConfigError) as info:
        build_config(raw, base=tmp_path)
    assert (
        f"clients[0].tokens_file: cannot read {tmp_path / 'missing.yaml'}: no such file or directory"
        in info.value.problems
    )
    (tmp_path / "bad.yaml").write_text("- not-a-hash\n")
    raw["clients"][0]["tokens_file"] = "bad.yaml"
    with pytest.raises(ConfigError) as info:
        build_config(raw, base=tmp_path)
    assert any("bad.yaml: entry" in p and "sha256" in p for p in info.value.problems), info.value.problems


def test_check_warns_about_what_ends_within_two_weeks() -> None:
    warnings = lifetime_warnings(build_config(copy.deepcopy(BASE)), NOW)
    assert len(warnings) == 2
    assert warnings[0].startswith("client 'ci': token 'ci-old' expired at")
    assert warnings[1].startswith("key 'read' expires at")
    assert "(in 2 day(s))" in warnings[1] or "(in 3 day(s))" in warnings[1]


@pytest.mark.parametrize("first", ["tokens", "tokens_file"])
@pytest.mark.parametrize("second", ["tokens", "tokens_file", "own tokens_file"])
def test_one_hash_for_two_clients_is_refused_wherever_it_is_written(
    tmp_path: Path, first: str, second: str
) -> None:
    """Every placement of one hash: in a client's list or its file, and in another client's list or
    file (refused: the token would pick either client), or twice in the same client (accepted)."""
    entry = f"sha256:{token_hash(NEW)}"

    def client(name: str, where: str) -> dict[str, Any]:
        if where == "tokens":
            return {"name": name, "tokens": [entry], "rules": [{"key": "read"}]}
        (tmp_path / f"{name}.yaml").write_text(f'- "{entry}"\n')
        return {"name": name, "tokens_file": f"{name}.yaml", "rules": [{"key": "read"}]}

    raw = {**copy.deepcopy(BASE), "clients": [client("a", first)]}
    if second == "own tokens_file":
        (tmp_path / "own.yaml").write_text(f'- "{entry}"\n')
        raw["clients"][0]["tokens_file"] = "own.yaml"
        assert build_config(raw, base=tmp_path).token_index[token_hash(NEW)].client == "a"
        return
    raw["clients"].append(client("b", second))
    with pytest.raises(ConfigError) as info:
        build_config(raw, base=tmp_path)
    assert info.value.problems == ["clients[1].tokens: a token hash is also used by 'a'"]
