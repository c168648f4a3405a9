"""The decision cache's one value and its wire format, written by scoring and read by lookups.

Under `ccl:t:<token>` Redis holds what the lookup path needs to decide without PostgreSQL: the decision
of the token's subject (a `SubjectView`), or, for a device token, how many subjects share that device (a
`DeviceSignal`). Both sides of the cache go through `encode` and `decode` here, so the single-letter
keys below are written down once.

The stored text is the 20-digit ledger sequence the value was computed from, then compact JSON with
sorted keys: `{"at","last","n","o","p","pv","s","score","tier","why"}` for a subject, `{"at","d","o","pv"}`
for a device. `o` is when the value was computed, in microseconds since the epoch. The compare-and-set
script (`ledger/storage/cache.py`) reads the sequence prefix and `o` itself, in Lua, to refuse an older
value; that is why the keys stay short and the sequence stays a fixed-width prefix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.domain.decisions import SubjectView

SEQ_WIDTH = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DeviceSignal:
    """A device token's weak signal: how many subjects reported with this device. It never merges them
    (ledger/domain/decisions.py); `policy_version` and `computed_at` are None when read from PostgreSQL."""

    subjects: int
    policy_version: str | None = None
    computed_at: str | None = None


# What one token's cache entry holds.
CachedDecision = SubjectView | DeviceSignal


def subject_view(
    subject_id: int,
    score: int,
    tier: str,
    reasons: tuple[str, ...] | list[str],
    incidents: int,
    platforms: int,
    last_incident_at: datetime | None,
    policy_version: str,
    computed_at: datetime,
) -> SubjectView:
    """A subject's cached decision from what scoring computed or `risk_scores` stored."""
    return SubjectView(
        subject_id=int(subject_id),
        score=int(score),
        tier=tier,
        reasons=tuple(reasons),
        incidents=int(incidents),
        platforms=int(platforms),
        last_incident_at=last_incident_at.isoformat() if last_incident_at else None,
        policy_version=policy_version,
        computed_at=computed_at.isoformat(),
    )


def order(value: CachedDecision) -> int:
    """When a value was computed, in microseconds: orders two values computed from one sequence."""
    at = value.computed_at
    if not at:
        return 0
    return (datetime.fromisoformat(at) - _EPOCH) // timedelta(microseconds=1)


def _fields(value: CachedDecision) -> dict[str, Any]:
    if isinstance(value, DeviceSignal):
        fields: dict[str, Any] = {"d": value.subjects}
        if value.policy_version is not None:
            fields["pv"] = value.policy_version
        if value.computed_at is not None:
            fields["at"] = value.computed_at
        return fields
    return {
        "s": value.subject_id,
        "score": value.score,
        "tier": value.tier,
        "why": list(value.reasons),
        "n": value.incidents,
        "p": value.platforms,
        "last": value.last_incident_at,
        "pv": value.policy_version,
        "at": value.computed_at,
    }


def encode(seq: int, value: CachedDecision) -> str:
    """The stored text: the sequence, zero-padded to SEQ_WIDTH digits, then the value's JSON with `o`."""
    if not 0 <= seq < 10**SEQ_WIDTH:
        raise ValueError(f"sequence {seq} does not fit {SEQ_WIDTH} digits")
    body = json.dumps({**_fields(value), "o": order(value)}, separators=(",", ":"), sort_keys=True)
    return f"{seq:0{SEQ_WIDTH}d}{body}"


def _value(fields: Mapping[str, Any]) -> CachedDecision:
    if "s" in fields:
        return SubjectView(
            subject_id=int(fields["s"]),
            score=int(fields["score"]),
            tier=fields["tier"],
            reasons=tuple(fields["why"]),
            incidents=int(fields["n"]),
            platforms=int(fields["p"]),
            last_incident_at=fields["last"],
            policy_version=fields["pv"],
            computed_at=fields["at"],
        )
    return DeviceSignal(int(fields["d"]), fields.get("pv"), fields.get("at"))


def decode(raw: bytes | str) -> tuple[int, CachedDecision]:
    """The sequence and the value of a stored text (`encode`'s inverse)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return int(text[:SEQ_WIDTH]), _value(json.loads(text[SEQ_WIDTH:]))
