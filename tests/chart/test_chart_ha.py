"""The chart's high-availability values (docs/install.md, "High availability"): witnesses,
the ledger on PostgreSQL with standbys, PodDisruptionBudgets, anti-affinity, and their
NetworkPolicies, as `helm template` renders them. All off by default.

tests/e2e/test_chart.py installs them on a cluster; tests/chart/test_monitoring.py checks
their alerts; tests/chart/test_chart_cli_args.py parses their command lines.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from chart.chartlib import (
    CHART,
    LedgerKey,
    documents,
    find,
    helm,
    install_values,
    merge,
    notes,
    pod_specs,
    template,
    witness_values,
    write_values,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RELEASE, NAMESPACE = "rel", "mt-test"
PREFIX = f"{RELEASE}-modeltrust"
DATABASE = {"ledger": {"database": {"existingSecret": "ledger-db"}}}


@pytest.fixture(scope="module")
def key() -> LedgerKey:
    return LedgerKey.generate("ledger.example")


@pytest.fixture(scope="module")
def witnesses() -> dict[str, LedgerKey]:
    return {name: LedgerKey.generate_witness(f"witness-{name}.example") for name in ("a", "b")}


@pytest.fixture
def values(key: LedgerKey) -> dict[str, Any]:
    return install_values(key)


@pytest.fixture
def with_witnesses(values: dict[str, Any], witnesses: dict[str, LedgerKey]) -> dict[str, Any]:
    return merge(values, witness_values(witnesses))


def render(tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    result = template(write_values(tmp_path / "values.yaml", values))
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def render_error(tmp_path: Path, values: dict[str, Any]) -> str:
    result = template(write_values(tmp_path / "values.yaml", values))
    assert result.returncode != 0, "helm template accepted values it must refuse"
    return result.stderr


def named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = only
    return found


def witness_pairs(args: list[str]) -> list[tuple[str, str]]:
    """The (URL, KEY) of each `--witness URL KEY` in a ledger's arguments."""
    return [(args[i + 1], args[i + 2]) for i, a in enumerate(args) if a == "--witness"]


# --- off by default --------------------------------------------------------------------------


