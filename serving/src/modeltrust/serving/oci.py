"""oci:// sources: a model stored as a layer of an OCI artifact in a registry, or as a
file inside a container image's layers (a KServe modelcar).

    oci://registry[:port]/repository[/more]@sha256:<hex>[#title]   pinned by manifest digest
    oci://registry[:port]/repository[/more]:tag[#title]             the tag is resolved once
    oci://registry[:port]/repository:tag#/models/model.onnx         a file in image layers

Resolving reads the manifest (OCI image manifest or Docker v2 manifest; an index is
refused: it names no layers of its own), checks that its bytes hash to the pinned digest
(and to the registry's Docker-Content-Digest), and chooses the model's layer: the only
one, or the one whose `org.opencontainers.image.title` annotation is the URI's fragment,
or else the only one titled `*.onnx`. A tag becomes `pinned_uri` in the @sha256 form, so
whoever fetches later (the pod) reads exactly the manifest that was checked here.

The layer's blob is streamed by `fetch.fetch_artifact`, resuming by Range; `verify` then
checks the bytes against the layer descriptor's digest and size (the registry's own
record), and fetch_artifact checks our pinned SHA-256 on top of that. A file inside image
layers (`ImageFileSource`) is streamed out of the tar (gzip) stream, the raw blob hashed on
the way for the layer's digest; it cannot resume, so a retry starts the layer over.

The registry API subset this needs (two GETs, the token dance) is spoken here over urllib
rather than through a client library: the libraries that exist download blobs to files
themselves, where this one pass must hash, cap and write the bytes as they arrive.

Auth follows the distribution spec: anonymous first; on a 401, `Basic` with the
registry's credentials, or a `Bearer` token from the challenge's realm (obtained with the
credentials' username and password, their identity token, or anonymously). Credentials go
only to hosts their Secret allows, the registry's and the token realm's alike; always
over HTTPS.
"""

from __future__ import annotations

import base64
import email.message
import hashlib
import http.client
import io
import json
import lzma
import posixpath
import re
import ssl
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from typing import IO, Any, cast
from urllib.parse import urlencode, urlsplit

from modeltrust.serving.credentials import RegistryAuth, SourceCredentials, redact
from modeltrust.serving.errors import DigestMismatchError, FetchError
from modeltrust.serving.sources import (
    USER_AGENT,
    Opened,
    SourceAccess,
    TransientFetchError,
    _NoDowngradeRedirects,
    close_quietly,
    http_error,
    open_url,
    response_opened,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
# Indexes are asked for too, so that a multi-platform tag is refused with a clear reason
# rather than with whatever a registry answers when no acceptable type exists.
ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST))
TITLE = "org.opencontainers.image.title"
# oras marks a directory it packed into a tar.gz this way; a file keeps its own bytes.
ORAS_UNPACK = "io.deis.oras.content.unpack"
MAX_MANIFEST = 4 << 20  # the size distribution itself accepts for a manifest
MAX_TOKEN_ANSWER = 1 << 20
TOKEN_MARGIN = 10.0  # seconds: renew a token this long before it expires
DEFAULT_TOKEN_LIFETIME = 60.0  # the token spec's default when expires_in is absent

_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
_FORMS = "oci://registry[:port]/repository@sha256:<64 hex> or oci://registry[:port]/repository:tag"


# Docker Hub's names for itself, as docker, containerd and ORAS map them: references say
# docker.io (and docker config entries index.docker.io), the API answers at another host.
DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class OciReference:
    registry: str  # host[:port] as the URI names it: pinned URIs and docker config keys
    host: str  # where requests (and so credentials) go: Docker Hub's API host for docker.io
    port: int | None
    repository: str
    tag: str | None
    digest: str | None  # sha256:<hex> of the manifest
    fragment: str | None  # which layer (its title), or /path: a file in image layers

    @property
    def endpoint(self) -> str:
        """host[:port] of the registry's API (brackets kept for IPv6)."""
        return DOCKER_HUB_API if self.host == DOCKER_HUB_API else self.registry

    def uri(self, digest: str) -> str:
        fragment = f"#{self.fragment}" if self.fragment is not None else ""
        return f"oci://{self.registry}/{self.repository}@{digest}{fragment}"


