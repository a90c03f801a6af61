"""Model server and fetch-and-verify benchmarks, each against a reference in the same run.

    python bench/serving_bench.py [--quick] [--kserve-python PATH] [--skip-kserve] [--skip-fetch]
                                  [--skip-uvicorn]

Prints markdown tables:
1. Latency, batch-1 MNIST-size MLP: raw onnxruntime InferenceSession.run in-process vs
   one keep-alive HTTP client against `modeltrust serve` (JSON and binary tensor data),
   and against KServe's Python model server wrapping the same onnxruntime session.
2. Throughput with 16 concurrent keep-alive clients (wrk if installed, else a raw-socket
   asyncio load generator in its own process), ours vs KServe, and vs a minimal
   uvicorn ASGI app (uvloop + httptools, like ours) calling the very same
   InferenceApp: the cost of our hand-written HTTP layer against a framework's.
3. Fetch-and-verify of a 1 GiB artifact over loopback HTTP vs `sha256sum` on the same
   file, with peak RSS of the fetching process at two artifact sizes (flat = streaming).

KServe needs its own virtualenv (its pins are not ours): `make install` makes it at
~/.cache/modeltrust/kserve-venv from requirements/kserve.txt. The script looks there
(or at --kserve-python / $KSERVE_PYTHON) and says so when absent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.onnx_models import MNIST_FEATURES, mnist_mlp  # noqa: E402

DEFAULT_KSERVE = Path.home() / ".cache" / "modeltrust" / "kserve-venv" / "bin" / "python"
CLIENTS = 16


# Measurement helpers ------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


@dataclass
class Latency:
    name: str
    p50: float
    p99: float


def raw_latency(model: Path, count: int) -> Latency:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, MNIST_FEATURES), dtype=np.float32)
    feeds = {"input": x}
    for _ in range(200):
        session.run(None, feeds)
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        session.run(None, feeds)
        samples.append(clock() - start)
    return Latency(
        "onnxruntime `InferenceSession.run`, in-process",
        percentile(samples, 0.5),
        percentile(samples, 0.99),
    )


def infer_bodies() -> tuple[bytes, bytes, bytes]:
    """(JSON body, binary body, binary header length) for one 1x784 FP32 request."""
    x = np.random.default_rng(1).random((1, MNIST_FEATURES), dtype=np.float32)
    json_body = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": x.ravel()}]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    raw = x.tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 784],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    )
    return json_body, header + raw, str(len(header)).encode()


def http_request(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


class BlockingClient:
    """One keep-alive connection; reads each response by its Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def roundtrip(self, request: bytes) -> int:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        head, rest = self.buffer.split(b"\r\n\r\n", 1)
        found = re.search(rb"(?i)content-length:\s*(\d+)", head)
        length = int(found.group(1)) if found else 0
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buffer = rest[length:]
        return int(head.split(b" ", 2)[1])


def http_latency(name: str, port: int, request: bytes, count: int) -> Latency:
    client = BlockingClient(port)
    for _ in range(200):
        status = client.roundtrip(request)
        if status != 200:
            raise RuntimeError(f"{name}: warm-up request answered {status}")
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        client.roundtrip(request)
        samples.append(clock() - start)
    client.sock.close()
    return Latency(name, percentile(samples, 0.5), percentile(samples, 0.99))


# Load generation ------------------------------------------------------------------------


