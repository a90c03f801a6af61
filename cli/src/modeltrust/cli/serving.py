"""Serving commands: serve (model server) and fetch (download and verify, the init step).

Exit codes (modeltrust.cli.common; scripts and init containers rely on them):
  0  success
  1  refused: digest mismatch, untrusted or bad signature, checkpoint or inclusion proof
     (the reason code, as the operator's conditions name it, starts the message)
  2  usage error (bad or missing options)
  3  could not check: network, HTTP status, size limit, I/O, unreadable input files,
     onnxruntime
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from modeltrust.chain.errors import ChainError
from modeltrust.cli.sources import SourceFlags, source_access, source_options

if TYPE_CHECKING:
    pass
from modeltrust.cli.common import (
    EXIT_REFUSED,
    EXIT_UNCHECKED,
    fail,
    is_terminal,
    read_verifier_key,
    requires_extra,
)

# modeltrust.serving is imported inside the commands: it is the "serving" extra of
# modeltrust-cli (onnxruntime, numpy), which a publisher's install does not have.

_PROVENANCE_OPTIONS = (
    "registration",
    "publisher_key",
    "checkpoint",
    "ledger_key",
    "inclusion_proof",
)


def _digest_option(value: str) -> str:
    from modeltrust.chain.digest import parse_digest

    try:
        parse_digest(value)
    except ChainError as error:
        raise click.BadParameter(str(error)) from None
    return value


def _check_digest(ctx: click.Context, param: click.Parameter, value: str) -> str:
    return _digest_option(value)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as error:
        fail(f"cannot read {what} {path}: {error.strerror}", EXIT_UNCHECKED)
    except ValueError as error:
        fail(f"{what} {path} is not valid JSON: {error}", EXIT_UNCHECKED)


def given_path(path: Path | None) -> Path:
    assert path is not None  # checked by the caller: all ledger options or none
    return path


@click.command("fetch")
@click.option(
    "--uri",
    required=True,
    help="https://, http://, oci://, s3://, file:// URI or local path (docs/sources.md).",
)
@click.option("--digest", required=True, callback=_check_digest, help="Pinned sha256:<64 hex>.")
@click.option("--dest", required=True, type=click.Path(path_type=Path), help="File to write.")
@click.option("--max-size", type=click.IntRange(min=0), help="Refuse artifacts over BYTES.")
@click.option(
    "--registration",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Registration entry JSON from the ledger.",
)
@click.option(
    "--publisher-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trusted publisher public key (PEM).",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The ledger's signed checkpoint note.",
)
@click.option(
    "--ledger-key", help="Ledger checkpoint verifier key (name+id+key), or a file holding it."
)
@click.option(
    "--inclusion-proof",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Inclusion proof JSON of the registration at the checkpoint's size.",
)
@click.option("--origin", help="Require this checkpoint origin.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing on success.")
@source_options
def fetch_command(
    uri: str,
    digest: str,
    dest: Path,
    max_size: int | None,
    registration: Path | None,
    publisher_key: Path | None,
    checkpoint: Path | None,
    ledger_key: str | None,
    inclusion_proof: Path | None,
    origin: str | None,
    quiet: bool,
    model_source: SourceFlags,
) -> None:
    """Download an artifact, keep it only if its SHA-256 is DIGEST (and, given the ledger
    options, only if its registration is signed and proven on the ledger).

    The file appears at DEST read-only (0444) and fsynced, or not at all.
    """
    with requires_extra("serving", "fetch"):
        from modeltrust.serving.credentials import redact
        from modeltrust.serving.errors import DigestMismatchError, FetchError
        from modeltrust.serving.fetch import fetch_artifact

    given = {
        "registration": registration,
        "publisher_key": publisher_key,
        "checkpoint": checkpoint,
        "ledger_key": ledger_key,
        "inclusion_proof": inclusion_proof,
    }
    expected_size = None
    provenance_line = ""
    if any(v is not None for v in given.values()):
        missing = [
            f"--{name.replace('_', '-')}" for name in _PROVENANCE_OPTIONS if given[name] is None
        ]
        if missing:
            raise click.UsageError(
                "checking the ledger needs all of --registration, --publisher-key, --checkpoint, "
                f"--ledger-key and --inclusion-proof; missing {', '.join(missing)}"
            )
        from modeltrust.chain.provenance import ProvenanceError, verify_provenance

        try:
            proven = verify_provenance(
                digest=digest,
                registration=_read_json(given_path(registration), "registration"),
                publisher_key_pem=given_path(publisher_key).read_bytes(),
                checkpoint_note=given_path(checkpoint).read_text(encoding="utf-8"),
                ledger_verifier_key=read_verifier_key(ledger_key or ""),
                proof=_read_json(given_path(inclusion_proof), "inclusion proof"),
                origin=origin,
            )
        except ProvenanceError as error:
            fail(f"{error.reason}: {error}", EXIT_REFUSED)
        except OSError as error:
            fail(f"cannot read the provenance files: {error}", EXIT_UNCHECKED)
        expected_size = proven.registration.size
        reg = proven.registration
        provenance_line = (
            f"registered: {reg.model_name} {reg.model_version} signed by key "
            f"{proven.signer_key_id}, proven at ledger index {proven.index} of checkpoint "
            f"{proven.origin} size {proven.tree_size}"
        )

    access = source_access(uri, model_source)
    progress = _progress_bar() if is_terminal(sys.stderr) and not quiet else None
    try:
        result = fetch_artifact(
            uri,
            digest,
            dest,
            max_size=max_size,
            expected_size=expected_size,
            access=access,
            progress=progress,
        )
    except DigestMismatchError as error:
        from modeltrust.chain.trust import Reason  # the trust model, only when refusing

        fail(f"{Reason.DIGEST_MISMATCH}: {error}", EXIT_REFUSED)
    except FetchError as error:
        from modeltrust.chain.trust import Reason

        fail(f"{Reason.FETCH_FAILED}: {redact(str(error), access.credentials)}", EXIT_UNCHECKED)
    finally:
        if progress is not None:
            progress.close()
    if not quiet:
        rate = result.size / max(result.seconds, 1e-9) / (1 << 20)
        click.echo(
            f"verified {result.digest} ({result.size} bytes) -> {result.path} "
            f"in {result.seconds:.2f} s ({rate:.0f} MiB/s)"
        )
        if provenance_line:
            click.echo(provenance_line)


class _TqdmProgress:
    """Adapts tqdm to fetch's progress(done, total) callback."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, desc="fetch"
        )
        self._done = 0

    def __call__(self, done: int, total: int | None) -> None:
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        self._bar.close()


