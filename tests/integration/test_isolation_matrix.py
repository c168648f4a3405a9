"""Tenant isolation: every endpoint against three platforms and every scope.

A platform may never read or change another platform's incident, lookup or dispute, and may never learn
from a status code or body whether another platform's id exists: a foreign id must be answered exactly
like an id that does not exist. The matrix size is reported in the README's Reliability section.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from ledger.services import outbox_work
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from tests.support import Member, incident_body, integrate

SCOPES = ("report", "lookup", "dispute", "admin")
MEMBER_SCOPES = ("report", "lookup")
OPERATOR_SCOPES = ("dispute", "admin")
OPERATOR = "consortium-operator"
PLATFORMS = ("acme-mall", "bazaar-hub", "cedar-shop")
UNKNOWN = "00000000-0000-4000-8000-00000000abcd"
PHONE = {"type": "phone", "value": "13800138000"}


def _strip(body: Any) -> Any:
    """The parts of a problem body that could leak existence (everything but nothing-varying fields)."""
    return {k: v for k, v in (body or {}).items() if k != "instance"}


@pytest.fixture
def world(client: Any, make_platform: Callable[..., Member], rt: Runtime) -> dict[str, Any]:
    """Three platforms, each with one key per single scope, one incident, one lookup and one dispute."""
    keys: dict[tuple[str, str], Member] = {}
    for slug in PLATFORMS:
        owner = make_platform(slug, "report,lookup")
        keys[(slug, "all")] = owner
        for scope in MEMBER_SCOPES:
            issued = platform_service.rotate_key(rt, slug, scope)
            keys[(slug, scope)] = Member(slug, issued.key, issued.key_id)
    # The operator's keys stand in for the member's operator scopes: a member can hold neither.
    make_platform(OPERATOR, "dispute,admin", operator=True)
    for scope in OPERATOR_SCOPES:
        issued = platform_service.rotate_key(rt, OPERATOR, scope)
        for slug in PLATFORMS:
            keys[(slug, scope)] = Member(OPERATOR, issued.key, issued.key_id)
    owned: dict[str, dict[str, str]] = {}
    for n, slug in enumerate(PLATFORMS):
        phone = {"type": "phone", "value": f"1380013800{n}"}
        created = client.post(
            "/v1/incidents",
            json=incident_body(f"{slug}-order", identifiers=[phone]),
            headers=keys[(slug, "all")].headers,
        )
        assert created.status_code == 201
        outbox_work.flush_outbox(rt)
        looked = client.post(
            "/v1/lookups",
            json={"identifiers": [phone], "purpose": "refund_review"},
            headers=keys[(slug, "all")].headers,
        )
        assert looked.status_code == 200
        owned[slug] = {
            "incident": created.get_json()["id"],
            "lookup": looked.get_json()["lookup_id"],
            "phone": phone["value"],
        }
    operator = keys[(PLATFORMS[0], "dispute")]
    for slug in PLATFORMS:
        opened = client.post(
            "/v1/disputes",
            json={
                "identifiers": [{"type": "phone", "value": owned[slug]["phone"]}],
                "incident_id": owned[slug]["incident"],
            },
            headers=operator.headers,
        )
        assert opened.status_code == 201, opened.get_json()
        owned[slug]["dispute"] = opened.get_json()["disputes"][0]["id"]
    integrate(rt)  # every lookup above becomes a leaf of the inquiry log, under a signed checkpoint
    return {"keys": keys, "owned": owned}


# (method, path template, scope, resource kind or None, json body)
OWNED_ENDPOINTS = [
    ("GET", "/v1/incidents/{incident}", "report", "incident", None),
    ("POST", "/v1/incidents/{incident}/retract", "report", "incident", {"reason": "reported_in_error"}),
    ("GET", "/v1/lookups/{lookup}", "lookup", "lookup", None),
    # Each lookup is a leaf of the inquiry log (integrated in `world`): its proof is the owner's alone.
    ("GET", "/v1/log/inquiries/inclusion?lookup_id={lookup}", "lookup", "lookup", None),
    (
        "POST",
        "/v1/disputes/{dispute}/response",
        "report",
        "dispute",
        {"outcome": "upheld", "basis": "platform_review"},
    ),
]
OPEN_ENDPOINTS = [
    ("POST", "/v1/incidents", "report", incident_body("matrix-new")),
    ("POST", "/v1/incidents/batch", "report", {"incidents": [incident_body("matrix-batch")]}),
    ("POST", "/v1/lookups", "lookup", {"identifiers": [PHONE], "purpose": "refund_review"}),
    (
        "POST",
        "/v1/lookups/batch",
        "lookup",
        {"lookups": [{"identifiers": [PHONE], "purpose": "refund_review"}]},
    ),
    ("GET", "/v1/disputes?status=open", "report", None),
    ("POST", "/v1/subjects/report", "dispute", {"identifiers": [PHONE]}),
    ("POST", "/v1/subjects/report/html", "dispute", {"identifiers": [PHONE]}),
    (
        "POST",
        "/v1/references",
        "report",
        {"references": [{"kind": "listing", "reference": "matrix-sku", "pdq": ["ab" * 32]}]},
    ),
    (
        "POST",
        "/v1/references/replace",
        "report",
        {"references": [{"kind": "shipping", "reference": "matrix-order", "pdq": ["cd" * 32]}]},
    ),
    (
        "POST",
        "/v1/references/remove",
        "report",
        {"references": [{"kind": "listing", "reference": "matrix-sku"}]},
    ),
]


def call(client: Any, method: str, path: str, member: Member, body: Any) -> Any:
    return client.open(path, method=method, json=body, headers=member.headers)


def test_owned_resources_matrix(client: Any, world: dict[str, Any]) -> None:
    keys, owned = world["keys"], world["owned"]
    checked = 0
    for (method, template, scope, kind, body), caller, owner, key_scope in itertools.product(
        OWNED_ENDPOINTS, PLATFORMS, PLATFORMS, SCOPES
    ):
        if caller == owner:
            continue  # the owner's own access is exercised by the feature tests; here only foreign access
        member = keys[(caller, key_scope)]
        foreign = call(client, method, template.format(**{kind: owned[owner][kind]}), member, body)
        unknown = call(client, method, template.format(**{kind: UNKNOWN}), member, body)
        expected = 403 if key_scope != scope else 404
        assert foreign.status_code == expected, (
            method,
            template,
            caller,
            owner,
            key_scope,
            foreign.get_json(),
        )
        assert (unknown.status_code, _strip(unknown.get_json())) == (
            foreign.status_code,
            _strip(foreign.get_json()),
        )
        checked += 1
    assert checked == len(OWNED_ENDPOINTS) * len(PLATFORMS) * (len(PLATFORMS) - 1) * len(SCOPES)
    # Nothing changed for the owners.
    for slug in PLATFORMS:
        incident = client.get(
            f"/v1/incidents/{owned[slug]['incident']}", headers=keys[(slug, "report")].headers
        )
        assert incident.get_json()["status"] == "disputed"
        proof = client.get(
            f"/v1/log/inquiries/inclusion?lookup_id={owned[slug]['lookup']}",
            headers=keys[(slug, "lookup")].headers,
        )
        assert proof.status_code == 200, proof.get_json()


def test_scope_matrix_for_open_endpoints(client: Any, world: dict[str, Any]) -> None:
    keys = world["keys"]
    for (method, path, scope, body), slug, key_scope in itertools.product(OPEN_ENDPOINTS, PLATFORMS, SCOPES):
        response = call(client, method, path, keys[(slug, key_scope)], body)
        if key_scope == scope:
            assert response.status_code in (200, 201), (method, path, slug, response.get_json())
        else:
            assert response.status_code == 403, (method, path, slug, key_scope)
            assert response.headers["Content-Type"].startswith("application/problem+json")


def test_lookups_never_reveal_reporters(client: Any, world: dict[str, Any], rt: Runtime) -> None:
    keys, owned = world["keys"], world["owned"]
    names = [*PLATFORMS, *(p.replace("-", " ").title() for p in PLATFORMS)]
    secrets = [owned[p]["incident"] for p in PLATFORMS] + [f"{p}-order" for p in PLATFORMS]
    for slug in PLATFORMS:
        for other in PLATFORMS:
            response = client.post(
                "/v1/lookups",
                json={
                    "identifiers": [{"type": "phone", "value": owned[other]["phone"]}],
                    "purpose": "refund_review",
                },
                headers=keys[(slug, "lookup")].headers,
            )
            text = response.get_data(as_text=True).lower()
            for needle in names + secrets:
                assert needle.lower() not in text, (slug, other, needle)


def test_reference_checks_never_reveal_platform_or_reference(
    client: Any, world: dict[str, Any], rt: Runtime
) -> None:
    """Every platform registers a listing and a shipping photo under telling references; every
    platform's lookups with those hashes learn the kind and the distance, and nothing else."""
    keys = world["keys"]
    hashes = {
        slug: {"listing": f"{n + 1:02x}" * 32, "shipping": f"{n + 0x41:02x}" * 32}
        for n, slug in enumerate(PLATFORMS)
    }
    for slug in PLATFORMS:
        items = [{"kind": k, "reference": f"{slug}-{k}-ref", "pdq": [h]} for k, h in hashes[slug].items()]
        assert (
            client.post(
                "/v1/references", json={"references": items}, headers=keys[(slug, "report")].headers
            ).status_code
            == 200
        )
    rt.reference_matcher.current(max_age=0)
    names = [
        *PLATFORMS,
        *(p.replace("-", " ").title() for p in PLATFORMS),
        "-ref",
        "platform_id",
        '"platform":',
    ]
    for slug in PLATFORMS:
        for other in PLATFORMS:
            response = client.post(
                "/v1/lookups",
                json={
                    "identifiers": [PHONE],
                    "purpose": "refund_review",
                    "evidence": {"pdq": [hashes[other]["listing"], hashes[other]["shipping"]]},
                },
                headers=keys[(slug, "lookup")].headers,
            )
            answer = response.get_json()
            listing, shipping = answer["evidence_matches"]
            assert listing["derived_from_reference"] == {"kind": "listing", "distance": 0}
            expected = {"kind": "shipping", "distance": 0} if slug == other else None
            assert shipping["derived_from_reference"] == expected
            text = response.get_data(as_text=True).lower()
            for needle in names:
                assert needle.lower() not in text, (slug, other, needle)


