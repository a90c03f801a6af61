"""The chart's Grafana dashboard and PrometheusRule: off by default; when on, every query
parses (promtool, the repository's pinned build) and names only metrics and labels that
the ledger's and the operator's registries really export (collected in-process), and the
alerts fire on the series they are about (`promtool test rules`).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from chart.chartlib import (
    CHART,
    LedgerKey,
    documents,
    helm,
    install_values,
    merge,
    template,
    witness_values,
)
from chart.chartlib import write_values as write_chart_values
from harness.cluster import tools_bin
from modeltrust.chain.metrics import LedgerMetrics
from modeltrust.chain.witness import WitnessMetrics
from modeltrust.operator.metrics import Metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RELEASE, NAMESPACE = "rel", "mt-test"
OPERATOR_JOB = f'job="{RELEASE}-modeltrust-operator-metrics",namespace="{NAMESPACE}"'
LEDGER_JOB = f'job="{RELEASE}-modeltrust-ledger",namespace="{NAMESPACE}"'
# Labels the scrape adds to every series of a target (Prometheus Operator's ServiceMonitor).
TARGET_LABELS = {"job", "namespace", "instance", "pod", "service", "endpoint", "container"}
# Series Prometheus makes itself, per target.
PROMETHEUS_SERIES: dict[str, set[str]] = {"up": set()}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}  # fmt: skip
DASHBOARD = CHART / "dashboards" / "modeltrust.json"
REQUIRED_ALERTS = {
    "ModelTrustLedgerInconsistent",
    "ModelTrustAuditPending",
    "ModelTrustRefusalRate",
    "ModelTrustRevokedModelServing",
    "ModelTrustLedgerUnreachable",
    "ModelTrustOperatorDown",
}


# --- what the code exports ------------------------------------------------------------------


def _exported(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Every sample name a registry can show, with its label names (a labelled family with
    no child yet shows no sample, so the names come from the metric objects)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "info": ("_info",),
    }
    out: dict[str, set[str]] = {}
    collectors = registry._collector_to_names  # no public listing of the collectors
    for collector in collectors:
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.collect():
            for sample in family.samples:
                out.setdefault(sample.name, set()).update(labels | set(sample.labels))
            for suffix in suffixes.get(family.type, ("",)):
                extra = {"le"} if suffix == "_bucket" else set()
                out.setdefault(family.name + suffix, set()).update(labels | extra)
    return out


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    names = {**_exported(LedgerMetrics().registry), **PROMETHEUS_SERIES}
    for registry in (Metrics().registry, WitnessMetrics().registry):
        for name, labels in _exported(registry).items():
            names.setdefault(name, set()).update(labels)
    return names


def test_the_registries_export_what_the_docs_and_alerts_rely_on(
    exported: dict[str, set[str]],
) -> None:
    for name in (
        "process_cpu_seconds_total",
        "modeltrust_ledger_http_requests_total",
        "modeltrust_operator_audit_outbox_pending",
        "modeltrust_operator_decisions_total",
        "modeltrust_operator_revoked_kept_serving",
    ):
        assert name in exported, name
    assert exported["modeltrust_ledger_http_requests_total"] >= {"route", "method", "status"}
    assert "namespace" not in exported["modeltrust_operator_revoked_kept_serving"]


# --- a parser-level look at PromQL (promtool does the full parse) ---------------------------


def references(expr: str) -> list[tuple[str, set[str]]]:
    """The metric selectors of a PromQL expression: (metric name, label names matched)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for opening, closing in ("()", "{}", "[]"):
        assert text.count(opening) == text.count(closing), f"unbalanced {opening}: {expr}"
    found = []
    for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", text):
        matchers = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", m[2]))
        found.append((m[1], matchers))
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", " ", bare)
    named = {name for name, _ in found}
    for m in re.finditer(r"[A-Za-z_:][\w:]*", bare):
        name, rest = m[0], bare[m.end() :].lstrip()
        if name in _KEYWORDS or rest.startswith("(") or name in named:
            continue
        found.append((name, set()))
    return found


def assert_exported(expr: str, exported: dict[str, set[str]]) -> None:
    refs = references(expr)
    assert refs, f"no metric in {expr}"
    for name, labels in refs:
        assert name in exported, f"{name} (in {expr}) is exported by neither registry"
        unknown = labels - exported[name] - TARGET_LABELS
        assert not unknown, f"{name} has no label {sorted(unknown)} (in {expr})"


