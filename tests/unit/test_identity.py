"""Identity normalisation and tokens: two platforms must derive the same token for the same person, and a
rejected identifier must never leak its raw value through the error.

These are pure tests of `ledger.identity`, the module partners import to tokenise on their side, so they
need neither Flask nor a database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidIdentifier
from ledger.identity import IDENTIFIER_TYPES, check_token, normalize, tokenize

KEY = "unit-test-identity-key-0123456789"
HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
# GB 11643-1999 (ISO 7064 MOD 11-2), written out independently of the code under test.
WEIGHTS = [2 ** (17 - i) % 11 for i in range(17)]
CHECK_CHARS = "10X98765432"


def reference_check_char(first17: str) -> str:
    return CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def attempt(func: Callable[..., str], *args: Any) -> str | InvalidIdentifier:
    """The result, or the InvalidIdentifier raised; any other exception propagates and fails the test."""
    try:
        return func(*args)
    except InvalidIdentifier as exc:
        return exc


def reference_token(id_type: str, normalised: str, key: str = KEY) -> str:
    return hmac.new(key.encode(), f"{id_type}:{normalised}".encode(), hashlib.sha256).hexdigest()


# -- phone -------------------------------------------------------------------------------------------
PHONE_SPELLINGS = [
    "13800138000",
    " 13800138000 ",
    "138 0013 8000",
    "138-0013-8000",
    "+86 138 0013 8000",
    "+86-138-0013-8000",
    "+8613800138000",
    "008613800138000",
    "(+86) 138 0013 8000",
    "１３８００１３８０００",  # full-width digits
    "+８６ １３８ ００１３ ８０００",  # full-width plus and digits
    "138\u30000013\u30008000",  # ideographic spaces
]


@pytest.mark.parametrize("spelling", PHONE_SPELLINGS)
def test_every_spelling_of_a_phone_number_becomes_the_same_e164(spelling: str) -> None:
    assert normalize("phone", spelling) == "+8613800138000"
    assert tokenize("phone", spelling, KEY) == reference_token("phone", "+8613800138000")


def test_phone_defaults_to_china_but_keeps_foreign_numbers_distinct() -> None:
    assert normalize("phone", "+1 202 555 0100") == "+12025550100"
    assert tokenize("phone", "+1 202 555 0100", KEY) != tokenize("phone", "13800138000", KEY)


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        ("1380013800", "not a valid phone number"),  # one digit short
        ("12345", "not a valid phone number"),
        ("call me maybe", "not a valid phone number"),  # one message for one cause, parseable or not
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_bad_phone_numbers_are_rejected_with_a_reason(value: str, reason_part: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalize("phone", value)
    assert caught.value.id_type == "phone"
    assert reason_part in caught.value.reason


# -- e-mail ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spelling", ["buyer@example.com", "  Buyer@Example.COM\t", "BUYER@EXAMPLE.COM", "ｂｕｙｅｒ@example.com"]
)
def test_email_is_trimmed_and_lower_cased(spelling: str) -> None:
    assert normalize("email", spelling) == "buyer@example.com"
    assert tokenize("email", spelling, KEY) == reference_token("email", "buyer@example.com")


@pytest.mark.parametrize(
    "value", ["no-at-sign.example.com", "two@@example.com", "a b@example.com", "x@nodot"]
)
def test_malformed_emails_are_rejected(value: str) -> None:
    with pytest.raises(InvalidIdentifier, match="e-mail"):
        normalize("email", value)


# -- PRC resident ID ---------------------------------------------------------------------------------
VALID_ID = "11010519491231002X"  # the worked example of GB 11643-1999


def test_the_standard_example_id_is_valid_and_a_lowercase_x_is_upper_cased() -> None:
    assert normalize("id_card", VALID_ID) == VALID_ID
    assert normalize("id_card", VALID_ID.lower()) == VALID_ID
    assert normalize("id_card", f"  {VALID_ID.lower()} ") == VALID_ID
    assert tokenize("id_card", VALID_ID.lower(), KEY) == reference_token("id_card", VALID_ID)


@pytest.mark.parametrize("wrong", [c for c in CHECK_CHARS if c != "X"])
def test_every_wrong_check_digit_is_rejected(wrong: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalize("id_card", VALID_ID[:17] + wrong)
    assert "check digit" in caught.value.reason
    assert VALID_ID[:17] not in str(caught.value)


@pytest.mark.parametrize(
    "value", ["1101051949123100", "1101051949123100211", "11010519491231002Y", "A10105194912310021"]
)
def test_id_card_shape_is_enforced(value: str) -> None:
    with pytest.raises(InvalidIdentifier, match="17 digits"):
        normalize("id_card", value)


@settings(deadline=None)
@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_exactly_one_check_character_is_accepted_for_any_17_digits(first17: str) -> None:
    accepted = [
        outcome for c in CHECK_CHARS if isinstance(outcome := attempt(normalize, "id_card", first17 + c), str)
    ]
    assert accepted == [first17 + reference_check_char(first17)]


# -- opaque identifiers and types --------------------------------------------------------------------
@pytest.mark.parametrize("id_type", ["device_id", "payment_account"])
def test_opaque_identifiers_are_only_trimmed(id_type: str) -> None:
    assert normalize(id_type, "  Dev-ABC_123  ") == "Dev-ABC_123"
    assert normalize(id_type, "Dev-ABC_123") != normalize(id_type, "dev-abc_123")  # case is kept


def test_the_type_is_part_of_the_token() -> None:
    assert tokenize("device_id", "same-value", KEY) != tokenize("payment_account", "same-value", KEY)


def test_the_key_is_part_of_the_token() -> None:
    assert tokenize("email", "a@example.com", KEY) != tokenize("email", "a@example.com", KEY + "x")
    assert tokenize("email", "a@example.com", KEY) == tokenize("email", "a@example.com", KEY.encode())


@pytest.mark.parametrize("id_type", ["passport", "PHONE", "", "phone "])
def test_unknown_types_are_rejected(id_type: str) -> None:
    with pytest.raises(InvalidIdentifier, match="unknown identifier type"):
        tokenize(id_type, "13800138000", KEY)
    with pytest.raises(InvalidIdentifier, match="unknown identifier type"):
        check_token(id_type, "0" * 64)


def test_partner_tokens_must_be_64_lowercase_hex() -> None:
    token = tokenize("phone", "13800138000", KEY)
    assert check_token("phone", token) == token
    for bad in (token.upper(), token[:-1], token + "0", "g" * 64, ""):
        with pytest.raises(InvalidIdentifier, match="64 lowercase hex"):
            check_token("phone", bad)


@pytest.mark.parametrize(
    ("id_type", "value"),
    [
        ("phone", "1391234567899999"),
        ("phone", "Zq7x-not-a-phone"),
        ("email", "zq7x.private.person@@example.com"),
        ("id_card", "44010619900307123Z"),
        ("id_card", "440106199003071234"),  # wrong check digit
        ("device_id", "zq7x-device-" + "9" * 300),
        ("payment_account", "zq7x\x00acct"),
    ],
)
def test_the_reason_never_contains_the_raw_value(id_type: str, value: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        tokenize(id_type, value, KEY)
    message = f"{caught.value} {caught.value.reason} {caught.value.detail} {caught.value.args!r}"
    for fragment in (value, value.strip(), value[:12], value[-8:]):
        assert fragment not in message


# -- properties --------------------------------------------------------------------------------------
ANY_TEXT = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=400),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=40),  # lone surrogates too
    st.text(alphabet=" \t\n\r\x00\u3000\u00a0\u200b\ufeff０１２３４５６７８９+-()", max_size=40),
    st.text(min_size=250, max_size=2000),
    st.sampled_from([*PHONE_SPELLINGS, VALID_ID, VALID_ID.lower(), "buyer@example.com"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(id_type=st.sampled_from(IDENTIFIER_TYPES), value=ANY_TEXT)
def test_any_string_either_tokenises_or_raises_invalid_identifier(id_type: str, value: str) -> None:
    token = attempt(tokenize, id_type, value, KEY)
    if isinstance(token, InvalidIdentifier):
        assert token.id_type == id_type
        assert token.reason
        return
    assert HEX64.match(token)
    assert token == reference_token(id_type, normalize(id_type, value))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(id_type=st.sampled_from(IDENTIFIER_TYPES), value=ANY_TEXT)
def test_tokenize_is_deterministic_and_normalisation_is_stable(id_type: str, value: str) -> None:
    try:
        first = tokenize(id_type, value, KEY)
    except InvalidIdentifier:
        with pytest.raises(InvalidIdentifier):
            tokenize(id_type, value, KEY)
        return
    assert tokenize(id_type, value, KEY) == first
    normalised = normalize(id_type, value)
    # A platform that stored the normalised form gets the same token again: normalisation is idempotent.
    assert normalize(id_type, normalised) == normalised
    assert tokenize(id_type, normalised, KEY) == first


MARKER = "Zq7xW"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(id_type=st.sampled_from(IDENTIFIER_TYPES), before=st.text(max_size=300), after=st.text(max_size=300))
def test_a_rejected_value_is_never_echoed(id_type: str, before: str, after: str) -> None:
    value = before + MARKER + after
    outcome = attempt(tokenize, id_type, value, KEY)
    if isinstance(outcome, InvalidIdentifier):
        assert MARKER not in f"{outcome} {outcome.reason} {outcome.detail} {outcome.args!r}"


@settings(deadline=None)
@given(st.from_regex(r"\A1[3-9][0-9]{9}\Z"), st.sampled_from(["{}", "+86 {}", "+86-{}", " {} "]))
def test_mainland_mobiles_normalise_alike_whatever_the_prefix(digits: str, template: str) -> None:
    spelled = template.format(digits)
    try:
        plain = normalize("phone", digits)
    except InvalidIdentifier:
        with pytest.raises(InvalidIdentifier):
            normalize("phone", spelled)
        return
    assert normalize("phone", spelled) == plain == "+86" + digits
