"""Write authorization: TokenReview against a loopback server speaking the TokenReview API,
static tokens, and publisher key sets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from harness.ledger import audit, make_keys, service_config
from modeltrust.chain.auth import (
    AuthError,
    PublisherSet,
    StaticTokens,
    TokenReviewAuthenticator,
    TokenReviewConfig,
)
from modeltrust.chain.entries import entry_to_json
from modeltrust.chain.service import LedgerService

pytestmark = pytest.mark.integration
LEDGER_SA_TOKEN = "ledger-own-credential"
OPERATOR = "system:serviceaccount:modeltrust:operator"
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


class FakeApiServer:
    """Speaks POST /apis/authentication.k8s.io/v1/tokenreviews like kube-apiserver."""

    def __init__(self) -> None:
        self.users = {"operator-token": OPERATOR, "other-token": "system:serviceaccount:x:y"}
        # Audiences a token was issued for (kube-apiserver's own audience unless listed).
        self.token_audiences = {"ledger-bound-token": ["modeltrust-ledger"]}
        self.users["ledger-bound-token"] = OPERATOR
        # False: an authenticator that ignores spec.audiences (answers without status.audiences).
        self.audience_aware = True
        self.reviews: list[dict[str, Any]] = []
        self.down = False

    async def review(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {LEDGER_SA_TOKEN}":
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        if self.down:
            return web.json_response({"kind": "Status", "code": 500}, status=500)
        body = await request.json()
        assert body["kind"] == "TokenReview"
        assert body["apiVersion"] == "authentication.k8s.io/v1"
        self.reviews.append(body)
        token = body["spec"]["token"]
        user = self.users.get(token)
        status: dict[str, Any] = {"authenticated": user is not None}
        if user and self.audience_aware:
            issued = self.token_audiences.get(token, [API_AUDIENCE])
            wanted = body["spec"].get("audiences") or [API_AUDIENCE]
            status["audiences"] = [a for a in wanted if a in issued]
            if not status["audiences"]:
                user, status = None, {"authenticated": False}
        if user:
            status["user"] = {"username": user, "groups": ["system:serviceaccounts"]}
        else:
            status["error"] = "invalid bearer token"
        return web.json_response({**body, "status": status}, status=201)


@pytest.fixture
async def apiserver(tmp_path: Path) -> AsyncIterator[tuple[FakeApiServer, str]]:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", fake.review)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _config(
    tmp_path: Path, url: str, cache: float = 30.0, audiences: tuple[str, ...] = ()
) -> TokenReviewConfig:
    cred = tmp_path / "sa-token"
    cred.write_text(LEDGER_SA_TOKEN + "\n")
    return TokenReviewConfig(
        api_url=url,
        credentials_file=cred,
        allowed_usernames=frozenset({OPERATOR}),
        audiences=audiences,
        cache_seconds=cache,
    )


async def test_tokenreview_allows_only_configured_users(
    tmp_path: Path, apiserver: tuple[FakeApiServer, str]
) -> None:
    fake, url = apiserver
    auth = TokenReviewAuthenticator(_config(tmp_path, url))
    try:
        assert await auth.authenticate("operator-token") == OPERATOR
        with pytest.raises(AuthError, match="may not write") as other:
            await auth.authenticate("other-token")
        assert other.value.status == 403
        with pytest.raises(AuthError, match="invalid bearer token") as bad:
            await auth.authenticate("stolen")
        assert bad.value.status == 401
        # A success is cached briefly; failures never are.
        await auth.authenticate("operator-token")
        tokens = [r["spec"]["token"] for r in fake.reviews]
        assert tokens.count("operator-token") == 1
        with pytest.raises(AuthError):
            await auth.authenticate("stolen")
        assert [r["spec"]["token"] for r in fake.reviews].count("stolen") == 2
    finally:
        await auth.close()


async def test_an_audience_bound_ledger_accepts_only_tokens_issued_for_it(
    tmp_path: Path, apiserver: tuple[FakeApiServer, str]
) -> None:
    fake, url = apiserver
    auth = TokenReviewAuthenticator(_config(tmp_path, url, audiences=("modeltrust-ledger",)))
    try:
        assert await auth.authenticate("ledger-bound-token") == OPERATOR
        assert fake.reviews[-1]["spec"]["audiences"] == ["modeltrust-ledger"]
        # The same service account's API-server token is refused: it is not for this ledger.
        with pytest.raises(AuthError, match="invalid bearer token") as api_token:
            await auth.authenticate("operator-token")
        assert api_token.value.status == 401
        # An authenticator that ignores spec.audiences says "authenticated" without naming the
        # audience: the ledger cannot tell an API-server token from its own, so it refuses.
        fake.audience_aware = False
        with pytest.raises(AuthError, match="not bound to this ledger's audience") as unaware:
            await auth.authenticate("operator-token")
        assert unaware.value.status == 401
    finally:
        await auth.close()


async def test_unavailable_tokenreview_is_a_refusal(
    tmp_path: Path, apiserver: tuple[FakeApiServer, str]
) -> None:
    fake, url = apiserver
    fake.down = True
    auth = TokenReviewAuthenticator(_config(tmp_path, url, cache=0))
    try:
        with pytest.raises(AuthError, match="answered 500") as caught:
            await auth.authenticate("operator-token")
        assert caught.value.status == 503
    finally:
        await auth.close()
    nowhere = TokenReviewAuthenticator(_config(tmp_path, "http://127.0.0.1:9"))
    try:
        with pytest.raises(AuthError, match="unavailable"):
            await nowhere.authenticate("operator-token")
    finally:
        await nowhere.close()


async def test_ledger_appends_audit_entries_for_reviewed_tokens_only(
    tmp_path: Path, apiserver: tuple[FakeApiServer, str]
) -> None:
    fake, url = apiserver
    keys = make_keys(tmp_path / "k")
    tokens = TokenReviewAuthenticator(_config(tmp_path, url))
    service = LedgerService(service_config(keys, tmp_path / "l.db", tokens=tokens))
    await service.start()
    body = orjson.dumps(entry_to_json(audit(1)))
    try:
        async with aiohttp.ClientSession() as s:
            for token, want in (("other-token", 403), ("nope", 401), ("operator-token", 201)):
                headers = {"Authorization": f"Bearer {token}"}
                async with s.post(service.url + "/v1/entries", data=body, headers=headers) as r:
                    assert r.status == want, await r.text()
            fake.down = True  # cached success still allows the same token for a short while
            async with s.post(
                service.url + "/v1/entries",
                data=orjson.dumps(entry_to_json(audit(2))),
                headers={"Authorization": "Bearer operator-token"},
            ) as r:
                assert r.status == 201
    finally:
        await service.stop()


async def test_static_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\n\nalpha\n beta \n")
    tokens = StaticTokens.load(path)
    assert await tokens.authenticate("beta") == "static-token"
    with pytest.raises(AuthError):
        await tokens.authenticate("gamma")
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty"):
        StaticTokens.load(empty)


def test_publisher_set_loads_directories_and_multi_key_files(tmp_path: Path) -> None:
    a, b = make_keys(tmp_path / "a"), make_keys(tmp_path / "b")
    combined = tmp_path / "all.pem"
    combined.write_bytes(
        (a.publishers_dir / "publisher.pem").read_bytes()
        + (b.publishers_dir / "publisher.pem").read_bytes()
    )
    assert len(PublisherSet.load(combined).key_ids) == 2
    assert len(PublisherSet.load(a.publishers_dir).key_ids) == 1
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="no PEM public key"):
        PublisherSet.load(junk)