def test_unauthenticated_everywhere(client: Any, world: dict[str, Any]) -> None:
    owned = world["owned"][PLATFORMS[0]]
    paths = [(m, t.format(**{k: owned[k]}) if k else t, b) for m, t, _, k, b in OWNED_ENDPOINTS]
    paths += [(m, p, b) for m, p, _, b in OPEN_ENDPOINTS]
    attempts = itertools.count()
    for method, path, body in paths:
        for headers in (
            {},
            {"Authorization": "Bearer ccl_000000000000_" + "A" * 43},
            {"Authorization": "Basic eDp5"},
        ):
            # A fresh client address each time, so brute-force protection (429) does not kick in here.
            environ = {"REMOTE_ADDR": f"192.0.2.{next(attempts)}"}
            response = client.open(path, method=method, json=body, headers=headers, environ_base=environ)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_brute_force_is_rate_limited(client: Any, world: dict[str, Any]) -> None:
    statuses = []
    for n in range(30):
        guess = {"Authorization": f"Bearer ccl_{n:012x}_" + "B" * 43}
        statuses.append(client.get("/v1/disputes", headers=guess).status_code)
    assert statuses[:20] == [401] * 20
    assert statuses[-1] == 429
    # The right key is never refused by the block (tests/integration/test_auth_lockout.py); further
    # guesses from that address are, and another address's are not.
    good = world["keys"][(PLATFORMS[0], "report")].headers
    assert client.get("/v1/disputes", headers=good).status_code == 200
    blocked = client.get("/v1/disputes", headers={"Authorization": "Bearer ccl_00000000ffff_" + "C" * 43})
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    guess = {"Authorization": "Bearer ccl_00000000fffe_" + "C" * 43}
    assert (
        client.get("/v1/disputes", headers=guess, environ_base={"REMOTE_ADDR": "192.0.2.200"}).status_code
        == 401
    )


