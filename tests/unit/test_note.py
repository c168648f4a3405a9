"""Signed notes, checkpoints, cosignatures and promises.

A member checks our checkpoints with whatever C2SP tool it already runs, so the byte formats must be
the published ones: the signed-note example from C2SP must verify with our code, and a note or
cosignature with any change must not.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain import note

EXAMPLE = json.loads((Path(__file__).parent.parent / "data" / "merkle" / "signed-note.json").read_text())
SIGNER = note.Signer.from_seed("ledger.example/log", bytes(range(32)))
WITNESS = note.Signer.from_seed("witness.example/w1", bytes(32), note.COSIGNATURE_V1)


def test_the_c2sp_example_verifies() -> None:
    verifier = note.Verifier.parse(EXAMPLE["vkey"])
    assert verifier.vkey() == EXAMPLE["vkey"]
    text, lines = note.open_note(EXAMPLE["note"], verifier)
    assert text == EXAMPLE["text"]
    assert [line.name for line in lines] == ["example.com/foo"]


def test_the_c2sp_example_fails_when_changed() -> None:
    verifier = note.Verifier.parse(EXAMPLE["vkey"])
    with pytest.raises(note.NoteError):
        note.open_note(EXAMPLE["note"].replace("example message", "example messagE"), verifier)
    with pytest.raises(note.NoteError, match="not signed"):
        note.open_note(EXAMPLE["note"], SIGNER.verifier)


def test_a_vkey_with_the_wrong_id_is_refused() -> None:
    name, _, key = EXAMPLE["vkey"].split("+")
    with pytest.raises(note.NoteError, match="id"):
        note.Verifier.parse(f"{name}+00000000+{key}")


def test_checkpoint_round_trip_and_cosignature() -> None:
    cp = note.Checkpoint("ledger.example/log", 20852163, bytes(range(32)))
    signed = note.sign_note(cp.text(), SIGNER)
    assert note.open_checkpoint(signed, SIGNER.verifier, "ledger.example/log") == cp
    with pytest.raises(note.NoteError, match="not ledger"):
        note.open_checkpoint(signed, SIGNER.verifier, "ledger.example/other")
    cosigned = signed + WITNESS.cosign(cp.text(), 1679315147)
    text, lines = note.open_note(cosigned, SIGNER.verifier)
    assert note.verify_cosignature(text, lines[1], WITNESS.verifier) == 1679315147
    forged = note.SignatureLine(
        lines[1].name, lines[1].key_id, lines[1].signature[:7] + b"\x01" + lines[1].signature[8:]
    )
    with pytest.raises(note.NoteError):
        note.verify_cosignature(text, forged, WITNESS.verifier)


def test_checkpoint_text_is_strict() -> None:
    for bad in ("o\n01\n" + "A" * 44 + "\n", "o\n1\nAAAA\n", "o\n1\n", "o\n\n1\nAAAA\n"):
        with pytest.raises(note.NoteError):
            note.Checkpoint.parse(bad)


@settings(deadline=None, max_examples=60)
@given(st.integers(0, 10_000))
def test_any_bit_flip_in_a_signed_checkpoint_fails(bit: int) -> None:
    """Any bit of the signed text, or of the signature's first 64 base64 characters (the last ones may
    carry unused padding bits, which decode to the same signature)."""
    cp = note.Checkpoint("ledger.example/log", 7, bytes(32))
    signed = note.sign_note(cp.text(), SIGNER).encode()
    sig_at = signed.rindex(b" ") + 1
    positions = [*range(len(cp.text())), *range(sig_at, sig_at + 64)]
    flipped = bytearray(signed)
    flipped[positions[bit % len(positions)]] ^= 1 << (bit % 7)
    try:
        text = flipped.decode()
    except UnicodeDecodeError:
        return
    with pytest.raises(note.NoteError):
        note.open_checkpoint(text, SIGNER.verifier, "ledger.example/log")


def test_promise_is_deterministic_and_binding() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    by = at + timedelta(seconds=10)
    leaf = bytes(32)
    sig = note.sign_promise(SIGNER, "ledger.example/log", leaf, at, by)
    assert sig == note.sign_promise(SIGNER, "ledger.example/log", leaf, at, by)
    note.verify_promise(SIGNER.verifier, "ledger.example/log", leaf, at, by, sig)
    with pytest.raises(note.NoteError):
        note.verify_promise(SIGNER.verifier, "ledger.example/log", leaf, at, by + timedelta(seconds=1), sig)
    with pytest.raises(note.NoteError):
        note.verify_promise(SIGNER.verifier, "ledger.example/log", b"\x01" + leaf[1:], at, by, sig)