def test_the_parser_level_check_catches_what_it_should(exported: dict[str, set[str]]) -> None:
    assert_exported('sum by (kind) (rate(modeltrust_ledger_appends_total{namespace="x"}[5m]))',
                    exported)  # fmt: skip
    for wrong in (
        'rate(modeltrust_ledger_appends{namespace="x"}[5m])',  # no _total: not a series
        'modeltrust_operator_revoked_kept_serving{name="web"}',  # no such label
        'rate(modeltrust_ledger_appends_total{namespace="x"},kind="a"}[5m])',  # a brace too many
    ):
        with pytest.raises(AssertionError):
            assert_exported(wrong, exported)


# --- promtool ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> Path:
    """The pinned promtool (tests/cluster/build-tools.sh builds it; CI runs that script
    through `make tools-real-node`). Missing is a failure, never a skip."""
    path = tools_bin() / "promtool"
    if not path.exists():
        pytest.fail(f"{path} is missing: run tests/cluster/build-tools.sh")
    return path


def run_promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, timeout=120, check=False
    )


# --- the chart ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> LedgerKey:
    return LedgerKey.generate("ledger.example")


def render(tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    path = write_chart_values(tmp_path / "values.yaml", values)
    result = template(path, release=RELEASE, namespace=NAMESPACE)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


ON = {
    "grafanaDashboard": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "serviceMonitor": {"enabled": True},
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, key: LedgerKey) -> list[dict[str, Any]]:
    return render(tmp_path_factory.mktemp("on"), merge(install_values(key), ON))


def test_lint_strict_passes_with_monitoring_on(tmp_path: Path, key: LedgerKey) -> None:
    values = write_chart_values(tmp_path / "v.yaml", merge(install_values(key), ON))
    result = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_refuses_a_misspelt_monitoring_value(tmp_path: Path, key: LedgerKey) -> None:
    bad = merge(install_values(key), {"prometheusRule": {"enabled": True, "refusalRate": 0.5}})
    result = template(write_chart_values(tmp_path / "v.yaml", bad))
    assert result.returncode != 0
    assert "refusalRate" in result.stderr


def test_monitoring_objects_are_off_by_default(tmp_path: Path, key: LedgerKey) -> None:
    docs = render(tmp_path, install_values(key))
    assert not [d for d in docs if d["kind"] in {"PrometheusRule", "ServiceMonitor"}]
    assert not [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]


def _dashboard(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [d for d in rendered if d["kind"] == "ConfigMap" and "grafana_dashboard" in
             d["metadata"]["labels"]]  # fmt: skip
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE
    doc: dict[str, Any] = json.loads(cm["data"]["modeltrust.json"])
    return doc


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [q for p in items for q in (p, *panels(p.get("panels", [])))]

    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]


def _concrete(expr: str) -> str:
    """A dashboard query as Prometheus gets it from Grafana (its variables filled in)."""
    return expr.replace("$__rate_interval", "5m").replace("$namespace", NAMESPACE)


def test_the_dashboard_is_the_file_and_queries_exported_metrics(
    rendered: list[dict[str, Any]], exported: dict[str, set[str]]
) -> None:
    dashboard = _dashboard(rendered)
    assert dashboard == json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "modeltrust"
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 20
    for expr in queries:
        assert 'namespace="$namespace"' in expr, expr
        assert_exported(_concrete(expr), exported)
    # Grafana's own variable query, too.
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "namespace"]
    assert "modeltrust_operator_build_info" in exported
    assert variable["definition"] == "label_values(modeltrust_operator_build_info, namespace)"


