"""The jurisdiction profiles' values and how settings choose and override them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger.config import Settings
from ledger.errors import ConfigError
from ledger.jurisdiction import CN, US


def test_cn_is_the_default_and_carries_the_articles() -> None:
    settings = Settings.from_env({})
    assert settings.jurisdiction == "cn"
    assert (settings.dispute_days, settings.retention_days) == (20, 5 * 365)
    assert CN.free_reports_per_year == 2
    assert CN.notice_required
    for basis, article in (
        (CN.dispute_basis, "Art. 25"),
        (CN.retention_basis, "Art. 16"),
        (CN.free_reports_basis, "Art. 17"),
        (CN.notice_basis, "Art. 15"),
        (CN.inquiry_basis, "Art. 22"),
    ):
        assert article in basis


def test_us_keeps_the_fcra_values() -> None:
    settings = Settings.from_env({"LEDGER_JURISDICTION": "us"})
    assert (settings.dispute_days, settings.retention_days) == (30, 5 * 365)
    assert not US.notice_required


def test_environment_overrides_the_profile() -> None:
    settings = Settings.from_env({"LEDGER_DISPUTE_DAYS": "15", "LEDGER_RETENTION_DAYS": "100"})
    assert (settings.dispute_days, settings.retention_days) == (15, 100)
    assert Settings().with_(jurisdiction="us").dispute_days == 30
    with pytest.raises(ConfigError):
        Settings.from_env({"LEDGER_JURISDICTION": "eu"})
    with pytest.raises(ConfigError):
        Settings.from_env({"LEDGER_DISPUTE_DAYS": "0"})


def test_the_free_report_year_is_china_standard_time() -> None:
    # 2026-12-31 17:00 UTC is already 2027 in Beijing.
    assert CN.year_of(datetime(2026, 12, 31, 17, 0, tzinfo=UTC)) == 2027
    assert US.year_of(datetime(2026, 12, 31, 17, 0, tzinfo=UTC)) == 2026
