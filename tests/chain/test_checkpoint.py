"""C2SP tlog-checkpoint bodies and signed checkpoints with witness cosignatures."""

from __future__ import annotations

import base64

import pytest

from modeltrust.chain.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from modeltrust.chain.errors import CheckpointError, NoteError
from modeltrust.chain.merkle import leaf_hash, root_from_leaf_hashes
from modeltrust.chain.note import ALG_COSIGNATURE_V1, NoteSigner, add_signatures

pytestmark = pytest.mark.unit

ROOT = root_from_leaf_hashes([leaf_hash(b"a"), leaf_hash(b"b")])
ORIGIN = "ledger.modeltrust.example/test"


def test_body_matches_the_spec_layout() -> None:
    cp = Checkpoint(ORIGIN, 2, ROOT)
    assert cp.to_text() == f"{ORIGIN}\n2\n{base64.b64encode(ROOT).decode()}\n"
    with_ext = Checkpoint(ORIGIN, 2, ROOT, ("ext one",))
    assert with_ext.to_text().endswith("\next one\n")
    assert Checkpoint.from_text(with_ext.to_text()) == with_ext
    assert Checkpoint.from_text(Checkpoint(ORIGIN, 0, ROOT).to_text()).size == 0


def test_spec_example_body_parses() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = Checkpoint.from_text(text)
    assert (cp.origin, cp.size, len(cp.root_hash)) == ("example.com/behind-the-sofa", 20852163, 32)
    assert cp.to_text() == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{ORIGIN}\n2\n{base64.b64encode(ROOT).decode()}", "end in a newline"),
        (f"{ORIGIN}\n2\n", "needs origin"),
        (f"{ORIGIN}\n02\n{base64.b64encode(ROOT).decode()}\n", "canonical decimal"),
        (f"{ORIGIN}\n-2\n{base64.b64encode(ROOT).decode()}\n", "canonical decimal"),
        (f"{ORIGIN}\n+2\n{base64.b64encode(ROOT).decode()}\n", "canonical decimal"),
        (f"{ORIGIN}\n\u0662\n{base64.b64encode(ROOT).decode()}\n", "canonical decimal"),
        (f"{ORIGIN}\n99999999999999999999\n{base64.b64encode(ROOT).decode()}\n", "decimal"),
        (f"{ORIGIN}\n2\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes"),
        (f"{ORIGIN}\n2\n{base64.b64encode(ROOT).decode().rstrip('=')}\n", "base64"),
        (f"{ORIGIN}\n2\n{base64.b64encode(ROOT).decode()}\n\n", "extension"),
        (f"\n2\n{base64.b64encode(ROOT).decode()}\n", "origin"),
    ],
)
def test_malformed_bodies_are_rejected(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.from_text(text)


def test_signed_checkpoint_verifies_with_origin_check() -> None:
    log = NoteSigner.generate(ORIGIN)
    cp = Checkpoint(ORIGIN, 2, ROOT)
    note = sign_checkpoint(cp, log)
    assert verify_checkpoint(note, log.verifier(), origin=ORIGIN) == cp
    with pytest.raises(CheckpointError, match="origin"):
        verify_checkpoint(note, log.verifier(), origin="other.example/log")
    with pytest.raises(NoteError, match="0 trusted key"):
        verify_checkpoint(note, NoteSigner.generate(ORIGIN).verifier())


def test_tampered_size_or_root_fails_signature() -> None:
    log = NoteSigner.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, 2, ROOT), log)
    with pytest.raises(NoteError, match="does not verify"):
        verify_checkpoint(note.replace("\n2\n", "\n3\n", 1), log.verifier())


def test_witness_quorum() -> None:
    log = NoteSigner.generate(ORIGIN)
    w1, w2, w3 = (
        NoteSigner.generate(f"witness{i}.example", alg=ALG_COSIGNATURE_V1) for i in (1, 2, 3)
    )
    note = sign_checkpoint(Checkpoint(ORIGIN, 2, ROOT), log)
    cosigned = add_signatures(add_signatures(note, [w1]), [w3])
    witnesses = [w.verifier() for w in (w1, w2, w3)]
    cp = verify_checkpoint(cosigned, log.verifier(), witnesses=witnesses, witness_quorum=2)
    assert cp.size == 2
    with pytest.raises(NoteError, match="witness quorum not met"):
        verify_checkpoint(cosigned, log.verifier(), witnesses=witnesses, witness_quorum=3)
    with pytest.raises(NoteError, match="witness quorum not met"):
        verify_checkpoint(note, log.verifier(), witnesses=witnesses, witness_quorum=1)
    # Witness signatures alone never stand in for the log's own signature.
    only_witnessed = add_signatures(sign_checkpoint(Checkpoint(ORIGIN, 2, ROOT), w2), [w1])
    with pytest.raises(NoteError, match="0 trusted key"):
        verify_checkpoint(only_witnessed, log.verifier(), witnesses=witnesses, witness_quorum=1)


def test_witness_configuration_errors() -> None:
    log = NoteSigner.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, 2, ROOT), log)
    with pytest.raises(ValueError, match="exceeds"):
        verify_checkpoint(note, log.verifier(), witness_quorum=1)
    with pytest.raises(ValueError, match="own key"):
        verify_checkpoint(note, log.verifier(), witnesses=[log.verifier()], witness_quorum=1)


def test_constructor_validates() -> None:
    with pytest.raises(CheckpointError, match="32"):
        Checkpoint(ORIGIN, 1, b"short")
    with pytest.raises(CheckpointError, match="out of range"):
        Checkpoint(ORIGIN, -1, ROOT)
    with pytest.raises(CheckpointError, match="single line"):
        Checkpoint("a\nb", 1, ROOT)