def test_without_ha_values_nothing_of_it_is_rendered(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    docs = render(tmp_path, merge(values, {"networkPolicy": {"enabled": True}}))
    kinds = {d["kind"] for d in docs}
    assert "PodDisruptionBudget" not in kinds
    assert set(named(docs, "StatefulSet")) == {f"{PREFIX}-ledger"}
    assert set(named(docs, "Deployment")) == {f"{PREFIX}-operator"}
    assert not [d for d in docs if "witness" in d["metadata"]["name"]]
    ledger = find(docs, "StatefulSet", "-ledger")
    pod = ledger["spec"]["template"]["spec"]
    assert "affinity" not in pod
    args = container(ledger)["args"]
    assert "--db=/var/lib/modeltrust/ledger/ledger.db" in args
    assert not [a for a in args if a.startswith(("--witness", "--writer"))]
    assert "env" not in container(ledger)
    assert container(ledger)["livenessProbe"]["httpGet"]["path"] == "/healthz"
    policy = find(docs, "ModelTrustPolicy")["spec"]["ledger"]
    assert "witnesses" not in policy
    assert "maxCosignatureAge" not in policy
    # The ledger's egress stays the API server only (no DNS).
    egress = find(docs, "NetworkPolicy", "-ledger")["spec"]["egress"]
    assert all(p["port"] in (443, 6443) for rule in egress for p in rule["ports"])


def test_lint_strict_passes_with_every_ha_value(
    tmp_path: Path, with_witnesses: dict[str, Any]
) -> None:
    everything = merge(
        merge(with_witnesses, DATABASE),
        {
            "ledger": {"replicas": 3, "podDisruptionBudget": {"enabled": True}},
            "policy": {"witnessQuorum": 2, "maxCosignatureAge": "10m"},
            "networkPolicy": {"enabled": True},
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
        },
    )
    result = helm(
        "lint", "--strict", str(CHART), "-f", str(write_values(tmp_path / "v.yaml", everything))
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- witnesses -------------------------------------------------------------------------------


def test_each_witness_is_one_pod_with_its_own_key_volume_and_service(
    tmp_path: Path, with_witnesses: dict[str, Any], witnesses: dict[str, LedgerKey], key: LedgerKey
) -> None:
    docs = render(tmp_path, with_witnesses)
    statefulsets = named(docs, "StatefulSet")
    services = named(docs, "Service")
    ledger_service = services[f"{PREFIX}-ledger"]
    ledger_url = (
        f"http://{PREFIX}-ledger.{NAMESPACE}.svc:{ledger_service['spec']['ports'][0]['port']}"
    )
    for name in witnesses:
        full = f"{PREFIX}-witness-{name}"
        sts = statefulsets[full]
        spec = sts["spec"]
        assert spec["replicas"] == 1, "a witness is one key with one state: never scaled"
        (claim,) = spec["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
        assert spec["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": "Retain",
            "whenScaled": "Retain",
        }
        pod = spec["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, "a witness calls no Kubernetes API"
        c = container(sts)
        args = c["args"]
        assert args[:2] == ["ledger", "witness"]
        options = dict(a.split("=", 1) for a in args[2:])
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert options["--state"] == mounts[claim["metadata"]["name"]]
        assert options["--log-url"] == ledger_url
        assert options["--log-key"] == key.verifier_key
        # The key file is the Secret's key, mounted read-only and not world-readable.
        volume = next(v for v in pod["volumes"] if v["name"] == "signing-key")
        assert volume["secret"]["secretName"] == f"witness-{name}"
        assert volume["secret"]["defaultMode"] & 0o007 == 0
        (item,) = volume["secret"]["items"]
        assert options["--key"] == f"{mounts['signing-key']}/{item['path']}"
        assert item["key"] == "witness-key"
        assert next(m for m in c["volumeMounts"] if m["name"] == "signing-key")["readOnly"]
        # It listens where its Service sends, and is probed on its own endpoints.
        port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
        assert options["--listen"] == f"0.0.0.0:{port}"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert "startupProbe" in c, "a long copy is audited before the witness listens"
        service = services[full]
        assert service["spec"]["selector"].items() <= pod_labels(sts).items()
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        assert pod_labels(sts)["modeltrust.dev/witness"] == name, "its Service selects it alone"
    # Two witnesses, spread over nodes (preferred, by hostname) and covered by one budget.
    for name in witnesses:
        affinity = statefulsets[f"{PREFIX}-witness-{name}"]["spec"]["template"]["spec"]["affinity"]
        (term,) = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        assert all(selector.items() <= pod_labels(s).items() for n, s in statefulsets.items()
                   if "witness" in n)  # fmt: skip
    (pdb,) = named(docs, "PodDisruptionBudget").values()
    assert pdb["spec"]["maxUnavailable"] == 1
    wanted = pdb["spec"]["selector"]["matchLabels"].items()
    selected = [n for n, s in statefulsets.items() if wanted <= pod_labels(s).items()]
    assert sorted(selected) == sorted(f"{PREFIX}-witness-{n}" for n in witnesses)


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_the_ledger_sends_its_checkpoints_to_each_witness_and_the_policy_trusts_them(
    tmp_path: Path, with_witnesses: dict[str, Any], witnesses: dict[str, LedgerKey]
) -> None:
    external = LedgerKey.generate_witness("witness.elsewhere.example")
    chosen = merge(
        with_witnesses,
        {
            "policy": {
                "witnesses": [external.verifier_key, witnesses["a"].verifier_key],
                "witnessQuorum": 2,
                "maxCosignatureAge": "10m",
            }
        },
    )
    docs = render(tmp_path, chosen)
    args = container(find(docs, "StatefulSet", "-ledger"))["args"]
    services = named(docs, "Service")
    expected = []
    for name, witness in witnesses.items():
        service = services[f"{PREFIX}-witness-{name}"]
        port = service["spec"]["ports"][0]["port"]
        url = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port}"
        expected.append((url, witness.verifier_key))
    assert witness_pairs(args) == expected
    ledger = find(docs, "ModelTrustPolicy")["spec"]["ledger"]
    # policy.witnesses and the chart's own, each once.
    assert ledger["witnesses"] == [
        external.verifier_key,
        witnesses["a"].verifier_key,
        witnesses["b"].verifier_key,
    ]
    assert ledger["witnessQuorum"] == 2
    assert ledger["maxCosignatureAge"] == "10m"


def test_the_policy_reads_from_the_witnesses_while_the_ledger_is_down(
    tmp_path: Path, values: dict[str, Any], with_witnesses: dict[str, Any]
) -> None:
    """spec.ledger.mirrors: the chart's witnesses first (they serve the read API from their
    verified copies), then policy.ledgerMirrors, each once; none without witnesses, and not
    the chart's witnesses when the policy reads another ledger."""
    extra = "https://mirror.elsewhere.example"
    docs = render(tmp_path, merge(with_witnesses, {"policy": {"ledgerMirrors": [extra]}}))
    services = named(docs, "Service")
    urls = []
    for name in ("a", "b"):
        service = services[f"{PREFIX}-witness-{name}"]
        port = service["spec"]["ports"][0]["port"]
        urls.append(f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port}")
    assert find(docs, "ModelTrustPolicy")["spec"]["ledger"]["mirrors"] == [*urls, extra]
    plain = find(render(tmp_path, values), "ModelTrustPolicy")["spec"]["ledger"]
    assert "mirrors" not in plain
    elsewhere = merge(with_witnesses, {"policy": {"ledgerUrl": "https://ledger.example"}})
    assert "mirrors" not in find(render(tmp_path, elsewhere), "ModelTrustPolicy")["spec"]["ledger"]
    refused = render_error(tmp_path, merge(values, {"policy": {"ledgerMirrors": ["witness:8081"]}}))
    assert "ledgerMirrors" in refused


def test_one_witness_gets_no_budget_or_anti_affinity_and_both_can_be_changed(
    tmp_path: Path, values: dict[str, Any], witnesses: dict[str, LedgerKey]
) -> None:
    one = merge(values, witness_values({"a": witnesses["a"]}))
    docs = render(tmp_path, one)
    assert not named(docs, "PodDisruptionBudget")
    assert "affinity" not in find(docs, "StatefulSet", "-witness-a")["spec"]["template"]["spec"]
    two = merge(values, witness_values(witnesses))
    hard = merge(
        two, {"witness": {"podAntiAffinity": "hard", "podDisruptionBudget": {"maxUnavailable": 2}}}
    )
    docs = render(tmp_path, hard)
    affinity = find(docs, "StatefulSet", "-witness-a")["spec"]["template"]["spec"]["affinity"]
    (term,) = affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert find(docs, "PodDisruptionBudget", "-witnesses")["spec"]["maxUnavailable"] == 2
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["z1"]}]}]}}}  # fmt: skip
    off = merge(two, {"witness": {"affinity": own, "podDisruptionBudget": {"enabled": False}}})
    docs = render(tmp_path, off)
    assert find(docs, "StatefulSet", "-witness-b")["spec"]["template"]["spec"]["affinity"] == own
    assert not named(docs, "PodDisruptionBudget")
    none = merge(two, {"witness": {"podAntiAffinity": ""}})
    assert (
        "affinity"
        not in find(render(tmp_path, none), "StatefulSet", "-witness-a")["spec"]["template"]["spec"]
    )


