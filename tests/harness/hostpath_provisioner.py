"""A host-path volume provisioner for the real-node cluster's default StorageClass.

It watches PersistentVolumeClaims of its StorageClass and, for each pending one, creates
a hostPath PersistentVolume under its root directory, bound to the claim and pinned to
the node. When a claim goes away, the PV controller marks its volume Released; this
deletes the directory and the volume. Standard library only: the harness starts it as
a plain process next to the kubelet (kind ships a local-path provisioner for the same need).

    python hostpath_provisioner.py --server URL --ca CA --cert CERT --key KEY \
        --root DIR --node NODE --storage-class NAME
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

PROVISIONER = "modeltrust.dev/hostpath"
_ANNOTATION = "pv.kubernetes.io/provisioned-by"


class Api:
    def __init__(self, server: str, ca: str, cert: str, key: str) -> None:
        parsed = urllib.parse.urlsplit(server)
        self.host = parsed.hostname or ""
        self.port = parsed.port or 443
        self.context = ssl.create_default_context(cafile=ca)
        self.context.load_cert_chain(cert, key)

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=timeout
        )

    def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        conn = self._connection(30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            return response.status, json.loads(payload) if payload else None
        finally:
            conn.close()

    def watch(self, path: str) -> Any:
        """Yield watch events (decoded) until the server ends the stream (~1 min)."""
        conn = self._connection(90)
        try:
            conn.request("GET", f"{path}?watch=1&timeoutSeconds=60&allowWatchBookmarks=false")
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"watch {path}: HTTP {response.status}")
            while line := response.readline():
                yield json.loads(line)
        finally:
            conn.close()


class Provisioner:
    def __init__(self, api: Api, root: Path, node: str, storage_class: str) -> None:
        self.api = api
        self.root = root
        self.node = node
        self.storage_class = storage_class
        self.lock = threading.Lock()

    def reconcile(self) -> None:
        with self.lock:
            status, claims = self.api.request("GET", "/api/v1/persistentvolumeclaims")
            if status == 200:
                for claim in claims["items"]:
                    self._provision(claim)
            status, volumes = self.api.request("GET", "/api/v1/persistentvolumes")
            if status == 200:
                for volume in volumes["items"]:
                    self._reclaim(volume)

    def _provision(self, claim: dict[str, Any]) -> None:
        spec, meta = claim["spec"], claim["metadata"]
        if spec.get("storageClassName") != self.storage_class or spec.get("volumeName"):
            return
        if claim.get("status", {}).get("phase") != "Pending" or meta.get("deletionTimestamp"):
            return
        name = f"pvc-{meta['uid']}"
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # pods of any uid (the chart's run as 65532) can write
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {_ANNOTATION: PROVISIONER}},
            "spec": {
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": self.storage_class,
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
                "hostPath": {"path": str(path), "type": "Directory"},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": [self.node],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        }
        status, _ = self.api.request("POST", "/api/v1/persistentvolumes", volume)
        if status == 201:
            print(f"provisioned {name} for {meta['namespace']}/{meta['name']}", flush=True)
        elif status != 409:
            print(f"creating {name} failed: HTTP {status}", flush=True)

    def _reclaim(self, volume: dict[str, Any]) -> None:
        meta = volume["metadata"]
        if meta.get("annotations", {}).get(_ANNOTATION) != PROVISIONER:
            return
        if volume.get("status", {}).get("phase") not in ("Released", "Failed"):
            return
        shutil.rmtree(self.root / meta["name"], ignore_errors=True)
        status, _ = self.api.request("DELETE", f"/api/v1/persistentvolumes/{meta['name']}")
        if status in (200, 202, 404):
            print(f"deleted {meta['name']}", flush=True)

    def watch_forever(self, path: str) -> None:
        while True:
            try:
                for _event in self.api.watch(path):
                    self.reconcile()
            except (OSError, RuntimeError, ValueError, http.client.HTTPException) as exc:
                print(f"watch {path}: {exc}; retrying", flush=True)
                time.sleep(1)
            self.reconcile()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    for flag in ("--server", "--ca", "--cert", "--key", "--root", "--node", "--storage-class"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    provisioner = Provisioner(
        Api(args.server, args.ca, args.cert, args.key),
        Path(args.root),
        args.node,
        args.storage_class,
    )
    provisioner.root.mkdir(parents=True, exist_ok=True)
    print(f"provisioning {args.storage_class} volumes under {args.root}", flush=True)
    for path in ("/api/v1/persistentvolumeclaims", "/api/v1/persistentvolumes"):
        threading.Thread(target=provisioner.watch_forever, args=(path,), daemon=True).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
