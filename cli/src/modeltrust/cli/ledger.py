"""`modeltrust ledger ...`: keygen, serve, witness, witness-acknowledge, verify, checkpoint.

Exit codes (modeltrust.cli.common): 0 success; 1 the ledger failed verification;
2 usage errors; 3 could not check or start: the ledger did not answer, bad settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path

import click

from modeltrust.chain.auth import (
    PublisherSet,
    StaticTokens,
    TokenAuthenticator,
    TokenReviewAuthenticator,
    TokenReviewConfig,
)
from modeltrust.chain.cosigning import WitnessEndpoint
from modeltrust.chain.errors import ChainError, ConfigError
from modeltrust.chain.k8s_lease import (
    DEFAULT_LEASE_SECONDS,
    KubeAPIConfig,
    LeaseConfig,
    LeaseError,
)
from modeltrust.chain.note import ALG_COSIGNATURE_V1, ALG_ED25519, NoteSigner, NoteVerifier
from modeltrust.chain.service import LedgerService, ServiceConfig
from modeltrust.chain.storage import (
    DEFAULT_WRITER_LEASE,
    StorageCorruptError,
    StorageError,
    database_url_has_password,
    is_database_url,
)
from modeltrust.cli.common import (
    EXIT_REFUSED,
    EXIT_UNCHECKED,
    F,
    fail,
    is_terminal,
    ledger_exit_code,
    read_verifier_key,
)

log = logging.getLogger("modeltrust.cli.ledger")


@click.group()
def group() -> None:
    """Run and check the ledger."""


group.name = "ledger"


@group.command()
@click.option(
    "--origin",
    required=True,
    help="Log origin, e.g. ledger.example.com/modeltrust (with --witness: the witness's name, "
    "e.g. witness.example.org).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the private signer key (created with mode 0600).",
)
@click.option(
    "--witness",
    is_flag=True,
    help="A witness's cosigning key instead (type 0x04, C2SP tlog-cosignature: its "
    "cosignatures carry their time).",
)
def keygen(origin: str, out: Path, witness: bool) -> None:
    """Create the ledger's checkpoint signing key (C2SP signed-note Ed25519 key).

    Writes the PRIVATE+KEY+... signer key to --out and prints the verifier key,
    which clients and the trust policy pin (for a witness key: what `ledger serve
    --witness` and the policy's spec.ledger.witnesses name).
    """
    if out.exists():
        raise click.ClickException(f"{out} exists; refusing to overwrite a signing key")
    signer = NoteSigner.generate(origin, alg=ALG_COSIGNATURE_V1 if witness else ALG_ED25519)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.signer_key() + "\n")
    click.echo(signer.verifier_key())


def _database_options(f: F) -> F:
    """--db (a SQLite file or a postgresql:// URL) and --database-url (or its variable)."""
    f = click.option(
        "--database-url",
        envvar="MODELTRUST_LEDGER_DATABASE_URL",
        show_envvar=True,
        help="The ledger's PostgreSQL database, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB: "
        "in the environment, the password stays off the command line (libpq's PGPASSWORD "
        "and ~/.pgpass work too).",
    )(f)
    return click.option(
        "--db",
        help="The ledger's database: a SQLite file, or a postgresql:// URL.",
    )(f)


def _from_environment(name: str) -> bool:
    source = click.get_current_context().get_parameter_source(name)
    return source is click.core.ParameterSource.ENVIRONMENT


def _database(db: str | None, database_url: str | None, *, must_exist: bool) -> str:
    """The store location from --db / --database-url: exactly one of them. An option on
    the command line wins over MODELTRUST_LEDGER_DATABASE_URL in the environment."""
    if db is not None and database_url is not None and _from_environment("database_url"):
        database_url = None
    if db is not None and database_url is not None:
        raise click.UsageError(
            "give --db or --database-url (MODELTRUST_LEDGER_DATABASE_URL), not both"
        )
    if database_url is not None:
        if not is_database_url(database_url):
            raise click.BadParameter("expected a postgresql:// URL", param_hint="--database-url")
        return database_url
    if db is None:
        raise click.UsageError("give --db (a file or a postgresql:// URL) or --database-url")
    if is_database_url(db):
        if database_url_has_password(db):
            log.warning(
                "the database password is on the command line, where other users of this "
                "machine can read it: put the URL in MODELTRUST_LEDGER_DATABASE_URL, or the "
                "password in PGPASSWORD or ~/.pgpass"
            )
        return db
    if must_exist and not Path(db).is_file():
        raise click.BadParameter(f"file {db!r} does not exist", param_hint="--db")
    return db


@group.command()
@_database_options
@click.option(
    "--key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The checkpoint signer key file from `ledger keygen`.",
)
@click.option("--origin", required=True)
@click.option(
    "--publishers",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Directory of publisher *.pem public keys (or one PEM file).",
)
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="host:port")
@click.option(
    "--static-tokens",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of bearer tokens allowed to append audit entries (one per line).",
)
@click.option(
    "--tokenreview-allow",
    "allowed",
    multiple=True,
    help="Service-account username allowed to append audit entries (TokenReview mode).",
)
@click.option(
    "--tokenreview-audience",
    "audiences",
    multiple=True,
    help="Accept only tokens issued for this audience (repeatable), e.g. a projected "
    "service-account token with `audience: modeltrust-ledger`; the API server's own tokens "
    "are then refused.",
)
@click.option("--tokenreview-url", help="Kubernetes API URL (default: in-cluster).")
@click.option("--tokenreview-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--tokenreview-credentials",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The ledger's own token file (default: the in-cluster service-account token).",
)
@click.option("--max-batch", default=2048, show_default=True, help="Entries per block at most.")
@click.option(
    "--writer-wait",
    type=click.FloatRange(min=0),
    help="Seconds to wait for the writer lock while another writer holds it, then fail. "
    "Default: with PostgreSQL, as long as it takes (a standby that takes over when the "
    "writer stops); with SQLite, fail at once.",
)
@click.option(
    "--writer-lease",
    type=click.FloatRange(min=0.5),
    help="PostgreSQL: seconds the writer's database session may stay silent (a paused or "
    f"cut-off writer) before the server ends it and a standby takes over (default "
    f"{DEFAULT_WRITER_LEASE:g}). SQLite with --writer-lease-name: the Lease's "
    f"leaseDurationSeconds (whole seconds, at least 3; default {DEFAULT_LEASE_SECONDS}).",
)
@click.option(
    "--writer-lease-name",
    help="SQLite: elect the writer among processes sharing the file with this Kubernetes "
    "Lease (coordination.k8s.io/v1); the others wait as standbys. The API server is the "
    "in-cluster one, else the one KUBECONFIG names.",
)
@click.option(
    "--writer-lease-namespace",
    help="The Lease's namespace (default: POD_NAMESPACE, the pod's own namespace, or the "
    "kubeconfig context's).",
)
@click.option(
    "--witness",
    "witnesses",
    nargs=2,
    multiple=True,
    metavar="URL KEY",
    help="A witness (`modeltrust ledger witness`, or any C2SP tlog-witness) and its verifier "
    "key: every new checkpoint is sent to it and served with its cosignature (repeatable).",
)
@click.option(
    "--witness-timeout",
    type=click.FloatRange(min=0.1),
    default=3.0,
    show_default=True,
    help="Seconds a witness has to answer; a slower one adds no cosignature to that checkpoint.",
)
@click.option(
    "--witness-refresh",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between cosignings of the current checkpoint when nothing is appended; keep "
    "it well below the policies' spec.ledger.maxCosignatureAge.",
)
@click.option("--log-level", default="INFO", show_default=True)
def serve(
    db: str | None,
    database_url: str | None,
    key_file: Path,
    origin: str,
    publishers: Path,
    listen: str,
    static_tokens: Path | None,
    allowed: tuple[str, ...],
    audiences: tuple[str, ...],
    tokenreview_url: str | None,
    tokenreview_ca: Path | None,
    tokenreview_credentials: Path | None,
    max_batch: int,
    writer_wait: float | None,
    writer_lease: float | None,
    writer_lease_name: str | None,
    writer_lease_namespace: str | None,
    witnesses: tuple[tuple[str, str], ...],
    witness_timeout: float,
    witness_refresh: float,
    log_level: str,
) -> None:
    """Serve the ledger API as the only writer of its database (the writer lock: a second
    writer fails, or with PostgreSQL waits as a standby)."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    location = _database(db, database_url, must_exist=False)
    lease: LeaseConfig | None = None
    if writer_lease_name is not None:
        if is_database_url(location):
            raise click.UsageError(
                "--writer-lease-name is for SQLite: with PostgreSQL the database lock elects "
                "the writer (standbys wait for it; --writer-lease sets its lease)"
            )
        if writer_lease is None:
            writer_lease = DEFAULT_LEASE_SECONDS
        if writer_lease != int(writer_lease) or writer_lease < 3:
            raise click.BadParameter(
                "a Lease lasts whole seconds, at least 3", param_hint="--writer-lease"
            )
        try:
            lease = _lease_config(writer_lease_name, writer_lease_namespace, int(writer_lease))
        except ConfigError as exc:
            fail(str(exc), EXIT_UNCHECKED)
        # The Lease decides; the shared file lock then only keeps out writers outside it.
        if writer_wait is None:
            writer_wait = 0.0
    if writer_wait is None and not is_database_url(location):
        writer_wait = 0.0
    if writer_lease is None:
        writer_lease = DEFAULT_WRITER_LEASE
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected host:port", param_hint="--listen")
    try:
        signer = NoteSigner.from_signer_key(key_file.read_text().strip())
        tokens = _tokens(
            static_tokens,
            allowed,
            audiences,
            tokenreview_url,
            tokenreview_ca,
            tokenreview_credentials,
        )
        config = ServiceConfig(
            db=location,
            signer=signer,
            origin=origin,
            publishers=PublisherSet.load(publishers),
            tokens=tokens,
            host=host,
            port=int(port),
            max_batch=max_batch,
            writer_wait=writer_wait,
            writer_lease=writer_lease,
            lease=lease,
            witnesses=tuple(WitnessEndpoint.parse(url, key) for url, key in witnesses),
            witness_timeout=witness_timeout,
            witness_refresh=witness_refresh,
        )
        service = LedgerService(config)
    except (ChainError, OSError) as exc:
        fail(str(exc), EXIT_UNCHECKED)
    _use_uvloop()
    try:
        code = asyncio.run(service.run_until_stopped())
    except (StorageError, LeaseError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


def _lease_config(name: str, namespace: str | None, duration: int) -> LeaseConfig:
    """The writer Lease on the in-cluster API server, else on the one KUBECONFIG names."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        api = KubeAPIConfig.in_cluster()
        namespace = namespace or os.environ.get("POD_NAMESPACE") or api.in_cluster_namespace()
    else:
        api, context_namespace = _kubeconfig_api()
        namespace = namespace or os.environ.get("POD_NAMESPACE") or context_namespace
    if not namespace:
        raise ConfigError("give the writer Lease's namespace: --writer-lease-namespace")
    return LeaseConfig(api=api, namespace=namespace, name=name, duration=duration)


def _kubeconfig_api() -> tuple[KubeAPIConfig, str | None]:
    """What KUBECONFIG (or ~/.kube/config) names, read with the Kubernetes client library
    (the kubeconfig format has many forms; it resolves them)."""
    try:
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config
    except ImportError as exc:
        raise ConfigError(
            "outside a cluster the writer Lease is reached through KUBECONFIG, which needs the "
            f"kubernetes package (pip install 'modeltrust-cli[operator]') ({exc})"
        ) from exc
    cfg = k8s_client.Configuration()
    try:
        k8s_config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        _, active = k8s_config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (k8s_config.ConfigException, OSError) as exc:
        raise ConfigError(f"cannot read the kubeconfig for the writer Lease: {exc}") from exc
    bearer = (cfg.api_key or {}).get("authorization") or ""
    api = KubeAPIConfig(
        server=cfg.host,
        ca_file=Path(cfg.ssl_ca_cert) if cfg.ssl_ca_cert else None,
        token=bearer.removeprefix("Bearer ").strip() or None,
        client_cert=Path(cfg.cert_file) if cfg.cert_file else None,
        client_key=Path(cfg.key_file) if cfg.key_file else None,
    )
    namespace = ((active or {}).get("context") or {}).get("namespace")
    return api, namespace if isinstance(namespace, str) else None


def _tokens(
    static_tokens: Path | None,
    allowed: tuple[str, ...],
    audiences: tuple[str, ...],
    url: str | None,
    ca: Path | None,
    credentials: Path | None,
) -> TokenAuthenticator | None:
    if static_tokens is not None and allowed:
        raise click.UsageError("choose --static-tokens or --tokenreview-allow, not both")
    if audiences and not allowed:
        raise click.UsageError(
            "--tokenreview-audience needs --tokenreview-allow (TokenReview mode)"
        )
    if static_tokens is not None:
        return StaticTokens.load(static_tokens)
    env = os.environ.get("MODELTRUST_LEDGER_TOKENS")
    if env and not allowed:
        return StaticTokens.from_env(env)
    if not allowed:
        return None  # no audit writers: audit entries are refused
    if url is None:
        cfg = TokenReviewConfig.in_cluster(allowed)
    else:
        cfg = TokenReviewConfig(
            api_url=url,
            credentials_file=credentials
            or Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
            allowed_usernames=frozenset(allowed),
            ca_file=ca,
        )
    if audiences:
        cfg = dataclasses.replace(cfg, audiences=audiences)
    else:
        log.warning(
            "no --tokenreview-audience: the ledger accepts the allowed accounts' Kubernetes API "
            "tokens; give writers a projected token bound to an audience and name it here"
        )
    return TokenReviewAuthenticator(cfg)


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@group.command()
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The witness's directory: its copy of the log, the checkpoint it last cosigned, "
    "split-view evidence (created if missing).",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The witness's own key file, from `modeltrust ledger keygen --witness`.",
)
@click.option("--log-url", required=True, help="The ledger (sequencer) the witness copies.")
@click.option(
    "--log-key", required=True, help="The ledger's checkpoint verifier key (or a file holding it)."
)
@click.option("--origin", help="The log's origin (default: the log key's name).")
@click.option("--listen", default="127.0.0.1:8081", show_default=True, help="host:port")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between reads of the ledger's new blocks and checkpoint.",
)
@click.option(
    "--audit-interval",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Seconds between full audits of the witness's own copy (0: only at start).",
)
@click.option("--log-level", default="INFO", show_default=True)
def witness(
    state_dir: Path,
    key_file: Path,
    log_url: str,
    log_key: str,
    origin: str | None,
    listen: str,
    poll_interval: float,
    audit_interval: float,
    log_level: str,
) -> None:
    """Witness a ledger: keep a verified copy of it, serve its read API, and cosign (C2SP
    tlog-witness, POST /add-checkpoint) only the checkpoints the copy confirms. A checkpoint
    that contradicts the copy is kept as split-view evidence (GET /v1/witness/evidence)
    and the witness cosigns nothing more until `ledger witness-acknowledge`."""
    from modeltrust.chain.witness import WitnessConfig, WitnessError, WitnessService

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected host:port", param_hint="--listen")
    try:
        signer = NoteSigner.from_signer_key(key_file.read_text().strip())
        verifier = NoteVerifier.from_verifier_key(read_verifier_key(log_key))
        service = WitnessService(
            WitnessConfig(
                state_dir=state_dir,
                signer=signer,
                log_url=log_url.rstrip("/"),
                log_verifier=verifier,
                origin=origin or verifier.name,
                host=host,
                port=int(port),
                poll_interval=poll_interval,
                audit_interval=audit_interval or None,
            )
        )
    except (ChainError, OSError) as exc:
        fail(str(exc), EXIT_UNCHECKED)
    _use_uvloop()
    try:
        code = asyncio.run(service.run_until_stopped())
    except (WitnessError, StorageError, OSError) as exc:
        fail(str(exc), EXIT_UNCHECKED)
    sys.exit(code)


