"""Real model servers on 127.0.0.1 for tests: a background-thread event loop per server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from modeltrust.chain.checkpoint import Checkpoint, sign_checkpoint
from modeltrust.chain.entries import Registration, entry_to_json, leaf_data
from modeltrust.chain.merkle import CompactRange, MemoryNodeStore, inclusion_proof, leaf_hash
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.signatures import generate_private_key, public_key_pem, sign_registration
from modeltrust.serving.model import ServedModel
from modeltrust.serving.oip import InferenceApp
from modeltrust.serving.runtime import build_app
from modeltrust.serving.server import HttpServer, ServerSettings, serve


def sha256_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class RunningServer:
    app: InferenceApp
    port: int

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = self.connect()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def infer(self, document: dict[str, Any], model: str | None = None) -> tuple[int, Any]:
        name = model or self.app.model.name
        status, _, body = self.request(
            "POST",
            f"/v2/models/{name}/infer",
            orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY),
        )
        return status, orjson.loads(body) if body else None


@contextmanager
def running_server(
    model_path: Path, name: str, settings: ServerSettings | None = None
) -> Iterator[RunningServer]:
    """Serve `model_path` on an ephemeral port in a background thread's event loop."""
    model = ServedModel.load(model_path, name=name, expected_digest=sha256_digest(model_path))
    app = build_app(model)
    settings = settings or ServerSettings(port=0)
    started = threading.Event()
    holder: dict[str, Any] = {}

    def on_started(server: HttpServer) -> None:
        holder["server"] = server
        holder["loop"] = asyncio.get_running_loop()
        started.set()

    async def main() -> None:
        holder["stop"] = asyncio.Event()
        await serve(app, settings, on_started=on_started, stop=holder["stop"])

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert started.wait(10), "server did not start"
    try:
        yield RunningServer(app, holder["server"].port)
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(10)


# A ledger in memory, for provenance checks ------------------------------------------

ORIGIN = "ledger.modeltrust.test/serving"
ARTIFACT = b"pretend this is an onnx model" * 100
DIGEST = "sha256:" + hashlib.sha256(ARTIFACT).hexdigest()


@dataclass
class Ledger:
    """What a user saved from the ledger for one registration."""

    registration: dict[str, Any]
    publisher_pem: bytes
    checkpoint: str
    verifier_key: str
    proof: dict[str, Any]


def build_ledger(digest: str = DIGEST, size: int = len(ARTIFACT), position: int = 5) -> Ledger:
    """A tree of 11 registrations with ours at `position`, and a signed checkpoint."""
    publisher = generate_private_key("ed25519")
    others = generate_private_key("ecdsa-p256")
    entries: list[Registration] = []
    for i in range(11):
        if i == position:
            entries.append(
                sign_registration(publisher, name="mnist", version="3", digest=digest, size=size)
            )
        else:
            other_digest = "sha256:" + hashlib.sha256(b"other %d" % i).hexdigest()
            entries.append(
                sign_registration(
                    others, name=f"m{i}", version="1", digest=other_digest, size=i + 1
                )
            )
    store = MemoryNodeStore()
    tree = CompactRange.empty()
    for entry in entries:
        store.put_all(tree.append(leaf_hash(leaf_data(entry))))
    signer = NoteSigner.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, len(entries), tree.root()), signer)
    proof = inclusion_proof(position, len(entries), store)
    return Ledger(
        registration=entry_to_json(entries[position]),
        publisher_pem=public_key_pem(publisher.public_key()),
        checkpoint=note,
        verifier_key=signer.verifier_key(),
        proof={
            "index": position,
            "tree_size": len(entries),
            "leaf_hash": base64.b64encode(leaf_hash(leaf_data(entries[position]))).decode(),
            "inclusion_proof": [base64.b64encode(h).decode() for h in proof],
        },
    )
