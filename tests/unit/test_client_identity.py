"""The member library tokenises exactly as the server does, from the same code.

`clients/python/ledger_client/_identity.py` is generated from `ledger/identity.py` by
`clients/python/vendor_identity.py`; the first test fails the build when someone edits one without
regenerating the other. The property test then runs both on the same inputs: equal tokens, or the same
refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ledger_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_client import errors as client_errors

from ledger import identity
from ledger.errors import InvalidIdentifier

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-identity-key-0123456789abcdef"


@pytest.mark.process
def test_the_vendored_copy_is_current() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "clients/python/vendor_identity.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _outcome(module: object, id_type: str, value: str) -> tuple[str, str]:
    try:
        return ("token", module.tokenize(id_type, value, KEY))  # type: ignore[attr-defined]
    except (InvalidIdentifier, client_errors.InvalidIdentifier) as exc:
        return ("refused", exc.reason)


PHONES = st.builds(
    lambda prefix, head, rest, sep: f"{prefix}{head}{sep}{rest[:4]}{sep}{rest[4:]}",
    st.sampled_from(["", "+86", "0086", "86 ", "+86 "]),
    st.sampled_from(["138", "139", "150", "186", "199", "170", "123"]),
    st.text("0123456789", min_size=8, max_size=8),
    st.sampled_from(["", " ", "-"]),
)
ANY_TEXT = st.text(min_size=0, max_size=40)
ID_CARDS = st.text("0123456789", min_size=17, max_size=17).flatmap(
    lambda first: st.sampled_from([first + identity.id_card_check_digit(first), first + "0", first + "x"])
)
EMAILS = st.emails() | st.builds(lambda e: e.upper(), st.emails())


@settings(max_examples=300)
@given(
    st.sampled_from(identity.IDENTIFIER_TYPES).flatmap(
        lambda t: st.tuples(
            st.just(t),
            {"phone": PHONES | ANY_TEXT, "id_card": ID_CARDS | ANY_TEXT, "email": EMAILS | ANY_TEXT}.get(
                t, ANY_TEXT
            ),
        )
    )
)
def test_client_tokens_equal_the_servers(case: tuple[str, str]) -> None:
    id_type, value = case
    assert _outcome(ledger_client, id_type, value) == _outcome(identity, id_type, value)


def test_a_known_token() -> None:
    server = identity.tokenize("phone", "+86 138-0013-8000", KEY)
    assert ledger_client.tokenize("phone", "１３８ ００１３ ８０００", KEY) == server
    assert ledger_client.token_identifier("phone", "13800138000", KEY) == {"type": "phone", "token": server}
    with pytest.raises(ValueError, match="check digit"):
        ledger_client.tokenize("id_card", "110105194912310021", KEY)


@pytest.mark.process
def test_the_library_imports_no_server_dependency() -> None:
    """Installable without Flask, Celery or psycopg: importing and using it loads none of them."""
    code = (
        "import sys, ledger_client; ledger_client.tokenize('phone', '13800138000', 'k' * 16); "
        "bad = [m for m in ('flask', 'celery', 'psycopg', 'redis', 'marshmallow', 'ledger') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT / "clients/python",
    )
    assert done.returncode == 0, done.stdout + done.stderr
