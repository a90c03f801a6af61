"""s3:// sources: a model stored as an object of an S3-compatible store (placeholder)."""

from __future__ import annotations

from modeltrust.serving.errors import FetchError
from modeltrust.serving.sources import Source, SourceAccess


def resolve_s3(uri: str, access: SourceAccess) -> Source:
    raise FetchError(f"s3:// sources are not supported yet: {uri}")
