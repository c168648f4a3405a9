"""Normalise and tokenise consumer identifiers.

No raw identifier is ever stored: the ledger keeps only keyed HMAC-SHA256 tokens
(`hex(HMAC(key, "<type>:<normalised value>"))`), a keyed pseudonym as recommended by PIPL Art. 73 and
used by Tazama. Partners tokenise on their side with this same code: the member library
(`clients/python`) carries a generated copy of this file (`clients/python/vendor_identity.py`, checked
by a test), so it depends on nothing but the standard library and `phonenumbers`: no Flask, no database.

Normalisation matters as much as the key: two platforms must produce the same token for the same
person, so "138 0013 8000", "+86 138-0013-8000" and full-width digits all become "+8613800138000".
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

import phonenumbers

from ledger.errors import InvalidIdentifier

STRONG_TYPES = ("id_card", "phone", "email", "payment_account")
WEAK_TYPES = ("device_id",)
IDENTIFIER_TYPES = STRONG_TYPES + WEAK_TYPES

MAX_VALUE_LENGTH = 256
TOKEN_RE = re.compile(r"\A[0-9a-f]{64}\Z")
_EMAIL_RE = re.compile(r"\A[^@\s]+@[^@\s]+\.[^@\s]+\Z")
_ID_CARD_RE = re.compile(r"\A\d{17}[\dX]\Z")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_card_check_digit(first17: str) -> str:
    """GB 11643-1999 check character for the first 17 digits of a resident ID."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def _clean(id_type: str, value: str) -> str:
    if not isinstance(value, str):
        raise InvalidIdentifier(id_type, "must be a string")
    # NFKC folds full-width digits and letters ("１３８") into ASCII before any rule applies. ASCII text is
    # already in NFKC, so most identifiers skip the call.
    value = (value if value.isascii() else unicodedata.normalize("NFKC", value)).strip()
    if not value:
        raise InvalidIdentifier(id_type, "is empty")
    if len(value) > MAX_VALUE_LENGTH:
        raise InvalidIdentifier(id_type, f"is longer than {MAX_VALUE_LENGTH} characters")
    # For ASCII the only rejected category is Cc (0x00-0x1F and 0x7F), which is exactly what
    # str.isprintable() rejects there; one C-level call replaces a per-character category lookup.
    if value.isascii():
        if not value.isprintable():
            raise InvalidIdentifier(id_type, "contains control or unassigned characters")
    elif any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value):
        raise InvalidIdentifier(id_type, "contains control or unassigned characters")
    return value


# Most phones are mainland mobiles spelled "13912345678", "139 1234 5678", "139-1234-5678", with an optional
# "+86", "0086" or "86" in front. For those spellings `phonenumbers.parse(value, "CN")` (three quarters of
# the cost) always yields country code 86 and the 11 digits as the national number:
# - the 11 digits: CN's international prefixes ("00", "1[12]xx00", "179xx00") and its national prefix and
#   carrier codes ("0", "1[12]xx", "179xx") cannot match digits that start "13" to "19" except "179",
#   which the pattern leaves out, so nothing is stripped from them;
# - "+86" / "0086": the country code is read after the plus or the "00" prefix, then as above;
# - "86": 13 digits are longer than any CN length, so phonenumbers strips its own country code.
# Validity is still phonenumbers' decision. The argument rests on the CN metadata below; if a
# phonenumbers release changes it, the fast path switches itself off and every phone takes the full parse.
_CN_MOBILE_SPELLING_RE = re.compile(
    r"\A(?:(?:\+86|0086|86)[ -]?)?(1(?:[3-689][0-9]|7[0-8]))[ -]?([0-9]{4})[ -]?([0-9]{4})\Z"
)


def _cn_metadata_is_as_analysed() -> bool:
    cn = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    general = cn.general_desc if cn is not None else None
    if cn is None or general is None:
        return False
    lengths = (*(general.possible_length or ()), *(general.possible_length_local_only or ()))
    return (
        cn.country_code == 86
        and cn.international_prefix == r"00|1(?:[12]\d|79)\d\d00"
        and cn.national_prefix_for_parsing == r"(1(?:[12]\d|79)\d\d)|0"
        and not cn.national_prefix_transform_rule
        and bool(lengths)
        and max(lengths) < 13
    )


_CN_MOBILE_FAST_PATH = _cn_metadata_is_as_analysed()


def _normalize_phone(value: str) -> str:
    if _CN_MOBILE_FAST_PATH and (spelling := _CN_MOBILE_SPELLING_RE.match(value)):
        digits = "".join(spelling.groups())
        if not phonenumbers.is_valid_number(
            phonenumbers.PhoneNumber(country_code=86, national_number=int(digits))
        ):
            raise InvalidIdentifier("phone", "not a valid phone number")
        return "+86" + digits  # E.164 of country code 86 and a national number without leading zeros
    try:
        number = phonenumbers.parse(value, "CN")
    except phonenumbers.NumberParseException:
        raise InvalidIdentifier("phone", "not a valid phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier("phone", "not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize(id_type: str, value: str) -> str:
    """Return the canonical form of `value`, or raise InvalidIdentifier with a reason (never the value)."""
    if id_type not in IDENTIFIER_TYPES:
        raise InvalidIdentifier(
            id_type, f"unknown identifier type; expected one of {', '.join(IDENTIFIER_TYPES)}"
        )
    value = _clean(id_type, value)
    if id_type == "phone":
        return _normalize_phone(value)
    if id_type == "email":
        value = value.lower()
        if len(value) > 254 or not _EMAIL_RE.match(value):
            raise InvalidIdentifier("email", "not a valid e-mail address")
        return value
    if id_type == "id_card":
        value = value.upper()
        if not _ID_CARD_RE.match(value):
            raise InvalidIdentifier("id_card", "must be 17 digits followed by a digit or X")
        if id_card_check_digit(value[:17]) != value[17]:
            raise InvalidIdentifier("id_card", "check digit does not match (GB 11643)")
        return value
    return value  # device_id, payment_account: opaque, trimmed


def tokenize(id_type: str, value: str, key: str | bytes) -> str:
    """The keyed token for one identifier: hex(HMAC-SHA256(key, "<type>:<normalised value>"))."""
    normalised = normalize(id_type, value)
    key_bytes = key.encode() if isinstance(key, str) else key
    return hmac.new(key_bytes, f"{id_type}:{normalised}".encode(), hashlib.sha256).hexdigest()


def check_token(id_type: str, token: str) -> str:
    """Validate a token a partner computed on its side."""
    if id_type not in IDENTIFIER_TYPES:
        raise InvalidIdentifier(
            id_type, f"unknown identifier type; expected one of {', '.join(IDENTIFIER_TYPES)}"
        )
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise InvalidIdentifier(id_type, "token must be 64 lowercase hex characters")
    return token
