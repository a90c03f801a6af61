"""oci:// sources: a model stored as a layer of an OCI artifact (placeholder)."""

from __future__ import annotations

from modeltrust.serving.errors import FetchError
from modeltrust.serving.sources import Source, SourceAccess


def resolve_oci(uri: str, access: SourceAccess) -> Source:
    raise FetchError(f"oci:// sources are not supported yet: {uri}")