def throughput(port: int, path: str, body: bytes, seconds: float) -> tuple[float, str]:
    """Inferences per second with CLIENTS keep-alive connections; and the tool used."""
    if shutil.which("wrk"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            body_file = Path(script.name).with_suffix(".body")
            body_file.write_bytes(body)
            script.write(
                f'local f = io.open("{body_file}", "rb"); local b = f:read("*a"); f:close()\n'
                'wrk.method = "POST"; wrk.body = b\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
        try:
            out = subprocess.run(
                ["wrk", "-t1", f"-c{CLIENTS}", f"-d{seconds:g}s", "-s", script.name,
                 f"http://127.0.0.1:{port}{path}"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
        finally:
            os.unlink(script.name)
            body_file.unlink()
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"wrk saw failed requests:\n{out}")
        rate = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
        return rate, "wrk, 1 thread"
    out = subprocess.run(
        [sys.executable, __file__, "--loadgen", str(port), path, body.hex(), str(seconds)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(out.strip()), "asyncio raw-socket generator"


async def _loadgen(port: int, path: str, body: bytes, seconds: float) -> float:
    request = http_request(path, body)
    deadline = time.perf_counter() + seconds
    counts = [0] * CLIENTS

    async def one(slot: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            found = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(found.group(1)) if found else 0)
            counts[slot] += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(CLIENTS)))
    return sum(counts) / (time.perf_counter() - started)


# Servers -------------------------------------------------------------------------------


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_ours(model: Path) -> tuple[subprocess.Popen[bytes], int]:
    digest = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from modeltrust.cli.main import main; main()", "serve",
         "--model-path", str(model), "--model-name", "mnist", "--digest", digest,
         "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_ready(port, process)
    return process, port


KSERVE_MODEL = textwrap.dedent(
    """
    import logging
    import sys
    import onnxruntime as ort
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

    class OnnxModel(Model):
        def __init__(self, name, path):
            super().__init__(name)
            self.path = path
            self.load()

        def load(self):
            self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
            self.ready = True
            return True

        def predict(self, payload: InferRequest, headers=None, response_headers=None):
            x = payload.inputs[0].as_numpy()
            (logits,) = self.session.run(None, {"input": x})
            out = InferOutput("logits", list(logits.shape), "FP32")
            out.set_data_from_numpy(logits, binary_data=False)
            return InferResponse(payload.id or "", self.name, [out])

    server = ModelServer(
        http_port=int(sys.argv[2]), enable_grpc=False, workers=1, enable_latency_logging=False
    )
    # Per-request log lines are off, as in our server: compare serving, not logging.
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).disabled = True
    server.start([OnnxModel("mnist", sys.argv[1])])
    """
)


def start_kserve(python: Path, model: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    script = Path(tempfile.mkdtemp()) / "kserve_onnx.py"
    script.write_text(KSERVE_MODEL)
    port = free_port()
    process = subprocess.Popen(
        [str(python), str(script), str(model), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_ready(port, process)
    version = subprocess.run(
        [str(python), "-c", "import kserve, importlib.metadata as m; print(m.version('kserve'))"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return process, port, version


# The same InferenceApp (same onnxruntime session settings, same JSON handling) behind
# uvicorn instead of our transport: the request and response bytes differ only in the
# headers each server adds.
UVICORN_APP = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import uvicorn
    from modeltrust.serving.model import ServedModel
    from modeltrust.serving.oip import Request
    from modeltrust.serving.runtime import build_app

    model_path, digest, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    app = build_app(ServedModel.load(model_path, name="mnist", expected_digest=digest))

    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            path += "?" + scope["query_string"].decode("latin-1")
        response = app.handle(Request(scope["method"], path, headers, b"".join(chunks)))
        head = [
            (b"content-type", response.content_type.encode("latin-1")),
            (b"content-length", str(len(response.body)).encode("ascii")),
        ]
        head += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": head})
        await send({"type": "http.response.body", "body": response.body})

    uvicorn.run(asgi, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False, lifespan="on")
    """
)


def start_uvicorn(model: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    import uvicorn

    digest = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    script = Path(tempfile.mkdtemp()) / "uvicorn_oip.py"
    script.write_text(UVICORN_APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(script), str(model), digest, str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_ready(port, process)
    return process, port, uvicorn.__version__


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# Fetch ----------------------------------------------------------------------------------

FETCH_CHILD = textwrap.dedent(
    """
    import sys
    from modeltrust.serving.fetch import fetch_artifact
    r = fetch_artifact(sys.argv[1], sys.argv[2], sys.argv[3])
    # VmHWM: this process image's peak RSS (ru_maxrss would include the forking parent).
    status = open("/proc/self/status").read()
    peak_kib = int(status.split("VmHWM:")[1].split()[0])
    print(r.seconds, peak_kib)
    """
)


@dataclass
class FetchRun:
    seconds: float
    peak_rss_mib: float


def run_fetch(uri: str, digest: str, dest: Path) -> FetchRun:
    process = subprocess.Popen(
        [sys.executable, "-c", FETCH_CHILD, uri, digest, str(dest)], stdout=subprocess.PIPE
    )
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError("fetch failed")
    dest.chmod(0o644)
    dest.unlink()
    seconds, peak_kib = out.split()
    return FetchRun(float(seconds), int(peak_kib) / 1024)


def make_artifact(path: Path, size: int) -> str:
    hasher = hashlib.sha256()
    block = np.random.default_rng(2).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        for i in range(size // len(block)):
            chunk = block[:8] + i.to_bytes(8, "little") + block[16:]  # no two blocks equal
            f.write(chunk)
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def fetch_bench(size: int, small: int) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="mt-fetch-bench-"))
    try:
        big, little = work / "serve" / "big.bin", work / "serve" / "small.bin"
        big.parent.mkdir()
        big_digest, little_digest = make_artifact(big, size), make_artifact(little, small)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(big.parent)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            sha_times, fetch_runs = [], []
            for _ in range(3):  # alternate, best of three each: both see a warm page cache
                start = time.perf_counter()
                subprocess.run(["sha256sum", str(big)], check=True, capture_output=True)
                sha_times.append(time.perf_counter() - start)
                fetch_runs.append(
                    run_fetch(f"http://127.0.0.1:{port}/big.bin", big_digest, work / "out.bin")
                )
            small_run = run_fetch(
                f"http://127.0.0.1:{port}/small.bin", little_digest, work / "out.bin"
            )
        finally:
            stop(server)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sha = min(sha_times)
    best = min(fetch_runs, key=lambda r: r.seconds)
    gib = size / (1 << 30)
    mib = size / (1 << 20)
    return [
        f"### Fetch and verify, {gib:g} GiB artifact\n",
        "| what | seconds | MiB/s | peak RSS |",
        "|---|---:|---:|---:|",
        f"| `sha256sum` on the file (hash only, reference) | {sha:.2f} | {mib / sha:,.0f} | - |",
        f"| `fetch_artifact` over loopback HTTP: download + SHA-256 + write + fsync + rename "
        f"| {best.seconds:.2f} | {mib / best.seconds:,.0f} | {best.peak_rss_mib:.0f} MiB |",
        f"| same, {small / (1 << 20):g} MiB artifact (memory flat in size?) "
        f"| {small_run.seconds:.2f} | {small / (1 << 20) / small_run.seconds:,.0f} "
        f"| {small_run.peak_rss_mib:.0f} MiB |",
        "",
        f"Ratio fetch / sha256sum: **{best.seconds / sha:.2f}x** (below 1 = faster than "
        "sha256sum alone, because hashlib uses the CPU's SHA extensions). Peak RSS "
        f"{best.peak_rss_mib:.0f} MiB at {gib:g} GiB vs {small_run.peak_rss_mib:.0f} MiB at "
        f"{small / (1 << 20):g} MiB.",
    ]


# Main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples, 256 MiB fetch")
    parser.add_argument(
        "--kserve-python", type=Path, default=Path(os.environ.get("KSERVE_PYTHON", DEFAULT_KSERVE))
    )
    parser.add_argument("--skip-kserve", action="store_true")
    parser.add_argument("--skip-fetch", action="store_true")
    parser.add_argument("--skip-uvicorn", action="store_true")
    parser.add_argument("--loadgen", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        port, path, body_hex, seconds = args.loadgen
        print(asyncio.run(_loadgen(int(port), path, bytes.fromhex(body_hex), float(seconds))))
        return

    count = 2000 if args.quick else 10000
    seconds = 3.0 if args.quick else 10.0
    work = Path(tempfile.mkdtemp(prefix="mt-serving-bench-"))
    model = mnist_mlp(work / "mnist.onnx")
    json_body, binary_body, header_length = infer_bodies()
    path = "/v2/models/mnist/infer"
    lines = [
        f"## Model server (MNIST-size MLP 784-128-10 FP32, batch 1; {os.cpu_count()} cores; "
        f"onnxruntime {ort.__version__})\n"
    ]

    raw = raw_latency(model, count)
    latencies = [raw]
    rates: list[tuple[str, float, str]] = []
    ours, port = start_ours(model)
    try:
        latencies.append(
            http_latency("modeltrust serve, HTTP JSON", port, http_request(path, json_body), count)
        )
        binary_request = http_request(
            path, binary_body, b"Inference-Header-Content-Length: " + header_length + b"\r\n"
        )
        latencies.append(
            http_latency("modeltrust serve, HTTP binary tensor data", port, binary_request, count)
        )
        rate, tool = throughput(port, path, json_body, seconds)
        rates.append(("modeltrust serve, HTTP JSON", rate, tool))
    finally:
        stop(ours)

    uvicorn_rates: list[tuple[str, float]] = []
    if not args.skip_uvicorn:
        # Side by side, alternating (ours, uvicorn, ours, uvicorn): this machine is shared,
        # and a single pair of runs moves by more than the difference being measured.
        for round_ in range(2):
            uv, uport, uversion = start_uvicorn(model)
            try:
                if round_ == 0:
                    latencies.append(
                        http_latency(
                            f"uvicorn {uversion} + same InferenceApp, HTTP JSON",
                            uport,
                            http_request(path, json_body),
                            count,
                        )
                    )
                uvicorn_rates.append(("uvicorn", throughput(uport, path, json_body, seconds)[0]))
            finally:
                stop(uv)
            ours, port = start_ours(model)
            try:
                uvicorn_rates.append(("ours", throughput(port, path, json_body, seconds)[0]))
            finally:
                stop(ours)

    kserve_note = ""
    if args.skip_kserve:
        kserve_note = "KServe: skipped (--skip-kserve)."
    elif not args.kserve_python.exists():
        kserve_note = (
            f"KServe: not run, no interpreter at {args.kserve_python} (see this script's "
            "docstring for the two-line setup)."
        )
    else:
        kserve, kport, kversion = start_kserve(args.kserve_python, model)
        try:
            latencies.append(
                http_latency(
                    f"KServe {kversion} ModelServer, HTTP JSON",
                    kport,
                    http_request(path, json_body),
                    count,
                )
            )
            rate, tool = throughput(kport, path, json_body, seconds)
            rates.append((f"KServe {kversion} ModelServer, HTTP JSON", rate, tool))
        finally:
            stop(kserve)

    lines += [
        "| path | p50 | p99 | p50 over raw `run` |",
        "|---|---:|---:|---:|",
    ]
    for entry in latencies:
        over = "-" if entry is raw else f"+{us(entry.p50 - raw.p50)} ({entry.p50 / raw.p50:.1f}x)"
        lines.append(f"| {entry.name} | {us(entry.p50)} | {us(entry.p99)} | {over} |")
    lines += [
        "",
        f"Throughput, {CLIENTS} concurrent keep-alive clients:\n",
        "| server | inferences/s | load generator | ratio |",
        "|---|---:|---|---:|",
    ]
    reference = rates[-1][1] if len(rates) > 1 else rates[0][1]
    for name, rate, tool in rates:
        lines.append(f"| {name} | {rate:,.0f} | {tool} | {rate / reference:.2f}x |")
    if uvicorn_rates:
        ours_runs = [r for who, r in uvicorn_rates if who == "ours"]
        uv_runs = [r for who, r in uvicorn_rates if who == "uvicorn"]
        best_ours, best_uv = max(ours_runs), max(uv_runs)
        lines += [
            "",
            "Transport only, same InferenceApp, alternating runs (best of "
            f"{len(ours_runs)}; all runs: ours {', '.join(f'{r:,.0f}' for r in ours_runs)}; "
            f"uvicorn {', '.join(f'{r:,.0f}' for r in uv_runs)}):\n",
            "| transport | inferences/s | ratio |",
            "|---|---:|---:|",
            f"| modeltrust (asyncio + httptools, hand-written) | {best_ours:,.0f} | 1.00x |",
            f"| uvicorn ASGI (uvloop + httptools) | {best_uv:,.0f} | {best_uv / best_ours:.2f}x |",
        ]
    ours_json = latencies[1]
    ours_rate = rates[0][1]
    lines += [
        "",
        "Targets: HTTP p50 <= raw run + 500 µs: "
        f"{'met' if ours_json.p50 - raw.p50 <= 500e-6 else 'MISSED'} "
        f"(+{us(ours_json.p50 - raw.p50)}); >= 5,000 inferences/s with {CLIENTS} clients: "
        f"{'met' if ours_rate >= 5000 else 'MISSED'} ({ours_rate:,.0f}/s).",
    ]
    if kserve_note:
        lines += ["", kserve_note]
    print("\n".join(lines), flush=True)
    shutil.rmtree(work, ignore_errors=True)

    if not args.skip_fetch:
        size = (256 if args.quick else 1024) * (1 << 20)
        print()
        print("\n".join(fetch_bench(size, 64 * (1 << 20))), flush=True)


if __name__ == "__main__":
    main()
