"""Pure builders for the objects a ModelDeployment owns: a Deployment and a Service.

The pod template is pinned to the digest the operator verified: the init container
re-downloads the artifact and refuses bytes with any other digest (closing the gap between
the operator's check and the pod's use), and the model server is told the same digest.
Pods run under the "restricted" Pod Security Standard.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modeltrust.operator.config import DEFAULT_IMAGE
from modeltrust.operator.types import API_VERSION, MODEL_DEPLOYMENT_KIND, ModelDeployment

MODELS_DIR = "/models"
MODEL_PATH = f"{MODELS_DIR}/model.onnx"
SOURCE_VOLUME_NAME = "model-source"
PROVENANCE_VOLUME_NAME = "provenance"
PROVENANCE_DIR = "/etc/modeltrust/provenance"  # files: see provenance.py
CREDENTIALS_VOLUME_NAME = "source-credentials"
CREDENTIALS_DIR = "/var/run/modeltrust/credentials"  # the Secret's keys, one file each
SERVER_CONTAINER = "model-server"
FETCH_CONTAINER = "fetch"
SERVICE_PORT = 80
RUN_AS_ID = 65532  # an unprivileged uid/gid, as distroless "nonroot" uses

ANN_DIGEST = "modeltrust.dev/digest"
ANN_MODEL = "modeltrust.dev/model"
ANN_VERSION = "modeltrust.dev/version"
ANN_GENERATION = "modeltrust.dev/verified-generation"
ANN_SIGNERS = "modeltrust.dev/signer-key-ids"
ANN_REGISTRATION = "modeltrust.dev/registration-index"
ANN_CHECKPOINT = "modeltrust.dev/checkpoint-size"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MODEL_DEPLOYMENT = "modeltrust.dev/model-deployment"
APP_NAME = "modeltrust-model-server"
MANAGED_BY = "modeltrust-operator"

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class VerifiedModel:
    """What the operator verified for one generation; the pod template is pinned to it."""

    digest: str
    size: int
    generation: int
    signer_key_ids: tuple[str, ...] = ()
    registration_index: int | None = None
    checkpoint_size: int | None = None
    # Extra `modeltrust fetch` arguments carrying offline verification material, read from
    # the ConfigMap `provenance_config_map` mounted read-only at PROVENANCE_DIR.
    fetch_args: tuple[str, ...] = ()
    provenance_config_map: str | None = None
    # Where the source credentials (spec.model.credentials) may be sent, as the Secret
    # said when verified; the fetch step refuses to send them anywhere else.
    credential_hosts: tuple[str, ...] = ()
    # The Secret holding them: spec.model.credentials.secretName, or the one the pods'
    # ServiceAccount lists for the model's host (source_credentials.secret_for_host).
    credentials_secret: str | None = None


@dataclass(frozen=True)
class BuildSettings:
    default_image: str = DEFAULT_IMAGE
    service_account_name: str | None = None


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether `obj` names the object with `uid` as its controller (ownerReferences)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def resource_name(md_name: str) -> str:
    """Name of the owned Deployment and Service.

    Services need a DNS-1035 label (63 chars, starts with a letter); ModelDeployment names
    are DNS subdomains. Names that fit are used as they are; others get a stable, readable
    truncation plus a hash so two long names never collide.
    """
    if _DNS1035_LABEL.match(md_name):
        return md_name
    digest = hashlib.sha256(md_name.encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]", "-", md_name.lower()).strip("-")[:40].strip("-")
    return f"md-{stem}-{digest}" if stem else f"md-{digest}"


def selector_labels(md: ModelDeployment) -> dict[str, str]:
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: resource_name(md.ref.name)}


def selector_string(md: ModelDeployment) -> str:
    """The selector in the string form the scale subresource's labelSelectorPath wants."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(md).items()))