def test_witness_values_are_checked_with_what_to_do(
    tmp_path: Path, values: dict[str, Any], witnesses: dict[str, LedgerKey], key: LedgerKey
) -> None:
    good = witness_values(witnesses)
    # A ledger (Ed25519 note) key is not a witness's timestamped cosignature key.
    wrong_type = copy.deepcopy(merge(values, good))
    wrong_type["ledger"]["witnesses"][0]["verifierKey"] = key.verifier_key
    stderr = render_error(tmp_path, wrong_type)
    assert "is not a witness cosignature key (C2SP, type 0x04)" in stderr
    assert "modeltrust ledger keygen --witness" in stderr
    twice = copy.deepcopy(merge(values, good))
    twice["ledger"]["witnesses"][1]["name"] = "a"
    assert 'two witnesses are named "a"' in render_error(tmp_path, twice)
    long_name = copy.deepcopy(merge(merge(values, good), {"fullnameOverride": "a" * 36}))
    long_name["ledger"]["witnesses"][0]["name"] = "w" * 12
    stderr = render_error(tmp_path, long_name)
    assert "Kubernetes allows 52" in stderr
    assert "use a shorter ledger.witnesses[0].name" in stderr
    no_secret = copy.deepcopy(merge(values, good))
    del no_secret["ledger"]["witnesses"][0]["signingKey"]
    stderr = render_error(tmp_path, no_secret)
    assert "signingKey" in stderr
    # The quorum counts the chart's witnesses too; an age limit needs a quorum.
    assert "exceeds the number of witnesses the policy knows (2" in render_error(
        tmp_path, merge(merge(values, good), {"policy": {"witnessQuorum": 3}})
    )
    stderr = render_error(
        tmp_path, merge(merge(values, good), {"policy": {"maxCosignatureAge": "10m"}})
    )
    assert "policy.maxCosignatureAge needs policy.witnessQuorum of at least 1" in stderr
    assert "maxCosignatureAge" in render_error(
        tmp_path, merge(values, {"policy": {"maxCosignatureAge": "ten minutes"}})
    )


