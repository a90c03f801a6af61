"""C2SP signed notes: the Go reference example byte for byte, multi-signature rules, rejects."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modeltrust.chain.errors import NoteError
from modeltrust.chain.note import (
    ALG_COSIGNATURE_V1,
    NoteSigner,
    NoteVerifier,
    add_signatures,
    open_note,
    parse_note,
    sign_note,
)

pytestmark = pytest.mark.unit

VECTOR = Path(__file__).resolve().parent / "vectors" / "signed-note" / "peterneumann.json"
TEXT = "origin.example/log\n42\nAAAA\n"


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    if not VECTOR.is_file():
        pytest.fail(f"signed-note test vector missing: {VECTOR}")
    data: dict[str, Any] = json.loads(VECTOR.read_text())
    return data


def test_reference_note_is_reproduced_byte_for_byte(vector: dict[str, Any]) -> None:
    signer = NoteSigner.from_signer_key(vector["signer_key"])
    assert signer.verifier_key() == vector["verifier_key"]
    assert signer.signer_key() == vector["signer_key"]
    assert sign_note(vector["text"], [signer]) == vector["note"]


def test_reference_note_verifies_and_any_text_change_fails(vector: dict[str, Any]) -> None:
    verifier = NoteVerifier.from_verifier_key(vector["verifier_key"])
    opened = open_note(vector["note"], [verifier])
    assert opened.text == vector["text"]
    assert opened.verified_by == ("PeterNeumann",)
    tampered = vector["note"].replace("cryptography", "cryptographY", 1)
    with pytest.raises(NoteError, match="does not verify"):
        open_note(tampered, [verifier])


def test_reference_key_id_is_computed_from_name_and_key(vector: dict[str, Any]) -> None:
    verifier = NoteVerifier.from_verifier_key(vector["verifier_key"])
    pub = verifier.public_key.public_bytes_raw()
    want = hashlib.sha256(b"PeterNeumann\n\x01" + pub).digest()[:4]
    assert verifier.key_id == want
    assert vector["verifier_key"].split("+")[1] == want.hex()


def test_key_strings_round_trip_and_signer_keys_with_plus_in_base64() -> None:
    for _ in range(20):  # some seeds encode with '+' in base64: split must stop at the 4th '+'
        signer = NoteSigner.generate("log.example/a")
        again = NoteSigner.from_signer_key(signer.signer_key())
        assert again.verifier_key() == signer.verifier_key()
        verifier = NoteVerifier.from_verifier_key(signer.verifier_key())
        assert verifier.verifier_key() == signer.verifier_key()


def test_several_signatures_unknown_keys_ignored_and_quorum() -> None:
    a, b, c = (NoteSigner.generate(n) for n in ("a.example", "b.example", "c.example"))
    stranger = NoteSigner.generate("stranger.example")
    note = sign_note(TEXT, [a, stranger, b])
    opened = open_note(note, [a.verifier(), b.verifier(), c.verifier()], quorum=2)
    assert opened.verified_by == ("a.example", "b.example")
    with pytest.raises(NoteError, match="2 trusted key\\(s\\), 3 required"):
        open_note(note, [a.verifier(), b.verifier(), c.verifier()], quorum=3)
    with pytest.raises(NoteError, match="0 trusted key"):
        open_note(note, [c.verifier()])


def test_same_name_other_key_is_ignored_not_confused() -> None:
    real = NoteSigner.generate("log.example")
    impostor = NoteSigner.generate("log.example")  # same name, different key id
    note = sign_note(TEXT, [impostor, real])
    assert open_note(note, [real.verifier()]).verified_by == ("log.example",)
    with pytest.raises(NoteError, match="0 trusted key"):
        open_note(sign_note(TEXT, [impostor]), [real.verifier()])


def test_bad_signature_from_known_key_rejects_whole_note() -> None:
    a, b = NoteSigner.generate("a.example"), NoteSigner.generate("b.example")
    note = sign_note(TEXT, [a, b])
    text, sigs = parse_note(note)
    forged = base64.b64encode(sigs[1].key_id + bytes(64)).decode()
    bad = text + "\n" + sigs[0].line() + f"\u2014 b.example {forged}\n"
    with pytest.raises(NoteError, match=r"b\.example.*does not verify"):
        open_note(bad, [a.verifier(), b.verifier()])
    assert open_note(bad, [a.verifier()]).verified_by == ("a.example",)


def test_add_signatures_keeps_existing_lines_and_skips_duplicates() -> None:
    log = NoteSigner.generate("log.example")
    witness = NoteSigner.generate("witness.example", alg=ALG_COSIGNATURE_V1)
    note = sign_note(TEXT, [log])
    cosigned = add_signatures(note, [witness, log])
    assert cosigned.startswith(note)
    assert cosigned.count("\u2014 ") == 2
    opened = open_note(cosigned, [log.verifier(), witness.verifier()], quorum=2)
    assert set(opened.verified_by) == {"log.example", "witness.example"}


def test_cosignature_is_timestamped_per_tlog_cosignature() -> None:
    key = Ed25519PrivateKey.generate()
    witness = NoteSigner("w.example", key, alg=ALG_COSIGNATURE_V1, clock=lambda: 1679315147.9)
    sig = witness.sign(TEXT)
    assert int.from_bytes(sig[:8], "big") == 1679315147
    message = b"cosignature/v1\ntime 1679315147\n" + TEXT.encode()
    key.public_key().verify(sig[8:], message)  # raises if the signed message differs
    pub = key.public_key().public_bytes_raw()
    assert witness.key_id == hashlib.sha256(b"w.example\n\x04" + pub).digest()[:4]
    assert witness.verifier_key().split("+", 2)[2] == base64.b64encode(b"\x04" + pub).decode()
    # A cosignature verifier does not accept a plain Ed25519 signature by the same key.
    plain = NoteSigner("w.example", key)
    assert not witness.verifier().verify(TEXT, plain.sign(TEXT))


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("no blank line\n\u2014 a AAAA\n", "no blank line"),
        (TEXT + "\n", "end in a newline"),
        (TEXT + "\n\u2014 a.example AAAAAAAA", "end in a newline"),
        (TEXT + "\n- a.example AAAAAAAA\n", "em dash"),
        (TEXT + "\n\u2014 a.example\n", "lacks a signature"),
        (TEXT + "\n\u2014 a.example AAAA\n", "too short"),
        (TEXT + "\n\u2014 a.example A%AAAAAA\n", "not valid base64"),
        (TEXT + "\n\u2014 a.example AAAAAAB=\n", "not canonical"),
        (TEXT + "\n\u2014 a+b AAAAAAAA\n", "key name"),
        ("bad\rtext\n\n\u2014 a.example AAAAAAAA\n", "control character"),
        ("text\n\n" + "\u2014 a.example AAAAAAAA\n" * 101, "more than the 100"),
    ],
)
def test_malformed_notes_are_rejected_with_clear_errors(note: str, message: str) -> None:
    verifier = NoteSigner.generate("a.example").verifier()
    with pytest.raises(NoteError, match=message):
        open_note(note, [verifier])


def test_bad_key_strings_and_texts_are_rejected() -> None:
    signer = NoteSigner.generate("a.example")
    name, key_id, material = signer.verifier_key().split("+", 2)
    with pytest.raises(NoteError, match="does not match"):
        NoteVerifier.from_verifier_key(f"{name}+00000000+{material}")
    with pytest.raises(NoteError, match="look like"):
        NoteVerifier.from_verifier_key("just-a-name")
    with pytest.raises(NoteError, match="type byte"):
        NoteVerifier.from_verifier_key(f"{name}+{key_id}+{base64.b64encode(b'x' * 33).decode()}")
    with pytest.raises(NoteError, match="PRIVATE"):
        NoteSigner.from_signer_key(signer.verifier_key())
    with pytest.raises(NoteError, match="end in a newline"):
        sign_note("no newline", [signer])
    with pytest.raises(NoteError, match="key name"):
        NoteSigner.generate("has space")
    with pytest.raises(ValueError, match="quorum"):
        open_note(sign_note(TEXT, [signer]), [signer.verifier()], quorum=0)