def test_promtool_parses_every_dashboard_query(
    rendered: list[dict[str, Any]], promtool: Path, tmp_path: Path
) -> None:
    queries = dashboard_queries(_dashboard(rendered))
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"modeltrust:dashboard_query_{i}", "expr": _concrete(q)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def _rule(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    (rule,) = [d for d in rendered if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    return rule


def _alerts(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in _rule(rendered)["spec"]["groups"] for r in g["rules"]}


def test_the_alerts_cover_the_operational_failures(
    rendered: list[dict[str, Any]], exported: dict[str, set[str]]
) -> None:
    alerts = _alerts(rendered)
    assert set(alerts) >= REQUIRED_ALERTS
    critical = {name for name, a in alerts.items() if a["labels"]["severity"] == "critical"}
    assert critical == {"ModelTrustLedgerInconsistent"}  # the one that pages
    for name, alert in alerts.items():
        assert alert["annotations"]["summary"], name
        assert alert["annotations"]["description"], name
        assert_exported(alert["expr"], exported)
        # Every selector is scoped to this release's jobs (several releases, one Prometheus).
        for selector in re.findall(r"\{[^}]*\}", alert["expr"]):
            assert OPERATOR_JOB in selector or LEDGER_JOB in selector, (name, selector)


def test_promtool_checks_the_rules(
    rendered: list[dict[str, Any]], promtool: Path, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": _rule(rendered)["spec"]["groups"]}))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts(rendered))} rules found" in result.stdout


ALERT_TESTS = """
rule_files: [RULES]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - {series: 'up{OP,instance="op:9090"}', values: 1x30}
      - {series: 'up{LEDGER,instance="l:8080"}', values: 1x30}
      - {series: 'modeltrust_ledger_sequencer_up{LEDGER,instance="l:8080"}', values: 1x30}
      - {series: 'modeltrust_operator_ledger_inconsistent{OP,ledger="URL"}', values: 0 0 1x28}
      - {series: 'modeltrust_operator_ledger_up{OP,ledger="URL"}', values: 1 1 0x28}
      - {series: 'modeltrust_operator_revoked_kept_serving{OP,modeldeployment="ml/web"}',
         values: _ _ 1x28}
      - {series: 'modeltrust_operator_audit_outbox_oldest_age_seconds{OP,ledger="URL"}',
         values: 0+60x30}
    alert_rule_test:
      - eval_time: 1m
        alertname: ModelTrustLedgerInconsistent
        exp_alerts: []
      - eval_time: 3m
        alertname: ModelTrustLedgerInconsistent
        exp_alerts:
          - exp_labels: {severity: critical, ledger: URL}
      - {eval_time: 4m, alertname: ModelTrustLedgerUnreachable, exp_alerts: []}
      - eval_time: 8m
        alertname: ModelTrustLedgerUnreachable
        exp_alerts: [{exp_labels: {severity: warning, ledger: URL}}]
      - eval_time: 4m
        alertname: ModelTrustRevokedModelServing
        exp_alerts: [{exp_labels: {severity: warning, modeldeployment: ml/web}}]
      - {eval_time: 10m, alertname: ModelTrustAuditPending, exp_alerts: []}
      - eval_time: 25m
        alertname: ModelTrustAuditPending
        exp_alerts: [{exp_labels: {severity: warning, ledger: URL}}]
      - {eval_time: 20m, alertname: ModelTrustOperatorDown, exp_alerts: []}
      - {eval_time: 20m, alertname: ModelTrustLedgerDown, exp_alerts: []}
  # Nothing scraped from the operator at all (its pod is gone); the ledger's sequencer stops.
  - interval: 1m
    input_series:
      - {series: 'up{LEDGER,instance="l:8080"}', values: 1x30}
      - {series: 'modeltrust_ledger_sequencer_up{LEDGER,instance="l:8080"}', values: 1x10 0x20}
    alert_rule_test:
      - eval_time: 6m
        alertname: ModelTrustOperatorDown
        exp_alerts: [{exp_labels: {severity: warning, job: OPJOB, namespace: NSNAME}}]
      - {eval_time: 6m, alertname: ModelTrustLedgerDown, exp_alerts: []}
      - eval_time: 17m
        alertname: ModelTrustLedgerDown
        exp_alerts:
          - exp_labels: {severity: warning, job: LEDGERJOB, namespace: NSNAME, instance: "l:8080"}
"""


def test_the_alerts_fire_on_their_series(
    rendered: list[dict[str, Any]], promtool: Path, tmp_path: Path
) -> None:
    """`promtool test rules`: series as the scrape stores them, and what must fire when."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule(rendered)["spec"]["groups"]}))
    url = "http://rel-modeltrust-ledger.mt-test.svc:8080"
    text = (
        ALERT_TESTS.replace("RULES", str(rules))
        .replace("OPJOB", f"{RELEASE}-modeltrust-operator-metrics")
        .replace("LEDGERJOB", f"{RELEASE}-modeltrust-ledger")
        .replace("OP,", OPERATOR_JOB + ",")
        .replace("LEDGER,", LEDGER_JOB + ",")
        .replace("URL", url)
        .replace("NSNAME", NAMESPACE)
    )
    doc = yaml.safe_load(text)
    # promtool compares annotations too: expect the rule's own, filled in as Prometheus would.
    alerts = _alerts(rendered)
    values = {("ModelTrustAuditPending", "25m"): "25m 0s"}
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            for expected in check["exp_alerts"]:
                annotations = {}
                for name, template_text in alerts[check["alertname"]]["annotations"].items():
                    filled = template_text
                    for label, value in expected["exp_labels"].items():
                        filled = filled.replace(f"{{{{ $labels.{label} }}}}", value)
                    value_text = values.get((check["alertname"], check["eval_time"]))
                    if value_text is not None:
                        filled = filled.replace("{{ $value | humanizeDuration }}", value_text)
                    assert "{{" not in filled, filled
                    annotations[name] = filled
                expected["exp_annotations"] = annotations
    text = yaml.safe_dump(doc, sort_keys=False)
    path = tmp_path / "tests.yaml"
    path.write_text(text)
    result = run_promtool(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the witnesses' alerts (ledger.witnesses) --------------------------------------------------

WITNESS_JOBS = f"{RELEASE}-modeltrust-witness-a|{RELEASE}-modeltrust-witness-b"
WITNESS_JOB = f'job=~"{WITNESS_JOBS}",namespace="{NAMESPACE}"'
WITNESS_ALERTS = {
    "ModelTrustWitnessSplitView",
    "ModelTrustWitnessDown",
    "ModelTrustWitnessQuorumNotMet",
}


@pytest.fixture(scope="module")
def with_witnesses(
    tmp_path_factory: pytest.TempPathFactory, key: LedgerKey
) -> list[dict[str, Any]]:
    witnesses = {n: LedgerKey.generate_witness(f"witness-{n}.example") for n in ("a", "b")}
    values = merge(merge(install_values(key), ON), witness_values(witnesses))
    values = merge(values, {"policy": {"witnessQuorum": 2, "maxCosignatureAge": "2m"}})
    return render(tmp_path_factory.mktemp("witnesses"), values)


def test_witness_alerts_only_with_witnesses_and_the_split_view_pages(
    rendered: list[dict[str, Any]],
    with_witnesses: list[dict[str, Any]],
    exported: dict[str, set[str]],
    key: LedgerKey,
    tmp_path: Path,
) -> None:
    assert not set(_alerts(rendered)) & WITNESS_ALERTS
    alerts = _alerts(with_witnesses)
    assert set(alerts) >= REQUIRED_ALERTS | WITNESS_ALERTS
    critical = {name for name, a in alerts.items() if a["labels"]["severity"] == "critical"}
    assert critical == {"ModelTrustLedgerInconsistent", "ModelTrustWitnessSplitView"}
    for name in WITNESS_ALERTS:
        alert = alerts[name]
        assert alert["annotations"]["summary"], name
        assert alert["annotations"]["description"], name
        assert_exported(alert["expr"], exported)
        for selector in re.findall(r"\{[^}]*\}", alert["expr"]):
            assert WITNESS_JOB in selector or LEDGER_JOB in selector, (name, selector)
    assert "modeltrust_witness_split_view" in alerts["ModelTrustWitnessSplitView"]["expr"]
    quorum = alerts["ModelTrustWitnessQuorumNotMet"]["expr"]
    assert "modeltrust_ledger_witness_cosignature_timestamp_seconds" in quorum
    assert "< 120)" in quorum, "policy.maxCosignatureAge (2m) in seconds"
    # Every witness's Service is scraped under its own job.
    services = [d for d in with_witnesses if d["kind"] == "Service"]
    (monitor,) = [
        d
        for d in with_witnesses
        if d["kind"] == "ServiceMonitor" and d["metadata"]["name"].endswith("-witnesses")
    ]
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    scraped = sorted(
        s["metadata"]["name"] for s in services if wanted <= s["metadata"]["labels"].items()
    )
    assert "|".join(scraped) == WITNESS_JOBS
    # No quorum in the policy: nothing to alert on.
    one = {"a": LedgerKey.generate_witness("witness-a.example")}
    no_quorum = render(tmp_path, merge(merge(install_values(key), ON), witness_values(one)))
    assert "ModelTrustWitnessQuorumNotMet" not in _alerts(no_quorum)
    assert "ModelTrustWitnessSplitView" in _alerts(no_quorum)


def test_promtool_checks_the_witness_rules(
    with_witnesses: list[dict[str, Any]], promtool: Path, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": _rule(with_witnesses)["spec"]["groups"]}))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


WITNESS_ALERT_TESTS = """
rule_files: [RULES]
evaluation_interval: 1m
tests:
  # Witness b records a split view at minute 3; a's copy is damaged from minute 5. The
  # ledger's cosignatures: a's keep coming; b's stop at minute 3 (it refuses from then on).
  - interval: 1m
    input_series:
      - {series: 'up{WA,instance="a:8081"}', values: 1x30}
      - {series: 'up{WB,instance="b:8081"}', values: 1x30}
      - {series: 'modeltrust_witness_split_view{WA,instance="a:8081"}', values: 0x30}
      - {series: 'modeltrust_witness_split_view{WB,instance="b:8081"}', values: 0 0 0 1x27}
      - {series: 'modeltrust_witness_store_verified{WA,instance="a:8081"}', values: 1x4 0x25}
      - {series: 'modeltrust_witness_store_verified{WB,instance="b:8081"}', values: 1x30}
      - {series: 'COSIGNED{LEDGER,instance="l:8080",witness="witness-a.example"}',
         values: 0+60x30}
      - {series: 'COSIGNED{LEDGER,instance="l:8080",witness="witness-b.example"}',
         values: 0+60x3 180x26}
    alert_rule_test:
      - {eval_time: 2m, alertname: ModelTrustWitnessSplitView, exp_alerts: []}
      - eval_time: 3m
        alertname: ModelTrustWitnessSplitView
        exp_alerts: [{exp_labels: {severity: critical, job: WBJOB}}]
      - {eval_time: 6m, alertname: ModelTrustWitnessDown, exp_alerts: []}
      - eval_time: 11m
        alertname: ModelTrustWitnessDown
        exp_alerts:
          - exp_labels: {severity: warning, job: WAJOB, namespace: NSNAME, instance: "a:8081"}
      # b's last cosignature (minute 3) is older than 2m from minute 5; for 5m more.
      - {eval_time: 4m, alertname: ModelTrustWitnessQuorumNotMet, exp_alerts: []}
      - {eval_time: 9m, alertname: ModelTrustWitnessQuorumNotMet, exp_alerts: []}
      - eval_time: 11m
        alertname: ModelTrustWitnessQuorumNotMet
        exp_alerts: [{exp_labels: {severity: warning}}]
"""


def test_the_witness_alerts_fire_on_their_series(
    with_witnesses: list[dict[str, Any]], promtool: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule(with_witnesses)["spec"]["groups"]}))
    job_a, job_b = WITNESS_JOBS.split("|")
    text = (
        WITNESS_ALERT_TESTS.replace("RULES", str(rules))
        .replace("COSIGNED", "modeltrust_ledger_witness_cosignature_timestamp_seconds")
        .replace("WAJOB", job_a)
        .replace("WBJOB", job_b)
        .replace("WA,", f'job="{job_a}",namespace="{NAMESPACE}",')
        .replace("WB,", f'job="{job_b}",namespace="{NAMESPACE}",')
        .replace("LEDGER,", LEDGER_JOB + ",")
        .replace("NSNAME", NAMESPACE)
    )
    doc = yaml.safe_load(text)
    alerts = _alerts(with_witnesses)
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            for expected in check["exp_alerts"]:
                annotations = {}
                for name, template_text in alerts[check["alertname"]]["annotations"].items():
                    filled = template_text
                    for label, value in expected["exp_labels"].items():
                        filled = filled.replace(f"{{{{ $labels.{label} }}}}", value)
                    assert "{{" not in filled, filled
                    annotations[name] = filled
                expected["exp_annotations"] = annotations
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run_promtool(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


STANDBY_ALERT_TESTS = """
rule_files: [RULES]
evaluation_interval: 1m
tests:
  # Two ledger pods on PostgreSQL: the writer (w) answers; the standby (s) does not listen,
  # so its scrape fails all along. From minute 10 the writer is gone too.
  - interval: 1m
    input_series:
      - {series: 'up{LEDGER,instance="w:8080"}', values: 1x9 0x20}
      - {series: 'up{LEDGER,instance="s:8080"}', values: 0x30}
      - {series: 'modeltrust_ledger_sequencer_up{LEDGER,instance="w:8080"}', values: 1x9}
    alert_rule_test:
      - {eval_time: 9m, alertname: ModelTrustLedgerDown, exp_alerts: []}
      - eval_time: 16m
        alertname: ModelTrustLedgerDown
        exp_alerts: [{exp_labels: {severity: warning, job: LEDGERJOB, namespace: NSNAME}}]
"""


def test_a_standby_ledger_is_not_a_ledger_down(
    key: LedgerKey, promtool: Path, tmp_path: Path
) -> None:
    standbys = {"ledger": {"replicas": 2, "database": {"existingSecret": "ledger-db"}}}
    docs = render(tmp_path, merge(merge(install_values(key), ON), standbys))
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule(docs)["spec"]["groups"]}))
    alert = _alerts(docs)["ModelTrustLedgerDown"]
    doc = yaml.safe_load(
        STANDBY_ALERT_TESTS.replace("RULES", str(rules))
        .replace("LEDGERJOB", f"{RELEASE}-modeltrust-ledger")
        .replace("LEDGER,", LEDGER_JOB + ",")
        .replace("NSNAME", NAMESPACE)
    )
    for check in doc["tests"][0]["alert_rule_test"]:
        for expected in check["exp_alerts"]:
            expected["exp_annotations"] = alert["annotations"]
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run_promtool(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