def test_no_key_of_any_witness_is_rendered(
    tmp_path: Path, with_witnesses: dict[str, Any], witnesses: dict[str, LedgerKey]
) -> None:
    result = template(write_values(tmp_path / "values.yaml", merge(with_witnesses, DATABASE)))
    assert result.returncode == 0, result.stderr
    assert "PRIVATE+KEY" not in result.stdout
    for witness in witnesses.values():
        assert witness.signer_key not in result.stdout
    assert not [d for d in documents(result.stdout) if d["kind"] == "Secret"]


def test_every_witness_pod_meets_the_restricted_pod_security_standard(
    tmp_path: Path, with_witnesses: dict[str, Any]
) -> None:
    docs = render(tmp_path, merge(with_witnesses, DATABASE))
    specs = dict(pod_specs(docs))
    assert set(specs) == {
        f"Deployment/{PREFIX}-operator",
        f"Deployment/{PREFIX}-ledger",
        f"StatefulSet/{PREFIX}-witness-a",
        f"StatefulSet/{PREFIX}-witness-b",
    }
    for where, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert "requests" in c["resources"], where


# --- the ledger on PostgreSQL ----------------------------------------------------------------


def test_the_writer_lease_elects_the_sqlite_ledger_with_a_role_for_that_lease_only(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    """ledger.writerLease: the ledger's arguments name the Lease (and its namespace and
    duration), and a Role lets the ledger's account get/update that Lease by name and create
    Leases; nothing of it by default, nor on PostgreSQL (the database lock elects there)."""
    docs = render(tmp_path, merge(values, {"ledger": {"writerLease": {"enabled": True}}}))
    args = container(find(docs, "StatefulSet", "-ledger"))["args"]
    lease = f"{PREFIX}-ledger-writer"
    assert [a for a in args if a.startswith("--writer-lease")] == [
        f"--writer-lease-name={lease}",
        f"--writer-lease-namespace={NAMESPACE}",
        "--writer-lease=8",
    ]
    role = named(docs, "Role")[f"{PREFIX}-ledger-writer-lease"]
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [lease], "verbs": ["get", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]  # fmt: skip
    binding = named(docs, "RoleBinding")[f"{PREFIX}-ledger-writer-lease"]
    account = find(docs, "StatefulSet", "-ledger")["spec"]["template"]["spec"]
    assert binding["subjects"][0]["name"] == account["serviceAccountName"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]

    for other in (
        values,
        merge(values, merge(DATABASE, {"ledger": {"writerLease": {"enabled": True}}})),
    ):
        rendered = render(tmp_path, other)
        assert f"{PREFIX}-ledger-writer-lease" not in named(rendered, "Role")
        workload = [d for d in rendered if d["kind"] in ("StatefulSet", "Deployment")
                    and d["metadata"]["name"] == f"{PREFIX}-ledger"]  # fmt: skip
        assert not [
            a for a in container(workload[0])["args"] if a.startswith("--writer-lease-name")
        ]


def test_replicas_above_one_need_postgresql(tmp_path: Path, values: dict[str, Any]) -> None:
    stderr = render_error(tmp_path, merge(values, {"ledger": {"replicas": 2}}))
    assert "ledger.replicas is 2, but without ledger.database" in stderr
    assert "set ledger.database.existingSecret" in stderr
    assert "otherwise set ledger.replicas to 1" in stderr
    assert "replicas" in render_error(tmp_path, merge(values, {"ledger": {"replicas": 0}}))


def test_on_postgresql_the_ledger_is_a_deployment_of_a_writer_and_standbys(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    chosen = merge(values, merge(DATABASE, {"ledger": {"replicas": 3}}))
    docs = render(tmp_path, chosen)
    assert f"{PREFIX}-ledger" not in named(docs, "StatefulSet"), "no volume per pod"
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    deploy = find(docs, "Deployment", "-ledger")
    spec = deploy["spec"]
    assert spec["replicas"] == 3
    # Standbys are never Ready: a rollout that waited for them would never end.
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == "100%"
    pod = spec["template"]["spec"]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    c = container(deploy)
    assert not [m for m in c["volumeMounts"] if m["name"] == "data"]
    args = c["args"]
    assert not [a for a in args if a.startswith("--db")], "the URL is never on the command line"
    assert "--writer-lease=10" in args
    (env,) = c["env"]
    assert env == {
        "name": "MODELTRUST_LEDGER_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "ledger-db", "key": "url"}},
    }
    # A standby does not listen until it holds the writer lock: no liveness probe to kill
    # it; readiness keeps clients on the writer.
    assert "livenessProbe" not in c
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    affinity = pod["affinity"]["podAntiAffinity"]
    (term,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"].items()
        <= pod_labels(deploy).items()
    )
    # The Service sends clients to Ready pods only: the writer.
    service = named(docs, "Service")[f"{PREFIX}-ledger"]
    assert service["spec"]["selector"].items() <= pod_labels(deploy).items()
    assert not service["spec"].get("publishNotReadyAddresses")
    # The operator's side is unchanged.
    assert find(docs, "ModelTrustPolicy")["spec"]["ledger"]["url"] == (
        f"http://{PREFIX}-ledger.{NAMESPACE}.svc:8080"
    )


def test_postgresql_values_secret_key_lease_and_one_replica(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    chosen = merge(
        values,
        {"ledger": {"database": {"existingSecret": "db", "secretKey": "dsn", "writerLease": 4}}},
    )
    docs = render(tmp_path, chosen)
    deploy = find(docs, "Deployment", "-ledger")
    assert deploy["spec"]["replicas"] == 1
    assert "affinity" not in deploy["spec"]["template"]["spec"], "one pod: nothing to spread"
    c = container(deploy)
    assert c["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "dsn"}
    assert "--writer-lease=4" in c["args"]
    assert not named(docs, "PodDisruptionBudget")


def test_ledger_anti_affinity_and_budget_are_configurable(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    ha = merge(values, merge(DATABASE, {"ledger": {"replicas": 2}}))
    assert not named(render(tmp_path, ha), "PodDisruptionBudget"), "off by default"
    chosen = merge(
        ha, {"ledger": {"podAntiAffinity": "hard", "podDisruptionBudget": {"enabled": True}}}
    )
    docs = render(tmp_path, chosen)
    deploy = find(docs, "Deployment", "-ledger")
    (term,) = deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    pdb = find(docs, "PodDisruptionBudget", "-ledger")
    # Only the writer is ever Ready: the budget keeps it from being evicted, never the standbys.
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels(deploy).items()
    zone = {"topologyKey": "topology.kubernetes.io/zone",
            "labelSelector": {"matchLabels": {"team": "ml"}}}  # fmt: skip
    own = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "podAffinityTerm": zone}]}}  # fmt: skip
    docs = render(tmp_path, merge(ha, {"ledger": {"affinity": own}}))
    assert find(docs, "Deployment", "-ledger")["spec"]["template"]["spec"]["affinity"] == own
    # With one SQLite ledger nothing changes, whatever these say.
    single = merge(
        values, {"ledger": {"podAntiAffinity": "hard", "podDisruptionBudget": {"enabled": True}}}
    )
    docs = render(tmp_path, single)
    assert "affinity" not in find(docs, "StatefulSet", "-ledger")["spec"]["template"]["spec"]
    assert not named(docs, "PodDisruptionBudget")


# --- NetworkPolicies --------------------------------------------------------------------------


def allowed_ports(rules: list[dict[str, Any]]) -> set[int]:
    return {p["port"] for rule in rules for p in rule.get("ports", [])}


def test_network_policies_open_exactly_the_witness_and_database_paths(
    tmp_path: Path, with_witnesses: dict[str, Any]
) -> None:
    chosen = merge(merge(with_witnesses, DATABASE), {"networkPolicy": {"enabled": True}})
    docs = render(tmp_path, chosen)
    policies = named(docs, "NetworkPolicy")
    ledger_pods = pod_labels(find(docs, "Deployment", "-ledger"))
    operator_pods = pod_labels(find(docs, "Deployment", "-operator"))
    witness_pods = [pod_labels(s) for n, s in named(docs, "StatefulSet").items() if "witness" in n]

    def selects(peer: dict[str, Any], labels: dict[str, str]) -> bool:
        wanted = peer.get("podSelector", {}).get("matchLabels")
        return (
            wanted is not None
            and "namespaceSelector" not in peer
            and wanted.items() <= labels.items()
        )

    # The witnesses: reached by the ledger and the operator only, on their port; they reach
    # DNS and the ledger's port only.
    witness_policy = policies[f"{PREFIX}-witnesses"]
    selected = witness_policy["spec"]["podSelector"]["matchLabels"]
    assert all(selected.items() <= w.items() for w in witness_pods)
    assert not selected.items() <= ledger_pods.items()
    (rule,) = witness_policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = rule["from"]
    assert len(peers) == 2
    assert any(selects(p, ledger_pods) for p in peers)
    assert any(selects(p, operator_pods) for p in peers)
    assert not any(selects(p, w) for p in peers for w in witness_pods)
    egress = witness_policy["spec"]["egress"]
    assert witness_policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert allowed_ports(egress) == {53, 8080}
    (to_ledger,) = [r for r in egress if r["ports"][0]["port"] == 8080]
    assert selects(to_ledger["to"][0], ledger_pods)
    # The ledger: the witnesses may copy it; it may reach them, DNS and PostgreSQL.
    ledger_policy = policies[f"{PREFIX}-ledger"]["spec"]
    (ingress,) = ledger_policy["ingress"]
    assert any(selects(p, witness_pods[0]) for p in ingress["from"])
    rules = ledger_policy["egress"]
    assert allowed_ports(rules) == {443, 6443, 53, 8081, 5432}
    (to_witnesses,) = [r for r in rules if r["ports"][0]["port"] == 8081]
    assert all(selects(to_witnesses["to"][0], w) for w in witness_pods)
    (to_database,) = [r for r in rules if r["ports"][0]["port"] == 5432]
    assert "to" not in to_database, "helm cannot read the URL: any address, that port"
    # Named database peers replace that default.
    database = [
        {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 6432, "protocol": "TCP"}]}
    ]
    narrowed = merge(chosen, {"networkPolicy": {"ledgerEgress": {"database": database}}})
    rules = named(render(tmp_path, narrowed), "NetworkPolicy")[f"{PREFIX}-ledger"]["spec"]["egress"]
    assert database[0] in rules
    assert 5432 not in allowed_ports(rules)
    # Readers the values admit to the ledger may read the witnesses too.
    auditor = {"namespaceSelector": {"matchLabels": {"team": "audit"}}}
    opened = merge(chosen, {"networkPolicy": {"ledgerClients": [auditor]}})
    witness_policy = named(render(tmp_path, opened), "NetworkPolicy")[f"{PREFIX}-witnesses"]
    assert auditor in witness_policy["spec"]["ingress"][0]["from"]


