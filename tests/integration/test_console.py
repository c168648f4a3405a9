"""The operator console through Flask's test client, written as the attacks it must withstand: forged
forms, the wrong keys, dead sessions, raw identifiers leaking into pages, Redis or logs. The browser test
(tests/e2e/test_console_browser.py) drives the same pages in Chromium."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis

from ledger import create_app
from ledger.config import Settings
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from tests.support import REDIS_URL, Member, incident_body, run_ledger

PHONE = "13800138000"
PAGES = (
    "/console/overview",
    "/console/disputes",
    "/console/platforms",
    "/console/purpose",
    "/console/ledger",
)
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: Any, key: str) -> Any:
    form = client.get("/console/signin")
    assert form.status_code == 200
    return client.post(
        "/console/signin", data={"csrf_token": csrf_of(form.get_data(as_text=True)), "key": key}
    )


@pytest.fixture
def operator(make_platform: Callable[..., Member]) -> Member:
    return make_platform("operator", "admin,dispute")


@pytest.fixture
def desk(rt: Runtime, operator: Member) -> Member:
    issued = platform_service.rotate_key(rt, "operator", "dispute")
    return Member("operator", issued.key, issued.key_id)


def actions(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT role, action, outcome, key_id, detail FROM console_actions ORDER BY id"
        ).fetchall()


def test_an_operator_signs_in_to_a_session_cookie_that_is_httponly_strict_and_expiring(
    client: Any, operator: Member, database_url: str
) -> None:
    response = sign_in(client, operator.key)
    assert response.status_code == 303
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("ccl_console="))
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Max-Age=" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # test mode; production is checked below
    assert operator.key not in cookie
    for page in (*PAGES, "/console/desk"):
        answer = client.get(page)
        assert answer.status_code == 200, page
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["Cache-Control"] == "no-store"
        assert operator.key not in answer.get_data(as_text=True)
    assert ("operator", "sign_in", "ok", operator.key_id, {}) in actions(database_url)


def test_the_session_cookie_is_secure_outside_demo_and_test(settings: Settings, clean: None) -> None:
    # Production mode requires the log's key as well as the identity key.
    app = create_app(settings.with_(environment="production", log_key=base64.b64encode(bytes(32)).decode()))
    try:
        rt = app.extensions["ledger.runtime"]
        issued = platform_service.create_platform(rt, "operator", "Operator", "admin", operator=True)
        response = sign_in(app.test_client(), issued.key)
        cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("ccl_console="))
        assert "Secure" in cookie
    finally:
        app.extensions["ledger.runtime"].close()


def test_the_session_store_holds_no_key_and_no_session_id(client: Any, operator: Member) -> None:
    response = sign_in(client, operator.key)
    session_id = re.search(r"ccl_console=([^;]+)", response.headers["Set-Cookie"]).group(1)  # type: ignore[union-attr]
    store = redis.Redis.from_url(REDIS_URL)
    keys = list(store.scan_iter(match="ccl:cs:*"))
    assert len(keys) == 1
    assert session_id not in keys[0].decode()
    value = store.get(keys[0]).decode()  # type: ignore[union-attr]
    assert operator.key not in value
    assert session_id not in value
    assert 0 < store.ttl(keys[0]) <= 30 * 60


def test_a_report_key_cannot_sign_in(client: Any, alpha: Member, database_url: str) -> None:
    response = sign_in(client, alpha.key)
    assert response.status_code == 403
    assert not any(h.startswith("ccl_console=") for h in response.headers.getlist("Set-Cookie"))
    assert client.get("/console/overview").status_code == 302
    assert ("anonymous", "sign_in", "refused", alpha.key_id, {}) in actions(database_url)


def test_an_unknown_key_cannot_sign_in_and_attempts_are_rate_limited(client: Any) -> None:
    statuses = [sign_in(client, f"ccl_{'0' * 12}_{'x' * 40}").status_code for _ in range(25)]
    assert statuses[0] == 401
    assert statuses[-1] == 429


def test_sign_in_without_its_csrf_token_is_refused(client: Any, operator: Member) -> None:
    response = client.post("/console/signin", data={"key": operator.key})
    assert response.status_code == 403
    assert not any(h.startswith("ccl_console=") for h in response.headers.getlist("Set-Cookie"))


def test_a_form_without_the_csrf_token_is_refused_and_changes_nothing(
    client: Any, operator: Member, alpha: Member, rt: Runtime, database_url: str
) -> None:
    assert sign_in(client, operator.key).status_code == 303
    forged = [
        ("/console/platforms", {"slug": "mallory", "name": "Mallory", "scope_report": "1"}),
        (f"/console/keys/{alpha.key_id}/revoke", {}),
        ("/console/platforms/alpha/trust", {"trust": "0.2"}),
        ("/console/platforms/alpha/rate-limit", {"per_second": "1", "burst": "1"}),
        ("/console/desk/report", {"type_0": "phone", "value_0": PHONE}),
        ("/console/signout", {}),
    ]
    for path, form in forged:
        assert client.post(path, data=form).status_code == 403, path
        assert client.post(path, data={**form, "csrf_token": "wrong"}).status_code == 403, path
    slugs = [p["slug"] for p in platform_service.list_platforms(rt)]
    assert "mallory" not in slugs
    alpha_row = next(p for p in platform_service.list_platforms(rt) if p["slug"] == "alpha")
    assert alpha_row["operator_trust"] == 1.0
    assert alpha_row["rate_per_second"] is None
    assert alpha_row["active_keys"] == 1
    assert client.get("/console/overview").status_code == 200  # still signed in
    refused = [a for a in actions(database_url) if a[2] == "refused"]
    assert len(refused) == 2 * len(forged)
    assert all(a[4] == {"reason": "csrf"} for a in refused)


def test_a_desk_key_reaches_the_desk_and_nothing_of_the_operator(client: Any, desk: Member) -> None:
    assert sign_in(client, desk.key).status_code == 303
    assert client.get("/console/").headers["Location"].endswith("/console/desk")
    desk_page = client.get("/console/desk").get_data(as_text=True)
    token = csrf_of(desk_page)
    assert "/console/platforms" not in desk_page
    for page in PAGES:
        assert client.get(page).status_code == 403, page
    response = client.post(
        "/console/platforms", data={"csrf_token": token, "slug": "sneaky", "name": "S", "scope_admin": "1"}
    )
    assert response.status_code == 403
    assert client.post("/console/platforms/operator/keys", data={"csrf_token": token}).status_code == 403


def test_a_signed_out_session_reaches_nothing(client: Any, operator: Member, alpha: Member) -> None:
    sign_in(client, operator.key)
    token = csrf_of(client.get("/console/overview").get_data(as_text=True))
    cookie = client.get_cookie("ccl_console", path="/console")
    assert cookie is not None
    response = client.post("/console/signout", data={"csrf_token": token})
    assert response.status_code == 303
    # Replay the old cookie, as an attacker who copied it would.
    client.set_cookie("ccl_console", cookie.value, path="/console")
    for page in (*PAGES, "/console/desk", "/console/desk/report", "/console/"):
        answer = client.get(page)
        assert answer.status_code == 302, page
        assert answer.headers["Location"].endswith("/console/signin")
    assert client.post(f"/console/keys/{alpha.key_id}/revoke", data={"csrf_token": token}).status_code == 401


def test_revoking_the_key_ends_its_sessions(client: Any, operator: Member, rt: Runtime) -> None:
    sign_in(client, operator.key)
    assert client.get("/console/overview").status_code == 200
    platform_service.revoke_key(rt, operator.key_id)
    client.application.extensions["ledger.keys"]._cache.clear()  # skip the 1 s key cache
    assert client.get("/console/overview").status_code == 302


def test_no_raw_identifier_reaches_a_page_redis_the_database_or_the_logs(
    client: Any,
    operator: Member,
    alpha: Member,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert (
        client.post("/v1/incidents", json=incident_body("order-1"), headers=alpha.headers).status_code == 201
    )
    sign_in(client, operator.key)
    token = csrf_of(client.get("/console/desk").get_data(as_text=True))
    caplog.set_level(logging.DEBUG)
    email = "Consumer.Name@Example.com"
    response = client.post(
        "/console/desk/report",
        data={"csrf_token": token, "type_0": "phone", "value_0": PHONE, "type_1": "email", "value_1": email},
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/console/desk/report")
    raw = (PHONE, "+86" + PHONE, email, email.lower())
    page = client.get("/console/desk/report").get_data(as_text=True)
    assert "order-1" not in page  # the platform's own reference is not the consumer's business either
    assert "data-incident=" in page  # the incident is there
    for value in raw:
        assert value not in page
        assert value not in response.get_data(as_text=True)
        assert value not in caplog.text
    store = redis.Redis.from_url(REDIS_URL)
    for key in store.scan_iter(match="ccl:*"):
        if store.type(key) == b"string":
            stored = store.get(key) or b""
            assert not any(value.encode() in stored for value in raw), key
    with psycopg.connect(database_url) as conn:
        dump = str(conn.execute("SELECT detail FROM console_actions").fetchall())
    assert not any(value in dump for value in raw)
    # A bad identifier is refused naming its position, without echoing what was typed.
    bad = client.post(
        "/console/desk/report", data={"csrf_token": token, "type_0": "phone", "value_0": "12345-not-a-phone"}
    )
    assert bad.status_code == 422
    assert "12345-not-a-phone" not in bad.get_data(as_text=True)


def test_the_desk_opens_a_dispute_that_the_operator_sees_in_the_queue(
    client: Any, operator: Member, alpha: Member, database_url: str
) -> None:
    assert (
        client.post("/v1/incidents", json=incident_body("order-1"), headers=alpha.headers).status_code == 201
    )
    sign_in(client, operator.key)
    token = csrf_of(client.get("/console/desk").get_data(as_text=True))
    client.post("/console/desk/report", data={"csrf_token": token, "type_0": "phone", "value_0": PHONE})
    response = client.post(
        "/console/desk/dispute",
        data={"csrf_token": token, "incident": "all", "statement": "商品完好，我没有申请仅退款"},
    )
    assert response.status_code == 303
    assert "opened=1" in response.headers["Location"]
    queue = client.get("/console/disputes").get_data(as_text=True)
    assert "商品完好，我没有申请仅退款" in queue
    assert "Alpha" in queue
    assert ("operator", "open_dispute", "ok", operator.key_id, {"incident": "all"}) in actions(database_url)


def test_operator_actions_work_and_are_recorded_with_who(
    client: Any, operator: Member, alpha: Member, rt: Runtime, database_url: str
) -> None:
    sign_in(client, operator.key)
    token = csrf_of(client.get("/console/platforms").get_data(as_text=True))
    created = client.post(
        "/console/platforms",
        data={
            "csrf_token": token,
            "slug": "gamma",
            "name": "Gamma 商城",
            "scope_report": "1",
            "scope_lookup": "1",
        },
    )
    assert created.status_code == 200
    key = re.search(r'<code id="new-key">([^<]+)</code>', created.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    assert client.get("/console/platforms").get_data(as_text=True).count(key) == 0  # shown once
    assert (
        client.post(
            "/v1/lookups",
            json={"identifiers": [{"type": "phone", "value": PHONE}], "purpose": "refund_review"},
            headers={"Authorization": f"Bearer {key}"},
        ).status_code
        == 200
    )
    assert (
        client.post("/console/platforms/gamma/trust", data={"csrf_token": token, "trust": "0.6"}).status_code
        == 303
    )
    assert (
        client.post("/console/platforms/gamma/trust", data={"csrf_token": token, "trust": "7"}).status_code
        == 422
    )
    assert (
        client.post(
            "/console/platforms/gamma/rate-limit",
            data={"csrf_token": token, "per_second": "50", "burst": "80"},
        ).status_code
        == 303
    )
    revoke = client.post(
        f"/console/keys/{alpha.key_id}/revoke", data={"csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert revoke.status_code == 200
    assert f'id="key-{alpha.key_id}"' in revoke.get_data(as_text=True)
    gamma = next(p for p in platform_service.list_platforms(rt) if p["slug"] == "gamma")
    assert (gamma["operator_trust"], gamma["rate_per_second"], gamma["rate_burst"]) == (0.6, 50, 80)
    logged = [(a[1], a[2], a[3]) for a in actions(database_url)]
    for action, outcome in (
        ("create_platform", "ok"),
        ("set_trust", "ok"),
        ("set_trust", "refused"),
        ("set_rate_limit", "ok"),
        ("revoke_key", "ok"),
    ):
        assert (action, outcome, operator.key_id) in logged
    page = client.get("/console/ledger").get_data(as_text=True)
    assert "revoke_key" not in page or "撤销密钥" in page  # labels, not codes
    assert "撤销密钥" in page
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM console_actions")


def test_ledger_verify_result_is_shown_on_the_ledger_page(
    client: Any, operator: Member, settings: Settings
) -> None:
    sign_in(client, operator.key)
    assert "尚未运行" in client.get("/console/ledger").get_data(as_text=True)
    assert run_ledger(settings, "verify").returncode == 0
    page = client.get("/console/ledger").get_data(as_text=True)
    assert 'id="verify-result" class="ok"' in page


def test_english_is_available_and_chinese_is_the_default(client: Any, operator: Member) -> None:
    sign_in(client, operator.key)
    assert "申诉队列" in client.get("/console/disputes").get_data(as_text=True)
    client.get("/console/language/en")
    page = client.get("/console/disputes").get_data(as_text=True)
    assert "Disputes queue" in page
    assert "申诉队列" not in page


def test_a_dispute_past_its_deadline_shows_what_the_sla_job_did(
    client: Any, operator: Member, alpha: Member, settings: Settings
) -> None:
    assert (
        client.post("/v1/incidents", json=incident_body("order-1"), headers=alpha.headers).status_code == 201
    )
    sign_in(client, operator.key)
    token = csrf_of(client.get("/console/desk").get_data(as_text=True))
    client.post("/console/desk/report", data={"csrf_token": token, "type_0": "phone", "value_0": PHONE})
    client.post("/console/desk/dispute", data={"csrf_token": token, "incident": "all", "statement": "逾期"})
    assert 'id="expired-disputes"' not in client.get("/console/disputes").get_data(as_text=True)
    later = (datetime.now(UTC) + timedelta(days=31)).isoformat()
    assert run_ledger(settings, "disputes", "expire", "--now", later).returncode == 0
    page = client.get("/console/disputes").get_data(as_text=True)
    assert 'id="open-disputes"' not in page
    expired = page.split('id="expired-disputes"', 1)[1]
    assert "SLA 任务于" in expired
    assert "平台未在期限内复核，自动撤销" in expired  # the incident's status reason, labelled
