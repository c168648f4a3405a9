"""The console's one catalogue: every message in both languages, every stored code labelled."""

from __future__ import annotations

import re
from pathlib import Path

from ledger.console import catalogue
from ledger.domain import labels
from ledger.identity import IDENTIFIER_TYPES

TEMPLATES = Path(catalogue.__file__).parent / "templates" / "console"


def test_every_message_has_chinese_and_english() -> None:
    for key, (zh, en) in catalogue.MESSAGES.items():
        assert zh.strip(), key
        assert en.strip(), key
        assert re.findall(r"\{(\w+)\}", zh) == re.findall(r"\{(\w+)\}", en) or sorted(
            re.findall(r"\{(\w+)\}", zh)
        ) == sorted(re.findall(r"\{(\w+)\}", en)), key


def test_the_console_labels_the_ledgers_codes_from_the_one_label_catalogue() -> None:
    for kind in labels.KINDS:
        for code, entry in labels.catalogue()[kind].items():
            assert catalogue.label(kind, code, "zh") == entry["zh"]
            assert catalogue.label(kind, code, "en") == entry["en"]
    for id_type in IDENTIFIER_TYPES:
        assert f"code.id_type.{id_type}" in catalogue.MESSAGES


def test_every_label_kind_a_template_uses_exists() -> None:
    own = {key.split(".")[1] for key in catalogue.MESSAGES if key.startswith("code.")}
    for template in TEMPLATES.glob("*.html"):
        for kind in re.findall(r"\blabel\('([a-z_]+)'", template.read_text()):
            assert kind in labels.KINDS or kind in own, (template.name, kind)


def test_templates_take_every_text_from_the_catalogue() -> None:
    """No Han character and no English sentence is written into a template; every t() key exists."""
    for template in TEMPLATES.glob("*.html"):
        source = template.read_text()
        assert not re.search(r"[\u4e00-\u9fff]", source), template.name
        for key in re.findall(r"\bt\('([a-z_.]+)'\s*[,)]", source):
            assert key in catalogue.MESSAGES, (template.name, key)


def test_unknown_codes_show_as_themselves_and_chinese_is_the_default() -> None:
    assert catalogue.label("tier", "brand_new_tier", "zh") == "brand_new_tier"
    assert catalogue.text("nav.overview", "fr") == catalogue.MESSAGES["nav.overview"][0]
    assert (
        catalogue.text("desk.dispute_done", "en", n=2, by="x")
        == "2 disputes opened; the reporting platform must answer by x."
    )
