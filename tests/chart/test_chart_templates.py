"""The chart as `helm lint` and `helm template` see it: what a user gets for given values.

No cluster here (tests/e2e/test_chart.py installs it for real); these render with the
repository's pinned helm and check the objects a reviewer would check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.chartlib import (
    CHART,
    LedgerKey,
    documents,
    find,
    helm,
    install_values,
    merge,
    pod_specs,
    template,
    write_values,
)
from modeltrust.operator import builders
from modeltrust.operator.types import API_VERSION, MODEL_DEPLOYMENT_KIND

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RELEASE, NAMESPACE = "rel", "mt-test"


@pytest.fixture(scope="module")
def key() -> LedgerKey:
    return LedgerKey.generate("ledger.example")


@pytest.fixture
def values(key: LedgerKey) -> dict[str, Any]:
    return install_values(key)


def render(tmp_path: Path, values: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    result = template(write_values(tmp_path / "values.yaml", values), extra=extra)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def render_error(tmp_path: Path, values: dict[str, Any], *extra: str) -> str:
    result = template(write_values(tmp_path / "values.yaml", values), extra=extra)
    assert result.returncode != 0, "helm template accepted values it must refuse"
    return result.stderr


def test_lint_strict_passes_with_install_values(tmp_path: Path, values: dict[str, Any]) -> None:
    result = helm(
        "lint", "--strict", str(CHART), "-f", str(write_values(tmp_path / "v.yaml", values))
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("path", "typo"),
    [
        (("ledger", "persistance"), {"size": "5Gi"}),
        (("operator", "replicas"), 2),
        (("policy", "publisher"), []),
        (("image", "tags"), "v1"),
        (("networkPolicy", "ledgerClients"), [{"podSelectr": {}}]),
    ],
)
def test_schema_rejects_unknown_keys(
    tmp_path: Path, values: dict[str, Any], path: tuple[str, str], typo: object
) -> None:
    stderr = render_error(tmp_path, merge(values, {path[0]: {path[1]: typo}}))
    assert "values don't meet the specifications of the schema" in stderr
    assert "additional properties" in stderr.lower()


def test_schema_rejects_malformed_values(tmp_path: Path, values: dict[str, Any]) -> None:
    stderr = render_error(tmp_path, merge(values, {"ledger": {"verifierKey": "not a key"}}))
    assert "verifierKey" in stderr
    stderr = render_error(tmp_path, merge(values, {"policy": {"enforcement": "Lenient"}}))
    assert "enforcement" in stderr


def test_install_without_a_ledger_key_says_how_to_make_one(tmp_path: Path) -> None:
    stderr = render_error(tmp_path, {"policy": {"publishers": []}})
    assert "ledger.signingKey.existingSecret is required" in stderr
    assert "modeltrust ledger keygen" in stderr


def test_policy_needs_publishers_or_must_be_disabled(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    stderr = render_error(tmp_path, merge(values, {"policy": {"publishers": []}}))
    assert "policy.publishers is empty" in stderr
    too_many = merge(values, {"policy": {"threshold": 2}})
    assert "policy.threshold (2) exceeds" in render_error(tmp_path, too_many)


def test_kube_version_below_130_is_refused(tmp_path: Path, values: dict[str, Any]) -> None:
    # ValidatingAdmissionPolicy v1, which the chart installs by default, is GA from 1.30.
    file = write_values(tmp_path / "values.yaml", values)
    refused = template(file, kube_version="1.29.9")
    assert refused.returncode != 0
    assert ">=1.30.0-0" in refused.stderr
    assert template(file, kube_version="1.30.0").returncode == 0


def test_every_pod_meets_the_restricted_pod_security_standard(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    docs = render(tmp_path, values)
    specs = dict(pod_specs(docs))
    assert set(specs) == {"Deployment/rel-modeltrust-operator", "StatefulSet/rel-modeltrust-ledger"}
    for where, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] != 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), f"{where}: {flag}"
        assert all("hostPath" not in v for v in spec.get("volumes", [])), where
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["runAsNonRoot"] is True, where
            assert "requests" in container["resources"], f"{where}: no resource requests"
            assert not any(p.get("hostPort") for p in container.get("ports", [])), where


def test_rbac_is_least_privilege(tmp_path: Path, values: dict[str, Any]) -> None:
    docs = render(tmp_path, values)
    rules_by_role = {
        f"{d['kind']}/{d['metadata']['name']}": d["rules"]
        for d in docs
        if d["kind"] in ("ClusterRole", "Role")
    }
    for role, rules in rules_by_role.items():
        for rule in rules:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{role} grants a wildcard {field}"
    granted = {
        (role, group, resource, verb)
        for role, rules in rules_by_role.items()
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    touched = {resource for _, _, resource, _ in granted}
    for forbidden in ("secrets", "pods/exec", "roles", "clusterroles", "rolebindings"):
        assert forbidden not in touched, f"the chart grants access to {forbidden}"
    ledger = {g for g in granted if g[0] == "ClusterRole/rel-modeltrust-ledger"}
    assert ledger == {
        ("ClusterRole/rel-modeltrust-ledger", "authentication.k8s.io", "tokenreviews", "create")
    }
    operator = {g[1:] for g in granted if g[0] == "ClusterRole/rel-modeltrust-operator"}
    documented = documented_operator_rbac()
    assert operator == documented["ClusterRole"], "the ClusterRole differs from docs/rbac.md"
    # The proof ConfigMap the operator writes into each ModelDeployment's namespace: without
    # create there, every Enforce rollout waits forever.
    assert ("", "configmaps", "create") in operator
    assert not {("", "configmaps", v) for v in ("update", "delete", "list", "watch")} & operator
    state = {g[1:] for g in granted if g[0] == "Role/rel-modeltrust-operator"}
    assert state == documented["Role"], "the operator namespace's Role differs from docs/rbac.md"
    state_role = find(docs, "Role", "-operator")
    assert state_role["metadata"]["namespace"] == NAMESPACE, "checkpoint state is namespaced"
    # kopf lists namespaces only when it serves a list of them; the operator only reads one
    # namespace's labels (a policy's namespaceSelector).
    assert {g for g in operator if g[1] == "namespaces"} == {("", "namespaces", "get")}
    docs = render(tmp_path, merge(values, {"operator": {"watchNamespaces": ["ml"]}}))
    (cluster_role,) = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("operator")
    ]
    narrowed = {
        (group, resource, verb)
        for rule in cluster_role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert narrowed == documented["ClusterRole"] | documented["watchNamespaces"]
    # Source credentials: Secrets by name only, and only when the values ask for it.
    docs = render(tmp_path, merge(values, {"operator": {"readSourceCredentials": True}}))
    (cluster_role,) = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("operator")
    ]
    with_secrets = {
        (group, resource, verb)
        for rule in cluster_role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert with_secrets == documented["ClusterRole"] | documented["readSourceCredentials"]
    assert documented["readSourceCredentials"] == {
        ("", "secrets", "get"),
        ("", "serviceaccounts", "get"),
    }
    # ... and the operator is told, so it looks ServiceAccounts up only when it may.
    assert _operator_env(docs).get("MODELTRUST_READ_SOURCE_CREDENTIALS") == "true"
    assert "MODELTRUST_READ_SOURCE_CREDENTIALS" not in _operator_env(render(tmp_path, values))


def _operator_env(docs: list[dict[str, Any]]) -> dict[str, str | None]:
    (deployment,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("operator")
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def documented_operator_rbac() -> dict[str, set[tuple[str, str, str]]]:
    """docs/rbac.md's table of the operator's permissions, by where the chart grants them."""
    rows: dict[str, set[tuple[str, str, str]]] = {"ClusterRole": set(), "Role": set()}
    rows["watchNamespaces"] = set()
    rows["readSourceCredentials"] = set()
    text = (CHART.parents[1] / "docs" / "rbac.md").read_text()
    section = text.split("## The operator's service account", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        group, resource = (c.strip("`") for c in cells[:2])
        where = cells[3]
        key = (
            "readSourceCredentials"
            if "readSourceCredentials" in where
            else "watchNamespaces"
            if "watchNamespaces" in where
            else "Role"
            if where.startswith("Role")
            else "ClusterRole"
        )
        for verb in cells[2].split(","):
            rows[key].add(("" if group == "core" else group, resource, verb.strip()))
    assert all(rows.values()), f"docs/rbac.md's table was not found or changed shape: {rows}"
    return rows


def test_cluster_scoped_objects_of_two_releases_do_not_collide(
    tmp_path: Path, key: LedgerKey
) -> None:
    cluster_kinds = {"ClusterRole", "ClusterRoleBinding", "ModelTrustPolicy"}
    names = []
    for release in ("alpha", "beta"):
        values = install_values(key, policy_name=f"{release}-policy")
        file = write_values(tmp_path / f"{release}.yaml", values)
        result = template(file, release=release)
        assert result.returncode == 0, result.stderr
        names.append(
            {
                (d["kind"], d["metadata"]["name"])
                for d in documents(result.stdout)
                if d["kind"] in cluster_kinds
            }
        )
    assert names[0]
    assert not names[0] & names[1]
    assert all("alpha" in n for _, n in names[0])


def test_operator_runs_one_replica_recreated_with_kopf_liveness(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    deploy = find(render(tmp_path, values), "Deployment", "-operator")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert "command" not in container, "the image's entry point `modeltrust` runs it"
    assert container["args"][0] == "operator"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080


def test_operator_is_ready_only_when_kopf_serves_its_health_endpoint(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    # kopf opens --liveness only after the startup handler returned: the same endpoint tells
    # the kubelet (and `helm install --wait`) that the operator is able to act.
    custom = merge(values, {"operator": {"healthPort": 8181}})
    (container,) = find(render(tmp_path, custom), "Deployment", "-operator")["spec"]["template"][
        "spec"
    ]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    ready = container["readinessProbe"]
    assert ready["httpGet"]["path"] == "/healthz"
    assert ports[ready["httpGet"]["port"]] == 8181
    assert "--liveness=http://0.0.0.0:8181/healthz" in container["args"]
    assert ready["periodSeconds"] <= container["livenessProbe"]["periodSeconds"]


def _operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = find(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def test_operator_scratch_volume_is_requested_and_limited_as_ephemeral_storage(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    docs = render(tmp_path, values)
    container = _operator_container(docs)
    pod = find(docs, "Deployment", "-operator")["spec"]["template"]["spec"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"] == "4Gi"
    assert container["resources"]["requests"]["ephemeral-storage"] == "4Gi"
    assert container["resources"]["limits"]["ephemeral-storage"] == "4608Mi"  # + 512Mi of logs
    assert container["resources"]["requests"]["cpu"] == "100m", "the other values are kept"
    # Follows scratchSize, and explicit values win.
    bigger = _operator_container(
        render(tmp_path, merge(values, {"operator": {"scratchSize": "10Gi"}}))
    )
    assert bigger["resources"]["requests"]["ephemeral-storage"] == "10Gi"
    assert bigger["resources"]["limits"]["ephemeral-storage"] == "10752Mi"
    own = {"requests": {"ephemeral-storage": "6Gi"}, "limits": {"ephemeral-storage": "8Gi"}}
    explicit = _operator_container(
        render(tmp_path, merge(values, {"operator": {"resources": own}}))
    )
    assert explicit["resources"]["requests"]["ephemeral-storage"] == "6Gi"
    assert explicit["resources"]["limits"]["ephemeral-storage"] == "8Gi"
    # A limit under the volume's size would get the operator evicted mid-verification.
    low = {"operator": {"resources": {"limits": {"ephemeral-storage": "1Gi"}}}}
    stderr = render_error(tmp_path, merge(values, low))
    assert "operator.resources.limits.ephemeral-storage (1Gi) is below operator.scratchSize" in (
        stderr
    )
    # The ledger's /tmp is small; it requests a little too.
    (ledger,) = find(docs, "StatefulSet", "-ledger")["spec"]["template"]["spec"]["containers"]
    assert ledger["resources"]["requests"]["ephemeral-storage"] == "64Mi"
    assert "ephemeral-storage" in ledger["resources"]["limits"]


def test_watch_namespaces_replace_all_namespaces(tmp_path: Path, values: dict[str, Any]) -> None:
    docs = render(tmp_path, merge(values, {"operator": {"watchNamespaces": ["ml", "ml-staging"]}}))
    args = find(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--namespace=ml" in args
    assert "--namespace=ml-staging" in args
    assert "--all-namespaces" not in args


def test_ledger_is_a_single_writer_statefulset_with_its_own_volume(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    docs = render(tmp_path, values)
    sts = find(docs, "StatefulSet", "-ledger")
    spec = sts["spec"]
    assert spec["replicas"] == 1
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    headless = find(docs, "Service", "-ledger-headless")
    assert spec["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:2] == ["ledger", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/modeltrust/ledger"
    key_volume = next(v for v in pod["volumes"] if v["name"] == "signing-key")
    assert key_volume["secret"]["secretName"] == "modeltrust-ledger-key"
    assert key_volume["secret"]["defaultMode"] & 0o007 == 0, "the key is not world-readable"
    # Only the operator's service account may append audit entries.
    writers = [a for a in container["args"] if a.startswith("--tokenreview-allow=")]
    operator_sa = find(docs, "Deployment", "-operator")["spec"]["template"]["spec"][
        "serviceAccountName"
    ]
    assert writers == [f"--tokenreview-allow=system:serviceaccount:{NAMESPACE}:{operator_sa}"]


def test_ledger_key_is_never_rendered_into_the_release(
    tmp_path: Path, values: dict[str, Any], key: LedgerKey
) -> None:
    result = template(write_values(tmp_path / "values.yaml", values))
    assert result.returncode == 0, result.stderr
    assert "PRIVATE+KEY" not in result.stdout
    assert not [d for d in documents(result.stdout) if d["kind"] == "Secret"]


def test_default_policy_trusts_this_ledger_and_the_given_publishers(
    tmp_path: Path, values: dict[str, Any], key: LedgerKey
) -> None:
    docs = render(tmp_path, values)
    policy = find(docs, "ModelTrustPolicy")
    client = find(docs, "Service", "-ledger")
    port = client["spec"]["ports"][0]["port"]
    assert policy["metadata"]["name"] == "default"
    assert policy["spec"]["ledger"] == {
        "url": f"http://{client['metadata']['name']}.{NAMESPACE}.svc:{port}",
        "verifierKey": key.verifier_key,
        "witnessQuorum": 0,
    }
    (publisher,) = policy["spec"]["publishers"]
    expected = values["policy"]["publishers"][0]
    assert publisher["name"] == expected["name"]
    assert publisher["publicKey"].strip() == expected["publicKey"].strip()
    # The ledger accepts registrations from the same publishers.
    pems = find(docs, "ConfigMap", "-ledger-publishers")["data"]["publishers.pem"]
    assert expected["publicKey"].strip() in pems


def test_policy_scope_and_runtime_values(tmp_path: Path, values: dict[str, Any]) -> None:
    plain = find(render(tmp_path, values), "ModelTrustPolicy")["spec"]
    assert not {"namespaces", "namespaceSelector", "runtime"} & set(plain)
    image = "registry.example/modeltrust@sha256:" + "ab" * 32
    scoped = {
        "namespaces": ["ml"],
        "namespaceSelector": {"matchLabels": {"team": "ml"}},
        "runtime": {"allowedImages": [image], "allowedEnv": ["OMP_NUM_THREADS"]},
    }
    spec = find(render(tmp_path, merge(values, {"policy": scoped})), "ModelTrustPolicy")["spec"]
    assert {k: spec[k] for k in scoped} == scoped
    everything = merge(values, {"policy": {"namespaceSelector": {}, "runtime": {"allowedEnv": []}}})
    spec = find(render(tmp_path, everything), "ModelTrustPolicy")["spec"]
    assert (spec["namespaceSelector"], spec["runtime"]) == ({}, {"allowedEnv": []})
    # Values from before these keys existed (helm upgrade --reuse-values) still render.
    older = merge(values, {"policy": {"runtime": None, "namespaceSelector": None}})
    assert "runtime" not in find(render(tmp_path, older), "ModelTrustPolicy")["spec"]
    bad = merge(values, {"policy": {"runtime": {"allowedImages": ["img:latest"]}}})
    assert "allowedImages" in render_error(tmp_path, bad)


def test_policy_can_be_left_to_the_user(tmp_path: Path, values: dict[str, Any]) -> None:
    extra = {"ledger": {"extraPublisherKeys": [values["policy"]["publishers"][0]["publicKey"]]}}
    docs = render(tmp_path, merge(merge(values, {"policy": {"create": False}}), extra))
    assert not [d for d in docs if d["kind"] == "ModelTrustPolicy"]


def test_network_policy_admits_only_operator_pods_to_the_ledger(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    assert not [d for d in render(tmp_path, values) if d["kind"] == "NetworkPolicy"]
    docs = render(tmp_path, merge(values, {"networkPolicy": {"enabled": True}}))
    policy = find(docs, "NetworkPolicy", "-ledger")
    ledger_pods = find(docs, "StatefulSet", "-ledger")["spec"]["template"]["metadata"]["labels"]
    operator_pods = find(docs, "Deployment", "-operator")["spec"]["template"]["metadata"]["labels"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= ledger_pods.items()
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= operator_pods.items()
    assert not peer["podSelector"]["matchLabels"].items() <= ledger_pods.items()
    assert find(docs, "NetworkPolicy", "-operator")["spec"]["ingress"] == []


def test_network_policy_limits_the_ledgers_egress_to_the_api_server(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    # The ledger calls only the Kubernetes API (TokenReview). `helm template` cannot read the
    # API server's addresses: only its ports are allowed then (the install test checks the
    # addresses read from a real cluster, tests/e2e/test_chart.py).
    docs = render(tmp_path, merge(values, {"networkPolicy": {"enabled": True}}))
    spec = find(docs, "NetworkPolicy", "-ledger")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["egress"] == [
        {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    ]
    # Given explicitly (e.g. for GitOps, which renders with `helm template`), plus DNS and more.
    api = [{"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 6443}]}]
    extra = [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 8443}]}]
    egress = {"apiServer": api, "dns": True, "extraRules": extra}
    docs = render(
        tmp_path, merge(values, {"networkPolicy": {"enabled": True, "ledgerEgress": egress}})
    )
    rules = find(docs, "NetworkPolicy", "-ledger")["spec"]["egress"]
    assert rules[0] == api[0]
    assert rules[1]["to"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    ]
    assert {(p["port"], p["protocol"]) for p in rules[1]["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert rules[2:] == extra
    # Values from before ledgerEgress existed (helm upgrade --reuse-values) still render.
    older = merge(values, {"networkPolicy": {"enabled": True, "ledgerEgress": None}})
    assert find(render(tmp_path, older), "NetworkPolicy", "-ledger")["spec"]["egress"]
    bad: dict[str, Any] = {
        "networkPolicy": {"ledgerEgress": {"apiServer": [{"to": [{"ipBlok": {}}]}]}}
    }
    assert "additional properties" in render_error(tmp_path, merge(values, bad)).lower()


def test_service_monitors_scrape_one_service_each(tmp_path: Path, values: dict[str, Any]) -> None:
    docs = render(tmp_path, merge(values, {"serviceMonitor": {"enabled": True}}))
    services = [d for d in docs if d["kind"] == "Service"]
    scraped = {}
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        (service,) = [s for s in services if wanted <= s["metadata"]["labels"].items()]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        scraped[monitor["metadata"]["name"]] = service["metadata"]["name"]
    assert scraped == {
        "rel-modeltrust-ledger": "rel-modeltrust-ledger",
        "rel-modeltrust-operator": "rel-modeltrust-operator-metrics",
    }


def test_image_digest_wins_over_the_tag(tmp_path: Path, values: dict[str, Any]) -> None:
    digest = "sha256:" + "ab" * 32
    docs = render(
        tmp_path, merge(values, {"image": {"repository": "registry.example/mt", "digest": digest}})
    )
    for _, spec in pod_specs(docs):
        assert spec["containers"][0]["image"] == f"registry.example/mt@{digest}"


def _operator_ledger_token(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The projected token source of the operator pod and the file its env var names."""
    pod = find(docs, "Deployment", "-operator")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    token_file = env["MODELTRUST_LEDGER_TOKEN_FILE"]
    mounts = container["volumeMounts"]
    mount = next(m for m in mounts if token_file.startswith(m["mountPath"] + "/"))
    assert mount.get("readOnly") is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    (source,) = volume["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token_file == f"{mount['mountPath']}/{token['path']}"
    return token, token_file


def test_operator_presents_a_ledger_audience_token_never_its_api_token(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    docs = render(tmp_path, values)
    token, token_file = _operator_ledger_token(docs)
    assert token == {"audience": "modeltrust-ledger", "expirationSeconds": 3600, "path": "token"}
    assert not token_file.startswith("/var/run/secrets/kubernetes.io/"), "the API token's path"
    operator_pod = find(docs, "Deployment", "-operator")["spec"]["template"]["spec"]
    assert operator_pod["automountServiceAccountToken"] is True, "kopf needs its API token"
    # The ledger reviews tokens for that audience only.
    ledger_args = find(docs, "StatefulSet", "-ledger")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    audiences = [a for a in ledger_args if a.startswith("--tokenreview-audience=")]
    assert audiences == ["--tokenreview-audience=modeltrust-ledger"]


def test_the_ledger_audience_is_one_value_for_both_sides(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    auth = {"audience": "ledger.acme.example", "tokenExpirationSeconds": 900}
    custom = {"ledger": {"auth": auth}}
    docs = render(tmp_path, merge(values, custom))
    token, _ = _operator_ledger_token(docs)
    assert (token["audience"], token["expirationSeconds"]) == ("ledger.acme.example", 900)
    args = find(docs, "StatefulSet", "-ledger")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--tokenreview-audience=ledger.acme.example" in args
    # The API server's own audience would let the API token through again; too long or too
    # short lifetimes are refused too (the kubelet's minimum is 600 s).
    for bad in (
        {"audience": "https://kubernetes.default.svc.cluster.local"},
        {"audience": ""},
        {"tokenExpirationSeconds": 60},
    ):
        stderr = render_error(tmp_path, merge(values, {"ledger": {"auth": bad}}))
        assert "values don't meet the specifications of the schema" in stderr


ADMISSION_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
ADMISSION_POLICIES = ("model-objects", "model-replicasets", "model-pods")


def admission_objects(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs if d["kind"] in ADMISSION_KINDS}


def variable(policy: dict[str, Any], name: str) -> str:
    (found,) = [v["expression"] for v in policy["spec"]["variables"] if v["name"] == name]
    return str(found)


def test_admission_policies_are_on_by_default_and_can_be_turned_off(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    objects = admission_objects(render(tmp_path, values))
    expected = {f"{k}/rel-modeltrust-{p}" for k in ADMISSION_KINDS for p in ADMISSION_POLICIES}
    assert set(objects) == expected, "cluster scoped: every name carries the release"
    for policy in ADMISSION_POLICIES:
        vap = objects[f"ValidatingAdmissionPolicy/rel-modeltrust-{policy}"]
        binding = objects[f"ValidatingAdmissionPolicyBinding/rel-modeltrust-{policy}"]
        assert vap["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert vap["spec"]["failurePolicy"] == "Fail"
        assert binding["spec"]["policyName"] == vap["metadata"]["name"]
        assert "Deny" in binding["spec"]["validationActions"]
        assert "matchResources" not in binding["spec"], "every namespace by default"
        for validation in vap["spec"]["validations"]:
            assert validation["messageExpression"].startswith('"modeltrust: ')
            assert validation["message"].startswith("modeltrust: ")
    disabled = merge(values, {"admission": {"enabled": False}})
    assert not admission_objects(render(tmp_path, disabled))


def test_admission_policies_cover_what_serves_a_model(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    objects = admission_objects(render(tmp_path, values))

    def rules(policy: str) -> dict[str, set[str]]:
        vap = objects[f"ValidatingAdmissionPolicy/rel-modeltrust-{policy}"]
        found: dict[str, set[str]] = {}
        for rule in vap["spec"]["matchConstraints"]["resourceRules"]:
            for resource in rule["resources"]:
                found[resource] = set(rule["operations"])
        return found

    assert rules("model-objects") == {
        r: {"CREATE", "UPDATE", "DELETE"}
        for r in ("deployments", "deployments/status", "services", "services/status")
    }
    assert rules("model-replicasets") == {
        r: {"CREATE", "UPDATE"} for r in ("replicasets", "replicasets/status")
    }
    assert rules("model-pods") == {
        r: {"CREATE", "UPDATE"} for r in ("pods", "pods/status", "pods/ephemeralcontainers")
    }
    # The labels and owner kind the operator puts on what it creates (builders.py).
    objects_policy = objects["ValidatingAdmissionPolicy/rel-modeltrust-model-objects"]
    marked = variable(objects_policy, "marked")
    for label, value in (
        (builders.LABEL_NAME, builders.APP_NAME),
        (builders.LABEL_MANAGED_BY, builders.MANAGED_BY),
    ):
        assert f'(k == "{label}" && l[k] == "{value}")' in marked
    assert f'k == "{builders.LABEL_MODEL_DEPLOYMENT}"' in marked
    owned = variable(objects_policy, "ownedByModelDeployment")
    assert f'r.kind == "{MODEL_DEPLOYMENT_KIND}"' in owned
    assert f'r.apiVersion.startsWith("{API_VERSION.split("/")[0]}/")' in owned
    # Pod templates count too: a hand-made Deployment or ReplicaSet labels only those.
    assert "o.?spec.?template.?metadata.?labels" in variable(objects_policy, "labelSets")


def test_admission_exempts_the_templated_operator_account_and_the_controllers(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    def policies(override: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return admission_objects(render(tmp_path, merge(values, override)))

    default = policies({})["ValidatingAdmissionPolicy/rel-modeltrust-model-objects"]
    subject = '"system:serviceaccount:mt-test:rel-modeltrust-operator"'
    assert variable(default, "operator") == subject
    named = policies({"operator": {"serviceAccount": {"name": "model-operator"}}})
    vap = named["ValidatingAdmissionPolicy/rel-modeltrust-model-objects"]
    assert variable(vap, "operator") == '"system:serviceaccount:mt-test:model-operator"'
    existing = policies({"operator": {"serviceAccount": {"create": False, "name": "ops"}}})
    vap = existing["ValidatingAdmissionPolicy/rel-modeltrust-model-objects"]
    assert variable(vap, "operator") == '"system:serviceaccount:mt-test:ops"'
    # The ServiceAccount the chart creates is the one the policy exempts.
    renamed = {"operator": {"serviceAccount": {"name": "model-operator"}}}
    docs = render(tmp_path, merge(values, renamed))
    accounts = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    assert "model-operator" in accounts

    manager = "system:kube-controller-manager"
    same = {k: manager for k in ("deployment", "replicaSet", "garbageCollector", "namespace")}
    shared = policies({"admission": {"controllers": same}})
    for name, vap in shared.items():
        if name.startswith("ValidatingAdmissionPolicy/"):
            text = yaml.safe_dump(vap["spec"]["validations"])
            assert "system:serviceaccount:kube-system" not in text, name
            assert manager in text, name
    default_text = yaml.safe_dump(
        [d["spec"]["validations"] for d in policies({}).values() if "validations" in d["spec"]]
    )
    for account in (
        "deployment-controller",
        "replicaset-controller",
        "generic-garbage-collector",
        "namespace-controller",
    ):
        assert f"system:serviceaccount:kube-system:{account}" in default_text


def test_admission_bindings_follow_the_watched_namespaces_or_a_selector(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    watched = merge(values, {"operator": {"watchNamespaces": ["models-a", "models-b"]}})
    for name, obj in admission_objects(render(tmp_path, watched)).items():
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            assert obj["spec"]["matchResources"]["namespaceSelector"] == {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["models-a", "models-b"],
                    }
                ]
            }, name
    selector = {"matchLabels": {"modeltrust.dev/models": "true"}}
    chosen = merge(watched, {"admission": {"namespaceSelector": selector}})
    for name, obj in admission_objects(render(tmp_path, chosen)).items():
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            assert obj["spec"]["matchResources"] == {"namespaceSelector": selector}, name
    stderr = render_error(tmp_path, merge(values, {"admission": {"allowedUsers": ["x"]}}))
    assert "additional properties" in stderr.lower()
