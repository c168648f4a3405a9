"""The lockout attack (H1): a stranger's bad keys must never lock a member out.

Behind the load balancer the docs recommend, every member reaches the API from the proxy's address.
Failed keys from that address used to block it before any key was checked, so 40 bad requests refused
every member's valid key with 429. Authentication now comes first; only *failures* from a blocked source
are refused. The client address comes from X-Forwarded-For only through the configured proxy hops.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger import create_app
from ledger.config import Settings
from ledger.services.platforms import AUTH_FAILURES
from tests.support import Member

PROXY = {"REMOTE_ADDR": "10.0.0.1"}  # the load balancer every member shares
PHONE = {"type": "phone", "value": "13800138000"}


def bad_key(n: int) -> dict[str, str]:
    return {"Authorization": f"Bearer ccl_{n:012x}_" + "B" * 43}


def lookup(client: Any, headers: dict[str, str], environ: dict[str, str]) -> Any:
    return client.post(
        "/v1/lookups",
        json={"identifiers": [PHONE], "purpose": "refund_review"},
        headers=headers,
        environ_base=environ,
    )


def test_bad_keys_then_a_valid_key_through_a_shared_proxy(client: Any, alpha: Member) -> None:
    failures = [lookup(client, bad_key(n), PROXY).status_code for n in range(40)]
    assert failures[:AUTH_FAILURES] == [401] * AUTH_FAILURES
    assert failures[-1] == 429  # the guessing itself is throttled
    # Every member behind the same proxy still gets through.
    statuses = [lookup(client, alpha.headers, PROXY).status_code for _ in range(9)]
    assert statuses == [200] * 9
    # And the source stays blocked for failures.
    refused = lookup(client, bad_key(99), PROXY)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0


def test_forwarded_for_is_ignored_without_trusted_proxies(client: Any, alpha: Member) -> None:
    """With no trusted proxy (the default), a client cannot dodge the block by inventing addresses."""
    statuses = [
        lookup(client, bad_key(n), {**PROXY, "HTTP_X_FORWARDED_FOR": f"203.0.113.{n}"}).status_code
        for n in range(AUTH_FAILURES + 2)
    ]
    assert statuses[-1] == 429


@pytest.fixture
def proxied(settings: Settings, clean: None) -> Iterator[Any]:
    application = create_app(settings.with_(trusted_proxy_hops=1))
    application.config["TESTING"] = True
    yield application.test_client()
    application.extensions["ledger.runtime"].close()


def test_one_trusted_hop_uses_the_address_the_proxy_appended(proxied: Any, make_platform: Any) -> None:
    # make_platform is bound to the default app's runtime; the database and Redis are the same.
    member = make_platform("alpha")
    attacker = "198.51.100.7"
    statuses = [
        # The attacker writes a new address on the left each time; the proxy appends the real one.
        lookup(
            proxied, bad_key(n), {**PROXY, "HTTP_X_FORWARDED_FOR": f"203.0.113.{n}, {attacker}"}
        ).status_code
        for n in range(AUTH_FAILURES + 2)
    ]
    assert statuses[:AUTH_FAILURES] == [401] * AUTH_FAILURES
    assert statuses[-1] == 429
    # The attacker's valid key (or a member's behind the same address) is still accepted.
    assert lookup(proxied, member.headers, {**PROXY, "HTTP_X_FORWARDED_FOR": attacker}).status_code == 200
    # Another client behind the same proxy is not blocked at all.
    other = lookup(proxied, bad_key(500), {**PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.8"})
    assert other.status_code == 401
