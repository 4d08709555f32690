"""API tokens: their secrets, their hashes, and checking one fast.

A secret is ``vp_`` and 32 random bytes (secrets.token_urlsafe); the
database keeps only its SHA-256 (a digest of a high-entropy secret needs no
salt or slow hash: nobody can guess the secret from it). Checking a token
costs one database read by the digest's unique index; TokenCache keeps a
check's result for a few seconds so that a busy client costs no database
round trip per call. Revoking a token or deleting a principal clears the
cache, so a revoked token is refused from the next call on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from controller.auth.caller import Principal

PREFIX = "vp_"
CACHE_SECONDS = 5.0
CACHE_SIZE = 4096


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Holder:
    """Whom a valid token names, and until when it is valid."""

    principal: Principal
    expires_at: dt.datetime


Lookup = Callable[[str], Awaitable[Holder | None]]
"""Finds the holder of a valid (not revoked) token by its digest."""


class TokenCache:
    """Checks of tokens by digest (or of principals by name), remembered for
    CACHE_SECONDS; used on the server's event loop only."""

    def __init__(self, lookup: Lookup, seconds: float = CACHE_SECONDS) -> None:
        self._lookup = lookup
        self._seconds = seconds
        self._seen: dict[str, tuple[float, Holder | None]] = {}

    async def principal(self, secret: str) -> Principal | None:
        """The principal of a valid, unexpired token; None for any other."""
        holder = await self.holder(digest(secret))
        if holder is None or holder.expires_at <= dt.datetime.now(dt.UTC):
            return None
        return holder.principal

    async def holder(self, key: str) -> Holder | None:
        """lookup(key), or what it gave less than CACHE_SECONDS ago."""
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[0] < now:
            seen = (now + self._seconds, await self._lookup(key))
            if len(self._seen) >= CACHE_SIZE:
                self._seen.clear()
            self._seen[key] = seen
        return seen[1]

    def clear(self) -> None:
        self._seen.clear()
