"""Revocation latency: from a revocation's append on the ledger until the affected
ModelDeployment's Deployment asks for 0 replicas and the ModelDeployment says Revoked=True.

    python bench/revocation_bench.py            # 200 serving, 20 revoked one by one, 20 in a
                                                # batch, then the timer-only reference
    python bench/revocation_bench.py --quick    # smoke run: 20 serving, 5 + 5 revoked, no
                                                # timer-only reference (it takes minutes)

Everything runs for real and is stopped on exit: a private local control plane with a kwok
node (tests/harness/cluster.py), `modeltrust ledger serve`, and the operator
(`python -m modeltrust.operator`) with production defaults (10 s timer tick, the policy's
default reverifyInterval of 5 minutes, the ledger followed every second).

The serving set: `--mds` ModelDeployments of small ONNX models (~100 KB; the bytes do not
matter here) served from a loopback HTTP server. Each ModelDeployment to be revoked has a
model of its own (its own digest, so a digest revocation affects exactly it); all the
others share `--shared-models` models. Every revocation is a digest revocation signed by
the publisher that registered it (the policy's only publisher), `ScaleToZero`.

Measured, per revocation, from sending the append (the ledger answers once the entry is in
a signed checkpoint) until a watch event shows the Deployment at `spec.replicas: 0`, and
until one shows the ModelDeployment with Revoked=True; the latency is the later of both:
1. follower, one by one: the next revocation is appended once the previous one has acted;
2. follower, batch: all appended back to back (each measured from its own append);
3. reference, the timer alone (`MODELTRUST_LEDGER_FOLLOW_INTERVAL=0`, the operator
   restarted with otherwise identical settings, default timer and reverifyInterval): a
   batch like 2 on other ModelDeployments. Skipped by --quick (it takes up to 5 minutes);
and the ledger's own append latency (append sent -> answered, entry in a signed
checkpoint), the floor of any reaction.

Prints markdown tables (p50/p95/p99/max, and the ratio of the reference to the follower).
The target (p99 <= 5 s with default settings for 200 serving) is a goal: a miss still
exits 0; a setup failure exits 1 with the operator's log tail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from operator_bench import (
    OPERATOR_SETTINGS,
    REPO,
    BenchError,
    Model,
    ReadyWatch,
    build_models,
    percentile,
    private_cluster,
)

sys.path.insert(0, str(REPO / "tests"))

from harness.cluster import Cluster, ClusterError
from harness.file_server import serve_files
from harness.ledger import LedgerProcess
from harness.modeltrust_objects import (
    TOKEN,
    Publisher,
    apply,
    install_crds,
    model_deployment,
    trust_policy,
)
from harness.operator_process import OperatorExited, OperatorProcess

NAMESPACE = "bench"
MODEL_BYTES = 100 * 1000
TARGET_P99 = 5.0
TARGET_SERVING = 200
FOLLOWER_OFF = {"MODELTRUST_LEDGER_FOLLOW_INTERVAL": "0"}


class ActedWatch:
    """Watches the namespace's Deployments and ModelDeployments and records, per name, the
    monotonic time a watch event first showed `spec.replicas == 0` (Deployment) and
    Revoked=True (ModelDeployment)."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        from kubernetes import client, config, watch

        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._watches = [watch.Watch(), watch.Watch()]  # type: ignore[no-untyped-call]
        self.namespace = namespace
        self.zero: dict[str, float] = {}
        self.revoked: dict[str, float] = {}
        self._changed = threading.Condition()
        self._stopped = False
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._deployments, daemon=True),
            threading.Thread(target=self._model_deployments, daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stopped = True
        for w in self._watches:
            w.stop()  # type: ignore[no-untyped-call]

    def _follow(self, index: int, stream: Callable[[], Any], record: Callable[[Any], None]) -> None:
        try:
            while not self._stopped:
                for event in stream():
                    record(event["object"])
        except BaseException as exc:
            if not self._stopped:
                self._error = exc
                with self._changed:
                    self._changed.notify_all()

    def _deployments(self) -> None:
        def stream() -> Any:
            return self._watches[0].stream(  # type: ignore[no-untyped-call]
                self._apps.list_namespaced_deployment, self.namespace, timeout_seconds=3600
            )

        def record(obj: Any) -> None:
            seen = time.monotonic()
            if obj.spec.replicas == 0:
                with self._changed:
                    self.zero.setdefault(obj.metadata.name, seen)
                    self._changed.notify_all()

        self._follow(0, stream, record)

    def _model_deployments(self) -> None:
        def stream() -> Any:
            return self._watches[1].stream(  # type: ignore[no-untyped-call]
                self._custom.list_namespaced_custom_object,
                "modeltrust.dev", "v1alpha1", self.namespace, "modeldeployments",
                timeout_seconds=3600,
            )  # fmt: skip

        def record(obj: Any) -> None:
            seen = time.monotonic()
            conds = (obj.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Revoked" and c.get("status") == "True" for c in conds):
                with self._changed:
                    self.revoked.setdefault(obj["metadata"]["name"], seen)
                    self._changed.notify_all()

        self._follow(1, stream, record)

    def acted(self, name: str) -> float | None:
        """When both had been seen (the later of the two), else None."""
        if name in self.zero and name in self.revoked:
            return max(self.zero[name], self.revoked[name])
        return None

    def wait(self, names: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(self.acted(n) is not None for n in names):
                if self._error is not None:
                    raise BenchError(f"a watch failed: {self._error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(0.5, left))
        return True


@dataclass
class Sample:
    name: str
    appended: float  # seconds from sending the append to its answer
    acted: float  # seconds from sending the append to 0 replicas and Revoked=True
    zero: float  # ... to 0 replicas
    revoked: float  # ... to Revoked=True


def revoke(ledger: LedgerProcess, publisher: Publisher, model: Model) -> tuple[float, float]:
    started = time.monotonic()
    ledger.revoke_digest(publisher, model.digest, "benchmark: revoked")
    return started, time.monotonic()


def sample(watch: ActedWatch, name: str, started: float, answered: float) -> Sample:
    acted = watch.acted(name)
    assert acted is not None
    return Sample(
        name,
        answered - started,
        acted - started,
        watch.zero[name] - started,
        watch.revoked[name] - started,
    )


def one_by_one(
    ledger: LedgerProcess,
    publisher: Publisher,
    watch: ActedWatch,
    targets: list[tuple[str, Model]],
    timeout: float,
    operator: OperatorProcess,
) -> list[Sample]:
    samples = []
    for name, model in targets:
        started, answered = revoke(ledger, publisher, model)
        if not watch.wait([name], timeout):
            raise BenchError(
                f"{name} was not acted on {timeout:.0f} s after its revocation; operator log "
                f"tail:\n{operator.log_tail()}"
            )
        samples.append(sample(watch, name, started, answered))
    return samples


def batch(
    ledger: LedgerProcess,
    publisher: Publisher,
    watch: ActedWatch,
    targets: list[tuple[str, Model]],
    timeout: float,
    operator: OperatorProcess,
) -> list[Sample]:
    times = {name: revoke(ledger, publisher, model) for name, model in targets}
    names = [name for name, _ in targets]
    if not watch.wait(names, timeout):
        missing = [n for n in names if watch.acted(n) is None]
        raise BenchError(
            f"{len(missing)} of {len(names)} not acted on {timeout:.0f} s after their "
            f"revocations ({', '.join(missing[:5])}); operator log tail:\n{operator.log_tail()}"
        )
    return [sample(watch, n, *times[n]) for n in names]


# --- report --------------------------------------------------------------------------------


def stats(values: list[float]) -> str:
    return (
        f"{statistics.median(values):.2f} | {percentile(values, 0.95):.2f} | "
        f"{percentile(values, 0.99):.2f} | {max(values):.2f}"
    )


def report(
    cluster: Cluster,
    args: argparse.Namespace,
    rollout_seconds: float,
    serial: list[Sample],
    batched: list[Sample],
    reference: list[Sample] | None,
    load: tuple[float, float],
) -> str:
    acted = [s.acted for s in serial]
    p99 = percentile(acted, 0.99)
    result = "pass" if p99 <= TARGET_P99 else "**miss**"
    if args.mds < TARGET_SERVING:
        result = f"quick run ({args.mds}); target is for {TARGET_SERVING}"
    appends = [s.appended for s in serial + batched + (reference or [])]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Revocation latency ({when}; {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}; local control plane {cluster.server_version} "
        f"with kwok; load average {load[0]:.1f} before, {load[1]:.1f} after)",
        "",
        f"{args.mds} serving ModelDeployments ({args.revoke * (3 if reference else 2)} with a "
        f"model of their own, the others over {args.shared_models} shared models), all Ready "
        f"after {rollout_seconds:.1f} s; seconds from sending a digest revocation's append:",
        "",
        "| what | measured | target | result |",
        "|---|---:|---:|---|",
        f"| append -> Deployment at 0 replicas and Revoked=True, p99 of {len(acted)} one by one, "
        f"{args.mds} serving | {p99:.2f} s | <= {TARGET_P99:g} s | {result} |",
        "",
        "| seconds from sending the append | n | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
        f"| ledger: append answered (entry in a signed checkpoint) | {len(appends)} "
        f"| {stats(appends)} |",
        f"| follower, one by one: 0 replicas and Revoked=True | {len(serial)} | {stats(acted)} |",
        f"| - of which Deployment at 0 replicas | {len(serial)} "
        f"| {stats([s.zero for s in serial])} |",
        f"| follower, batch of {len(batched)}: 0 replicas and Revoked=True | {len(batched)} "
        f"| {stats([s.acted for s in batched])} |",
    ]
    if reference:
        ref = [s.acted for s in reference]
        lines.append(
            f"| reference, timer only (follower off), batch of {len(reference)} | "
            f"{len(reference)} | {stats(ref)} |"
        )
        lines += [
            "",
            "| ratio: reference (timer only, batch) / follower | p50 | p99 | max |",
            "|---|---:|---:|---:|",
        ]
        for label, values in (
            ("/ follower, batch", [s.acted for s in batched]),
            ("/ follower, one by one", acted),
        ):
            lines.append(
                f"| timer only {label} | {statistics.median(ref) / statistics.median(values):.0f}x "
                f"| {percentile(ref, 0.99) / percentile(values, 0.99):.0f}x "
                f"| {max(ref) / max(values):.0f}x |"
            )
    else:
        lines += ["", "(--quick: no timer-only reference run; it takes up to 5 minutes.)"]
    ledger_p50 = statistics.median(appends)
    lines += [
        "",
        f"Follower one by one, p50 over the ledger's own append latency: "
        f"{statistics.median(acted) / ledger_p50:.1f}x ({statistics.median(acted):.2f} s vs "
        f"{ledger_p50:.3f} s).",
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def wait_all_ready(watch: ReadyWatch, names: list[str], timeout: float, operator: Any) -> None:
    if not watch.wait(lambda: all(n in watch.ready for n in names), timeout, lambda: None):
        ready = sum(n in watch.ready for n in names)
        raise BenchError(
            f"only {ready}/{len(names)} ModelDeployments Ready after {timeout:.0f} s; operator "
            f"log tail:\n{operator.log_tail()}"
        )


def run(args: argparse.Namespace) -> str:
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="mt-revocation-bench-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        print("starting a private local control plane ...", file=sys.stderr, flush=True)
        _plane, cluster = stack.enter_context(private_cluster())
        install_crds(cluster)
        cluster.kubectl("create", "namespace", NAMESPACE)

        groups = 3 if args.reference else 2
        own = args.revoke * groups
        if own + 1 > args.mds:
            raise BenchError(f"--mds {args.mds} is too few for {own} revoked ModelDeployments")
        served = work / "served"
        print("building models ...", file=sys.stderr, flush=True)
        owned = build_models(served, own, MODEL_BYTES, first_seed=0)
        shared = build_models(served, args.shared_models, MODEL_BYTES, first_seed=10_000)
        base_url = stack.enter_context(serve_files(served))

        publisher = Publisher("bench-publisher")
        ledger = LedgerProcess(work / "ledger", [publisher])
        stack.callback(ledger.stop)
        ledger.start()
        for model in owned + shared:
            ledger.register(publisher, model.path, "mnist", model.version)
        policy = "bench"  # production defaults: reverifyInterval 5m, ScaleToZero, Enforce
        apply(cluster, trust_policy(policy, ledger.url, ledger.verifier_key, [publisher]))

        mds: list[tuple[str, Model]] = [(f"own-{i:03d}", m) for i, m in enumerate(owned)]
        mds += [(f"shared-{i:03d}", shared[i % len(shared)]) for i in range(args.mds - own)]
        items = [
            model_deployment(
                NAMESPACE, name, policy, f"{base_url}/{m.path.name}", m.digest, version=m.version
            )
            for name, m in mds
        ]

        operator = OperatorProcess(cluster.env, NAMESPACE, work, TOKEN, OPERATOR_SETTINGS)
        stack.callback(lambda: operator.stop())
        operator.start()
        ready = ReadyWatch(cluster, NAMESPACE)
        stack.callback(ready.stop)
        ready.start()
        acted = ActedWatch(cluster, NAMESPACE)
        stack.callback(acted.stop)
        acted.start()

        print(f"rolling out {len(mds)} ModelDeployments ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        cluster.kubectl("apply", "-f", "-", input=document, timeout=600)
        wait_all_ready(ready, [n for n, _ in mds], args.timeout, operator)
        rollout_seconds = time.monotonic() - started
        time.sleep(args.settle)  # let the last status writes and events drain

        targets = mds[:own]
        first, second, third = (
            targets[: args.revoke],
            targets[args.revoke : 2 * args.revoke],
            targets[2 * args.revoke :],
        )
        print(f"revoking {len(first)} one by one ...", file=sys.stderr, flush=True)
        serial = one_by_one(ledger, publisher, acted, first, args.timeout, operator)
        print(f"revoking {len(second)} in a batch ...", file=sys.stderr, flush=True)
        batched = batch(ledger, publisher, acted, second, args.timeout, operator)

        reference = None
        if args.reference:
            print("restarting the operator with the follower off (timer only) ...",
                  file=sys.stderr, flush=True)  # fmt: skip
            operator.stop()
            operator = OperatorProcess(
                cluster.env, NAMESPACE, work, TOKEN, {**OPERATOR_SETTINGS, **FOLLOWER_OFF}
            )
            operator.start()
            time.sleep(args.settle + 20)  # kopf resumes every ModelDeployment
            print(f"revoking {len(third)} in a batch, timer only (up to 5 min) ...",
                  file=sys.stderr, flush=True)  # fmt: skip
            reference = batch(ledger, publisher, acted, third, 420, operator)

        # The ModelDeployments not revoked must all still be serving.
        revoked = {n for n, _ in targets}
        wrongly = [n for n, _ in mds if n not in revoked and acted.acted(n) is not None]
        if wrongly:
            raise BenchError(f"ModelDeployments not revoked were scaled down: {wrongly[:5]}")
        if args.keep_log:
            shutil.copy2(work / "operator.log", args.keep_log)
        return report(
            cluster, args, rollout_seconds, serial, batched, reference,
            (load_before, os.getloadavg()[0]),
        )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 serving, 5 + 5 revoked")
    parser.add_argument("--mds", type=int, help="serving ModelDeployments (default 200)")
    parser.add_argument("--revoke", type=int, help="revocations per measurement (default 20)")
    parser.add_argument("--shared-models", type=int, default=10)
    parser.add_argument(
        "--no-reference", dest="reference", action="store_false", default=None,
        help="skip the timer-only reference run",
    )  # fmt: skip
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after all Ready")
    parser.add_argument("--timeout", type=float, default=600, help="per wait, seconds")
    parser.add_argument("--keep-log", type=Path, help="copy the operator's log here")
    args = parser.parse_args()
    args.mds = args.mds or (20 if args.quick else TARGET_SERVING)
    args.revoke = args.revoke or (5 if args.quick else 20)
    args.shared_models = max(1, min(args.shared_models, 3 if args.quick else args.shared_models))
    if args.reference is None:
        args.reference = not args.quick
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    try:
        table = run(args)
    except (BenchError, ClusterError, OperatorExited) as exc:
        print(f"revocation benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(table, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
