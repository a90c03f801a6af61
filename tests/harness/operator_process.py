"""The operator as a real process: `python -m modeltrust.operator` watching one namespace.

    op = OperatorProcess(cluster, namespace, workdir, token, settings=E2E_SETTINGS)
    op.start(); ...; op.stop()

`settings` are extra MODELTRUST_* environment variables: the e2e tests run the timer every
second; a benchmark leaves the production defaults alone. The log is workdir/operator.log.
`no_passwd=True` runs it as the image runs in a pod: a uid with no passwd entry, no HOME
(harness/nopasswd.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.nopasswd import env_without_home, without_passwd
from harness.processes import stop_process


class OperatorExited(RuntimeError):
    """The operator process is not running when it should be; the message has its log tail."""


@dataclass
class OperatorProcess:
    cluster_env: Mapping[str, str]  # Cluster.env: PATH, KUBECONFIG, ...
    namespace: str
    workdir: Path
    token: str  # the ledger audit writers' token
    settings: Mapping[str, str] = field(default_factory=dict)
    no_passwd: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    def start(self) -> None:
        env = {
            **self.cluster_env,
            "MODELTRUST_NAMESPACE": self.namespace,
            "MODELTRUST_LEDGER_TOKEN": self.token,
            **self.settings,
        }
        argv = [sys.executable, "-m", "modeltrust.operator", "-n", self.namespace,
                "--log-format", "plain"]  # fmt: skip
        if self.no_passwd:
            argv, env = without_passwd(argv), env_without_home(env)
        with self.log_path.open("ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            raise OperatorExited(f"the operator is not running; log tail:\n{self.log_tail()}")
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash or an evicted pod."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 20 s."""
        if self.proc is not None:
            stop_process(self.proc, timeout=20)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])