def _progress_bar() -> _TqdmProgress:
    return _TqdmProgress()


@click.command("serve")
@click.option(
    "--model-path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The ONNX file to serve.",
)
@click.option("--model-name", required=True, help="Name clients use in /v2/models/{name}.")
@click.option(
    "--digest",
    required=True,
    callback=_check_digest,
    help="Pinned sha256:<64 hex>; the server refuses to start on any other bytes.",
)
@click.option("--model-version", default="1", show_default=True, help="Version shown in metadata.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--intra-op-threads",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="onnxruntime threads per operator (0: one per core).",
)
@click.option(
    "--inter-op-threads",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="onnxruntime threads across operators (0: onnxruntime's default).",
)
@click.option(
    "--inference-threads",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Answer every inference on a pool of N threads (0: small requests of a fast "
    "model inline on the event loop, large or slow ones on a small pool).",
)
@click.option(
    "--max-body-bytes",
    default=64 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Larger requests get 413.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve_command(
    model_path: Path,
    model_name: str,
    digest: str,
    model_version: str,
    host: str,
    port: int,
    intra_op_threads: int,
    inter_op_threads: int,
    inference_threads: int,
    max_body_bytes: int,
    log_level: str,
) -> None:
    """Serve an ONNX model over the Open Inference Protocol v2 (REST), after checking
    that its bytes are DIGEST. Stops gracefully on SIGTERM."""
    with requires_extra("serving", "serve"):
        from modeltrust.serving.errors import DigestMismatchError, ModelLoadError, ServingError
        from modeltrust.serving.model import SessionSettings
        from modeltrust.serving.runtime import run
        from modeltrust.serving.server import HttpServer, ServerSettings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def started(server: HttpServer) -> None:
        click.echo(
            f"serving model {model_name!r} version {model_version!r} ({digest}) "
            f"on http://{host}:{server.port}/v2/models/{model_name}",
            err=True,
        )

    try:
        run(
            model_path,
            name=model_name,
            digest=digest,
            model_version=model_version,
            session=SessionSettings(intra_op_threads, inter_op_threads),
            settings=ServerSettings(
                host=host,
                port=port,
                max_body_bytes=max_body_bytes,
                inference_threads=inference_threads,
            ),
            on_started=started,
        )
    except DigestMismatchError as error:
        fail(str(error), EXIT_REFUSED)
    except (ModelLoadError, ServingError) as error:
        fail(str(error), EXIT_UNCHECKED)
    except OSError as error:
        fail(f"cannot listen on {host}:{port}: {error.strerror or error}", EXIT_UNCHECKED)


COMMANDS: list[click.Command] = [serve_command, fetch_command]
