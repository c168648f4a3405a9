"""The one catalogue of what the ledger's codes mean to a person, in Chinese and English.

The API speaks in codes (`chargeback_abuse`, `hold`, `no_refund_only`) because machines switch on them.
A consumer reading their report, or the notice attached to a restricted refund, must never see one: a
code inside a Chinese sentence tells them nothing. So every page and notice meant for people takes its
words from here, and the catalogue is a reviewed file (`ledger/templates/labels.toml`) that a translator
can change without touching code. An unknown code falls back to itself, so a new code shows up rather
than failing a page; tests/unit/test_labels.py makes sure that never happens for a code the ledger
produces.
"""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Literal

CATALOGUE = Path(__file__).resolve().parent.parent / "templates" / "labels.toml"
KINDS = (
    "category",
    "confirmation",
    "status",
    "status_reason",
    "tier",
    "restriction",
    "purpose",
    "dispute_status",
    "currency",
)
LANGUAGES = ("zh", "en")
Language = Literal["zh", "en"]

# China has kept UTC+8 without daylight saving since 1991, so this fixed offset is Asia/Shanghai for every
# time the ledger holds, with no dependency on the host's time-zone database.
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
ZONE_NAME = {"zh": "北京时间", "en": "Beijing time (UTC+8)"}


@cache
def catalogue() -> dict[str, dict[str, dict[str, str]]]:
    """{kind: {code: {"zh": ..., "en": ...}}}, read once per process."""
    with CATALOGUE.open("rb") as handle:
        raw = tomllib.load(handle)
    unknown = set(raw) - set(KINDS)
    if unknown:
        raise ValueError(f"labels.toml has unknown kinds: {sorted(unknown)}")
    return {kind: {code: dict(entry) for code, entry in raw.get(kind, {}).items()} for kind in KINDS}


def label(kind: str, code: str | None, lang: Language = "zh") -> str:
    """The label of `code` in `lang`; the code itself if the catalogue lacks it, "" for None."""
    if code is None:
        return ""
    entry = catalogue()[kind].get(code)
    return entry[lang] if entry else code


def labels_for(lang: Language) -> dict[str, dict[str, str]]:
    """{kind: {code: label}} in one language, for a template."""
    return {kind: {code: entry[lang] for code, entry in codes.items()} for kind, codes in catalogue().items()}


def beijing_time(moment: datetime, lang: Language = "zh", with_time: bool = True) -> str:
    """A timestamp as a person in China reads it, naming the zone: "2026-11-01 18:00 北京时间"."""
    local = moment.astimezone(BEIJING)
    shown = local.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")
    return f"{shown} {ZONE_NAME[lang]}"