# --- what the user is told --------------------------------------------------------------------


def test_notes_say_how_to_wait_for_a_writer_and_where_the_witnesses_serve_reads(
    tmp_path: Path, with_witnesses: dict[str, Any], witnesses: dict[str, LedgerKey]
) -> None:
    chosen = merge(with_witnesses, merge(DATABASE, {"ledger": {"replicas": 2}}))
    text = notes(write_values(tmp_path / "values.yaml", chosen), tmp_path)
    assert f"wait --for=jsonpath='{{.status.readyReplicas}}'=1 deployment/{PREFIX}-ledger" in text
    assert "standbys" in text
    assert "rollout status statefulset/" + f"{PREFIX}-ledger" not in text
    assert "PersistentVolumeClaim data-" + f"{PREFIX}-ledger-0" not in text
    for name, witness in witnesses.items():
        assert f"rollout status statefulset/{PREFIX}-witness-{name}" in text
        assert f"http://{PREFIX}-witness-{name}.{NAMESPACE}.svc:8081" in text
        assert witness.verifier_key in text
    assert "serves the ledger's read API" in text
    assert "/v1/witness/evidence" in text
    assert "witness-acknowledge" in text
    plain = notes(
        write_values(tmp_path / "plain.yaml", install_values(LedgerKey.generate("l.example"))),
        tmp_path,
    )
    assert "witness" not in plain.lower()
    assert "rollout status statefulset/" + f"{PREFIX}-ledger" in plain
