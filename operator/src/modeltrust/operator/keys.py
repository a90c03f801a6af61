"""The publisher keys a trust policy names, parsed once and indexed by key id.

`TrustedKeys.policy` is the same policy as modeltrust.chain.trust sees it (publishers with
their keys and modelNamePatterns, threshold): what the ledger's evidence is checked
against, by the rules `modeltrust verify` applies too."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modeltrust.chain.errors import ChainError
from modeltrust.chain.signatures import key_id, load_public_key
from modeltrust.chain.trust import TrustedPublisher, VerificationPolicy
from modeltrust.operator.errors import SpecError
from modeltrust.operator.types import Publisher, TrustPolicy


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    publisher: Publisher
    public_key: Any  # Ed25519PublicKey | EllipticCurvePublicKey (P-256)


class TrustedKeys:
    """key id -> trusted publisher key. Building it is where a bad policy is refused."""

    def __init__(self, keys: dict[str, TrustedKey], policy: VerificationPolicy) -> None:
        self._keys = keys
        self.policy = policy

    @classmethod
    def from_policy(cls, policy: TrustPolicy) -> TrustedKeys:
        keys: dict[str, TrustedKey] = {}
        for i, publisher in enumerate(policy.publishers):
            path = f"spec.publishers[{i}].publicKey"
            try:
                public_key = load_public_key(publisher.public_key_pem.encode())
            except ChainError as exc:
                raise SpecError(path, f"publisher {publisher.name!r}: {exc}") from None
            kid = key_id(public_key)
            if publisher.key_id is not None and publisher.key_id != kid:
                raise SpecError(
                    f"spec.publishers[{i}].keyId",
                    f"publisher {publisher.name!r}: publicKey has key id {kid}, "
                    f"not the declared {publisher.key_id}",
                )
            if kid in keys:
                raise SpecError(
                    path,
                    f"publishers {keys[kid].publisher.name!r} and {publisher.name!r} share one key",
                )
            keys[kid] = TrustedKey(kid, publisher, public_key)
        try:
            rules = VerificationPolicy(
                tuple(
                    TrustedPublisher(
                        k.publisher.name, k.public_key, k.publisher.model_name_patterns
                    )
                    for k in keys.values()
                ),
                threshold=policy.threshold,
                name=policy.name,
            )
        except ChainError as exc:
            raise SpecError("spec.threshold", str(exc)) from None
        return cls(keys, rules)

    def get(self, kid: str) -> TrustedKey | None:
        return self._keys.get(kid)

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)
