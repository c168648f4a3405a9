"""Synthetic ledger data for the lookup and rescore benchmarks, loaded fast with COPY.

Shape (defaults: 1,000,000 incidents over 300,000 subjects, 8 reporting platforms):
  * every subject has a phone; 60% an e-mail, 30% a resident ID, 20% a payment account (all strong, all
    in identity_links) and a device id drawn from a pool smaller than the subjects, so some devices are
    shared (weak: never linked, only counted);
  * each subject has at least one incident; half of the rest go to 10% "repeat" subjects (about a dozen
    incidents each, across several platforms), half uniformly;
  * incidents are up to three years old, 93% active, 4% disputed, 3% retracted; each carries the
    subject's phone, its e-mail when it has one and its device half the time (2 to 3 identifiers);
  * subjects are already linked (incidents.subject_id set), as after the workers ran.
The event log (ledger_events and the Merkle tree) is NOT built for this data: neither the lookup hot path
nor the rescore reads it, so scores record computed_from_seq 0.

Tokens are computed exactly as `ledger.identity.tokenize` does, from values generated already in
normalised form (E.164 phones, lower-case e-mails), which skips only the phonenumbers parse.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from benchmarks import _common as c

PLATFORMS = 8
CATEGORY_WEIGHTS = {
    "fabricated_evidence": 25,
    "false_damage_claim": 25,
    "false_not_received": 15,
    "refund_only_abuse": 20,
    "return_fraud": 10,
    "chargeback_abuse": 5,
}
CONFIRMATION_WEIGHTS = {
    "platform_review": 55,
    "merchant_evidence": 30,
    "consumer_admission": 10,
    "court_or_police": 5,
}
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# Secondary indexes dropped during the load and recreated by re-applying schema.sql (CREATE INDEX IF NOT
# EXISTS): building them once after COPY is much faster than maintaining them row by row.
SECONDARY_INDEXES = (
    "incidents_subject",
    "incidents_unlinked",
    "incidents_expiry",
    "incident_identifiers_token",
    "identity_links_subject",
)


@dataclass(frozen=True)
class Person:
    """The raw identifiers of one synthetic subject (normalised form)."""

    subject_id: int
    phone: str
    email: str | None
    id_card: str | None
    payment: str | None
    device: str


def _id_card(n: int) -> str:
    # region code + birth date + sequence; (region, sequence) is unique per subject below 900 million.
    first17 = f"{110000 + n // 1000:06d}{1960 + n % 45:04d}{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}"
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return first17 + _ID_CHECK[total % 11]


def person(subject_id: int, subjects: int) -> Person:
    """Deterministic identifiers of subject `subject_id` (1-based); phones 138xxxxxxxx are all known."""
    h = int.from_bytes(hashlib.blake2b(subject_id.to_bytes(8, "big"), digest_size=8).digest(), "big")
    return Person(
        subject_id=subject_id,
        phone=f"+86138{(subject_id * 7919 + 12345) % 10**8:08d}",
        email=f"c{subject_id}.{h % 997}@example.cn" if h % 10 < 6 else None,
        id_card=_id_card(subject_id) if (h >> 8) % 10 < 3 else None,
        payment=f"alipay-{subject_id:09d}{h % 1000:03d}" if (h >> 16) % 10 < 2 else None,
        device=f"dev-{(h >> 24) % int(subjects * 0.9)}",
    )


def token(key: bytes, id_type: str, value: str) -> str:
    """The token the ledger stores: the member's HMAC token, keyed again with the server's token key
    (`ledger.services.identifiers.at_rest`)."""
    member = hmac.new(key, f"{id_type}:{value}".encode(), hashlib.sha256).hexdigest()
    return hmac.new(c.TOKEN_KEY.encode(), member.encode(), hashlib.sha256).hexdigest()


def _weighted(rng: random.Random, weights: dict[str, int], n: int) -> list[str]:
    return rng.choices(list(weights), weights=list(weights.values()), k=n)


class _Copy:
    """Buffer text-format COPY lines and flush them in large writes."""

    def __init__(self, copy: psycopg.Copy, limit: int = 4 << 20) -> None:
        self.copy, self.buf, self.limit = copy, io.StringIO(), limit

    def line(self, *fields: object) -> None:
        self.buf.write("\t".join("\\N" if f is None else str(f) for f in fields))
        self.buf.write("\n")
        if self.buf.tell() > self.limit:
            self.flush()

    def flush(self) -> None:
        self.copy.write(self.buf.getvalue())
        self.buf = io.StringIO()


def _subject_of_incidents(rng: random.Random, incidents: int, subjects: int) -> Iterator[int]:
    """Every subject once, then the rest: half to the first 10% (repeat subjects), half uniformly."""
    yield from range(1, subjects + 1)
    repeat = max(1, subjects // 10)
    for n in range(incidents - subjects):
        yield rng.randint(1, repeat) if n % 2 == 0 else rng.randint(1, subjects)


def load(url: str, incidents: int, subjects: int, seed: int = 7, progress: bool = True) -> dict[str, int]:
    """COPY the synthetic ledger into an empty schema; returns row counts."""
    from ledger.storage.db import apply_schema

    assert incidents >= subjects > 0
    rng = random.Random(seed)
    key = c.IDENTITY_KEY.encode()
    now = datetime.now(UTC)
    started = time.perf_counter()
    counts = {"subjects": subjects, "incidents": incidents, "identity_links": 0, "incident_identifiers": 0}
    with psycopg.connect(url) as conn:
        conn.execute("SET session_replication_role = replica")  # skip FK triggers: the data is consistent
        conn.execute("SET maintenance_work_mem = '256MB'")
        for name in SECONDARY_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        platform_ids = [
            int(
                conn.execute(
                    "INSERT INTO platforms (slug, name, operator_trust, effective_trust) VALUES (%s, %s, %s, %s) "
                    "RETURNING id",
                    (f"synth-{p}", f"Synthetic {p}", t, t),
                ).fetchone()[0]  # type: ignore[index]
            )
            for p, t in zip(range(1, PLATFORMS + 1), (1.0, 1.0, 0.9, 0.9, 0.8, 0.7, 0.6, 1.0), strict=True)
        ]
        at = now.isoformat()
        with conn.cursor().copy("COPY subjects (id, merged_into, created_at) FROM STDIN") as copy:
            out = _Copy(copy)
            for s in range(1, subjects + 1):
                out.line(s, None, at)
            out.flush()
        conn.execute("SELECT setval('subjects_id_seq', %s)", (subjects,))

        # subject -> (phone token, e-mail token, device token)
        tokens: dict[int, tuple[str, str | None, str]] = {}
        with conn.cursor().copy("COPY identity_links (token, id_type, subject_id) FROM STDIN") as copy:
            out = _Copy(copy)
            for s in range(1, subjects + 1):
                p = person(s, subjects)
                phone = token(key, "phone", p.phone)
                email = token(key, "email", p.email) if p.email else None
                out.line(phone, "phone", s)
                counts["identity_links"] += 1
                if email:
                    out.line(email, "email", s)
                    counts["identity_links"] += 1
                if p.id_card:
                    out.line(token(key, "id_card", p.id_card), "id_card", s)
                    counts["identity_links"] += 1
                if p.payment:
                    out.line(token(key, "payment_account", p.payment), "payment_account", s)
                    counts["identity_links"] += 1
                tokens[s] = (phone, email, token(key, "device_id", p.device))
            out.flush()
        if progress:
            c.say(f"  subjects and identity links copied ({time.perf_counter() - started:.0f} s)")

        categories = _weighted(rng, CATEGORY_WEIGHTS, incidents)
        confirmations = _weighted(rng, CONFIRMATION_WEIGHTS, incidents)
        with conn.cursor().copy(
            "COPY incidents (id, platform_id, external_id, request_digest, category, confirmation, amount_minor, "
            "currency, occurred_at, reported_at, status, status_at, subject_id, salt) FROM STDIN"
        ) as copy_incidents:
            out = _Copy(copy_incidents)
            identifier_rows: list[tuple[str, str, str]] = []
            for n, s in enumerate(_subject_of_incidents(rng, incidents, subjects)):
                incident_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                occurred = now - timedelta(seconds=rng.randrange(3 * 365 * 86400))
                roll = rng.random()
                status = "active" if roll < 0.93 else ("disputed" if roll < 0.97 else "retracted")
                amount = max(100, int(rng.lognormvariate(10.5, 1.2)))  # median about 360 yuan, in fen
                out.line(
                    incident_id,
                    rng.choice(platform_ids)
                    if s > subjects // 10 or rng.random() < 0.5
                    else platform_ids[s % 3],
                    f"syn-{n}",
                    f"{n:064x}",
                    categories[n],
                    confirmations[n],
                    amount,
                    "CNY",
                    occurred.isoformat(),
                    (occurred + timedelta(days=1)).isoformat(),
                    status,
                    at,
                    s,
                    "\\\\x" + rng.getrandbits(128).to_bytes(16, "big").hex(),
                )
                phone, email, device = tokens[s]
                identifier_rows.append((str(incident_id), "phone", phone))
                if email:
                    identifier_rows.append((str(incident_id), "email", email))
                if n % 2 == 0 or not email:
                    identifier_rows.append((str(incident_id), "device_id", device))
            out.flush()
        if progress:
            c.say(f"  {incidents} incidents copied ({time.perf_counter() - started:.0f} s)")
        with conn.cursor().copy("COPY incident_identifiers (incident_id, id_type, token) FROM STDIN") as copy:
            out = _Copy(copy)
            for row in identifier_rows:
                out.line(*row)
            out.flush()
        counts["incident_identifiers"] = len(identifier_rows)
        conn.commit()
        if progress:
            c.say(
                f"  {len(identifier_rows)} incident identifiers copied ({time.perf_counter() - started:.0f} s)"
            )
    apply_schema(url)  # recreates the secondary indexes dropped above
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) subjects, identity_links, incidents, incident_identifiers, platforms")
    if progress:
        c.say(f"  indexes rebuilt and analysed ({time.perf_counter() - started:.0f} s)")
    return counts


def lookup_identifiers(rng: random.Random, subjects: int, known: bool) -> list[dict[str, str]]:
    """2 or 3 raw identifiers, as a refund system would send them, for a known or an unknown consumer."""
    if known:
        p = person(rng.randint(1, subjects), subjects)
        local = p.phone[3:]
        out = [{"type": "phone", "value": f"{local[:3]} {local[3:7]} {local[7:]}"}]
        out.append({"type": "email", "value": (p.email or f"x{rng.getrandbits(40)}@example.com").upper()})
        device = p.device
    else:
        out = [
            {"type": "phone", "value": f"139{rng.randrange(10**8):08d}"},
            {"type": "email", "value": f"shopper{rng.getrandbits(40)}@example.com"},
        ]
        device = f"dev-unknown-{rng.getrandbits(32)}"
    if rng.random() < 0.5:
        out.append({"type": "device_id", "value": device})
    return out
