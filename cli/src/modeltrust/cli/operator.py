"""`modeltrust operator ...`: run the kopf operator (as `python -m modeltrust.operator` does)."""

from __future__ import annotations

import click

from modeltrust.cli.common import requires_extra


@click.command(
    name="operator",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def command(ctx: click.Context) -> None:
    """Run the operator: -n NAMESPACE (repeatable) or -A, --liveness URL, --log-format.

    Pass --help for the operator's own options.
    """
    # Imported here: the operator pulls in kopf and the Kubernetes client, which the
    # publisher and serving commands never need (and a publisher's install lacks).
    with requires_extra("operator", "operator"):
        from modeltrust.operator.__main__ import main as operator_main

    ctx.exit(operator_main(list(ctx.args), prog=f"modeltrust {ctx.info_name}"))
