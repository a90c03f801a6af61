"""A cosigning witness in front of a ledger, for e2e tests (the ledger has no witness yet).

    python witness_proxy.py --upstream http://127.0.0.1:8443 --log-key VKEY \
        --witness-key FILE --listen 127.0.0.1:9000

Forwards every request to the ledger. Every checkpoint note in an answer (the body of
GET /v1/checkpoint, the "checkpoint" field of JSON answers) is verified with the ledger's
key and then cosigned (C2SP tlog-cosignature) with the witness key; a note that does not
verify is passed on untouched, so the witness never vouches for what it did not check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aiohttp import ClientSession, web

from modeltrust.chain.checkpoint import verify_checkpoint
from modeltrust.chain.errors import ChainError
from modeltrust.chain.note import NoteSigner, NoteVerifier, add_signatures


def cosign(note: str, log: NoteVerifier, witness: NoteSigner) -> str:
    try:
        verify_checkpoint(note, log)
    except (ChainError, ValueError):
        return note
    return add_signatures(note, [witness])


def make_app(upstream: str, log: NoteVerifier, witness: NoteSigner) -> web.Application:
    async def forward(request: web.Request) -> web.StreamResponse:
        session: ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with session.request(
            request.method, upstream + request.rel_url.raw_path_qs,
            data=await request.read(), headers=headers,
        ) as resp:  # fmt: skip
            body = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            if request.path == "/v1/checkpoint" and resp.status == 200:
                body = cosign(body.decode(), log, witness).encode()
            elif "json" in ctype:
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                if isinstance(doc, dict) and isinstance(doc.get("checkpoint"), str):
                    doc["checkpoint"] = cosign(doc["checkpoint"], log, witness)
                    body = json.dumps(doc).encode()
            return web.Response(
                status=resp.status, body=body, content_type=ctype.split(";")[0] or None
            )

    async def start(app: web.Application) -> None:
        app["session"] = ClientSession()

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--log-key", required=True)
    parser.add_argument("--witness-key", required=True, type=Path)
    parser.add_argument("--listen", required=True)
    args = parser.parse_args()
    witness = NoteSigner.from_signer_key(args.witness_key.read_text())
    host, port = args.listen.rsplit(":", 1)
    app = make_app(args.upstream.rstrip("/"), NoteVerifier.from_verifier_key(args.log_key), witness)
    web.run_app(app, host=host, port=int(port), print=None)


if __name__ == "__main__":
    main()
