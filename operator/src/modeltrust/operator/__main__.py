"""`python -m modeltrust.operator`: run the operator (one active replica; see docs/operator.md).

    python -m modeltrust.operator --all-namespaces --liveness http://0.0.0.0:8081/healthz

Configuration comes from MODELTRUST_* environment variables (config.py; docs/operator.md
lists them all), read once here: a bad value is one line on stderr naming the variable,
and exit code 2.
POD_NAME (the chart sets it from the pod's name) names this operator in kopf's logs
and annotations; without it the identity is the host name and process id.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from modeltrust.operator.config import OperatorConfig
from modeltrust.operator.errors import ConfigError

if TYPE_CHECKING:
    from kopf._cogs.structs.references import Insights


def parse_args(
    argv: Sequence[str] | None, prog: str = "python -m modeltrust.operator"
) -> argparse.Namespace:
    """PROG is the name usage and errors show: how the operator was started."""
    parser = argparse.ArgumentParser(prog=prog)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="Watch this namespace (repeatable)."
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="Watch every namespace.")
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="Serve kopf's liveness probe, e.g. http://0.0.0.0:8081/healthz",
    )
    parser.add_argument("--log-format", choices=["plain", "json"], default="json")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def operator_identity() -> str:
    """Who this operator is, for kopf, without asking the passwd database.

    kopf's default identity starts with `getpass.getuser()`, which raises for a uid with no
    passwd entry: exactly how the image runs (uid 65532, no /etc/passwd line), so the operator
    would crash-loop in every real pod.
    """
    pod = os.environ.get("POD_NAME", "").strip()
    if pod:
        return pod
    return f"{socket.gethostname()}/{os.getpid()}"


def served_namespaces(insights: Insights, namespaces: Sequence[str]) -> Insights:
    """INSIGHTS with the namespaces given by name already served, existing or not.

    kopf serves a namespace only once it has seen it in its listing of namespaces, and starts
    the watch of a cluster-scoped resource (ModelTrustPolicy) only together with one served
    namespace: with no given namespace existing (yet), it watched nothing at all, and no
    policy got a status. Watching a namespace that does not exist is harmless (the API server
    lists nothing there until it is made); kopf still stops serving one when it is deleted.
    """
    from kopf._cogs.structs.references import NamespaceName

    insights.namespaces.update(NamespaceName(n) for n in namespaces if n)
    return insights


def main(argv: Sequence[str] | None = None, prog: str = "python -m modeltrust.operator") -> int:
    args = parse_args(argv, prog)
    if not args.namespace and not args.all_namespaces:
        print("give --namespace NAME (repeatable) or --all-namespaces", file=sys.stderr)
        return 2
    try:
        config = OperatorConfig.from_env(os.environ)
    except ConfigError as exc:
        print(f"modeltrust operator: {exc}", file=sys.stderr)
        return 2
    import kopf
    from kopf._cogs.structs.references import Insights  # kopf.run's parameter type, as Identity
    from kopf._core.engines.peering import Identity  # kopf.run's parameter type, not re-exported

    from modeltrust.operator import handlers, logs

    registry = kopf.OperatorRegistry()
    handlers.register(registry, config)
    logs.configure(args.log_format, verbose=args.verbose)
    # Standalone: no kopf peering. Run exactly one replica (Deployment strategy Recreate).
    kopf.run(
        registry=registry,
        memo=handlers.operator_memo(config, tuple(args.namespace)),
        standalone=True,
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        insights=served_namespaces(Insights(), args.namespace),
        liveness_endpoint=args.liveness,
        identity=Identity(operator_identity()),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
