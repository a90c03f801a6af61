"""The pinned helm is built with its version stamped (tests/cluster/build-tools.sh).

A plain `go install` of helm reports "v3.19" and assumes Kubernetes v1.20.0 for
`helm template` and `helm lint`, so the chart's kubeVersion constraint (>=1.29) refused
every render that did not pass --kube-version.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.chartlib import CHART, REPO, LedgerKey, documents, helm, install_values

pytestmark = pytest.mark.integration


def _pinned(name: str) -> str:
    text = (REPO / "tests" / "cluster" / "versions.env").read_text()
    match = re.search(rf"^{name}=(\S+)$", text, re.MULTILINE)
    assert match, f"{name} is not in tests/cluster/versions.env"
    return match.group(1)


def test_helm_reports_its_pinned_version() -> None:
    result = helm("version", "--template", "{{.Version}} {{.GitTreeState}}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{_pinned('HELM_VERSION')} clean"


def test_helm_assumes_the_kubernetes_of_its_client_libraries(tmp_path: Path) -> None:
    # helm's Makefile stamps the Kubernetes minor of the k8s.io/client-go it builds with;
    # unstamped, .Capabilities.KubeVersion is v1.20.0.
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.0.1\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: '{{ .Capabilities.KubeVersion.Version }}'}\n"
    )
    result = helm("template", "probe", str(chart))
    assert result.returncode == 0, result.stderr
    (doc,) = documents(result.stdout)
    assumed = re.fullmatch(r"v(\d+)\.(\d+)\.0", doc["data"]["kube"])
    assert assumed, doc["data"]["kube"]
    assert (int(assumed[1]), int(assumed[2])) >= (1, 29), doc["data"]["kube"]


def test_helm_template_works_without_kube_version(tmp_path: Path) -> None:
    values: dict[str, Any] = install_values(LedgerKey.generate("ledger.test/helm"))
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = helm("template", "rel", str(CHART), "--namespace", "mt-test", "-f", str(values_file))
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in documents(result.stdout)}
    assert {"Deployment", "StatefulSet"} <= kinds