def parse_oci_uri(uri: str) -> OciReference:
    """Split an oci:// URI; raise FetchError naming what is wrong and the forms accepted."""
    parts = urlsplit(uri)
    if parts.scheme != "oci":
        raise FetchError(f"{uri} is not an oci:// URI ({_FORMS})")
    if "@" in parts.netloc or not parts.hostname:
        raise FetchError(
            f"{uri} must name a registry host without user information ({_FORMS}); "
            "credentials come from spec.model.credentials"
        )
    try:
        port = parts.port
    except ValueError:
        raise FetchError(f"{uri} has an invalid port") from None
    if parts.query:
        raise FetchError(f"{uri} has a query (?{parts.query}); OCI references have none")
    path = parts.path.lstrip("/")
    name, at, digest = path.partition("@")
    tag: str | None = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise FetchError(f"{uri}: {tag!r} is not a valid tag")
    if not _REPOSITORY.fullmatch(name):
        raise FetchError(
            f"{uri}: {name!r} is not a valid repository name (lowercase letters, digits, "
            "separators . _ -, components joined by /)"
        )
    if at:
        if not _SHA256.fullmatch(digest):
            raise FetchError(
                f"{uri}: the manifest digest must be sha256:<64 lowercase hex>, got {digest!r}"
            )
        tag = None  # a digest names the manifest exactly; a tag beside it says nothing more
    elif tag is None:
        raise FetchError(f"{uri} names neither a tag nor a digest ({_FORMS})")
    host = parts.hostname
    if host in DOCKER_HUB_NAMES and port is None:
        host = DOCKER_HUB_API
        if "/" not in name:
            name = f"library/{name}"  # official images live under library/
    return OciReference(
        registry=parts.netloc.lower(),
        host=host,
        port=port,
        repository=name,
        tag=tag,
        digest=digest if at else None,
        fragment=parts.fragment or None,
    )


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str
    title: str | None
    unpack: bool


@dataclass
class _Answer:
    status: int
    headers: email.message.Message  # HTTPError gives the base class
    body: bytes


