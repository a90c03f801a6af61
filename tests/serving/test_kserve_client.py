"""KServe's Python client (InferenceRESTClient, protocol v2) against every endpoint it has.

KServe does not install beside our pins (it wants python-dateutil < 3 and, before
0.16, numpy < 2), so, like bench/serving_bench.py, this runs it in its own virtualenv,
which `make install` creates (requirements/kserve.txt; or point $KSERVE_PYTHON at one).
Without it the test fails and says how to make it: an off-the-shelf client that was not
run is not a client that works.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness import onnx_models
from serving.helpers import RunningServer

pytestmark = pytest.mark.integration

KSERVE_PYTHON = Path(
    os.environ.get(
        "KSERVE_PYTHON", Path.home() / ".cache" / "modeltrust" / "kserve-venv" / "bin" / "python"
    )
)

CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from kserve import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest

    async def main(url):
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        request = InferRequest(model_name="mnist", infer_inputs=[
            InferInput("input", [1, 784], "FP32", [0.25] * 784)])
        result = await client.infer(url, request, model_name="mnist")
        out = result.outputs[0]
        print(json.dumps({
            "live": await client.is_server_live(url),
            "ready": await client.is_server_ready(url),
            "model_ready": await client.is_model_ready(url, "mnist"),
            "output": [out.name, out.datatype, out.shape, list(map(float, out.data))],
        }))
        await client.close()

    asyncio.run(main(sys.argv[1]))
    """
)


def test_kserve_client_health_readiness_and_infer(mnist_server: RunningServer) -> None:
    assert KSERVE_PYTHON.exists(), (
        f"no KServe interpreter at {KSERVE_PYTHON}: run `make install` (it builds the KServe "
        "virtualenv from requirements/kserve.txt) or set KSERVE_PYTHON"
    )
    run = subprocess.run(
        [str(KSERVE_PYTHON), "-c", CLIENT, f"http://127.0.0.1:{mnist_server.port}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert [answer["live"], answer["ready"], answer["model_ready"]] == [True, True, True]
    name, datatype, shape, data = answer["output"]
    assert (name, datatype, shape) == ("logits", "FP32", [1, 10])
    expected = onnx_models.mnist_mlp_reference(np.full((1, 784), 0.25, dtype=np.float32))
    np.testing.assert_allclose(np.array(data, dtype=np.float32), expected.ravel(), rtol=1e-5)
