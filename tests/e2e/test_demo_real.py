"""`make demo REAL=1`'s story on real pods: hack/demo.py --real against the real-pod
tests' cluster (`real_cluster`, the modeltrust image already imported), as tests/e2e/
test_demo.py runs the kwok demo. The model pods really fetch and re-verify the model from
the demo's storage, and the last step is an inference through the model's Service.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.image import image_on_node

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "hack" / "demo.py"
STEPS = 15

pytestmark = pytest.mark.real_pods


def test_the_demo_on_real_pods_ends_with_a_real_inference(real_cluster: Cluster) -> None:
    cluster = real_cluster
    env = {**cluster.env, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONIOENCODING": "utf-8"}
    env.pop("NO_COLOR", None)
    argv = [sys.executable, str(DEMO), "--real", "--use-current-context", "--timeout", "180",
            "--store-address", cluster.host_address]  # fmt: skip
    if cluster.importer is not None:
        argv += ["--image", image_on_node(cluster)]  # by digest, as policies require
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=900, check=False
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, f"demo failed:\n{out}\n{result.stderr}"
    ticked = re.findall(rf"^ ✓ +(\d+)/{STEPS}  ", out, re.MULTILINE)
    assert [int(n) for n in ticked] == list(range(1, STEPS + 1)), out
    assert "✗" not in out
    assert re.search(
        r"^ +digits +digits +1\.0\.0 +1\.0\.0 +[0-9a-f]{12} +Verified +Enforced +True +2 ",
        out,
        re.MULTILINE,
    )
    last = out[out.index(f"15/{STEPS}") :]
    assert "logits equal to onnxruntime's on this machine" in last, last
    assert "a real inference answered" in out

    # Nothing left: the demo's namespace goes (its ModelDeployments were deleted while its
    # operator ran), and so do the model pods.
    namespace = re.search(r"namespace (modeltrust-demo-[0-9a-f]{6})\b", out)
    assert namespace, out
    deadline = time.monotonic() + 120
    while cluster.kubectl("get", "namespace", namespace.group(1), check=False).returncode == 0:
        assert time.monotonic() < deadline, f"namespace {namespace.group(1)} is not going away"
        time.sleep(1)
