"""The token store keeps hashes only, and revocation is immediate; the CLI around it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from faultline.cli import main
from faultline.clock import ManualClock
from faultline.tokens import Role, TokenStore


@pytest.fixture
def tokens(tmp_path: Path) -> Iterator[TokenStore]:
    store = TokenStore(tmp_path / "tokens.db", ManualClock(1_767_225_600_000))
    yield store
    store.close()


def test_a_token_verifies_with_its_role_and_only_its_hash_is_stored(
    tokens: TokenStore, tmp_path: Path
) -> None:
    secret, info = tokens.create(Role.OPERATOR, "ops")

    assert tokens.verify(secret) == info
    assert info.role is Role.OPERATOR and info.name == "ops"
    assert tokens.verify(secret + "x") is None
    assert secret.encode() not in (tmp_path / "tokens.db").read_bytes()


def test_a_revoked_token_no_longer_verifies_even_in_another_process_view(
    tokens: TokenStore, tmp_path: Path
) -> None:
    secret, info = tokens.create(Role.ADMIN, "first")
    other = TokenStore(tmp_path / "tokens.db")  # e.g. the CLI while the server runs

    other.revoke(info.id)

    assert tokens.verify(secret) is None
    assert not tokens.any_active()
    other.close()


def test_revoking_by_an_ambiguous_name_is_refused(tokens: TokenStore) -> None:
    tokens.create(Role.VIEWER, "wall")
    tokens.create(Role.VIEWER, "wall")

    with pytest.raises(LookupError, match="revoke by id"):
        tokens.revoke("wall")
    with pytest.raises(LookupError, match="no active token"):
        tokens.revoke("nobody")


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.VIEWER < Role.INGEST < Role.OPERATOR < Role.ADMIN
    assert Role.parse(" Operator ") is Role.OPERATOR
    with pytest.raises(ValueError, match="viewer, ingest, operator, admin"):
        Role.parse("root")


def test_the_cli_prints_a_token_once_and_lists_and_revokes_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["token", "create", "--role", "ingest", "--name", "line-3", *data]) == 0
    secret = capsys.readouterr().out.splitlines()[-1]
    store = TokenStore(tmp_path / "tokens.db")
    assert store.verify(secret) is not None

    assert main(["token", "list", *data]) == 0
    listed = capsys.readouterr().out
    assert "line-3" in listed and "ingest" in listed and secret not in listed

    assert main(["token", "revoke", "line-3", *data]) == 0
    assert store.verify(secret) is None
    assert main(["token", "revoke", "line-3", *data]) == 1
    assert "no active token" in capsys.readouterr().err
    store.close()
