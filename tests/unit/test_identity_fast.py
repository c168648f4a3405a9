"""The fast paths in `ledger.identity.normalize` must not change a single result.

Partners tokenise with the same module, so a normalised value that differs from the one the earlier
code produced would split one person into two subjects. Every test here compares `normalize` with
`normalize_before_fast_paths`, a verbatim copy of the earlier logic kept as the oracle: the result must be
the same string, or the same `InvalidIdentifier` reason.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger import identity
from ledger.errors import InvalidIdentifier
from ledger.identity import IDENTIFIER_TYPES, normalize, tokenize

KEY = "unit-test-identity-key-0123456789"


# -- the oracle: normalisation as it was before the fast paths, kept verbatim ------------------------
ORACLE_MAX_VALUE_LENGTH = 256
ORACLE_EMAIL_RE = re.compile(r"\A[^@\s]+@[^@\s]+\.[^@\s]+\Z")
ORACLE_ID_CARD_RE = re.compile(r"\A\d{17}[\dX]\Z")
ORACLE_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ORACLE_ID_CHECK = "10X98765432"


def oracle_clean(id_type: str, value: str) -> str:
    if not isinstance(value, str):
        raise InvalidIdentifier(id_type, "must be a string")
    value = unicodedata.normalize("NFKC", value).strip()
    if not value:
        raise InvalidIdentifier(id_type, "is empty")
    if len(value) > ORACLE_MAX_VALUE_LENGTH:
        raise InvalidIdentifier(id_type, f"is longer than {ORACLE_MAX_VALUE_LENGTH} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value):
        raise InvalidIdentifier(id_type, "contains control or unassigned characters")
    return value


def normalize_before_fast_paths(id_type: str, value: str) -> str:
    if id_type not in IDENTIFIER_TYPES:
        raise InvalidIdentifier(
            id_type, f"unknown identifier type; expected one of {', '.join(IDENTIFIER_TYPES)}"
        )
    value = oracle_clean(id_type, value)
    if id_type == "phone":
        try:
            number = phonenumbers.parse(value, "CN")
        except phonenumbers.NumberParseException:
            raise InvalidIdentifier("phone", "not a valid phone number") from None
        if not phonenumbers.is_valid_number(number):
            raise InvalidIdentifier("phone", "not a valid phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if id_type == "email":
        value = value.lower()
        if len(value) > 254 or not ORACLE_EMAIL_RE.match(value):
            raise InvalidIdentifier("email", "not a valid e-mail address")
        return value
    if id_type == "id_card":
        value = value.upper()
        if not ORACLE_ID_CARD_RE.match(value):
            raise InvalidIdentifier("id_card", "must be 17 digits followed by a digit or X")
        total = sum(int(d) * w for d, w in zip(value[:17], ORACLE_ID_WEIGHTS, strict=True))
        if ORACLE_ID_CHECK[total % 11] != value[17]:
            raise InvalidIdentifier("id_card", "check digit does not match (GB 11643)")
        return value
    return value


def outcome(func: Callable[[str, str], str], id_type: str, value: str) -> tuple[str, str, str]:
    """("ok", normalised, "") or ("invalid", id_type, reason); any other exception fails the test."""
    try:
        return ("ok", func(id_type, value), "")
    except InvalidIdentifier as exc:
        return ("invalid", exc.id_type, exc.reason)


def assert_same_as_before(id_type: str, value: str) -> None:
    expected = outcome(normalize_before_fast_paths, id_type, value)
    assert outcome(normalize, id_type, value) == expected, (id_type, value)


# -- strategies --------------------------------------------------------------------------------------
FULL_WIDTH = str.maketrans("0123456789+-() ", "０１２３４５６７８９＋－（）\u3000")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")  # NFKC leaves these alone; phonenumbers reads them

ANY_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=60),  # every ASCII control too
    st.text(alphabet=st.characters(exclude_categories=()), max_size=40),  # lone surrogates too
    st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x1f\x00\x7f\x85\u3000\u00a0\u200b\u2028\ufeffa1@.+-", max_size=30),
    st.text(alphabet=st.characters(max_codepoint=0x7F), min_size=250, max_size=270),  # the length limit
)

SEPARATOR = st.sampled_from(["", "", "", " ", "-", "  ", "--", " - ", ".", "(", ")", "/", "\u3000", "\t"])
PREFIX = st.sampled_from(
    [
        *["", "", "+86", "86", "0086", "+86 ", "86-", "0086 ", "+ 86", "(+86)", "+86-0", "0", "00", "+"],
        *["++86", "+852", "+1", "001", "17951", "12593", "1790000", "+860", "８６", "tel:", "x"],
    ]
)


@st.composite
def phone_shaped(draw: st.DrawFn) -> str:
    """Digits cut into groups, with separators and prefixes: mostly CN mobiles, but any length and start."""
    digits = draw(
        st.one_of(
            st.from_regex(r"\A1[3-9][0-9]{9}\Z"),  # mobile-shaped
            st.from_regex(r"\A1[0-9]{9,11}\Z"),
            st.from_regex(r"\A[0-9]{1,16}\Z"),
        )
    )
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(digits) - 1)), max_size=4)))
    groups = [digits[start:end] for start, end in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
    body = groups[0]
    for group in groups[1:]:
        body += draw(SEPARATOR) + group
    spelled = draw(PREFIX) + body + draw(st.sampled_from(["", "", " ", "-", " ext 12", "#", "x1"]))
    digits_as = draw(st.sampled_from(["ascii", "ascii", "full-width", "arabic-indic"]))
    if digits_as == "full-width":
        spelled = spelled.translate(FULL_WIDTH)
    elif digits_as == "arabic-indic":
        spelled = spelled.translate(ARABIC_INDIC)
    return draw(st.sampled_from(["{}", " {} ", "\t{}\n", "{}\x00", "\u3000{}"])).format(spelled)


FAST_PATH_SPELLINGS = st.from_regex(
    r"\A(?:(?:\+86|0086|86)[ -]?)?1[0-9]{2}[ -]?[0-9]{4}[ -]?[0-9]{4}\Z", fullmatch=True
)


@st.composite
def emails(draw: st.DrawFn) -> str:
    address = draw(st.emails())
    address = draw(st.sampled_from([address, address.upper(), address.lower(), address.title()]))
    return draw(st.sampled_from(["{}", " {} ", "{}\t", "ｘ{}", "{}\x7f", "{} a", "{}@b.c"])).format(address)


@st.composite
def id_cards(draw: st.DrawFn) -> str:
    first17 = draw(st.from_regex(r"\A[0-9]{17}\Z"))
    last = draw(st.sampled_from("0123456789Xx"))
    card = draw(st.sampled_from(["{}{}", " {}{} ", "{}{}\n", "{}{}0", "{} {}"])).format(first17, last)
    return card.translate(FULL_WIDTH) if draw(st.booleans()) else card


FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(FAST, max_examples=200)  # e-mail and ID-card paths have no fast path of their own


# -- differential properties -------------------------------------------------------------------------
@FAST
@given(id_type=st.sampled_from(IDENTIFIER_TYPES), value=ANY_TEXT)
@example(id_type="device_id", value="\tdev-1\r\n")  # ASCII controls that strip() removes are allowed
@example(id_type="device_id", value="dev\x1f1")
@example(id_type="device_id", value="\x1c\x1d\x1e\x1f")  # strip() removes these too: empty
@example(id_type="payment_account", value="acct\x7f")
@example(id_type="payment_account", value="acct\u200b")
@example(id_type="payment_account", value="\ud800")
@example(id_type="payment_account", value="a\u2028b")
@example(id_type="email", value="\u00a0A@B.CO\u00a0")
def test_any_text_normalises_as_before(id_type: str, value: str) -> None:
    assert_same_as_before(id_type, value)


@FAST
@given(value=st.one_of(phone_shaped(), FAST_PATH_SPELLINGS))
@example(value="139 1234 5678")
@example(value="86 139 1234 5678")
@example(value="0086-139-1234-5678")
@example(value="17951 139 1234 5678")
@example(value="1790013912345")
@example(value="179 1200 9999")  # "17912 00" reads as an international prefix, then "9999" as no country
def test_phone_shaped_text_normalises_as_before(value: str) -> None:
    assert_same_as_before("phone", value)
    if outcome(normalize, "phone", value)[0] == "ok":
        expected = tokenize("phone", normalize_before_fast_paths("phone", value), KEY)
        assert tokenize("phone", value, KEY) == expected


@FEWER
@given(value=emails())
def test_emails_normalise_as_before(value: str) -> None:
    assert_same_as_before("email", value)


@FEWER
@given(value=id_cards())
def test_id_cards_normalise_as_before(value: str) -> None:
    assert_same_as_before("id_card", value)


# -- exhaustive checks -------------------------------------------------------------------------------
@pytest.mark.parametrize("id_type", IDENTIFIER_TYPES)
def test_every_ascii_character_in_every_position_is_treated_as_before(id_type: str) -> None:
    for code in range(0x80):
        ch = chr(code)
        for value in (ch, f" {ch} ", f"a{ch}b", f"{ch}1", f"1{ch}", f"{ch}{ch}"):
            assert_same_as_before(id_type, value)


def test_every_bmp_character_inside_an_opaque_value_is_treated_as_before() -> None:
    """Surrogates, format characters, separators (U+2028 is neither ASCII nor printable, yet allowed)."""
    for code in range(0x10000):
        assert_same_as_before("device_id", f"a{chr(code)}b")


SPELLINGS = [
    "{a}{b}{c}",
    "{a} {b} {c}",
    "{a}-{b}-{c}",
    "{a} {b}-{c}",
    "{a}{b} {c}",
    "+86{a}{b}{c}",
    "+86 {a} {b} {c}",
    "+86-{a}-{b}-{c}",
    "86{a}{b}{c}",
    "86 {a} {b} {c}",
    "86-{a}{b}{c}",
    "0086{a}{b}{c}",
    "0086 {a}-{b}-{c}",
    "  +86 {a} {b} {c}\t",
]


def test_every_four_digit_prefix_in_every_fast_spelling_matches_phonenumbers() -> None:
    """Every 1xxx prefix in every spelling the fast path takes, with fixed and random suffixes.

    The fast path leaves validity to phonenumbers, so what this checks is that for each prefix
    `phonenumbers.parse` reads exactly those 11 digits as a CN national number (or that the fast path
    is not taken), whatever the remaining digits are.
    """
    rng = random.Random(20240611)
    for prefix in range(1000, 2000):
        # "00" and a non-zero digit after the first five digits is how a CN carrier-selected international
        # prefix ("179xx00") looks; the other suffixes take a few spellings each, in turn.
        idd_shaped = f"{rng.randrange(10)}00{rng.randrange(1, 10)}{rng.randrange(1000):03d}"
        cases = [(f"{rng.randrange(10**7):07d}", SPELLINGS)]
        for offset, suffix in enumerate((idd_shaped, "0000000" if prefix % 2 else "9999999")):
            start = (prefix * 2 + offset) * 4 % len(SPELLINGS)
            cases.append((suffix, (SPELLINGS * 2)[start : start + 4]))
        for suffix, spellings in cases:
            digits = f"{prefix}{suffix}"
            for spelling in spellings:
                value = spelling.format(a=digits[:3], b=digits[3:7], c=digits[7:])
                assert_same_as_before("phone", value)


def test_every_five_digit_prefix_matches_phonenumbers() -> None:
    """CN mobile ranges are listed down to five digits (1740[0-5]), so every 1xxxx prefix once."""
    rng = random.Random(86)
    for prefix in range(10000, 20000):
        digits = f"{prefix}{rng.randrange(10**6):06d}"
        spelling = SPELLINGS[prefix % len(SPELLINGS)]
        assert_same_as_before("phone", spelling.format(a=digits[:3], b=digits[3:7], c=digits[7:]))


# -- the fast paths are really taken -----------------------------------------------------------------
def test_the_cn_metadata_is_the_one_the_fast_path_was_verified_against() -> None:
    """If this fails after a phonenumbers upgrade, the fast path has switched itself off: re-check the
    argument in ledger/identity.py against the new CN metadata before updating the guard."""
    assert identity._CN_MOBILE_FAST_PATH


@pytest.mark.parametrize(
    "value", ["13912345678", "139 1234 5678", "139-1234-5678", "+86 139 1234 5678", "8613912345678"]
)
def test_common_mobile_spellings_skip_the_full_parse(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fast path should not call phonenumbers.parse")

    monkeypatch.setattr(identity.phonenumbers, "parse", no_parse)
    assert normalize("phone", value) == "+8613912345678"


def test_with_the_fast_path_off_results_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "_CN_MOBILE_FAST_PATH", False)
    for value in ("139 1234 5678", "+86 174 0612 3456", "17951 1391234567", "12345"):
        assert_same_as_before("phone", value)
