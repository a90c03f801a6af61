"""Witnesses for tests: the real `WitnessService` (in-process) and `modeltrust ledger witness`
(a real process), each on a loopback port that stays the same across restarts so the
ledger's `--witness URL KEY` keeps pointing at it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from harness.ledger import MODELTRUST, free_port
from harness.processes import stop_process
from harness.waiting import wait_for
from modeltrust.chain.cosigning import WitnessEndpoint
from modeltrust.chain.note import ALG_COSIGNATURE_V1, NoteSigner, NoteVerifier
from modeltrust.chain.witness import WitnessConfig, WitnessService


@dataclass
class WitnessSetup:
    """A witness's name, key, state directory and port, fixed before it first starts."""

    name: str
    state_dir: Path
    signer: NoteSigner = field(init=False)
    port: int = 0

    def __post_init__(self) -> None:
        self.signer = NoteSigner.generate(self.name, alg=ALG_COSIGNATURE_V1)
        if not self.port:
            self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def verifier(self) -> NoteVerifier:
        return self.signer.verifier()

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier_key()

    def endpoint(self) -> WitnessEndpoint:
        return WitnessEndpoint(self.url, self.verifier)

    def config(self, log_url: str, log_key: NoteVerifier, **overrides: object) -> WitnessConfig:
        cfg = WitnessConfig(
            state_dir=self.state_dir,
            signer=self.signer,
            log_url=log_url,
            log_verifier=log_key,
            origin=log_key.name,
            port=self.port,
            poll_interval=0.2,
            audit_interval=None,
        )
        for name, value in overrides.items():
            setattr(cfg, name, value)
        return cfg


class WitnessThread:
    """A real witness in a background thread with its own event loop (for blocking tests)."""

    def __init__(self, config: WitnessConfig) -> None:
        self.service = WitnessService(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> WitnessThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@dataclass
class WitnessProcess:
    """`modeltrust ledger witness` as a real process; stop()/start() keep its state and port."""

    setup: WitnessSetup
    log_url: str
    log_key: str
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.setup.port}"

    def start(self) -> None:
        directory = self.setup.state_dir
        directory.mkdir(parents=True, exist_ok=True)
        key = directory.parent / f"{self.setup.name}.key"
        key.write_text(self.setup.signer.signer_key() + "\n")
        key.chmod(0o600)
        log = (directory.parent / f"{self.setup.name}.log").open("ab")
        argv = [str(MODELTRUST), "ledger", "witness", "--state", str(directory),
                "--key", str(key), "--log-url", self.log_url, "--log-key", self.log_key,
                "--listen", f"{self.host}:{self.setup.port}", "--poll-interval", "0.5"]  # fmt: skip
        self.proc = subprocess.Popen(argv, env=dict(os.environ), stdout=log, stderr=log)
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"witness exited: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:  # noqa: S310
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(f"witness {self.setup.name} to serve", up, timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=20)
        self.proc = None

    def log(self) -> str:
        path = self.setup.state_dir.parent / f"{self.setup.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""
