"""Operator benchmarks (docs/architecture.md, performance goals): apply-to-Ready latency,
hundreds of ModelDeployments to Ready, and the operator's memory at that scale.

    python bench/operator_bench.py            # 20 rollouts of 10 MB models, then 500 at once
    python bench/operator_bench.py --quick    # smoke run: 3 rollouts, 30 at once (< 1 min)

Everything runs for real on this machine and is stopped on exit: a private local control
plane (etcd, kube-apiserver, controller-manager, scheduler, kwok with one fake node;
tests/harness/cluster.py), the ledger (`modeltrust ledger serve`, SQLite), the operator
(`python -m modeltrust.operator`, production defaults: 10 s timer, 64 workers), and a
loopback HTTP server holding real ~10 MB ONNX models (tests/harness/sized_models.py).

1. Rollout latency: N times, one at a time, a new ModelDeployment of a model the operator
   has never seen (its own digest, so no cache helps) is applied with `kubectl apply`;
   the clock runs from starting kubectl until a watch sees the ModelDeployment's Ready
   condition True (the operator saw its Deployment available on the kwok node).
2. Scale: M ModelDeployments in one `kubectl apply` (a List), spread over K models at URIs
   the operator has not fetched yet (each model fetched and load-checked once, the other
   ModelDeployments of it share that result); the clock runs until all M are Ready. The
   operator's VmRSS is sampled meanwhile; VmHWM (its peak) is read at the end.

Prints markdown tables with the targets and a pass/miss column. Targets are goals, not
tests: a miss still exits 0. A setup failure (a rollout never Ready) exits 1 with the
operator's log tail.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.cluster import (  # noqa: E402
    Cluster,
    ClusterError,
    LocalControlPlane,
    temporary_control_plane,
)
from harness.file_server import serve_files  # noqa: E402
from harness.ledger import LedgerProcess  # noqa: E402
from harness.modeltrust_objects import (  # noqa: E402
    TOKEN,
    Publisher,
    apply,
    install_crds,
    model_deployment,
    trust_policy,
)
from harness.operator_process import OperatorExited, OperatorProcess  # noqa: E402
from harness.sized_models import sized_mlp  # noqa: E402

GROUP, VERSION, PLURAL = "modeltrust.dev", "v1alpha1", "modeldeployments"
NAMESPACE = "bench"
MODEL_BYTES = 10 * 1000 * 1000  # "a 10 MB model"
TARGET_ROLLOUT_P50 = 2.0
TARGET_SCALE_SECONDS = 120.0
TARGET_SCALE_COUNT = 500
TARGET_RSS_BYTES = 300 * 1000 * 1000
OPERATOR_SETTINGS = {
    # Pinned by digest: the operator refuses runtimes that are not (RuntimeImageNotPinned).
    "MODELTRUST_IMAGE": "registry.example/modeltrust@sha256:" + "be" * 32,
    "MODELTRUST_ACTOR": "bench-operator",
}


class BenchError(RuntimeError):
    """The benchmark could not measure (not a missed target); the message says why."""


# --- measurement helpers --------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def proc_status_kib(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS: resident now; VmHWM: peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {field_name}")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time of the process (plus its waited-for children, if asked)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_name(pid: int) -> str:
    argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    return Path(argv0).name


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process, its reaped children included (the
    operator's onnx_check processes are its children)."""
    found = {}
    for name, pid in pids.items():
        try:
            found[name] = cpu_seconds(pid, children=True)
        except (OSError, IndexError, ValueError):
            continue
    return found


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def api_request_counts(cluster: Cluster) -> Counter[str]:
    """apiserver_request_total from the API server's /metrics, summed by verb and resource
    (every client together: operator, controllers, kwok, this script)."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition(" ")
        labels = dict(_LABEL.findall(labels_text))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        if labels.get("code", "").startswith("4") or labels.get("code", "").startswith("5"):
            resource += f" ({labels['code']})"
        counts[f"{labels.get('verb', '?')} {resource}"] += int(float(value))
    return counts


def conditions_true(obj: dict[str, Any]) -> set[str]:
    return {
        c.get("type", "")
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }


class ReadyWatch:
    """Watches ModelDeployments in one namespace and records, per name, the monotonic time
    a watch event first showed Verified=True and Ready=True."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        from kubernetes import client, config, watch

        self._api = client.CustomObjectsApi(
            config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
        )
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self.namespace = namespace
        self.verified: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self._changed = threading.Condition()
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ready-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        try:
            while not self._stopped:
                stream = self._watch.stream(  # type: ignore[no-untyped-call]
                    self._api.list_namespaced_custom_object,
                    GROUP, VERSION, self.namespace, PLURAL, timeout_seconds=3600,
                )  # fmt: skip
                for event in stream:
                    seen = time.monotonic()
                    obj = event["object"]
                    name = obj["metadata"]["name"]
                    true = conditions_true(obj)
                    with self._changed:
                        if "Verified" in true:
                            self.verified.setdefault(name, seen)
                        if "Ready" in true:
                            self.ready.setdefault(name, seen)
                        self._changed.notify_all()
        except BaseException as exc:  # surfaced to the waiting thread
            if not self._stopped:
                self._error = exc
                with self._changed:
                    self._changed.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float, tick: Callable[[], None]) -> bool:
        """Wait until `done()` (checked on every event), calling `tick` at least every 0.5 s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done():
                if self._error is not None:
                    raise BenchError(f"the ModelDeployment watch failed: {self._error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(0.5, left))
                tick()
        return True


# --- the processes --------------------------------------------------------------------------------


@contextmanager
def private_cluster(attempts: int = 2) -> Iterator[tuple[LocalControlPlane, Cluster]]:
    """A control plane of our own. A start can fail on a busy shared machine (an API
    server that never answers); one retry on a fresh plane, then the error stands."""
    for attempt in range(1, attempts + 1):
        plane = temporary_control_plane()
        try:
            cluster = plane.up()
        except ClusterError as exc:
            plane.down()
            shutil.rmtree(plane.workdir, ignore_errors=True)
            if attempt == attempts:
                raise BenchError(f"the local control plane did not start: {exc}") from exc
            print(f"control plane start failed, retrying: {exc}", file=sys.stderr, flush=True)
            continue
        try:
            yield plane, cluster
        finally:
            plane.down()
            shutil.rmtree(plane.workdir, ignore_errors=True)
        return


@dataclass(frozen=True)
class Model:
    path: Path
    digest: str
    version: str


def build_models(root: Path, count: int, size: int, first_seed: int) -> list[Model]:
    models = []
    for i in range(count):
        seed = first_seed + i
        path = sized_mlp(root / f"model-{seed}.onnx", size_bytes=size, seed=seed)
        digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        models.append(Model(path, digest, f"{seed}.0.0"))
    return models


# --- the two measurements -------------------------------------------------------------------------


@dataclass
class Rollout:
    applied: float  # kubectl apply returned
    verified: float  # Verified=True seen
    ready: float  # Ready=True seen


def measure_rollouts(
    cluster: Cluster,
    watch: ReadyWatch,
    operator: OperatorProcess,
    policy: str,
    base_url: str,
    models: list[Model],
    prefix: str,
) -> list[Rollout]:
    results = []
    for i, model in enumerate(models):
        name = f"{prefix}-{i:03d}"
        uri = f"{base_url}/{model.path.name}"
        body = model_deployment(NAMESPACE, name, policy, uri, model.digest, version=model.version)
        started = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
        applied = time.monotonic()

        def ready(name: str = name) -> bool:
            return name in watch.ready

        if not watch.wait(ready, timeout=120, tick=lambda: None):
            raise BenchError(
                f"{name} was not Ready after 120 s; operator log tail:\n{operator.log_tail()}"
            )
        results.append(
            Rollout(
                applied - started,
                watch.verified.get(name, watch.ready[name]) - started,
                watch.ready[name] - started,
            )
        )
    return results


@contextmanager
def sampling_profiler(pid: int, output: Path | None) -> Iterator[None]:
    """py-spy on the operator (idle threads included: where does the wall time go?),
    writing collapsed stacks to `output`. Nothing when `output` is None."""
    if output is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise BenchError("--profile needs py-spy: pip install py-spy")
    recorder = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--idle", "--threads", "--rate", "20",
         "--format", "raw", "--output", str(output), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            recorder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()


@dataclass
class ScaleRun:
    count: int
    kubectl_seconds: float
    ready_times: list[float]  # seconds from the start, one per Ready ModelDeployment
    completed: bool
    seconds: float
    max_rss_kib: int
    hwm_kib: int
    rss_at_end_kib: int
    operator_cpu: float
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process, this run
    requests: Counter[str] = field(default_factory=Counter)  # API requests in this run
    samples: list[tuple[float, int]] = field(default_factory=list)


def measure_scale(
    cluster: Cluster,
    watch: ReadyWatch,
    operator: OperatorProcess,
    policy: str,
    base_url: str,
    models: list[Model],
    count: int,
    timeout: float,
    others: dict[str, int],
    profile: Path | None = None,
) -> ScaleRun:
    prefix = "scale"
    names = [f"{prefix}-{i:04d}" for i in range(count)]
    items = []
    for i, name in enumerate(names):
        model = models[i % len(models)]
        uri = f"{base_url}/scale/{model.path.name}"  # a URI the operator has not fetched yet
        items.append(
            model_deployment(NAMESPACE, name, policy, uri, model.digest, version=model.version)
        )
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    pid = operator.pid
    cpu_before = cpu_seconds(pid)
    watched = {"operator (+ its onnx_check children)": pid, **others}
    all_before = cpu_by_process(watched)
    requests_before = api_request_counts(cluster)
    samples: list[tuple[float, int]] = []
    max_rss = 0
    last_progress = 0.0

    started = time.monotonic()

    def tick() -> None:
        nonlocal max_rss, last_progress
        now = time.monotonic()
        if samples and now - samples[-1][0] < 0.5:
            return
        rss = proc_status_kib(pid, "VmRSS")
        max_rss = max(max_rss, rss)
        samples.append((now, rss))
        if now - last_progress >= 10:
            last_progress = now
            ready = sum(n in watch.ready for n in names)
            print(
                f"  scale: {ready}/{count} Ready after {now - started:.0f} s, "
                f"operator RSS {rss / 1024:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )

    with sampling_profiler(pid, profile):
        cluster.kubectl("apply", "-f", "-", input=document, timeout=600)
        kubectl_seconds = time.monotonic() - started
        completed = watch.wait(
            lambda: all(n in watch.ready for n in names), timeout=timeout, tick=tick
        )
    seconds = time.monotonic() - started
    tick()
    all_after = cpu_by_process(watched)
    requests = api_request_counts(cluster) - requests_before
    ready_times = sorted(watch.ready[n] - started for n in names if n in watch.ready)
    return ScaleRun(
        count=count,
        kubectl_seconds=kubectl_seconds,
        ready_times=ready_times,
        completed=completed,
        seconds=seconds,
        max_rss_kib=max(max_rss, proc_status_kib(pid, "VmRSS")),
        hwm_kib=proc_status_kib(pid, "VmHWM"),
        rss_at_end_kib=proc_status_kib(pid, "VmRSS"),
        operator_cpu=cpu_seconds(pid) - cpu_before,
        cpu={n: all_after[n] - all_before[n] for n in all_after if n in all_before},
        requests=requests,
        samples=samples,
    )


# --- report --------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "pass" if ok else "**miss**"


def mb(kib: int) -> str:
    return f"{kib * 1024 / 1e6:,.0f} MB"


def report(
    cluster: Cluster,
    quick: bool,
    model_size: int,
    first: Rollout,
    rollouts: list[Rollout],
    scale: ScaleRun,
    scale_models: int,
) -> str:
    ready = [r.ready for r in rollouts]
    p50 = statistics.median(ready)
    at_target = scale.count >= TARGET_SCALE_COUNT
    scale_measured = (
        f"{scale.seconds:.1f} s"
        if scale.completed
        else f"{len(scale.ready_times)}/{scale.count} Ready after {scale.seconds:.0f} s"
    )
    scale_verdict = verdict(scale.completed and scale.seconds <= TARGET_SCALE_SECONDS)
    rss_verdict_hwm = verdict(scale.hwm_kib * 1024 <= TARGET_RSS_BYTES)
    rss_verdict_now = verdict(scale.rss_at_end_kib * 1024 <= TARGET_RSS_BYTES)
    if not at_target:
        note = f"quick run ({scale.count}); target is for {TARGET_SCALE_COUNT}"
        scale_verdict = rss_verdict_hwm = rss_verdict_now = note
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Operator benchmarks ({when}; {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}; local control plane "
        f"{cluster.server_version} with kwok)",
        "",
        "| what | measured | target | result |",
        "|---|---:|---:|---|",
        f"| `kubectl apply` -> Ready, {model_size / 1e6:.0f} MB model, p50 of {len(ready)} "
        f"| {p50:.2f} s | <= {TARGET_ROLLOUT_P50:g} s | {verdict(p50 <= TARGET_ROLLOUT_P50)} |",
        f"| same, p90 / max | {percentile(ready, 0.9):.2f} s / {max(ready):.2f} s | - | - |",
        f"| {scale.count} ModelDeployments -> all Ready ({scale_models} models) "
        f"| {scale_measured} | <= {TARGET_SCALE_SECONDS:g} s for {TARGET_SCALE_COUNT} "
        f"| {scale_verdict} |",
        f"| operator peak RSS (VmHWM) at {scale.count} | {mb(scale.hwm_kib)} "
        f"| <= {TARGET_RSS_BYTES / 1e6:g} MB | {rss_verdict_hwm} |",
        f"| operator RSS (VmRSS) with {scale.count} Ready | {mb(scale.rss_at_end_kib)} "
        f"| <= {TARGET_RSS_BYTES / 1e6:g} MB | {rss_verdict_now} |",
        "",
        f"Rollout phases, seconds from starting `kubectl apply` ({len(rollouts)} rollouts, "
        "each a model the operator has not seen):",
        "",
        "| phase | p50 | p90 | max |",
        "|---|---:|---:|---:|",
    ]
    for label, values in (
        ("`kubectl apply` returned", [r.applied for r in rollouts]),
        ("Verified=True (fetched, hashed, loaded, ledger proofs, audit entry, Deployment)",
         [r.verified for r in rollouts]),
        ("Ready=True (Deployment available on the kwok node)", ready),
    ):  # fmt: skip
        lines.append(
            f"| {label} | {statistics.median(values):.2f} | {percentile(values, 0.9):.2f} "
            f"| {max(values):.2f} |"
        )
    times = scale.ready_times
    first_ready = times[0] if times else float("nan")
    half = times[scale.count // 2 - 1] if len(times) >= scale.count // 2 > 0 else float("nan")
    lines += [
        "",
        f"First rollout after the operator started (not in the percentiles): {first.ready:.2f} s.",
        f"Scale run: `kubectl apply` of the {scale.count}-item List took "
        f"{scale.kubectl_seconds:.1f} s; first Ready at {first_ready:.1f} s, "
        f"half of them at {half:.1f} s; "
        f"operator CPU {scale.operator_cpu:.1f} s over {scale.seconds:.1f} s wall "
        f"({scale.operator_cpu / scale.seconds:.0%} of one core); highest sampled VmRSS "
        f"{mb(scale.max_rss_kib)}.",
    ]
    if scale.cpu:
        total = sum(scale.cpu.values())
        capacity = scale.seconds * (os.cpu_count() or 1)
        lines += [
            "",
            f"CPU seconds used during the scale run ({scale.seconds:.1f} s wall, "
            f"{os.cpu_count()} cores = {capacity:.0f} CPU-s available):",
            "",
            "| process | CPU s | share of the machine |",
            "|---|---:|---:|",
        ]
        for name, used in sorted(scale.cpu.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {used:.1f} | {used / capacity:.0%} |")
        lines.append(f"| all of the above | {total:.1f} | {total / capacity:.0%} |")
    if scale.requests:
        total_requests = sum(scale.requests.values())
        lines += [
            "",
            f"API server requests during the scale run (all clients): {total_requests:,} "
            f"({total_requests / scale.count:.1f} per ModelDeployment); the most frequent:",
            "",
            "| verb resource | requests | per ModelDeployment |",
            "|---|---:|---:|",
        ]
        for name, n in scale.requests.most_common(12):
            lines.append(f"| {name} | {n:,} | {n / scale.count:.1f} |")
    if quick:
        lines += ["", "(--quick: small counts; run without --quick for the figures in docs.)"]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup below


def run(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="mt-operator-bench-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        print("starting a private local control plane ...", file=sys.stderr, flush=True)
        plane, cluster = stack.enter_context(private_cluster())
        install_crds(cluster)
        cluster.kubectl("create", "namespace", NAMESPACE)

        served = work / "served"
        print("building models ...", file=sys.stderr, flush=True)
        warmup = build_models(served, 1, args.model_bytes, first_seed=1000)
        models = build_models(served, args.rollouts, args.model_bytes, first_seed=0)
        scale_models = models[: args.scale_models]
        (served / "scale").mkdir()
        for model in scale_models:  # same bytes and digest, a URI not fetched before
            os.link(model.path, served / "scale" / model.path.name)
        base_url = stack.enter_context(serve_files(served))

        publisher = Publisher("bench-publisher")
        ledger = LedgerProcess(work / "ledger", [publisher])
        stack.callback(ledger.stop)
        ledger.start()
        for model in warmup + models:
            ledger.register(publisher, model.path, "mnist", model.version)
        policy = "bench"
        apply(cluster, trust_policy(policy, ledger.url, ledger.verifier_key, [publisher]))

        # Production defaults (10 s timer, ...): the e2e tests' 1 s timer would distort a
        # measurement of steady-state cost.
        operator = OperatorProcess(cluster.env, NAMESPACE, work, TOKEN, OPERATOR_SETTINGS)
        stack.callback(operator.stop)
        operator.start()
        watch = ReadyWatch(cluster, NAMESPACE)
        stack.callback(watch.stop)
        watch.start()

        print("warm-up rollout (operator start-up) ...", file=sys.stderr, flush=True)
        (first,) = measure_rollouts(cluster, watch, operator, policy, base_url, warmup, "warmup")
        print(f"measuring {len(models)} rollouts ...", file=sys.stderr, flush=True)
        rollouts = measure_rollouts(cluster, watch, operator, policy, base_url, models, "rollout")
        print(f"applying {args.scale} ModelDeployments at once ...", file=sys.stderr, flush=True)
        others = {process_name(p): p for p in plane.pids()}
        if ledger.proc is not None:
            others["modeltrust ledger serve"] = ledger.proc.pid
        scale = measure_scale(
            cluster,
            watch,
            operator,
            policy,
            base_url,
            scale_models,
            args.scale,
            args.timeout,
            others,
            args.profile,
        )
        if args.keep_log:
            shutil.copy2(work / "operator.log", args.keep_log)
        return report(
            cluster, args.quick, args.model_bytes, first, rollouts, scale, len(scale_models)
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rollouts, 30 at once")
    parser.add_argument("--rollouts", type=int, help="sequential rollouts (default 20)")
    parser.add_argument("--scale", type=int, help="ModelDeployments applied at once (default 500)")
    parser.add_argument(
        "--scale-models", type=int, default=20, help="distinct models in the scale run"
    )
    parser.add_argument("--model-bytes", type=int, default=MODEL_BYTES)
    parser.add_argument("--timeout", type=float, default=600, help="scale run limit, seconds")
    parser.add_argument("--keep-log", type=Path, help="copy the operator's log here")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the operator during the scale run (collapsed stacks)"
    )
    args = parser.parse_args()
    args.rollouts = args.rollouts or (3 if args.quick else 20)
    args.scale = args.scale or (30 if args.quick else TARGET_SCALE_COUNT)
    args.scale_models = max(1, min(args.scale_models, args.rollouts))
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    try:
        table = run(args)
    except (BenchError, ClusterError, OperatorExited) as exc:
        print(f"operator benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(table, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
