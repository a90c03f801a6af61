"""s3:// sources: a model stored as an object of an S3-compatible store.

`s3://BUCKET/KEY`: the key is everything after the first slash, taken literally (it may
hold more slashes). Where the store is (`SourceAccess.s3`): `endpoint` (None: AWS S3 for
the region), `region` (None: us-east-1) and `addressing` ("path": endpoint/bucket/key,
"virtual": bucket.endpoint/key, "auto": botocore decides).

The client is botocore (through boto3): it signs with SigV4, knows AWS's regions and
endpoints and both addressing styles. It is shut off from everything around it:

- Credentials come only from `access.credentials` (the Secret a ModelDeployment names).
  Without them requests go unsigned. botocore's own chain (environment variables,
  ~/.aws, the instance profile, IRSA's web identity token) is never consulted: in the
  operator that chain is the operator's own cloud identity, and whoever may create a
  ModelDeployment would read with it any object the operator can.
- No environment variable or ~/.aws file changes the endpoint, region, addressing, CA or
  retries: the ModelDeployment (or the command line) says where the bytes are.
- With credentials, every request is checked just before it is sent: its host must be one
  the Secret's owner listed (`SourceCredentials.check_host`), whichever host botocore
  built (the endpoint's, the bucket-prefixed one of virtual addressing, AWS's regional
  one, or the region an S3 redirect names).

A HEAD reads the object's size and ETag when the source is resolved; `open(offset)` is a
streaming GET, with `Range: bytes=offset-` to resume, and `If-Match` that ETag so a resumed
download cannot splice two versions of the object.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

import boto3.session
import botocore.session
import urllib3.exceptions
from botocore import UNSIGNED
from botocore.config import Config
from botocore.credentials import CredentialResolver
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    ParamValidationError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from modeltrust.serving.credentials import SourceCredentials, redact
from modeltrust.serving.errors import FetchError
from modeltrust.serving.sources import (
    USER_AGENT,
    Opened,
    SourceAccess,
    TransientFetchError,
)

if TYPE_CHECKING:
    from botocore.awsrequest import AWSPreparedRequest
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import GetObjectRequestTypeDef

_ADDRESSING: dict[str, Literal["path", "virtual", "auto"]] = {
    "path": "path",
    "virtual": "virtual",
    "auto": "auto",
}
ADDRESSING = tuple(_ADDRESSING)
DEFAULT_REGION = "us-east-1"
# botocore retries a failed request itself before we see it. One retry (two attempts)
# covers a pooled keep-alive connection the store had closed; everything longer is
# fetch_artifact's backoff, which also resumes the body at the byte reached. Letting
# botocore retry more would multiply the two (5 of ours x N of its) and hide how long a
# fetch really waits.
BOTOCORE_ATTEMPTS = 2
# What the store may answer that says "not now" rather than "no".
_TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "TooManyRequests",
}
_REFUSED_CODES = {
    "403": "the store refused the request",
    "Forbidden": "the store refused the request",
    "AccessDenied": "they may not read this object",
    "AllAccessDisabled": "all access to this object is disabled",
    "InvalidAccessKeyId": "the store does not know the access key ID",
    "SignatureDoesNotMatch": "the secret key is not the one of the access key ID",
    "InvalidToken": "the session token is malformed or invalid",
    "ExpiredToken": "the session token has expired",
    "TokenRefreshRequired": "the session token has expired",
    # versitygw answers an unknown access key ID with 404 and this code.
    "XAdminUserNotFound": "the store does not know the access key ID",
}
_NOT_FOUND_CODES = {"404", "NotFound", "NoSuchKey", "NoSuchBucket"}
_WRONG_REGION_CODES = {"301", "PermanentRedirect", "AuthorizationHeaderMalformed"}
# Bucket names S3-compatible stores accept (AWS's rules are stricter: the store says so).
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

T = TypeVar("T")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of s3://BUCKET/KEY; the key is taken literally, slashes and all."""
    if not uri.startswith("s3://"):
        raise FetchError(f"{uri} is not an s3:// URI")
    bucket, slash, key = uri[len("s3://") :].partition("/")
    if "@" in bucket:  # not echoed: what precedes the @ may be a password
        raise FetchError(
            "an s3:// URI holds no user:password@: the keys go in the Secret of "
            "spec.model.credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
        )
    if not bucket or not _BUCKET.fullmatch(bucket):
        raise FetchError(
            f"{uri} names no valid bucket: use s3://BUCKET/KEY, where BUCKET is letters, "
            "digits, '.', '-' or '_' (no host, port or credentials: the endpoint is "
            "spec.model.s3.endpoint, the keys go in spec.model.credentials)"
        )
    if not slash or not key:
        raise FetchError(f"{uri} names no object: use s3://BUCKET/KEY")
    return bucket, key