@pytest.mark.parametrize("scopes", ["dispute", "admin", "report,dispute", "lookup,admin"])
def test_a_member_cannot_be_given_an_operator_scope(rt: Runtime, scopes: str) -> None:
    from ledger.errors import InvalidInput

    with pytest.raises(InvalidInput):
        platform_service.create_platform(rt, "greedy-shop", "Greedy", scopes)
    platform_service.create_platform(rt, "greedy-shop", "Greedy", "report,lookup")
    with pytest.raises(InvalidInput):
        platform_service.rotate_key(rt, "greedy-shop", scopes)


def test_the_database_refuses_an_operator_scope_on_a_member(rt: Runtime, alpha: Member) -> None:
    """Even a key written straight into the table (a script, a migration gone wrong) cannot carry it."""
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation), rt.db.transaction() as conn:
        conn.execute(
            """INSERT INTO api_keys (key_id, platform_id, digest, scopes)
               SELECT 'aaaaaaaaaaaa', id, '\\x00', ARRAY['report', 'dispute'] FROM platforms WHERE slug = 'alpha'"""
        )


def test_a_member_key_with_an_old_operator_scope_is_not_honoured(
    client: Any, alpha: Member, database_url: str
) -> None:
    """A key issued before the operator was modelled: the scope is in the row, and still refused."""
    import psycopg

    with psycopg.connect(database_url) as conn:  # as the owner: only it can disable the trigger
        conn.execute("ALTER TABLE api_keys DISABLE TRIGGER api_keys_scopes_fit")
        conn.execute(
            "UPDATE api_keys SET scopes = ARRAY['report', 'lookup', 'dispute'] WHERE key_id = %s",
            (alpha.key_id,),
        )
        conn.execute("ALTER TABLE api_keys ENABLE TRIGGER api_keys_scopes_fit")
    response = client.post("/v1/subjects/report", json={"identifiers": [PHONE]}, headers=alpha.headers)
    assert response.status_code == 403
    opened = client.post(
        "/v1/disputes", json={"identifiers": [PHONE], "all_entries": True}, headers=alpha.headers
    )
    assert opened.status_code == 403
