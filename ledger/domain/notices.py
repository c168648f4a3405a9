"""The adverse-action notice shown to a consumer when a lookup restricts their refund.

The wording lives in a template shipped with the package (ledger/templates/adverse_action.toml) so the
operator can review and translate it without touching code. The tier is named by its label from the
one catalogue (ledger/domain/labels.py), never by its code: a Chinese sentence must not carry `hold`.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

from ledger.domain.labels import label

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "adverse_action.toml"


@cache
def _template() -> dict[str, str]:
    with TEMPLATE.open("rb") as handle:
        return {k: str(v) for k, v in tomllib.load(handle).items()}


def adverse_action(tier: str, dispute_days: int, photo_check: bool = False) -> dict[str, str]:
    """The notice. With `photo_check` (the claim's own photos raised the tier), the text says so, since no
    consortium record need have been involved."""
    t = _template()
    zh, en = ("evidence_zh", "evidence_en") if photo_check else ("zh", "en")
    return {
        "text_zh": t[zh].format(tier=label("tier", tier, "zh"), dispute_days=dispute_days),
        "text_en": t[en].format(tier=label("tier", tier, "en"), dispute_days=dispute_days),
        "decided_by": "platform",
        "how_to_get_report_zh": t["how_to_report_zh"],
        "how_to_get_report_en": t["how_to_report_en"],
        "how_to_dispute_zh": t["how_to_dispute_zh"],
        "how_to_dispute_en": t["how_to_dispute_en"],
    }