def resolve_s3(uri: str, access: SourceAccess) -> S3Source:
    """The S3Source for `uri`, after a HEAD of the object (its size and ETag)."""
    bucket, key = parse_s3_uri(uri)
    source = S3Source(uri, bucket, key, access)
    try:
        source.head()
    except BaseException:
        source.close()
        raise
    return source


class S3Source:
    def __init__(self, uri: str, bucket: str, key: str, access: SourceAccess) -> None:
        options = access.s3
        if options.addressing not in ADDRESSING:
            raise FetchError(
                f"S3 addressing {options.addressing!r} is not one of {', '.join(ADDRESSING)}"
            )
        self._endpoint = _check_endpoint(options.endpoint)
        self._region = options.region or DEFAULT_REGION
        self._bucket = bucket
        self._key = key
        self.pinned_uri = uri
        self.description = uri if self._endpoint is None else f"{uri} at {self._endpoint}"
        self._credentials = access.credentials
        self._signed = _has_s3_keys(access.credentials)
        self._total: int | None = None
        self._etag: str | None = None
        self._ca_bundle: Path | None = None
        try:
            verify = self._tls_verify(access)
            self._client = self._make_client(access, options.addressing, verify)
        except BaseException:
            self._remove_ca_bundle()
            raise

    # --- the client ------------------------------------------------------------------------

    def _tls_verify(self, access: SourceAccess) -> str | bool:
        """botocore's `verify`: a CA bundle file. System CAs, plus the CA file and the
        Secret's ca.crt when given (written to a private temporary file)."""
        if self._endpoint is not None and self._endpoint.startswith("http://"):
            return True  # no TLS to verify
        access.ssl_context()  # checks the CA file and ca.crt, with clear messages
        extra: list[bytes] = []
        if access.ca_file is not None:
            try:
                extra.append(access.ca_file.read_bytes())
            except OSError as error:
                raise FetchError(
                    f"cannot read CA file {access.ca_file}: {error.strerror}"
                ) from None
        if access.credentials is not None and access.credentials.ca_pem is not None:
            extra.append(access.credentials.ca_pem)
        system = _system_ca_file()
        if not extra:
            # The system CAs, as for https:// sources; botocore's own bundle only when the
            # system has no CA file.
            return str(system) if system is not None else True
        fd, name = tempfile.mkstemp(prefix="modeltrust-s3-ca.", suffix=".pem")  # mode 0600
        self._ca_bundle = Path(name)
        with os.fdopen(fd, "wb") as bundle:
            if system is not None:
                bundle.write(system.read_bytes().rstrip(b"\n") + b"\n")
            for pem in extra:
                bundle.write(pem.rstrip(b"\n") + b"\n")
        return name

    def _make_client(self, access: SourceAccess, addressing: str, verify: str | bool) -> S3Client:
        config = Config(
            region_name=self._region,
            signature_version=None if self._signed else UNSIGNED,
            connect_timeout=access.timeout,
            read_timeout=access.timeout,
            retries={"total_max_attempts": BOTOCORE_ATTEMPTS, "mode": "standard"},
            s3={"addressing_style": _ADDRESSING[addressing]},
            user_agent_extra=USER_AGENT,
            # The pinned SHA-256 decides whether the bytes are right; a CRC of the body
            # on top would only cost CPU on every byte.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        credentials = access.credentials if self._signed else None
        session = boto3.session.Session(botocore_session=_hermetic_botocore_session())
        try:
            client = session.client(
                "s3",
                region_name=self._region,
                endpoint_url=self._endpoint,
                aws_access_key_id=credentials.s3_access_key if credentials else None,
                aws_secret_access_key=credentials.s3_secret_key if credentials else None,
                aws_session_token=credentials.s3_session_token if credentials else None,
                verify=verify,
                config=config,
            )
        except BotoCoreError as error:  # e.g. an invalid region name
            raise FetchError(
                f"cannot set up an S3 client for {self.description}: {self._redact(str(error))}"
            ) from None
        if credentials is not None:
            client.meta.events.register("before-send.s3", self._check_request_host)
        return client

    def _check_request_host(self, request: AWSPreparedRequest, **_: Any) -> None:
        """Keys go only to a host the Secret's owner listed (raised before sending)."""
        assert self._credentials is not None  # registered only with credentials
        parts = urlsplit(request.url)
        self._credentials.check_host(parts.hostname or "", parts.port)

    # --- the Source interface ----------------------------------------------------------------

    def head(self) -> None:
        try:
            response = self._client.head_object(Bucket=self._bucket, Key=self._key)
        except ClientError as error:
            raise self._head_error(error) from None
        except BotoCoreError as error:
            raise self._library_error(error) from None
        self._total = response.get("ContentLength")
        self._etag = response.get("ETag")

    def open(self, offset: int) -> Opened:
        if self._total is not None and offset >= self._total:
            return Opened(_EmptyStream(), offset, self._total)  # nothing left to read
        request: GetObjectRequestTypeDef = {"Bucket": self._bucket, "Key": self._key}
        if offset > 0:
            request["Range"] = f"bytes={offset}-"
        if self._etag is not None:
            request["IfMatch"] = self._etag
        response = self._call(lambda: self._client.get_object(**request), "GET")
        body = response["Body"]
        status = response["ResponseMetadata"]["HTTPStatusCode"]
        if offset > 0 and status == 206:
            span = _CONTENT_RANGE.fullmatch(response.get("ContentRange", ""))
            if span is None or int(span[1]) != offset:
                body.close()
                raise FetchError(
                    f"{self.description} answered a range request for byte {offset} on "
                    f"with {response.get('ContentRange')!r}"
                )
            total = int(span[3]) if span[3] != "*" else None
            return Opened(_BodyStream(body, offset, self._read_error), offset, total)
        # A whole answer: no Range asked, or the store ignored it (fetch starts over).
        return Opened(_BodyStream(body, 0, self._read_error), 0, response.get("ContentLength"))

    def verify(self, digest: bytes, size: int) -> None:
        return None  # the pinned SHA-256 is the check; S3 has no digest of its own to add

    def close(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        self._remove_ca_bundle()

    def _remove_ca_bundle(self) -> None:
        if self._ca_bundle is not None:
            with contextlib.suppress(FileNotFoundError):
                self._ca_bundle.unlink()
            self._ca_bundle = None

    # --- errors ------------------------------------------------------------------------------

    def _call(self, request: Callable[[], T], method: str) -> T:
        try:
            return request()
        except ClientError as error:
            raise self._answer_error(error, method) from None
        except BotoCoreError as error:
            raise self._library_error(error) from None

    def _redact(self, text: str) -> str:
        text = redact(text, self._credentials)
        # The access key ID is no secret to AWS, but it names an identity: keep it out too.
        access_key = self._credentials.s3_access_key if self._credentials else None
        if access_key and len(access_key) >= 4:
            text = text.replace(access_key, "[redacted]")
        return text

    def _where(self) -> str:
        return self._endpoint or f"AWS S3 ({self._region})"

    def _head_error(self, error: ClientError) -> FetchError:
        """A HEAD answer has no body, so no error code: 404 cannot tell a missing key
        from a missing bucket, nor 403 a wrong secret from a missing permission. Only
        then, ask with a one-byte GET, whose answer says which."""
        if not str(error.response.get("Error", {}).get("Code", "")).isdigit():
            return self._answer_error(error, "HEAD")
        try:
            response = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range="bytes=0-0"
            )
        except ClientError as get_error:
            return self._answer_error(get_error, "GET")
        except BotoCoreError as get_error:
            return self._library_error(get_error)
        response["Body"].close()
        return self._answer_error(error, "HEAD")

    def _answer_error(self, error: ClientError, method: str) -> FetchError:
        details = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(details.get("Code") or status)
        said = self._redact(str(details.get("Message") or "")).strip()
        answered = f"{method} {self.description} answered {status}"
        if code != str(status):
            answered += f" {code}" + (f" ({said})" if said else "")
        elif said:
            answered += f" {said}"
        if code in _NOT_FOUND_CODES:
            return FetchError(f"{answered}: {self._not_found(code)}")
        if code in _REFUSED_CODES or status == 403:
            if self._signed:
                assert self._credentials is not None
                why = _REFUSED_CODES.get(code, "the store refused the request")
                return FetchError(
                    f"{answered}: the credentials of {self._credentials.source_name} were "
                    f"refused ({why}); check its AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                    f"(and AWS_SESSION_TOKEN) and that they may read s3://{self._bucket}/"
                    f"{self._key}"
                )
            return FetchError(
                f"{answered}: the object is not public, it needs credentials: reference a "
                "Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in "
                "spec.model.credentials"
            )
        if code in _WRONG_REGION_CODES:
            return FetchError(
                f"{answered}: bucket {self._bucket!r} is not in region {self._region} at "
                f"{self._where()}; set its region (spec.model.s3.region)"
            )
        if code in ("412", "PreconditionFailed"):
            return FetchError(
                f"{answered}: the object changed while it was being downloaded (its ETag "
                f"is no longer {self._etag}); fetch again once it is no longer being written"
            )
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            return TransientFetchError(answered)
        return FetchError(answered)

    def _not_found(self, code: str) -> str:
        if code == "NoSuchBucket":
            return (
                f"there is no bucket {self._bucket!r} at {self._where()}; check the bucket "
                "in the URI and the endpoint"
            )
        missing = f"bucket {self._bucket!r} has no object {self._key!r}"
        if code != "NoSuchKey":
            missing += " (or there is no such bucket)"
        return f"{missing}; check the key (case-sensitive, everything after the bucket's slash)"

    def _library_error(self, error: BotoCoreError) -> FetchError:
        text = self._redact(str(error))
        if isinstance(error, SSLError):
            return FetchError(
                f"cannot reach {self._where()} for {self.pinned_uri}: {text}; if it uses a "
                "private CA, give its certificate (ca.crt in the credentials Secret, or a CA "
                "file)"
            )
        if isinstance(error, BotoConnectionError | HTTPClientError):
            # Refused or dropped connections, DNS, timeouts: may well work next time.
            return TransientFetchError(
                f"cannot reach {self._where()} for {self.pinned_uri}: {text}"
            )
        if isinstance(error, ParamValidationError):
            return FetchError(f"{self.pinned_uri} is not a valid S3 location: {text}")
        return FetchError(f"{self.description}: {text}")

    def _read_error(self, error: Exception, done: int) -> FetchError:
        return TransientFetchError(
            f"reading {self.description} failed after {done} bytes: {self._redact(str(error))}"
        )


class _BodyStream:
    """fetch's Stream over botocore's StreamingBody: reads into fetch's own buffer (no
    copy of the object is ever held) and turns botocore's and urllib3's read errors,
    which are not OSErrors, into TransientFetchError so fetch resumes from the byte
    reached."""

    def __init__(
        self,
        body: StreamingBody,
        start: int,
        read_error: Callable[[Exception, int], FetchError],
    ) -> None:
        self._body = body
        self._done = start
        self._read_error = read_error

    def readinto(self, buffer: memoryview) -> int:
        try:
            count = self._body.readinto(buffer)  # type: ignore[arg-type]  # stubs: IO[bytes]
        except (BotoCoreError, urllib3.exceptions.HTTPError, OSError) as error:
            raise self._read_error(error, self._done) from None
        self._done += count
        return count

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()


class _EmptyStream:
    def readinto(self, buffer: memoryview) -> int:
        return 0

    def close(self) -> None:
        return None


def _has_s3_keys(credentials: SourceCredentials | None) -> bool:
    """Whether requests are signed. Credentials without S3 keys are a mistake unless all
    they hold is a ca.crt (a private CA for a public bucket)."""
    if credentials is None:
        return False
    if credentials.s3_access_key is not None and credentials.s3_secret_key is not None:
        return True
    if credentials.token or credentials.username or credentials.registries:
        raise FetchError(
            f"{credentials.source_name} holds no S3 keys: s3:// sources sign with "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)"
        )
    return False


