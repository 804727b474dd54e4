"""API tokens: roles, and a store that keeps only each token's hash.

A token is 32 random bytes shown once at creation; the store keeps its SHA-256, so a copy of the
database grants nothing. A token is looked up by that hash on every request, so a revocation
takes effect at the next request, in every process sharing the file. The tokens live in their
own SQLite file in the data directory, not in the readings store: they belong to the API that
checks them, whichever backend holds the readings.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from faultline.clock import Clock, SystemClock

PREFIX = "fl_"
_ID_CHARS = 8  # of the hash's hex digits: a public handle for list and revoke


class Role(IntEnum):
    """Each role may do everything the roles below it may (viewer < ingest < operator < admin).

    viewer reads; ingest also posts readings (stations, bridges); operator also makes operational
    writes (predictions on demand, alarm handling); admin everything, including model promotion.
    """

    VIEWER = 1
    INGEST = 2
    OPERATOR = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(r.label for r in cls)
            raise ValueError(f"unknown role {text!r}: choose one of {names}") from None


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: Role
    created_at: int  # epoch ms
    revoked_at: int | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
)
"""


class TokenStore:
    """Tokens in one SQLite file; safe to share between threads and processes."""

    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute(_SCHEMA)

    def create(self, role: Role, name: str = "") -> tuple[str, TokenInfo]:
        """A new token: its secret (shown once, never stored) and what is kept of it."""
        secret = PREFIX + secrets.token_urlsafe(32)
        digest = _digest(secret)
        info = TokenInfo(
            id=digest[:_ID_CHARS],
            name=name or f"{role.label}-{digest[:4]}",
            role=role,
            created_at=self._clock.now_ms(),
            revoked_at=None,
        )
        with self._lock:
            self._db.execute(
                "INSERT INTO tokens (hash, id, name, role, created_at) VALUES (?, ?, ?, ?, ?)",
                (digest, info.id, info.name, role.label, info.created_at),
            )
        return secret, info

    def verify(self, secret: str) -> TokenInfo | None:
        """The active token with this secret, or None (unknown or revoked)."""
        # Looking up by hash leaks nothing through timing: an attacker cannot steer the hash.
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, role, created_at, revoked_at FROM tokens WHERE hash = ?",
                (_digest(secret),),
            ).fetchone()
        if row is None or row[4] is not None:
            return None
        return _info(row)

    def list(self) -> list[TokenInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, role, created_at, revoked_at FROM tokens ORDER BY created_at, id"
            ).fetchall()
        return [_info(row) for row in rows]

    def any_active(self) -> bool:
        return any(t.active for t in self.list())

    def revoke(self, handle: str) -> TokenInfo:
        """Revoke the token with this id or name; a name must be unambiguous."""
        matches = [t for t in self.list() if t.active and handle in (t.id, t.name)]
        if not matches:
            raise LookupError(f"no active token has the id or name {handle!r}")
        if len(matches) > 1:
            ids = ", ".join(t.id for t in matches)
            raise LookupError(
                f"{len(matches)} active tokens are named {handle!r}: revoke by id ({ids})"
            )
        token = matches[0]
        now = self._clock.now_ms()
        with self._lock:
            self._db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (now, token.id))
        return TokenInfo(token.id, token.name, token.role, token.created_at, now)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _info(row: tuple[str, str, str, int, int | None]) -> TokenInfo:
    return TokenInfo(row[0], row[1], Role.parse(row[2]), row[3], row[4])