class _Registry:
    """Requests to one registry for one repository, and the authorization they carry."""

    def __init__(self, ref: OciReference, access: SourceAccess, description: str) -> None:
        self.ref = ref
        self.access = access
        self.description = description
        self.base = f"https://{ref.endpoint}/v2/{ref.repository}"
        self.credentials: SourceCredentials | None = access.credentials
        self.auth: RegistryAuth | None = None
        if self.credentials is not None:
            # Before any request: a URI must not be able to draw credentials to its host.
            self.credentials.check_host(ref.host, ref.port)
            self.auth = self.credentials.registry_auth(ref.registry)
        self._header: str | None = None
        self._sends_credentials = False  # does _header stand for our credentials?
        self._challenge: dict[str, str] | None = None  # Bearer's, to renew the token
        self._expires = float("inf")

    def authorization(self) -> str | None:
        """The Authorization header for the next request (a token renewed when due)."""
        if self._challenge is not None and time.monotonic() >= self._expires:
            token, lifetime = self._token(self._challenge)
            self._header = f"Bearer {token}"
            self._expires = time.monotonic() + max(lifetime - TOKEN_MARGIN, 0.0)
        return self._header

    def request(
        self, method: str, url: str, *, headers: dict[str, str], what: str, limit: int
    ) -> _Answer:
        """A small request to the registry, authenticating once when it answers 401."""
        answer = self._send(method, url, headers, self.authorization(), what, limit)
        if answer.status == 401 and self._header is None:
            self._authenticate(answer, what)
            # The header just made, even if its token is already due for renewal.
            answer = self._send(method, url, headers, self._header, what, limit)
        if answer.status == 401:
            raise self.refused(what, answer)
        return answer

    def refused(self, what: str, answer: _Answer) -> FetchError:
        """Why a 401 or 403 came back: which credentials were refused, or that none were
        sent and where to give them."""
        message = _registry_message(answer, self.credentials)
        text = f"{what} answered {answer.status}{f' ({message})' if message else ''}"
        if self._sends_credentials:
            assert self.credentials is not None
            _, challenge = _parse_challenge(answer.headers.get("WWW-Authenticate", ""))
            # A token service that knows the user but grants no pull: the registry says 401
            # with error="insufficient_scope", which is a 403 in all but number.
            if answer.status == 403 or challenge.get("error") == "insufficient_scope":
                return FetchError(
                    f"{text}: the registry knows the credentials of "
                    f"{self.credentials.source_name} but denies them access to "
                    f"{self.ref.repository}; grant them pull access there"
                )
            return FetchError(
                f"{text}: the registry refused the credentials of "
                f"{self.credentials.source_name}; check their username and password "
                "(or identity token)"
            )
        if self.credentials is not None:
            return FetchError(
                f"{text}: the registry needs credentials, and {self.credentials.source_name} "
                f"holds none for {self.ref.registry} (a .dockerconfigjson entry for it, or "
                "username and password)"
            )
        return FetchError(
            f"{text}: the registry needs credentials; reference a Secret holding them "
            "(.dockerconfigjson, or username and password) in spec.model.credentials"
        )

    def _authenticate(self, unauthorized: _Answer, what: str) -> None:
        """Answer a 401's challenge: Basic with our credentials, or a Bearer token."""
        challenge = unauthorized.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if self.auth is None or not self.auth.username:
                raise self.refused(what, unauthorized)
            pair = f"{self.auth.username}:{self.auth.password}".encode()
            self._header = f"Basic {base64.b64encode(pair).decode()}"
            self._sends_credentials = True
        elif scheme == "bearer":
            self._challenge = params
            token, lifetime = self._token(params)
            self._header = f"Bearer {token}"
            self._expires = time.monotonic() + max(lifetime - TOKEN_MARGIN, 0.0)
        else:
            raise FetchError(
                f"the registry {self.ref.registry} asked for authentication "
                f"{scheme or 'without a WWW-Authenticate challenge'!s}; modeltrust speaks "
                "Basic and Bearer (the distribution token protocol)"
            )

    def _token(self, params: dict[str, str]) -> tuple[str, float]:
        """A Bearer token from the challenge's realm, and its lifetime in seconds."""
        realm = params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme != "https" or not parts.hostname:
            raise FetchError(
                f"the registry {self.ref.registry} sends clients for tokens to {realm!r}, "
                "which is not an https:// URL; modeltrust only talks to registries over HTTPS"
            )
        # The registry, not the user, names the realm: credentials follow it only where
        # the Secret's owner allowed, like any other host.
        auth = self.auth
        if self.credentials is not None and auth is not None:
            self.credentials.check_host(parts.hostname, parts.port)
        scope = params.get("scope") or f"repository:{self.ref.repository}:pull"
        what = f"the token service {parts.scheme}://{parts.netloc}{parts.path}"
        if auth is not None and auth.identity_token:
            # docker login's identity token is an OAuth2 refresh token (token spec, POST).
            form = {
                "grant_type": "refresh_token",
                "refresh_token": auth.identity_token,
                "service": params.get("service", ""),
                "scope": scope,
                "client_id": "modeltrust",
            }
            answer = self._send(
                "POST",
                realm,
                {"Content-Type": "application/x-www-form-urlencoded"},
                None,
                what,
                MAX_TOKEN_ANSWER,
                data=urlencode(form).encode(),
            )
            self._sends_credentials = True
        else:
            query = {"scope": scope}
            if "service" in params:
                query["service"] = params["service"]
            header = None
            if auth is not None and auth.username:
                pair = f"{auth.username}:{auth.password}".encode()
                header = f"Basic {base64.b64encode(pair).decode()}"
            separator = "&" if parts.query else "?"
            answer = self._send(
                "GET", f"{realm}{separator}{urlencode(query)}", {}, header, what, MAX_TOKEN_ANSWER
            )
            self._sends_credentials = header is not None
        if answer.status == 401:
            raise self.refused(what, answer)
        try:
            document = json.loads(answer.body)
            token = document.get("token") or document.get("access_token")
            lifetime = float(document.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise FetchError(f"{what} answered without a usable token")
        return token, lifetime

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        auth_header: str | None,
        what: str,
        limit: int,
        *,
        data: bytes | None = None,
    ) -> _Answer:
        """One request whose answer is read whole (at most `limit` bytes); a 401 is
        returned, for its challenge; other failures raise as open_url's do."""
        opener = urllib.request.build_opener(
            _NoDowngradeRedirects(),
            urllib.request.HTTPSHandler(context=self.access.ssl_context()),
        )
        request = urllib.request.Request(  # noqa: S310 - https URLs only (checked by callers)
            url,
            data=data,
            method=method,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers},
        )
        if auth_header is not None:
            request.add_unredirected_header("Authorization", auth_header)
        try:
            response = opener.open(request, timeout=self.access.timeout)
        except urllib.error.HTTPError as error:
            try:
                body = error.read(64 << 10) if error.code in (400, 401, 403, 404) else b""
            except (OSError, http.client.HTTPException):
                body = b""
            finally:
                error.close()
            answer = _Answer(error.code, error.headers, body)
            if error.code == 401:
                return answer
            if error.code == 403:
                raise self.refused(what, answer) from None
            failure = http_error(
                what, error.code, str(error.reason), authenticated=auth_header is not None
            )
            detail = _registry_message(answer, self.credentials)
            if detail and not isinstance(failure, TransientFetchError):
                failure = FetchError(f"{failure} ({detail})")
            raise failure from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, ssl.SSLError):
                raise FetchError(f"cannot reach {what} over HTTPS: {error.reason}") from None
            raise TransientFetchError(f"cannot reach {what}: {error.reason}") from None
        except ssl.SSLError as error:
            raise FetchError(f"cannot reach {what} over HTTPS: {error}") from None
        except (OSError, http.client.HTTPException) as error:
            raise TransientFetchError(f"cannot reach {what}: {error}") from None
        with response:
            try:
                body = response.read(limit + 1)
            except (OSError, http.client.HTTPException) as error:
                raise TransientFetchError(f"reading the answer of {what} failed: {error}") from None
            if len(body) > limit:
                raise FetchError(f"{what} answered more than {limit} bytes; refusing to read on")
            return _Answer(response.status, response.headers, body)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        value = match.group(2)
        value = re.sub(r"\\(.)", r"\1", value) if value is not None else match.group(3)
        params[match.group(1).lower()] = value
    return scheme.lower(), params


