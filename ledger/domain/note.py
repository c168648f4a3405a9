"""Signed notes, checkpoints, cosignatures and promises (C2SP signed-note, tlog-checkpoint,
tlog-cosignature), with Ed25519 from `cryptography`.

These are the formats other transparency-log tools already speak, so that a member can check the
ledger's checkpoints with any of them, and witnesses can cosign them. The promise returned with a 201 is
our own statement, signed with the log key over a text that can never be read as a checkpoint (its first
line is a fixed header, never the origin).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
PROMISE_HEADER = "consumer-credit-ledger/promise/v1"
_DASH = "\u2014 "


class NoteError(ValueError):
    """A note, checkpoint, key or signature is malformed or does not verify."""


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    name: str
    sig_type: int
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public)

    def vkey(self) -> str:
        """`<name>+<hex key id>+<base64(type || public key)>`."""
        encoded = base64.b64encode(bytes([self.sig_type]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        try:
            name, hex_id, b64 = vkey.strip().split("+", 2)
            raw = base64.b64decode(b64, validate=True)
            kid = bytes.fromhex(hex_id)
        except ValueError as exc:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>") from exc
        _check_name(name)
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError("only Ed25519 verifier keys (type 0x01 or 0x04) are supported")
        verifier = cls(name, raw[0], raw[1:])
        if verifier.key_id != kid:
            raise NoteError("the verifier key's id does not match its name and key")
        return verifier

    def _key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public)


@dataclass(frozen=True)
class Signer:
    name: str
    private: Ed25519PrivateKey
    sig_type: int = ED25519

    def __post_init__(self) -> None:
        _check_name(self.name)

    @classmethod
    def from_seed(cls, name: str, seed: bytes, sig_type: int = ED25519) -> Signer:
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed), sig_type)

    @cached_property
    def verifier(self) -> Verifier:
        # Cached: every promise carries the key id, and deriving it (public key, SHA-256) cost a third of
        # signing one.
        return Verifier(self.name, self.sig_type, public_bytes(self.private.public_key()))

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def note_signature(self, text: str) -> str:
        """One signature line over a note text (type 0x01)."""
        sig = self.verifier.key_id + self.sign(text.encode())
        return f"{_DASH}{self.name} {base64.b64encode(sig).decode()}\n"

    def cosign(self, checkpoint_text: str, timestamp: int) -> str:
        """A tlog-cosignature/v1 signature line (type 0x04) over a checkpoint's note text."""
        message = cosignature_message(checkpoint_text, timestamp)
        sig = self.verifier.key_id + struct.pack(">Q", timestamp) + self.sign(message)
        return f"{_DASH}{self.name} {base64.b64encode(sig).decode()}\n"


@dataclass(frozen=True)
class SignatureLine:
    name: str
    key_id: bytes
    signature: bytes  # after the key id

    def render(self) -> str:
        return f"{_DASH}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    if not 0 <= timestamp < 2**63:
        raise NoteError("a cosignature timestamp is a POSIX time below 2^63")
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


def sign_note(text: str, signer: Signer) -> str:
    if not text.endswith("\n"):
        raise NoteError("a note text ends with a newline")
    return text + "\n" + signer.note_signature(text)