def object_labels(md: ModelDeployment) -> dict[str, str]:
    labels = {**selector_labels(md), LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: "modeltrust"}
    if _LABEL_VALUE.match(md.ref.name) and len(md.ref.name) <= 63:
        labels[LABEL_MODEL_DEPLOYMENT] = md.ref.name
    return labels


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    if not md.ref.uid:
        raise ValueError(f"ModelDeployment {md.ref.name!r} has no uid; cannot own objects")
    return {
        "apiVersion": API_VERSION,
        "kind": MODEL_DEPLOYMENT_KIND,
        "name": md.ref.name,
        "uid": md.ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(md: ModelDeployment) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if md.runtime.requests:
        out["requests"] = dict(md.runtime.requests)
    if md.runtime.limits:
        out["limits"] = dict(md.runtime.limits)
    return out


def _image_fields(md: ModelDeployment, settings: BuildSettings) -> dict[str, Any]:
    fields: dict[str, Any] = {"image": md.runtime.image or settings.default_image}
    if md.runtime.image_pull_policy:
        fields["imagePullPolicy"] = md.runtime.image_pull_policy
    return fields


def credentials_secret(md: ModelDeployment, verified: VerifiedModel) -> str | None:
    """The Secret the fetch step mounts: the one named in the spec, else the one chosen
    from the ServiceAccount when the model was verified."""
    return md.model.credentials_secret or verified.credentials_secret


def service_account(md: ModelDeployment, settings: BuildSettings) -> str | None:
    """The pods' ServiceAccount: the ModelDeployment's, else the operator's setting."""
    return md.runtime.service_account_name or settings.service_account_name


def _source_args(md: ModelDeployment, verified: VerifiedModel) -> list[str]:
    """`modeltrust fetch` options for the source: S3 options, where credentials are."""
    args: list[str] = []
    s3 = md.model.s3
    if s3 is not None:
        if s3.endpoint:
            args += ["--s3-endpoint", s3.endpoint]
        if s3.region:
            args += ["--s3-region", s3.region]
        args += ["--s3-addressing", s3.addressing]
    if credentials_secret(md, verified) is not None:
        args += ["--credentials-dir", CREDENTIALS_DIR]
        args += ["--credential-hosts", ",".join(verified.credential_hosts)]
    return args


def build_pod_template(
    md: ModelDeployment, verified: VerifiedModel, settings: BuildSettings
) -> dict[str, Any]:
    """The pod template pinned to `verified.digest`."""
    if verified.digest != md.model.digest:
        # The template must never pair one spec's URI with another spec's digest.
        raise ValueError(
            f"verified digest {verified.digest} is not the pinned {md.model.digest}; "
            "build the template from the spec that was verified"
        )
    fetch_mounts: list[dict[str, Any]] = [{"name": "models", "mountPath": MODELS_DIR}]
    volumes: list[dict[str, Any]] = [
        # Room for the model plus 64 MiB of slack for the fetch step's temporary file name.
        {"name": "models", "emptyDir": {"sizeLimit": str(verified.size + (64 << 20))}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    if md.runtime.model_volume is not None:
        fetch_mounts.append(
            {
                "name": SOURCE_VOLUME_NAME,
                "mountPath": md.runtime.model_volume.mount_path,
                "readOnly": True,
            }
        )
        volumes.append(
            {
                "name": SOURCE_VOLUME_NAME,
                "persistentVolumeClaim": {
                    "claimName": md.runtime.model_volume.claim_name,
                    "readOnly": True,
                },
            }
        )
    if verified.provenance_config_map is not None:
        fetch_mounts.append(
            {"name": PROVENANCE_VOLUME_NAME, "mountPath": PROVENANCE_DIR, "readOnly": True}
        )
        volumes.append(
            {
                "name": PROVENANCE_VOLUME_NAME,
                "configMap": {"name": verified.provenance_config_map, "defaultMode": 0o444},
            }
        )
    fetch_args = [*verified.fetch_args, *_source_args(md, verified)]
    secret = credentials_secret(md, verified)
    if secret is not None:
        # Only the fetch step sees the credentials: the model server never mounts them.
        fetch_mounts.append(
            {"name": CREDENTIALS_VOLUME_NAME, "mountPath": CREDENTIALS_DIR, "readOnly": True}
        )
        volumes.append(
            {
                "name": CREDENTIALS_VOLUME_NAME,
                # 0440 with the pod's fsGroup: readable by the fetch step's user only.
                "secret": {"secretName": secret, "defaultMode": 0o440},
            }
        )
    fetch = {
        "name": FETCH_CONTAINER,
        **_image_fields(md, settings),
        "command": ["modeltrust", "fetch"],
        "args": [
            "--uri",
            md.model.uri,
            "--digest",
            verified.digest,
            "--dest",
            MODEL_PATH,
            "--max-size",
            str(verified.size),
            *fetch_args,
        ],
        "volumeMounts": [*fetch_mounts, {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
        # A refusal's last log lines become the termination message the operator reports
        # (pod_failures.py) without reading pod logs.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _restricted_container_security(),
        "resources": _resources(md),
    }
    server: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        **_image_fields(md, settings),
        "command": ["modeltrust", "serve"],
        "args": [
            "--model-path",
            MODEL_PATH,
            "--digest",
            verified.digest,
            "--model-name",
            md.model.name,
            "--model-version",
            md.model.version,
            "--host",
            "0.0.0.0",  # noqa: S104 - a pod serves its Service on every interface
            "--port",
            str(md.runtime.port),
        ],
        "ports": [{"name": "http", "containerPort": md.runtime.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
        ],
        "securityContext": _restricted_container_security(),
        "resources": _resources(md),
    }
    if md.runtime.env:
        server["env"] = [{"name": k, "value": v} for k, v in md.runtime.env]
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the model server never talks to the API
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_ID,
            "runAsGroup": RUN_AS_ID,
            "fsGroup": RUN_AS_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [fetch],
        "containers": [server],
        "volumes": volumes,
    }
    account = service_account(md, settings)
    if account:
        spec["serviceAccountName"] = account
    if md.runtime.node_selector:
        spec["nodeSelector"] = dict(md.runtime.node_selector)
    if md.runtime.tolerations:
        spec["tolerations"] = [dict(t) for t in md.runtime.tolerations]
    return {
        "metadata": {
            "labels": selector_labels(md),
            "annotations": {
                ANN_DIGEST: verified.digest,
                ANN_MODEL: md.model.name,
                ANN_VERSION: md.model.version,
            },
        },
        "spec": spec,
    }


def build_deployment(
    md: ModelDeployment,
    verified: VerifiedModel,
    settings: BuildSettings | None = None,
    *,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The Deployment serving `verified`. `replicas` overrides the spec (revocation with
    ScaleToZero). RollingUpdate with maxUnavailable 0 keeps the old verified version serving
    until the new one is ready, so a bad new version never takes the model down."""
    settings = settings or BuildSettings()
    annotations = {
        ANN_DIGEST: verified.digest,
        ANN_GENERATION: str(verified.generation),
        ANN_SIGNERS: ",".join(verified.signer_key_ids),
    }
    if verified.registration_index is not None:
        annotations[ANN_REGISTRATION] = str(verified.registration_index)
    if verified.checkpoint_size is not None:
        annotations[ANN_CHECKPOINT] = str(verified.checkpoint_size)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": resource_name(md.ref.name),
            "namespace": md.ref.namespace,
            "labels": object_labels(md),
            "annotations": annotations,
            "ownerReferences": [owner_reference(md)],
        },
        "spec": {
            "replicas": md.replicas if replicas is None else replicas,
            "selector": {"matchLabels": selector_labels(md)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 600,
            "template": build_pod_template(md, verified, settings),
        },
    }


def build_service(md: ModelDeployment) -> dict[str, Any]:
    """ClusterIP Service in front of the model server pods (port 80 -> the runtime port)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": resource_name(md.ref.name),
            "namespace": md.ref.namespace,
            "labels": object_labels(md),
            "ownerReferences": [owner_reference(md)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md),
            "ports": [
                {
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