def _registry_message(answer: _Answer | None, credentials: SourceCredentials | None) -> str:
    """The registry's own error text ({"errors": [{"code", "message"}]}), redacted, short."""
    if answer is None or not answer.body:
        return ""
    try:
        errors = json.loads(answer.body).get("errors") or []
        texts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors]
    except (ValueError, AttributeError, TypeError):
        return ""
    text = "; ".join(t for t in texts if t)[:300]
    return redact(text, credentials)


class _Bounded:
    """A response body read no further than the layer's size: a registry that sends more
    is not allowed to make us read (or write) more."""

    def __init__(self, response: http.client.HTTPResponse, remaining: int) -> None:
        self._response = response
        self._remaining = remaining

    def readinto(self, buffer: memoryview) -> int | None:
        if self._remaining <= 0:
            return 0
        count = self._response.readinto(buffer[: self._remaining])
        if count:
            self._remaining -= count
        return count

    def close(self) -> None:
        self._response.close()


def read_manifest(registry: _Registry, description: str) -> tuple[str, dict[str, Any]]:
    """The manifest the reference names, checked against its digest; (digest, document)."""
    ref = registry.ref
    reference = ref.digest or ref.tag
    what = f"GET manifest {reference} of {ref.registry}/{ref.repository} (over HTTPS)"
    answer = registry.request(
        "GET",
        f"{registry.base}/manifests/{reference}",
        headers={"Accept": ACCEPT},
        what=what,
        limit=MAX_MANIFEST,
    )
    actual = "sha256:" + hashlib.sha256(answer.body).hexdigest()
    if ref.digest is not None and actual != ref.digest:
        raise DigestMismatchError(f"the manifest of {description}", ref.digest, actual)
    announced = answer.headers.get("Docker-Content-Digest", "")
    if announced.startswith("sha256:") and announced != actual:
        raise FetchError(
            f"the registry says the manifest of {description} is {announced}, but the bytes "
            f"it sent hash to {actual}; refusing it"
        )
    try:
        document = json.loads(answer.body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise FetchError(f"the manifest of {description} is not a JSON object")
    media_type = document.get("mediaType") or answer.headers.get("Content-Type", "")
    if media_type in (OCI_INDEX, DOCKER_LIST) or "manifests" in document:
        raise FetchError(
            f"{description} names an index (a multi-platform list of manifests, "
            f"{media_type or 'no mediaType'}), not one manifest with the model's layer; "
            "pin one platform's manifest by its digest, or push the model as an artifact "
            "(oras push REGISTRY/REPO:TAG model.onnx)"
        )
    if document.get("schemaVersion") != 2 or media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise FetchError(
            f"the manifest of {description} is of type {media_type or 'unknown'} "
            f"(schemaVersion {document.get('schemaVersion')}); modeltrust reads OCI image "
            "manifests and Docker v2 manifests"
        )
    return actual, document


class _LayerChecks:
    """What every oci:// source shares: its registry, and checking a layer's bytes."""

    def __init__(self, registry: _Registry, description: str, pinned_uri: str) -> None:
        self.description = description
        self.pinned_uri = pinned_uri
        self._registry = registry

    def _get_blob(self, layer: Layer, offset: int) -> Opened:
        """GET the layer's blob from `offset`; Opened.total is the descriptor's size."""
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        response = open_url(
            f"{self._registry.base}/blobs/{layer.digest}",
            self._registry.access,
            headers=headers,
            auth_header=self._registry.authorization(),
            what=f"GET layer {layer.digest} of {self.description}",
        )
        opened = response_opened(response, offset, self.description)
        if opened.total is not None and opened.total != layer.size:
            close_quietly(response)
            raise FetchError(
                f"the registry announced {opened.total} bytes for layer {layer.digest} of "
                f"{self.description}, but the manifest says it is {layer.size} bytes"
            )
        return Opened(_Bounded(response, layer.size - opened.start), opened.start, layer.size)

    def _check_layer(self, layer: Layer, digest: bytes, size: int) -> None:
        """The bytes read are the layer the manifest names: its size and its digest."""
        if size != layer.size:
            raise FetchError(
                f"layer {layer.digest} of {self.description} arrived as {size} bytes, but "
                f"the manifest says it is {layer.size} bytes"
            )
        actual = "sha256:" + digest.hex()
        if actual != layer.digest:
            raise DigestMismatchError(
                f"layer {layer.digest} of {self.description} (the registry's own digest; its "
                "storage or something on the way changed the bytes)",
                layer.digest,
                actual,
            )

    def close(self) -> None:
        return None


class OciSource(_LayerChecks):
    """One layer of an artifact: the model file's bytes, resumable by Range."""

    def __init__(
        self, registry: _Registry, description: str, pinned_uri: str, layer: Layer
    ) -> None:
        super().__init__(registry, description, pinned_uri)
        self.layer = layer

    def open(self, offset: int) -> Opened:
        return self._get_blob(self.layer, offset)

    def verify(self, digest: bytes, size: int) -> None:
        # The model's bytes are the layer's: one hash serves both checks.
        self._check_layer(self.layer, digest, size)


def _layers(manifest: dict[str, Any], description: str) -> list[Layer]:
    raw = manifest.get("layers")
    if not isinstance(raw, list) or not raw:
        raise FetchError(f"the manifest of {description} has no layers; the model is pushed as one")
    layers = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise FetchError(f"layer {index} of the manifest of {description} is not an object")
        digest, size = item.get("digest"), item.get("size")
        if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
            raise FetchError(
                f"layer {index} of the manifest of {description} lacks a digest or a size"
            )
        annotations = item.get("annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        title = annotations.get(TITLE)
        layers.append(
            Layer(
                digest=digest,
                size=size,
                media_type=str(item.get("mediaType", "")),
                title=title if isinstance(title, str) else None,
                unpack=str(annotations.get(ORAS_UNPACK, "")).lower() == "true",
            )
        )
    return layers


def _check_sha256(layer: Layer, description: str) -> None:
    if not _SHA256.fullmatch(layer.digest):
        raise FetchError(
            f"layer {layer.digest[:80]!r} of {description}: modeltrust checks layers by "
            "sha256 digests (sha256:<64 lowercase hex>); push it with SHA-256"
        )


def choose_layer(layers: list[Layer], fragment: str | None, description: str) -> Layer:
    """The model's layer: by the fragment's title, or the only layer, or the only *.onnx."""
    titles = ", ".join(repr(layer.title) if layer.title else layer.digest for layer in layers)
    if fragment is not None:
        named = [layer for layer in layers if layer.title == fragment]
        if len(named) != 1:
            found = "no layer" if not named else f"{len(named)} layers"
            raise FetchError(
                f"{description}: {found} titled {fragment!r}; the layers are {titles} (a "
                "fragment starting with / names a file inside image layers instead)"
            )
        chosen = named[0]
    elif len(layers) == 1:
        chosen = layers[0]
    else:
        onnx = [layer for layer in layers if (layer.title or "").endswith(".onnx")]
        if len(onnx) != 1:
            raise FetchError(
                f"{description} has {len(layers)} layers and "
                f"{'none' if not onnx else len(onnx)} titled *.onnx; name the model's layer "
                f"by its title after '#' in the URI (...#model.onnx); the layers are {titles}"
            )
        chosen = onnx[0]
    _check_sha256(chosen, description)
    if chosen.unpack or (chosen.title is None and _is_filesystem_layer(chosen.media_type)):
        raise FetchError(
            f"layer {chosen.digest} of {description} ({chosen.media_type}) is a packed "
            "directory or an image filesystem layer, not a model file; name the model file "
            "inside the image after '#' (...#/models/model.onnx), or push the file itself "
            "as an artifact (oras push REGISTRY/REPO:TAG model.onnx)"
        )
    return chosen


def _is_filesystem_layer(media_type: str) -> bool:
    """An image layer (tar, possibly compressed). oras gives plain files a tar media type
    too, but with a title annotation: those are read as the file they are."""
    return ".tar" in media_type or "rootfs.diff" in media_type


def resolve_oci(uri: str, access: SourceAccess) -> OciSource | ImageFileSource:
    """Read and check the manifest, then the Source for the model's layer (or, with a
    #/path fragment, for a file inside the image's layers)."""
    ref = parse_oci_uri(uri)
    registry = _Registry(ref, access, uri)
    digest, manifest = read_manifest(registry, uri)
    layers = _layers(manifest, uri)
    pinned_uri = ref.uri(digest)
    if ref.fragment is not None and ref.fragment.startswith("/"):
        return ImageFileSource(registry, uri, pinned_uri, layers, ref.fragment)
    return OciSource(registry, uri, pinned_uri, choose_layer(layers, ref.fragment, uri))


# --- a file inside an image's layers (KServe modelcars) ------------------------------------

_TAR_TYPES = (".tar", "rootfs.diff.tar")
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_TAR_BUFFER = 1 << 20  # what tarfile reads from the blob at a time


class _HashingReader:
    """The raw blob as tarfile reads it, hashed on the way (for the layer digest), no
    further than the descriptor's size; a body that ends early is a transient failure."""

    def __init__(self, opened: Opened, layer: Layer, description: str) -> None:
        self._stream = opened.stream
        self._layer = layer
        self._description = description
        self.hasher = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        want = self._layer.size - self.size
        if size >= 0:
            want = min(want, size)
        if want <= 0:
            return b""
        buffer = bytearray(want)
        view = memoryview(buffer)
        count = 0
        try:
            count = self._stream.readinto(view) or 0
        except (OSError, http.client.HTTPException) as error:
            raise TransientFetchError(
                f"reading layer {self._layer.digest} of {self._description} failed after "
                f"{self.size} bytes: {error}"
            ) from None
        if count == 0:
            raise TransientFetchError(
                f"layer {self._layer.digest} of {self._description} ended after {self.size} "
                f"of {self._layer.size} bytes"
            )
        data = bytes(view[:count])
        self.hasher.update(data)
        self.size += count
        return data

    def drain(self) -> None:
        """Read (and hash) what tarfile left: the layer digest covers the whole blob."""
        while self.size < self._layer.size:
            self.read(_TAR_BUFFER)

    def close(self) -> None:
        close_quietly(self._stream)


class _MemberStream:
    """The file's bytes out of the tar stream; at their end, the rest of the blob is read
    so that verify() can check the whole layer against its digest."""

    def __init__(
        self,
        source: ImageFileSource,
        tar: tarfile.TarFile,
        raw: _HashingReader,
        member: tarfile.TarInfo,
    ) -> None:
        self._source = source
        self._tar = tar
        self._raw = raw
        file = tar.extractfile(member)
        assert file is not None  # a regular file (checked by the caller)
        self._file = cast(io.BufferedReader, file)  # what extractfile makes

    def readinto(self, buffer: memoryview) -> int | None:
        try:
            count = self._file.readinto(buffer)
        except (tarfile.TarError, zlib.error, EOFError, lzma.LZMAError) as error:
            raise self._source.unreadable(error) from None
        if not count:
            self._raw.drain()
            self._source.layer_read = (self._raw.hasher.digest(), self._raw.size)
        return count

    def close(self) -> None:
        self._raw.close()


class ImageFileSource(_LayerChecks):
    """A file inside a container image's filesystem layers, as a KServe modelcar holds its
    model (oci://REGISTRY/REPO:TAG#/models/model.onnx).

    The layers are searched from the top, as a container sees them: the first layer with
    the path holds the file; a whiteout of it (or an opaque directory above it) hides
    lower layers. Each layer read is hashed whole, raw, and checked against its
    descriptor's digest (a layer above the file's, as it is passed over; the file's own, in
    verify). Tar layers are streams (gzip possibly): a retry starts the layer over; there is
    no resuming by Range here.
    """

    def __init__(
        self,
        registry: _Registry,
        description: str,
        pinned_uri: str,
        layers: list[Layer],
        path: str,
    ) -> None:
        super().__init__(registry, description, pinned_uri)
        self.path = _image_path(path, description)
        for layer in layers:
            _check_sha256(layer, description)
            if not _is_filesystem_layer(layer.media_type) or layer.title is not None:
                raise FetchError(
                    f"{description} names {path} inside image layers, but layer "
                    f"{layer.digest} is a file of an artifact ({layer.media_type}, titled "
                    f"{layer.title!r}); name an artifact's layer by its title instead "
                    "(...#model.onnx)"
                )
            if "zstd" in layer.media_type:
                raise FetchError(
                    f"layer {layer.digest} of {description} is compressed with zstd, which "
                    "modeltrust cannot read yet; build the image with gzip layers"
                )
        self.layers = layers
        self.found: int | None = None  # the index of the layer that holds the file
        self.layer_read: tuple[bytes, int] | None = None  # its raw (digest, size)

    def unreadable(self, error: BaseException) -> FetchError:
        return FetchError(
            f"a layer of {self.description} is not a readable tar archive (plain, gzip, bzip2 "
            f"or xz): {error}"
        )

    def open(self, offset: int) -> Opened:
        self.layer_read = None
        order = [self.found] if self.found is not None else range(len(self.layers) - 1, -1, -1)
        for index in order:
            layer = self.layers[index]
            raw = _HashingReader(self._get_blob(layer, 0), layer, self.description)
            try:
                member, hidden_below = self._search(raw)
                if member is not None:
                    tar, info = member
                    self.found = index
                    return Opened(_MemberStream(self, tar, raw, info), 0, info.size)
                raw.drain()
                self._check_layer(layer, raw.hasher.digest(), raw.size)
            except BaseException:
                raw.close()
                raise
            raw.close()
            if hidden_below:
                break
        raise FetchError(
            f"{self.description}: there is no file /{self.path} in the image (searched its "
            f"{len(self.layers)} layers from the top, as a container would see them)"
        )

    def _search(
        self, raw: _HashingReader
    ) -> tuple[tuple[tarfile.TarFile, tarfile.TarInfo] | None, bool]:
        """((tar, member) of the path, or None; whether this layer hides lower ones)."""
        hidden_below = False
        ancestors = _ancestors(self.path)
        try:
            # Not closed here: the member's stream reads on from it (and closes the blob).
            tar = tarfile.open(  # noqa: SIM115
                fileobj=cast("IO[bytes]", raw), mode="r|*", bufsize=_TAR_BUFFER
            )
            for info in tar:
                name = posixpath.normpath(info.name.lstrip("/")).removeprefix("./")
                directory, base = posixpath.split(name)
                if name == self.path:
                    if not info.isreg():
                        kind = (
                            "symlink"
                            if info.issym()
                            else "hard link"
                            if info.islnk()
                            else "not a regular file"
                        )
                        raise FetchError(
                            f"{self.description}: /{self.path} is a {kind} in the image; "
                            "name the regular file itself"
                        )
                    return (tar, info), False
                if base == _OPAQUE and directory in ancestors:
                    hidden_below = True  # the directory's lower contents are gone
                elif base.startswith(_WHITEOUT) and (
                    posixpath.join(directory, base[len(_WHITEOUT) :]) in (self.path, *ancestors)
                ):
                    raise FetchError(
                        f"{self.description}: /{self.path} is deleted in the image (a "
                        f"whiteout, {name}, hides it)"
                    )
        except (tarfile.TarError, zlib.error, EOFError, lzma.LZMAError) as error:
            raise self.unreadable(error) from None
        return None, hidden_below

    def verify(self, digest: bytes, size: int) -> None:
        if self.found is None or self.layer_read is None:
            raise FetchError(f"{self.description}: the layer holding the file was not read whole")
        self._check_layer(self.layers[self.found], *self.layer_read)


def _image_path(fragment: str, description: str) -> str:
    """`/models/model.onnx` -> `models/model.onnx`, as tar layers name it."""
    path = posixpath.normpath(fragment).lstrip("/")
    if not path or path == "." or path.startswith("..") or fragment.endswith("/"):
        raise FetchError(
            f"{description}: {fragment!r} does not name a file in the image "
            "(e.g. #/models/model.onnx)"
        )
    return path


def _ancestors(path: str) -> set[str]:
    """models/v1/model.onnx -> {"models", "models/v1"} (and "" for the root)."""
    parts = path.split("/")[:-1]
    return {"/".join(parts[: i + 1]) for i in range(len(parts))} | {""}