def split_note(note: str) -> tuple[str, list[SignatureLine]]:
    """Split a signed note into its text and signature lines (C2SP signed-note §Format)."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("a note contains no control characters other than newline")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("a signed note is a text, a blank line and signature lines")
    text, block = note[: cut + 1], note[cut + 2 :]
    lines: list[SignatureLine] = []
    for line in block.split("\n")[:-1]:
        if not line.startswith(_DASH):
            raise NoteError("a signature line starts with an em dash and a space")
        try:
            name, b64 = line[len(_DASH) :].split(" ")
            raw = base64.b64decode(b64, validate=True)
        except ValueError as exc:
            raise NoteError("a signature line is '— <name> <base64>'") from exc
        _check_name(name)
        if len(raw) < 5:
            raise NoteError("a signature is a 4-byte key id and a signature")
        lines.append(SignatureLine(name, raw[:4], raw[4:]))
    if not lines:
        raise NoteError("a signed note has at least one signature")
    return text, lines


def open_note(note: str, verifier: Verifier) -> tuple[str, list[SignatureLine]]:
    """The note's text once `verifier`'s signature on it checks out (type 0x01). Signatures by other
    keys are returned untouched (a client ignores the ones it does not know)."""
    text, lines = split_note(note)
    found = False
    for line in lines:
        if line.name == verifier.name and line.key_id == verifier.key_id:
            if verifier.sig_type != ED25519:
                raise NoteError("a note is opened with an Ed25519 (0x01) key")
            try:
                verifier._key().verify(line.signature, text.encode())
            except InvalidSignature as exc:
                raise NoteError(f"the signature by {verifier.name} does not verify") from exc
            found = True
    if not found:
        raise NoteError(f"the note is not signed by {verifier.name}")
    return text, lines


def verify_cosignature(checkpoint_text: str, line: SignatureLine, verifier: Verifier) -> int:
    """Check a tlog-cosignature/v1 line; return its timestamp."""
    if verifier.sig_type != COSIGNATURE_V1:
        raise NoteError("a cosigner key has signature type 0x04")
    if line.name != verifier.name or line.key_id != verifier.key_id:
        raise NoteError("the cosignature is not by this cosigner")
    if len(line.signature) != 8 + 64:
        raise NoteError("an Ed25519 cosignature is an 8-byte timestamp and a 64-byte signature")
    (timestamp,) = struct.unpack(">Q", line.signature[:8])
    try:
        verifier._key().verify(line.signature[8:], cosignature_message(checkpoint_text, timestamp))
    except InvalidSignature as exc:
        raise NoteError(f"the cosignature by {verifier.name} does not verify") from exc
    return int(timestamp)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(line == "" for line in lines[:-1]):
            raise NoteError("a checkpoint is an origin, a size and a root hash, one per line")
        origin, size, b64 = lines[:3]
        if not size.isdigit() or (size != "0" and size.startswith("0")):
            raise NoteError("a checkpoint's size is a decimal number without leading zeroes")
        try:
            root = base64.b64decode(b64, validate=True)
        except ValueError as exc:
            raise NoteError("a checkpoint's root hash is base64") from exc
        if len(root) != 32:
            raise NoteError("a checkpoint's root hash is 32 bytes")
        return cls(origin, int(size), root)


def open_checkpoint(note: str, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    text, _ = open_note(note, verifier)
    checkpoint = Checkpoint.parse(text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"the checkpoint is for {checkpoint.origin}, not {origin}")
    return checkpoint


def format_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def promise_text(origin: str, leaf: bytes, received_at: datetime, integrate_by: datetime) -> str:
    """What a promise signs: the log will include this leaf by `integrate_by` (like CT's SCT)."""
    return (
        f"{PROMISE_HEADER}\n{origin}\n{base64.b64encode(leaf).decode()}\n"
        f"{format_time(received_at)}\n{format_time(integrate_by)}\n"
    )


def sign_promise(
    signer: Signer, origin: str, leaf: bytes, received_at: datetime, integrate_by: datetime
) -> str:
    """The base64 signature line payload (key id || Ed25519 signature); Ed25519 is deterministic, so a
    replay of the same report gets the same promise."""
    text = promise_text(origin, leaf, received_at, integrate_by)
    return base64.b64encode(signer.verifier.key_id + signer.sign(text.encode())).decode()


def verify_promise(
    verifier: Verifier, origin: str, leaf: bytes, received_at: datetime, integrate_by: datetime, sig: str
) -> None:
    try:
        raw = base64.b64decode(sig, validate=True)
    except ValueError as exc:
        raise NoteError("a promise signature is base64") from exc
    if raw[:4] != verifier.key_id:
        raise NoteError("the promise is signed by another key")
    try:
        verifier._key().verify(raw[4:], promise_text(origin, leaf, received_at, integrate_by).encode())
    except InvalidSignature as exc:
        raise NoteError("the promise's signature does not verify") from exc