@group.command("witness-acknowledge")
@click.option(
    "--state",
    "state_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="The witness's state directory (the witness must be stopped).",
)
@click.option(
    "--id",
    "ids",
    multiple=True,
    help="The evidence to acknowledge (its id, as GET /v1/witness/evidence shows; "
    "repeatable); default: all of it.",
)
def witness_acknowledge(state_dir: Path, ids: tuple[str, ...]) -> None:
    """After reviewing a witness's split-view evidence: let it cosign again.

    Moves the evidence to evidence/acknowledged/ (kept, never deleted). The witness still
    refuses anything that contradicts its copy of the log: acknowledging changes what it
    remembers, not what it checks.
    """
    from modeltrust.chain.witness import WitnessError, acknowledge_evidence

    try:
        moved = acknowledge_evidence(state_dir, ids)
    except (WitnessError, OSError) as exc:
        fail(str(exc), EXIT_UNCHECKED)
    if not moved:
        click.echo("no split-view evidence to acknowledge")
    for path in moved:
        click.echo(f"acknowledged {path.stem} (kept in {path.parent})")


@group.command()
@_database_options
@click.option("--url", help="Verify a running ledger over its API instead of its database.")
@click.option(
    "--verifier-key", required=True, help="The ledger's checkpoint verifier key (or a file)."
)
@click.option("--check-entries", is_flag=True, help="Also parse every entry strictly (slower).")
@click.option(
    "--quiet", is_flag=True, help="No progress bar (there is none unless stderr is a terminal)."
)
def verify(
    db: str | None,
    database_url: str | None,
    url: str | None,
    verifier_key: str,
    check_entries: bool,
    quiet: bool,
) -> None:
    """Recompute the whole ledger from genesis; exit 1 naming the first bad index or block."""
    from tqdm import tqdm

    from modeltrust.chain.ledger_verify import LedgerVerificationError, verify_database
    from modeltrust.chain.remote_verify import verify_remote

    if url is not None and database_url is not None and _from_environment("database_url"):
        database_url = None
    if url is not None and (db is not None or database_url is not None):
        raise click.UsageError("give exactly one of --db, --database-url or --url")
    location = None if url is not None else _database(db, database_url, must_exist=True)
    try:
        verifier = NoteVerifier.from_verifier_key(read_verifier_key(verifier_key))
    except ChainError as exc:
        raise click.BadParameter(str(exc), param_hint="--verifier-key") from exc
    bar = tqdm(
        unit=" entries",
        unit_scale=True,
        disable=quiet or not is_terminal(sys.stderr),
        file=sys.stderr,
        mininterval=0.5,
    )

    def progress(count: int) -> None:
        bar.update(count)

    try:
        if location is not None:
            report = verify_database(
                location, verifier, check_entries=check_entries, progress=progress
            )
        else:
            assert url is not None
            report = verify_remote(url, verifier, check_entries=check_entries, progress=progress)
    except LedgerVerificationError as exc:
        bar.close()
        click.echo(f"FAILED: {exc}", err=True)
        if exc.index is not None:
            click.echo(f"first bad index: {exc.index}", err=True)
        if exc.height is not None:
            click.echo(f"first bad block: {exc.height}", err=True)
        sys.exit(EXIT_REFUSED)
    except StorageError as exc:
        bar.close()
        click.echo(f"FAILED: {exc}", err=True)
        # A damaged store failed the check; one that cannot be reached was not checked.
        sys.exit(EXIT_REFUSED if isinstance(exc, StorageCorruptError) else EXIT_UNCHECKED)
    except ChainError as exc:
        bar.close()
        click.echo(f"FAILED: {exc}", err=True)
        sys.exit(ledger_exit_code(exc))
    bar.close()
    click.echo(f"OK: {report.tree_size} entries in {report.blocks} blocks verified from genesis")
    if report.checkpoint_note:
        click.echo(report.checkpoint_note, nl=False)


@group.command()
@click.option("--url", required=True)
@click.option(
    "--verifier-key", required=True, help="The ledger's checkpoint verifier key (or a file)."
)
@click.option(
    "--trust-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Remember the verified checkpoint here; later runs demand consistency with it.",
)
def checkpoint(url: str, verifier_key: str, trust_file: Path | None) -> None:
    """Fetch, verify and print the ledger's latest checkpoint."""
    from modeltrust.chain.client import LedgerClient
    from modeltrust.chain.trust_state import FileTrustStateStore, LedgerTrustError

    store = FileTrustStateStore(trust_file) if trust_file is not None else None
    try:
        with LedgerClient(
            url, verifier_key=read_verifier_key(verifier_key), trust_store=store
        ) as client:
            verified = client.checkpoint()
    except LedgerTrustError as exc:
        click.echo(f"FAILED: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    except ChainError as exc:
        fail(str(exc), EXIT_UNCHECKED)
    click.echo(verified.note, nl=False)
