"""Built-in authenticator: bearer tokens with scopes (`EDGETUNE_AUTH=token`).

Tokens live in `<home>/auth/tokens.json` as sha256 hashes, never in clear; `edgetune tokens
create NAME --scopes infer,finetune` prints a new token once. Clients send the metadata
`authorization: Bearer <token>`. The file is re-read when it changes, so creating or revoking
a token takes effect without a restart. A presented token is hashed and compared with every
stored hash in constant time (`hmac.compare_digest`, no early exit).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edgetune.auth import SCOPES, Authenticator, Principal
from edgetune.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from edgetune.plugins import hookimpl
from edgetune.settings import Settings

TOKEN_PREFIX = "et_"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class StoredToken:
    """One token as stored: its name, scopes and the sha256 of its secret."""

    name: str
    scopes: frozenset[str]
    digest: bytes


class TokenStore:
    """The token file of a home: create, list, revoke (atomic rewrites, 0600)."""

    def __init__(self, home: Path) -> None:
        self.path = home / "auth" / "tokens.json"

    def load(self) -> list[StoredToken]:
        """Every stored token; an absent file means none."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"{self.path}: cannot read the token file: {exc}") from None
        return [
            StoredToken(t["name"], frozenset(t["scopes"]), bytes.fromhex(t["sha256"]))
            for t in raw.get("tokens", [])
        ]

    def create(self, name: str, scopes: list[str]) -> str:
        """Store a new token and return its secret (shown once, never stored)."""
        if not name or not set(name) <= _NAME_CHARS:
            raise InvalidArgument(f"token name {name!r}: use letters, digits, '.', '_' or '-'")
        unknown = [s for s in scopes if s not in SCOPES]
        if not scopes or unknown:
            raise InvalidArgument(
                f"scopes {','.join(unknown) or '(none)'}: choose from {', '.join(SCOPES)}"
            )
        tokens = self.load()
        if any(t.name == name for t in tokens):
            raise AlreadyExists(f"a token named {name!r} exists; revoke it first")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._save([*tokens, StoredToken(name, frozenset(scopes), _digest(secret))])
        return secret

    def revoke(self, name: str) -> None:
        """Delete the token called name."""
        tokens = self.load()
        kept = [t for t in tokens if t.name != name]
        if len(kept) == len(tokens):
            raise NotFound(f"no token named {name!r}")
        self._save(kept)

    def _save(self, tokens: list[StoredToken]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = {
            "tokens": [
                {"name": t.name, "scopes": sorted(t.scopes), "sha256": t.digest.hex()}
                for t in tokens
            ]
        }
        staged = self.path.with_suffix(".tmp")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(body, out, indent=2)
        staged.replace(self.path)


class TokenAuthenticator(Authenticator):
    """Bearer tokens from the home's token file."""

    name = "token"

    def __init__(self) -> None:
        self._store: TokenStore | None = None
        self._tokens: list[StoredToken] = []
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def configure(self, settings: Settings) -> None:
        """Read the token file of settings.home."""
        self._store = TokenStore(settings.home)
        self._refresh()

    def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise Unauthenticated(
                "missing credentials: send the metadata 'authorization: Bearer <token>'"
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization must be 'Bearer <token>'")
        digest = _digest(token.strip())
        match: StoredToken | None = None
        for stored in self._refresh():  # every hash is compared: no early exit
            if hmac.compare_digest(stored.digest, digest):
                match = stored
        if match is None:
            raise Unauthenticated("the token is not valid (unknown or revoked)")
        return Principal(match.name, match.scopes)

    def _refresh(self) -> list[StoredToken]:
        """The stored tokens, re-read when the file changed since the last call."""
        if self._store is None:
            raise Unauthenticated("token authentication is not configured")
        try:
            status = self._store.path.stat()
            stamp: tuple[int, int] | None = (status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._tokens = self._store.load() if stamp else []
                self._stamp = stamp
            return self._tokens


@hookimpl
def edgetune_register_authenticators(register: Callable[[Authenticator], None]) -> None:
    register(TokenAuthenticator())
