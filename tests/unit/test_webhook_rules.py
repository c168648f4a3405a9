"""The webhook rules that need no network: the signature against the Standard Webhooks specification's
published example, the SSRF address rules, the URL rules and the retry schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from ledger.domain import webhooks as rules

# The example in the Standard Webhooks specification (standard-webhooks/standard-webhooks,
# spec/standard-webhooks.md, "Signature scheme"): secret, message id, timestamp, body and signature.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signing_reproduces_the_specification_vector() -> None:
    headers = rules.sign(SPEC_SECRET, SPEC_ID, datetime.fromtimestamp(SPEC_TIMESTAMP, UTC), SPEC_BODY)
    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_a_fresh_signature_verifies_with_the_library_receivers_use() -> None:
    secret = rules.new_secret()
    assert secret.startswith("whsec_")
    body = '{"type":"dispute.opened","data":{}}'
    headers = rules.sign(secret, "msg_1", datetime.now(UTC), body)
    assert Webhook(secret).verify(body, headers) == {"type": "dispute.opened", "data": {}}


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("fc00::1", "private"),
        ("100.64.0.1", "not a public"),
        ("224.0.0.1", "not a public"),
    ],
)
def test_internal_addresses_are_refused(address: str, reason: str) -> None:
    why = rules.refusal([address])
    assert why is not None
    assert reason in why
    assert rules.refusal([address], rules.parse_networks("0.0.0.0/0,::/0")) is None  # the operator allows


def test_every_address_of_a_name_must_pass() -> None:
    assert rules.refusal(["93.184.215.14"]) is None
    assert rules.refusal(["93.184.215.14", "10.0.0.1"]) is not None
    assert rules.refusal([]) == "the host does not resolve"


def test_plain_http_only_outside_production() -> None:
    with pytest.raises(ValueError, match="https"):
        rules.parse_url("http://example.com/hook", https_only=True)
    target = rules.parse_url("https://example.com:8443/hook?x=1", https_only=True)
    assert (target.scheme, target.host, target.port, target.path) == (
        "https",
        "example.com",
        8443,
        "/hook?x=1",
    )
    assert rules.parse_url("http://example.com", https_only=False).path == "/"
    with pytest.raises(ValueError, match="credentials"):
        rules.parse_url("https://a:b@example.com/", https_only=True)


@given(st.integers(1, 60), st.floats(0.001, 60))
def test_backoff_doubles_and_is_capped(attempt: int, base: float) -> None:
    wait = rules.backoff_seconds(attempt, base)
    assert wait <= 2 * 3600
    assert wait == min(2 * 3600, base * 2 ** (attempt - 1))
    assert rules.backoff_seconds(attempt + 1, base) >= wait


def test_a_day_of_retries_at_the_default_base() -> None:
    """With the default 5 s base the schedule keeps trying for the whole 24 hours, about twenty times."""
    elapsed, attempts = 0.0, 0
    while elapsed <= 24 * 3600:
        attempts += 1
        elapsed += rules.backoff_seconds(attempts, 5.0)
    assert 15 <= attempts <= 25
