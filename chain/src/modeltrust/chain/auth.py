"""Write authorization: publisher signatures for registrations and revocations, tokens for audits.

Every failure is a refusal (fail closed): an unknown signer, a signature that does
not verify, a missing or unknown token, a TokenReview that fails or cannot be made.
Only successful TokenReviews are cached, briefly, keyed by the token's SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from modeltrust.chain.entries import Entry, Registration, Revocation
from modeltrust.chain.errors import ChainError, ConfigError
from modeltrust.chain.signatures import (
    key_id,
    load_public_key,
    verify_registration,
    verify_revocation,
)


class AuthError(ChainError):
    """A write was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


class PublisherSet:
    """The publisher public keys this ledger accepts registrations and revocations from."""

    def __init__(self, keys: Mapping[str, Any]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_pem_blocks(cls, pems: Iterable[bytes]) -> PublisherSet:
        keys = {}
        for pem in pems:
            public_key = load_public_key(pem)
            keys[key_id(public_key)] = public_key
        return cls(keys)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PublisherSet:
        """A directory of ``*.pem`` files, or one file holding one or more PEM public keys."""
        p = Path(path)
        files = sorted(p.glob("*.pem")) if p.is_dir() else [p]
        blocks: list[bytes] = []
        for f in files:
            found = _PEM_BLOCK.findall(f.read_bytes())
            if not found:
                raise ConfigError(f"{f} holds no PEM public key (-----BEGIN PUBLIC KEY-----)")
            blocks.extend(found)
        return cls.from_pem_blocks(blocks)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def check(self, entry: Entry) -> None:
        """Refuse a registration or revocation not signed by a key of this set."""
        if not isinstance(entry, Registration | Revocation):
            return
        public_key = self._keys.get(entry.signer_key_id)
        if public_key is None:
            raise AuthError(
                f"signer key id {entry.signer_key_id} is not in this ledger's publisher set; "
                "ask the ledger operator to add the publisher's public key",
                403,
            )
        try:
            if isinstance(entry, Registration):
                verify_registration(entry, public_key)
            else:
                verify_revocation(entry, public_key)
        except ChainError as exc:
            raise AuthError(f"publisher signature check failed: {exc}", 403) from exc


class TokenAuthenticator(Protocol):
    async def authenticate(self, token: str) -> str:
        """The identity the bearer token stands for; raises AuthError to refuse."""
        ...


class StaticTokens:
    """Tokens from a file (one per line, ``#`` comments) or a comma-separated environment value."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = {hashlib.sha256(t.encode()).digest() for t in tokens if t}
        if not self._digests:
            raise ConfigError("the static token list is empty: no audit writer could authenticate")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StaticTokens:
        lines = Path(path).read_text().splitlines()
        return cls(s for line in lines if (s := line.strip()) and not s.startswith("#"))

    @classmethod
    def from_env(cls, value: str) -> StaticTokens:
        return cls(t.strip() for t in value.split(","))

    async def authenticate(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).digest()
        # Compare digests in constant time; the set lookup alone could leak timing.
        if any(hmac.compare_digest(digest, d) for d in self._digests):
            return "static-token"
        raise AuthError("bearer token is not one of the ledger's static tokens", 401)


@dataclass(frozen=True)
class TokenReviewConfig:
    api_url: str  # e.g. https://kubernetes.default.svc
    credentials_file: Path  # the ledger's own service-account token (re-read: it rotates)
    allowed_usernames: frozenset[str]
    ca_file: Path | None = None
    audiences: tuple[str, ...] = ()
    cache_seconds: float = 30.0
    timeout_seconds: float = 5.0

    @classmethod
    def in_cluster(cls, allowed_usernames: Iterable[str]) -> TokenReviewConfig:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigError(
                "not in a cluster (KUBERNETES_SERVICE_HOST unset); pass --tokenreview-url"
            )
        sa = Path("/var/run/secrets/kubernetes.io/serviceaccount")
        return cls(
            api_url=f"https://{host}:{port}",
            credentials_file=sa / "token",
            allowed_usernames=frozenset(allowed_usernames),
            ca_file=sa / "ca.crt",
        )


class TokenReviewAuthenticator:
    """Asks the Kubernetes API (TokenReview) who a bearer token belongs to."""

    def __init__(self, config: TokenReviewConfig) -> None:
        if not config.allowed_usernames:
            raise ConfigError(
                "tokenreview mode needs at least one allowed service-account username"
            )
        self._config = config
        self._cache: dict[bytes, tuple[float, str]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_ctx: ssl.SSLContext | bool = True
            if self._config.ca_file is not None:
                ssl_ctx = ssl.create_default_context(cafile=str(self._config.ca_file))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_ctx),
                timeout=aiohttp.ClientTimeout(total=self._config.timeout_seconds),
            )
        return self._session

    async def authenticate(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        username = await self._review(token)
        if username not in self._config.allowed_usernames:
            raise AuthError(f"{username} may not write audit entries to this ledger", 403)
        if self._config.cache_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._config.cache_seconds, username)
        return username

    async def _review(self, token: str) -> str:
        cfg = self._config
        spec: dict[str, Any] = {"token": token}
        if cfg.audiences:
            spec["audiences"] = list(cfg.audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        url = cfg.api_url.rstrip("/") + "/apis/authentication.k8s.io/v1/tokenreviews"
        try:
            own = cfg.credentials_file.read_text().strip()
            async with self._client().post(
                url, json=body, headers={"Authorization": f"Bearer {own}"}
            ) as resp:
                if resp.status != 201 and resp.status != 200:
                    text = (await resp.text())[:200]
                    raise AuthError(
                        f"token review failed: the API server answered {resp.status}: {text}", 503
                    )
                answer = await resp.json(content_type=None)
        except AuthError:
            raise
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise AuthError(f"token review unavailable ({exc!r}); refusing the write", 503) from exc
        status = answer.get("status") if isinstance(answer, dict) else None
        if not isinstance(status, dict):
            raise AuthError("token review answer has no status; refusing the write", 503)
        if status.get("authenticated") is not True:
            reason = status.get("error") or "not authenticated"
            raise AuthError(f"bearer token rejected by token review: {reason}", 401)
        if cfg.audiences:
            # An authenticator that ignores spec.audiences answers with no (or other)
            # status.audiences: the token may then be an API-server token, never accepted here.
            granted = status.get("audiences")
            if not isinstance(granted, list) or not any(a in cfg.audiences for a in granted):
                raise AuthError(
                    "bearer token is not bound to this ledger's audience "
                    f"({', '.join(cfg.audiences)}); the token review granted {granted or 'none'}",
                    401,
                )
        user = status.get("user")
        username = user.get("username") if isinstance(user, dict) else None
        if not isinstance(username, str) or not username:
            raise AuthError("token review answer names no user; refusing the write", 503)
        return username
