"""The one way tests sign in to an app: a token from its token store, sent as a bearer."""

from __future__ import annotations

from pathlib import Path

from faultline.tokens import Role, TokenStore

JSON = {"Content-Type": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_token(tokens: TokenStore) -> str:
    """A fresh admin token: reaches every handler."""
    return tokens.create(Role.ADMIN, "tests-admin")[0]


def token_for(tokens: TokenStore, role: Role) -> str:
    return tokens.create(role, f"tests-{role.label}")[0]


def ingest_token_in(data_dir: Path) -> str:
    """An ingest token in `data_dir`'s token store, for a `faultline up` started on it."""
    tokens = TokenStore(data_dir / "tokens.db")
    try:
        return tokens.create(Role.INGEST, "tests-ingest")[0]
    finally:
        tokens.close()
