"""C2SP tlog-witness add-checkpoint bodies: what the ledger sends is what the witness reads,
and a body the spec does not allow is refused naming what is wrong."""

from __future__ import annotations

import pytest

from modeltrust.chain.checkpoint import Checkpoint, sign_checkpoint
from modeltrust.chain.note import (
    ALG_COSIGNATURE_V1,
    NoteSignature,
    NoteSigner,
    parse_note,
    with_signatures,
)
from modeltrust.chain.tlog_witness import (
    AddCheckpoint,
    WitnessProtocolError,
    encode_size,
    parse_size,
)

pytestmark = pytest.mark.unit

LOG = NoteSigner.generate("example.com/behind-the-sofa")
NOTE = sign_checkpoint(Checkpoint(LOG.name, 20852163, b"\x07" * 32), LOG)


def test_a_request_round_trips_in_the_specs_layout() -> None:
    proof = (b"\x01" * 32, b"\x02" * 32)
    body = AddCheckpoint(20852014, proof, NOTE).encode()
    head, _, note = body.decode().partition("\n\n")
    assert head.split("\n") == [
        "old 20852014",
        "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
    ]
    assert note == NOTE
    assert AddCheckpoint.parse(body) == AddCheckpoint(20852014, proof, NOTE)
    assert AddCheckpoint.parse(f"old 0\n\n{NOTE}".encode()) == AddCheckpoint(0, (), NOTE)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"old 01\n\n" + NOTE.encode(), "without leading zeroes"),
        (b"old -1\n\n" + NOTE.encode(), "without leading zeroes"),
        (b"new 5\n\n" + NOTE.encode(), "'old <size>'"),
        (b"old 5\n", "an empty line"),
        (b"old 5\nnot base64!\n\n" + NOTE.encode(), "consistency proof line 1"),
        (b"old 5\nAAAA\n\n" + NOTE.encode(), "32 bytes"),
        (b"old 0\n" + b"A" * 43 + b"=\n\n" + NOTE.encode(), "empty when the old size is 0"),
        (b"old 5\n" + (b"A" * 43 + b"=\n") * 64 + b"\n" + NOTE.encode(), "at most 63"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_requests_are_refused_naming_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(WitnessProtocolError, match=message):
        AddCheckpoint.parse(body)


def test_the_409_size_body() -> None:
    assert encode_size(42) == b"42\n"
    assert parse_size(b"42\n") == 42
    for bad in (b"42", b"042\n", b"forty\n"):
        with pytest.raises(WitnessProtocolError):
            parse_size(bad)


def test_cosignature_lines_added_to_a_note_replace_older_ones_by_the_same_key() -> None:
    witness = NoteSigner.generate("witness.example", alg=ALG_COSIGNATURE_V1)
    text, _ = parse_note(NOTE)
    first = NoteSignature(witness.name, witness.key_id, witness.sign(text))
    second = NoteSignature(witness.name, witness.key_id, b"\x00" * 8 + first.signature[8:])
    once = with_signatures(NOTE, [first])
    twice = with_signatures(once, [second])
    _, sigs = parse_note(twice)
    assert [s.name for s in sigs] == [LOG.name, witness.name]
    assert sigs[1] == second
