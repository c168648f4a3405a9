"""Console benchmark: the overview page at 1,000,000 incidents over 300,000 subjects.

Setup: a fresh database (default `bench_console`) with the synthetic ledger of benchmarks/_synth.py,
plus what the overview counts and _synth does not make: a score for every subject (tiers spread as the
policy's score bands cut a uniform score), 1,000,000 lookup records over the last 24 hours (about 42,000
in the last hour the lookups chart covers) and 3,000 open disputes with deadlines from 2 days overdue
to 30 days ahead.

The synthetic incidents are copied in subject order, so their report times are in random physical
order; a ledger appends them in report order. The reports-per-day count reads through a BRIN index on
`reported_at`, which narrows only when the physical order follows report time. The page is therefore
measured twice: on the table as loaded (the BRIN cannot help: a worst case no production table has) and
after the table is rewritten in report order (CLUSTER), as a ledger's own table is.

The page reads the overview's latest snapshot, which beat recomputes every 30 seconds (`ledger console
refresh`); while the page is measured, a thread here runs that refresh every 30 seconds, as beat would,
so its load is part of the figures. The snapshot's own cost, the four aggregate queries, is printed too.

Measured, one client, sequential requests to `ledger serve` (so each time is the server's render time
plus one loopback round trip):
  * GET /console/overview, signed in as an operator: p50, p99 and max over --requests renders;
  * the same page on an empty database (the fixed cost: session, template, no data), and GET /healthz
    (the server's floor), both measured in the same run as the baseline;
  * each of the overview's four queries alone, timed in PostgreSQL, to show what bounds the page;
  * in Debian's Chromium through Playwright: the time until the page's load event (the four charts
    are drawn before it: their scripts are deferred and run before DOMContentLoaded), p50 and p99.
Target: p99 <= 300 ms for the server render.

    .venv/bin/python benchmarks/console.py                 # load, measure, drop the database
    .venv/bin/python benchmarks/console.py --keep / --reuse
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import re
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from benchmarks import _common as c
from benchmarks import _synth

CHROMIUM = "/usr/bin/chromium"


def add_console_data(url: str, lookups: int, disputes: int) -> None:
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute(
            """INSERT INTO risk_scores (subject_id, score, tier, restrictions, reasons, incidents, platforms,
                                        last_incident_at, policy_version, computed_from_seq, computed_at)
               SELECT s.id, x.score,
                      CASE WHEN x.score >= 80 THEN 'hold' WHEN x.score >= 50 THEN 'return_required'
                           WHEN x.score >= 20 THEN 'review' ELSE 'clear' END,
                      '{}', '{}', 1, 1, now(), 'bench', 0, now()
               FROM subjects s, LATERAL (SELECT abs(hashint4(s.id::integer)) % 100 AS score) AS x"""
        )
        first = conn.execute("SELECT min(id) FROM platforms").fetchone()[0]  # type: ignore[index]
        conn.execute(
            """INSERT INTO lookups (id, platform_id, key_id, purpose, refund_ref, tokens_commitment, tier,
                                    reasons, response, at, leaf_hash)
               SELECT gen_random_uuid(), %s + g %% 8, 'bench', 'refund_review',
                      CASE WHEN g %% 7 = 0 THEN NULL ELSE 'RF-' || g END, 'bench',
                      (ARRAY['clear', 'clear', 'clear', 'review', 'return_required', 'hold'])[1 + g %% 6],
                      '{}', '{}'::jsonb, now() - g * (interval '1 day' / %s), sha256(g::text::bytea)
               FROM generate_series(1, %s) AS g""",
            (first, lookups, lookups),
        )
        conn.execute(
            """INSERT INTO disputes (id, incident_id, platform_id, opened_by, statement, status, respond_by,
                                     opened_at)
               SELECT gen_random_uuid(), i.id, i.platform_id, i.platform_id, '我没有申请仅退款，商品已退回',
                      'open', now() + ((row_number() OVER () %% 33) - 2) * interval '1 day' + interval '1 hour',
                      now() - interval '1 day'
               FROM (SELECT id, platform_id FROM incidents WHERE status = 'active' LIMIT %s) AS i""",
            (disputes,),
        )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) risk_scores, lookups, disputes")
    c.say(
        f"  scores, {lookups} lookups and {disputes} disputes added ({time.perf_counter() - started:.0f} s)"
    )


def cluster_by_report_time(url: str) -> None:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("CREATE INDEX IF NOT EXISTS bench_incidents_reported ON incidents (reported_at)")
        conn.execute("CLUSTER incidents USING bench_incidents_reported")
        conn.execute("DROP INDEX bench_incidents_reported")
        conn.execute("VACUUM (ANALYZE) incidents")
    c.say(f"  incidents rewritten in report order ({time.perf_counter() - started:.0f} s)")


def operator_cookie(env: dict[str, str], port: int) -> str:
    """Admit an operator platform, sign its key in through the form, return the session cookie."""
    slug = f"bench-operator-{int(time.time() * 1000) % 10**9}"
    key = c.ledger_cli(env, "platforms", "create", slug, "--name", "Operator", "--scopes", "admin")["key"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/console/signin")
    response = conn.getresponse()
    page = response.read().decode()
    pre = re.search(r"ccl_console_pre=([^;]+)", response.getheader("Set-Cookie") or "")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert pre, "no sign-in cookie"
    assert token, "no sign-in form"
    body = f"csrf_token={token.group(1)}&key={key}"
    conn.request(
        "POST",
        "/console/signin",
        body=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"ccl_console_pre={pre.group(1)}",
        },
    )
    response = conn.getresponse()
    response.read()
    session = re.search(r"ccl_console=([^;]+)", response.getheader("Set-Cookie") or "")
    assert response.status == 303, f"sign-in failed: {response.status}"
    assert session, "no session cookie"
    conn.close()
    return session.group(1)


def timed_gets(port: int, path: str, cookie: str | None, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Cookie": f"ccl_console={cookie}"} if cookie else {}
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status == 200, f"{path}: {response.status}"
    conn.close()
    return times


def summary(label: str, times: list[float]) -> str:
    return (
        f"{label:<44} p50 {c.percentile(times, 50):7.1f} ms  p99 {c.percentile(times, 99):7.1f} ms  "
        f"max {max(times):7.1f} ms  (n={len(times)})"
    )


def query_times(url: str, rounds: int = 10) -> dict[str, list[float]]:
    from ledger.storage import console as store

    now = datetime.now(UTC)
    queries = {
        "lookups per minute (60 min)": lambda conn: store.lookups_per_minute(
            conn, now - timedelta(minutes=60)
        ),
        "reports per day (30 days)": lambda conn: store.reports_per_day(conn, now - timedelta(days=30)),
        "tier distribution": store.tier_distribution,
        "open disputes by days left": lambda conn: store.open_disputes_by_days_left(conn, now),
    }
    out: dict[str, list[float]] = {}
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        for name, run in queries.items():
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                run(conn)
                times.append((time.perf_counter() - t0) * 1000)
            out[name] = times
    return out


def browser_loads(port: int, cookie: str, n: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{port}"
    loads = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_cookies([{"name": "ccl_console", "value": cookie, "url": base + "/console/"}])
        page = context.new_page()
        for _ in range(n):
            page.goto(base + "/console/overview", wait_until="load")
            assert page.locator("canvas[data-rendered='1']").count() == 4, "charts not drawn"
            loads.append(float(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")))
        browser.close()
    return loads


@contextlib.contextmanager
def beat_refresh(env: dict[str, str], every: float = 30.0) -> Iterator[None]:
    """What beat does while the pages are read: `ledger console refresh` now, then every 30 s."""
    c.ledger_cli(env, "console", "refresh")
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            c.ledger_cli(env, "console", "refresh")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def snapshot_times(url: str, rounds: int = 10) -> list[float]:
    """The whole overview computation, as beat runs it (four queries in one transaction)."""
    from ledger.config import Settings
    from ledger.services import console
    from ledger.services.runtime import Runtime

    rt = Runtime(Settings(database_url=url, redis_url=c.REDIS_URL, identity_key=c.IDENTITY_KEY))
    times = []
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            console.overview(rt)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        rt.close()
    return times


def measure(env: dict[str, str], config: c.ServerConfig, requests: int, label: str, browser: int) -> None:
    with c.ledger_server(env, config) as port, beat_refresh(env):
        cookie = operator_cookie(env, port)
        timed_gets(port, "/console/overview", cookie, 5)  # warm the pool and the page cache
        c.say(f"  ({c.load()} before {label})")
        c.say(summary(f"overview, {label}", timed_gets(port, "/console/overview", cookie, requests)))
        if browser:
            c.say(summary(f"  browser load event, {label}", browser_loads(port, cookie, browser)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=300_000)
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--disputes", type=int, default=3_000)
    parser.add_argument("--requests", type=int, default=200, help="overview renders per measurement")
    parser.add_argument("--browser", type=int, default=20, help="browser page loads per measurement")
    parser.add_argument(
        "--config", default=c.DEFAULT_SERVER, help="server configuration (see _common.parse_config)"
    )
    parser.add_argument("--database", default="bench_console")
    parser.add_argument("--keep", action="store_true", help="keep the loaded database")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a database kept by --keep (skip the load)"
    )
    args = parser.parse_args()
    config = c.parse_config(args.config)
    c.say(
        f"console benchmark: {args.incidents} incidents over {args.subjects} subjects; server {config}; {c.load()}"
    )

    with c.bench_database("bench_console_empty") as empty_url:
        env = c.ledger_env(empty_url)
        with c.ledger_server(env, config) as port, beat_refresh(env):
            cookie = operator_cookie(env, port)
            timed_gets(port, "/console/overview", cookie, 5)
            c.say(summary("baseline: /healthz", timed_gets(port, "/healthz", None, args.requests)))
            c.say(
                summary(
                    "baseline: overview, empty database",
                    timed_gets(port, "/console/overview", cookie, args.requests),
                )
            )

    url = c.db_url(args.database)
    database = None
    if not args.reuse:
        database = c.bench_database(args.database, keep=args.keep)
        database.__enter__()
        counts = _synth.load(url, args.incidents, args.subjects)
        c.say(f"  loaded {counts}")
        add_console_data(url, args.lookups, args.disputes)
    try:
        env = c.ledger_env(url)
        if not args.reuse:
            for name, times in query_times(url).items():
                c.say(summary(f"  query alone, as loaded: {name}", times))
            c.say(summary("  overview aggregates (beat), as loaded", snapshot_times(url)))
            measure(env, config, args.requests, f"{args.incidents:,} incidents, as loaded", 0)
            cluster_by_report_time(url)
        for name, times in query_times(url).items():
            c.say(summary(f"  query alone, report order: {name}", times))
        c.say(summary("  overview aggregates (beat), report order", snapshot_times(url)))
        measure(env, config, args.requests, f"{args.incidents:,} incidents, report order", args.browser)
        c.say("target: overview server render p99 <= 300 ms (one client; the machine is shared, see load)")
    finally:
        if database is not None:
            database.__exit__(None, None, None)


if __name__ == "__main__":
    main()
