"""Jurisdiction profiles: the timings and duties the governing law sets, in one place.

The ledger runs under Chinese law, so `cn` is the default; `us` keeps the FCRA-shaped values the project
started with, for comparison. Each value names the article it comes from, and docs/legal.md says where
the code meets each duty. A profile sets defaults only: `LEDGER_DISPUTE_DAYS` and `LEDGER_RETENTION_DAYS`
still override them, for an operator whose counsel reads the law differently.

Pure data, no I/O: config, services and docs read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone


@dataclass(frozen=True)
class Profile:
    name: str
    # Days a reporting platform has to uphold or retract a disputed entry before the SLA job retracts it.
    dispute_days: int
    dispute_basis: str
    # Days an incident counts, from the end of the act (`occurred_at`); then it expires and is shredded.
    retention_days: int
    retention_basis: str
    # Subject access reports a consumer may have free of charge per calendar year (counted, shown).
    free_reports_per_year: int
    free_reports_basis: str
    # The calendar year the free reports are counted in (China has one time zone and no DST).
    year_zone: timezone
    # Must each report carry `consumer_notified_at`, the time the platform told the consumer?
    notice_required: bool
    notice_basis: str
    # Lookups may carry `operator_ref` (who reviewed by hand), kept in the inquiry trail.
    inquiry_basis: str

    def year_of(self, at: datetime) -> int:
        return at.astimezone(self.year_zone).year

    def year_start(self, year: int) -> datetime:
        return datetime(year, 1, 1, tzinfo=self.year_zone)


CN = Profile(
    name="cn",
    dispute_days=20,
    dispute_basis="征信业管理条例 Art. 25: an objection is checked and answered within 20 days",
    # 5 x 365 days ends on or before the 5th anniversary: never later than Art. 16 allows.
    retention_days=5 * 365,
    retention_basis="征信业管理条例 Art. 16: negative information is kept 5 years from the end of the act",
    free_reports_per_year=2,
    free_reports_basis="征信业管理条例 Art. 17: two free reports of one's own record a year",
    year_zone=timezone(timedelta(hours=8), "CST"),
    notice_required=True,
    notice_basis="征信业管理条例 Art. 15: the consumer is told before negative information is reported",
    inquiry_basis="征信业管理条例 Art. 22: each query is recorded with who, when and why",
)

US = Profile(
    name="us",
    dispute_days=30,
    dispute_basis="FCRA §611(a)(1)(A): reinvestigation within 30 days",
    retention_days=5 * 365,
    retention_basis="the project's own 5-year limit (FCRA §605(a) would allow 7 years)",
    free_reports_per_year=1,
    free_reports_basis="FCRA §612(a)(1): one free annual disclosure",
    year_zone=UTC,
    notice_required=False,
    notice_basis="FCRA §623(a)(7): notice within 30 days after furnishing; not checked at report time",
    inquiry_basis="FCRA §609(a)(3): the consumer sees who procured a report",
)

PROFILES: dict[str, Profile] = {p.name: p for p in (CN, US)}
DEFAULT_PROFILE = CN.name
