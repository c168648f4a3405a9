"""The label catalogue covers every code the ledger can show a person, and says it in Chinese.

The codes are collected from where they are defined (the marshmallow schemas, the scoring policy,
schema.sql's CHECK constraints and the services' status reasons), so a new code without a label fails
here rather than showing up as English inside a Chinese page.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.api import schemas
from ledger.domain import labels
from ledger.domain.notices import adverse_action
from ledger.domain.policy import load_policy
from ledger.services.disputes import SLA_REASON

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy()


def _checked_values(table: str) -> list[str]:
    """The values a `status IN (...)` CHECK of `table` in schema.sql allows."""
    sql = (ROOT / "schema.sql").read_text()
    body = re.search(rf"CREATE TABLE IF NOT EXISTS {table} \((.*?)\n\);", sql, re.S)
    assert body is not None
    allowed = re.search(r"status\s+text NOT NULL.*?CHECK \(status IN \(([^)]*)\)\)", body.group(1), re.S)
    assert allowed is not None
    return re.findall(r"'([^']+)'", allowed.group(1))


def _service_status_reasons() -> list[str]:
    """Status reasons passed to change_status or written by storage, read from the source."""
    found = set(schemas.RETRACT_REASONS) | {SLA_REASON}
    for path in ("ledger/services/disputes.py", "ledger/storage/incidents.py"):
        text = (ROOT / path).read_text()
        found.update(re.findall(r'"(consumer_dispute|dispute_upheld|dispute_retracted)"', text))
        found.update(re.findall(r"status_reason = '([a-z_]+)'", text))
    return sorted(found)


CODES = {
    "category": list(schemas.CATEGORIES),
    "confirmation": list(schemas.CONFIRMATIONS),
    "purpose": list(schemas.PURPOSES),
    "status": _checked_values("incidents"),
    "dispute_status": _checked_values("disputes"),
    "status_reason": _service_status_reasons(),
    "tier": [t.name for t in POLICY.tiers],
    "restriction": sorted({r for t in POLICY.tiers for r in t.restrictions}),
    "currency": sorted(POLICY.currencies),
}


@pytest.mark.parametrize(("kind", "code"), [(k, c) for k, codes in CODES.items() for c in codes])
def test_every_code_has_a_label_in_both_languages(kind: str, code: str) -> None:
    entry = labels.catalogue()[kind].get(code)
    assert entry is not None, f"{kind}.{code} has no label"
    assert set(entry) == set(labels.LANGUAGES)
    assert all(entry[lang].strip() for lang in labels.LANGUAGES)


def test_status_reasons_were_found() -> None:
    assert {"consumer_dispute", "dispute_upheld", "dispute_retracted", "retention"} <= set(
        CODES["status_reason"]
    )


def test_no_chinese_label_carries_a_latin_letter() -> None:
    for kind, codes in labels.catalogue().items():
        for code, entry in codes.items():
            assert not re.search(r"[A-Za-z]", entry["zh"]), f"{kind}.{code}: {entry['zh']}"


def test_unknown_code_falls_back_to_itself() -> None:
    assert labels.label("category", "a_new_category") == "a_new_category"
    assert labels.label("status_reason", None) == ""


def test_beijing_time_names_the_zone() -> None:
    # 10:00 UTC is 18:00 in Beijing; 20:00 UTC is already the next day there.
    assert labels.beijing_time(datetime(2026, 11, 1, 10, 0, tzinfo=UTC)) == "2026-11-01 18:00 北京时间"
    assert labels.beijing_time(datetime(2026, 11, 1, 20, 30, tzinfo=UTC), "en") == (
        "2026-11-02 04:30 Beijing time (UTC+8)"
    )


@given(st.datetimes(min_value=datetime(1992, 1, 1), max_value=datetime(2100, 1, 1)))
def test_fixed_offset_is_asia_shanghai(moment: datetime) -> None:
    """The fixed UTC+8 offset agrees with the time-zone database for every time the ledger can hold."""
    aware = moment.replace(tzinfo=UTC)
    assert (
        aware.astimezone(labels.BEIJING).utcoffset()
        == aware.astimezone(ZoneInfo("Asia/Shanghai")).utcoffset()
    )
    assert aware.astimezone(labels.BEIJING).utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize("tier", [t.name for t in POLICY.tiers if t.restrictions])
def test_adverse_action_notice_names_the_tier_by_its_label(tier: str) -> None:
    notice = adverse_action(tier, dispute_days=20)
    assert "20天内复核" in notice["text_zh"]  # the `cn` profile's deadline (征信业管理条例 Art. 25)
    assert labels.label("tier", tier, "zh") in notice["text_zh"]
    assert labels.label("tier", tier, "en") in notice["text_en"]
    assert not re.search(r"[A-Za-z]", notice["text_zh"]), notice["text_zh"]
