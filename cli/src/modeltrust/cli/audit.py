"""`modeltrust audit`: one deployment's history from the ledger, every entry proven.

Each audit entry comes with an inclusion proof that is checked against a signed
checkpoint, and that checkpoint is proven consistent with the trusted one
(--trust-state) before anything is printed.

Exit codes (modeltrust.cli.common): 0 every entry proven; 1 refused: a proof or
checkpoint failed (rollback and fork are named loudly), or the ledger holds no audit
entry for the deployment (a ledger cannot prove absence, so "nothing found" is not a
pass); 2 usage error; 3 could not check: the ledger did not answer or refused the
request. With --json the document's "status" tells these apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from modeltrust.chain.client import (
    LedgerClient,
    LedgerClientError,
    LedgerForkError,
    LedgerRollbackError,
    LedgerUnavailableError,
    VerifiedCheckpoint,
    VerifiedEntry,
)
from modeltrust.chain.digest import short_digest
from modeltrust.chain.entries import AuditEntry, entry_to_json
from modeltrust.chain.errors import ChainError
from modeltrust.chain.merkle import hash_to_b64
from modeltrust.chain.trust import Reason
from modeltrust.cli.common import (
    EXIT_CODES_HELP,
    EXIT_REFUSED,
    EXIT_UNCHECKED,
    ledger_client,
    ledger_options,
)

_DO_NOT_TRUST = (
    "Do not rely on this ledger until the cluster's operators have investigated; "
    "the trust state was left unchanged"
)


def _query(namespace: str | None, name: str | None, uid: str | None) -> dict[str, str]:
    if uid is not None and namespace is None and name is None and uid:
        return {"uid": uid}
    if uid is None and namespace and name:
        return {"namespace": namespace, "name": name}
    raise click.UsageError("give --uid UID, or both --namespace NS and --name NAME (not both)")


def _describe(query: dict[str, str]) -> str:
    return f"uid {query['uid']}" if "uid" in query else f"{query['namespace']}/{query['name']}"


def _checkpoint_json(vcp: VerifiedCheckpoint) -> dict[str, Any]:
    cp = vcp.checkpoint
    return {
        "origin": cp.origin,
        "size": cp.size,
        "root_hash": hash_to_b64(cp.root_hash),
        "note": vcp.note,
    }


def _reason_codes(entry: AuditEntry) -> list[str]:
    """The operator's reason codes (modeltrust.chain.trust.Reason) its reasons start with."""
    codes = {r.value for r in Reason}
    return [c for c in (text.split(":", 1)[0] for text in entry.reasons) if c in codes]


def _entry_json(found: VerifiedEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "index": found.index,
        "leaf_hash": hash_to_b64(found.leaf_hash),
        "proven_at_size": found.checkpoint.size,
        "entry": entry_to_json(found.entry),
    }
    if isinstance(found.entry, AuditEntry):
        doc["reason_codes"] = _reason_codes(found.entry)
    return doc


def _refuse(query: dict[str, str], as_json: bool, status: str, message: str) -> NoReturn:
    """Report a failure on stderr (and as a JSON document on stdout with --json); exit 3
    when the ledger did not answer ("unavailable"), 1 otherwise."""
    if as_json:
        doc = {"query": query, "status": status, "message": message, "entries": []}
        click.echo(json.dumps(doc, indent=2))
    click.echo(message, err=True)
    sys.exit(EXIT_UNCHECKED if status == "unavailable" else EXIT_REFUSED)


def _fetch(
    client: LedgerClient, query: dict[str, str], as_json: bool
) -> tuple[list[VerifiedEntry], VerifiedCheckpoint]:
    try:
        trail = client.audit_trail(**query)
        # An empty answer still carries a checkpoint, but the client keeps only entries:
        # ask for the checkpoint so "nothing found" names the tree it looked in.
        if trail:
            newest = max((e.checkpoint for e in trail), key=lambda c: c.size)
        else:
            newest = client.checkpoint()
    except LedgerRollbackError as e:
        _refuse(query, as_json, "rollback", f"LEDGER ROLLBACK DETECTED: {e}. {_DO_NOT_TRUST}")
    except LedgerForkError as e:
        _refuse(query, as_json, "fork", f"LEDGER FORK DETECTED: {e}. {_DO_NOT_TRUST}")
    except LedgerUnavailableError as e:
        _refuse(query, as_json, "unavailable", f"error: no verified answer, {e}")
    except LedgerClientError as e:  # the ledger refused the query (an HTTP error)
        _refuse(query, as_json, "unavailable", f"error: no verified answer: {e}")
    except ChainError as e:  # a bad signature, a failed inclusion proof, a malformed answer
        _refuse(query, as_json, "unproven", f"error: NOT VERIFIED: {e}")
    return trail, newest


def _table(trail: list[VerifiedEntry]) -> list[str]:
    header = ("INDEX", "TIME", "ACTION", "DECISION", "GEN", "DIGEST", "ACTOR", "PROOF", "REASONS")
    rows = [header]
    for found in trail:
        e = found.entry
        assert isinstance(e, AuditEntry)  # the client refuses anything else
        digest = f"sha256:{short_digest(e.digest)}…" if e.digest.startswith("sha256:") else e.digest
        rows.append(
            (
                str(found.index),
                e.time,
                e.action,
                e.decision,
                str(e.generation),
                digest,
                e.actor,
                "ok",
                "; ".join(e.reasons) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    # The last column (reasons) is free text and left unpadded.
    return ["  ".join([*map(str.ljust, r[:-1], widths), r[-1]]) for r in rows]


def _summary(trail: list[VerifiedEntry], newest: VerifiedCheckpoint) -> str:
    root = hash_to_b64(newest.checkpoint.root_hash)
    if all(e.checkpoint.size == newest.size for e in trail):
        where = f"all proven against checkpoint size {newest.size} (root {root})"
    else:  # pages read while the ledger grew: each checkpoint was proven consistent with the next
        where = f"all proven against checkpoints consistent up to size {newest.size} (root {root})"
    return f"{len(trail)} entries, {where}"


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--namespace", help="Namespace of the ModelDeployment (with --name).")
@click.option("--name", help="Name of the ModelDeployment (with --namespace).")
@click.option("--uid", help="UID of the ModelDeployment (instead of --namespace/--name).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable document.")
@ledger_options
def audit(
    namespace: str | None,
    name: str | None,
    uid: str | None,
    as_json: bool,
    ledger_url: str | None,
    ledger_key: str | None,
    origin: str | None,
    trust_state: Path | None,
) -> None:
    """Show a deployment's audit trail; every entry is proven against a verified checkpoint.

    Exit 0 when every entry is proven; 1 on a failed proof or checkpoint (rollback and
    fork included) or no audit entry for the deployment; 3 when the ledger did not answer.
    """
    query = _query(namespace, name, uid)
    with ledger_client(ledger_url, ledger_key, origin, trust_state) as client:
        trail, newest = _fetch(client, query, as_json)
    if not trail:
        _refuse(
            query,
            as_json,
            "no_entries",
            f"no audit entries for {_describe(query)} on the ledger "
            f"(checkpoint size {newest.size}); check the namespace/name or uid",
        )
    if as_json:
        doc = {
            "query": query,
            "status": "verified",
            "checkpoint": _checkpoint_json(newest),
            "entries": [_entry_json(found) for found in trail],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"audit trail of {_describe(query)} on {newest.checkpoint.origin}")
    for line in _table(trail):
        click.echo(line)
    click.echo(_summary(trail, newest))


COMMANDS: list[click.Command] = [audit]