def _check_endpoint(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    parts = urlsplit(endpoint)
    if parts.username is not None or parts.password is not None:
        # Not echoed: the user:password part is a secret.
        raise FetchError(
            "the S3 endpoint holds user:password@; S3 keys go in the credentials Secret "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the endpoint is only scheme://host:port"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise FetchError(
            f"the S3 endpoint {endpoint!r} is not an http(s) URL like https://minio.example:9000"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise FetchError(f"the S3 endpoint {endpoint!r} has an invalid port") from None
    return endpoint.rstrip("/")


def _system_ca_file() -> Path | None:
    """The system's CA bundle, as ssl.create_default_context() would load it."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    return None


def _hermetic_botocore_session() -> botocore.session.Session:
    """A botocore session that reads nothing from the environment or ~/.aws.

    Every setting botocore would look up in an AWS_* variable or a config file falls back
    to its built-in default; what matters is passed to the client explicitly. The
    credential chain is emptied too: even a botocore code path that asks the session for
    credentials finds none."""
    settings = {
        name: (None, None, default, convert)
        for name, (_, _, default, convert) in botocore.session.Session.SESSION_VARIABLES.items()
    }
    settings["config_file"] = (None, None, os.devnull, None)
    settings["credentials_file"] = (None, None, os.devnull, None)
    # AWS_ENDPOINT_URL(_S3) and endpoint_url in a config file: never.
    settings["ignore_configured_endpoint_urls"] = (None, None, True, None)
    session = botocore.session.Session(session_vars=settings)
    session.register_component("credential_provider", CredentialResolver(providers=[]))
    return session
