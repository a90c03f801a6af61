"""Helpers for the chart tests: the pinned helm, rendering, and realistic install values.

Imported by tests/chart (helm lint/template, no cluster) and tests/e2e/test_chart.py.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.cluster import tools_bin
from modeltrust.chain.note import ALG_COSIGNATURE_V1, NoteSigner

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modeltrust"
KUBE_VERSION = "1.35.4"  # tests/cluster/versions.env; `helm template` assumes 1.20 otherwise


def helm_binary() -> Path:
    """The helm the repository pins (built once by tests/cluster/build-tools.sh)."""
    return tools_bin() / "helm"


@dataclass(frozen=True)
class LedgerKey:
    """A real C2SP note key pair, as `modeltrust ledger keygen` makes."""

    signer_key: str
    verifier_key: str

    @classmethod
    def generate(cls, name: str) -> LedgerKey:
        signer = NoteSigner.generate(name)
        return cls(signer.signer_key(), signer.verifier_key())

    @classmethod
    def generate_witness(cls, name: str) -> LedgerKey:
        """A witness's key pair, as `modeltrust ledger keygen --witness` makes."""
        signer = NoteSigner.generate(name, alg=ALG_COSIGNATURE_V1)
        return cls(signer.signer_key(), signer.verifier_key())


def publisher_pem() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def install_values(
    key: LedgerKey,
    *,
    secret: str = "modeltrust-ledger-key",  # noqa: S107 -- a Secret's name, not a password
    policy_name: str = "default",
) -> dict[str, Any]:
    """The values a user passes on a first install: key Secret, verifier key, one publisher."""
    return {
        "ledger": {"signingKey": {"existingSecret": secret}, "verifierKey": key.verifier_key},
        "policy": {
            "name": policy_name,
            "publishers": [{"name": "acme-ml", "publicKey": publisher_pem()}],
        },
    }


def witness_secret(name: str) -> str:
    """The Secret a test creates for witness `name` (key "witness-key")."""
    return f"witness-{name}"


def witness_values(witnesses: Mapping[str, LedgerKey]) -> dict[str, Any]:
    """ledger.witnesses for these witnesses, their keys in Secrets named witness-<name>."""
    return {
        "ledger": {
            "witnesses": [
                {
                    "name": name,
                    "verifierKey": key.verifier_key,
                    "signingKey": {"existingSecret": witness_secret(name)},
                }
                for name, key in witnesses.items()
            ]
        }
    }


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping):
            merged[k] = merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def write_values(path: Path, values: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(values), sort_keys=False))
    return path


def helm(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_binary()), *args],
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def template(
    values_file: Path,
    *,
    release: str = "rel",
    namespace: str = "mt-test",
    extra: Sequence[str] = (),
    kube_version: str = KUBE_VERSION,
) -> subprocess.CompletedProcess[str]:
    return helm(
        "template", release, str(CHART), "--namespace", namespace,
        "--kube-version", kube_version, "-f", str(values_file), *extra,
    )  # fmt: skip


def documents(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def find(docs: Sequence[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"expected one {kind} named *{name_suffix}, found {len(matches)}"
    return matches[0]


def pod_specs(docs: Sequence[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]


def notes(
    values_file: Path, workdir: Path, *, release: str = "rel", namespace: str = "mt-test"
) -> str:
    """NOTES.txt as `helm install` would print it (`helm template` skips it): rendered from a
    copy of the chart in which it is a ConfigMap's data."""
    chart = workdir / "chart-with-notes"
    if chart.exists():
        shutil.rmtree(chart)
    shutil.copytree(CHART, chart)
    text = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + text + "\n{{- end -}}\n"
    )
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "test.notes" . | toJson }}\n'
    )
    result = helm(
        "template", release, str(chart), "--namespace", namespace,
        "--kube-version", KUBE_VERSION, "-f", str(values_file),
        "--show-only", "templates/notes.yaml",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (doc,) = documents(result.stdout)
    rendered: str = doc["data"]["notes"]
    return rendered
