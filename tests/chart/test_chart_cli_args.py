"""The chart's container arguments are accepted by the real command lines they run.

Pods on the test clusters' fake nodes run nothing, so a misspelt flag in a template would
only show on a real cluster. Here each container's arguments are parsed by the CLI itself
(click rejects unknown options while parsing, before `--help` ends the run).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from chart.chartlib import (
    LedgerKey,
    documents,
    install_values,
    merge,
    pod_specs,
    template,
    witness_values,
    write_values,
)
from modeltrust.cli.main import main
from modeltrust.operator import __main__ as operator_main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def container_args(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    values = install_values(LedgerKey.generate("ledger.example"))
    values["operator"] = {"watchNamespaces": ["ml"], "extraArgs": []}
    values["ledger"]["writerLease"] = {"enabled": True}  # its flags parse too
    file = write_values(Path(tmp_path_factory.mktemp("values")) / "values.yaml", values)
    result = template(file)
    assert result.returncode == 0, result.stderr
    args = {}
    for where, spec in pod_specs(documents(result.stdout)):
        for container in spec["containers"]:
            args[f"{where}/{container['name']}"] = container["args"]
            if where.startswith("Deployment/"):
                assert "command" not in container, "the image's entry point runs the operator"
    return args


def parse(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--help"])
    return result.exit_code, result.output


def test_the_check_catches_an_unknown_flag(container_args: dict[str, list[str]]) -> None:
    ledger = container_args["StatefulSet/rel-modeltrust-ledger/ledger"]
    code, output = parse([*ledger, "--no-such-flag"])
    assert code == 2
    assert "No such option" in output


def test_ledger_arguments_parse(container_args: dict[str, list[str]]) -> None:
    args = container_args["StatefulSet/rel-modeltrust-ledger/ledger"]
    code, output = parse(args)
    assert code == 0, f"modeltrust {' '.join(args)} is refused:\n{output}"


def test_operator_command_and_arguments_parse(container_args: dict[str, list[str]]) -> None:
    # The operator container runs `modeltrust operator ARGS`: parse ARGS with the operator's
    # own parser (argparse exits on an unknown flag).
    command, *args = container_args["Deployment/rel-modeltrust-operator/operator"]
    assert command == "operator"
    parsed = operator_main.parse_args(args)
    assert parsed.namespace == ["ml"]
    assert parsed.liveness == "http://0.0.0.0:8080/healthz"
    with pytest.raises(SystemExit):
        operator_main.parse_args([*args, "--no-such-flag"])


@pytest.fixture(scope="module")
def ha_container_args(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The same, with witnesses and the ledger on PostgreSQL (tests/chart/test_chart_ha.py)."""
    witnesses = {n: LedgerKey.generate_witness(f"witness-{n}.example") for n in ("a", "b")}
    values = merge(install_values(LedgerKey.generate("ledger.example")), witness_values(witnesses))
    values = merge(
        values,
        {
            "ledger": {"replicas": 2, "database": {"existingSecret": "db", "writerLease": 5}},
            "witness": {"extraArgs": ["--poll-interval=1"]},
        },
    )
    file = write_values(Path(tmp_path_factory.mktemp("values")) / "values.yaml", values)
    result = template(file)
    assert result.returncode == 0, result.stderr
    return {
        f"{where}/{c['name']}": c["args"]
        for where, spec in pod_specs(documents(result.stdout))
        for c in spec["containers"]
    }


def test_ha_ledger_arguments_parse(ha_container_args: dict[str, list[str]]) -> None:
    args = ha_container_args["Deployment/rel-modeltrust-ledger/ledger"]
    assert args.count("--witness") == 2
    code, output = parse(args)
    assert code == 0, f"modeltrust {' '.join(args)} is refused:\n{output}"


def test_witness_arguments_parse(ha_container_args: dict[str, list[str]]) -> None:
    for name in ("a", "b"):
        args = ha_container_args[f"StatefulSet/rel-modeltrust-witness-{name}/witness"]
        assert args[:2] == ["ledger", "witness"]
        code, output = parse(args)
        assert code == 0, f"modeltrust {' '.join(args)} is refused:\n{output}"
        code, output = parse([*args, "--no-such-flag"])
        assert code == 2
