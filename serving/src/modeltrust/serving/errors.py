"""Exceptions of the serving runtime; each message names the check that failed."""

from __future__ import annotations


class ServingError(Exception):
    """Base class of every error raised by modeltrust.serving."""


class DigestMismatchError(ServingError):
    """The artifact's SHA-256 is not the pinned digest: the bytes must not be used."""

    def __init__(self, source: str, expected: str, actual: str) -> None:
        super().__init__(
            f"digest check failed for {source}: expected {expected}, got {actual}; "
            "the artifact is not the one that was verified, refusing to use it"
        )
        self.source = source
        self.expected = expected
        self.actual = actual


class FetchError(ServingError):
    """The artifact could not be downloaded or stored (network, HTTP status, I/O)."""


class SizeLimitError(FetchError):
    """The artifact is larger than the allowed maximum."""


class ModelLoadError(ServingError):
    """onnxruntime could not load the model, or its inputs/outputs cannot be served."""


class RequestError(Exception):
    """A client error in one request, answered as {"error": message} with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
