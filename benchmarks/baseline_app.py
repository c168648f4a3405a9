"""The bare Flask baselines the benchmarks compare the ledger against, served by `ledger.server`'s own
gunicorn options so that only the application differs.

  --mode insert   POST /v1/incidents: parse the JSON body, one INSERT of it into a table and commit (201)
  --mode redis    POST /v1/lookups: parse the JSON body, one Redis GET, return its value (200)
  --mode floor    POST /v1/lookups: as `redis`, then one autocommit INSERT of the answer into a table before
                  returning it: the two round trips every ledger lookup must make (its Redis read and its
                  durable audit record), with none of its other work. Not the issue's baseline; printed
                  beside it to show how much of the gap is that I/O.
  --mode unaudited  the ledger's own app (`ledger.create_app`) with the audit INSERT replaced by nothing: an
                    upper bound for any way of writing the audit record, however cheap. Never a
                    configuration of the product; it exists only here, to bound the lookup target.

Started by benchmarks/ingest.py and benchmarks/lookup.py; run it alone with --help.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from typing import Any

BASELINE_TABLE = """CREATE TABLE IF NOT EXISTS bench_baseline (
    id uuid PRIMARY KEY, external_id text NOT NULL, body jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now())"""
FLOOR_TABLE = """CREATE TABLE IF NOT EXISTS bench_floor_audit (
    id uuid PRIMARY KEY, response jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now())"""
BASELINE_KEY = "bench:baseline"


def make_app(mode: str) -> Any:
    from flask import Flask, Response, request

    if mode == "unaudited":
        from ledger import create_app
        from ledger.storage import audit

        audit.insert_many = lambda _conn, _rows: None  # type: ignore[assignment]
        return create_app()

    app = Flask("baseline")

    @app.get("/healthz")
    def health() -> Any:
        return {"status": "ok"}

    if mode == "insert":
        import psycopg_pool
        from psycopg.types.json import Jsonb

        pool = psycopg_pool.ConnectionPool(os.environ["DATABASE_URL"], min_size=1, max_size=8, open=True)

        @app.post("/v1/incidents")
        def insert() -> Any:
            body = request.get_json()
            row_id = uuid.uuid4()
            with pool.connection() as conn:  # commits on leaving the block
                conn.execute(
                    "INSERT INTO bench_baseline (id, external_id, body) VALUES (%s, %s, %s)",
                    (row_id, str(body.get("external_id")), Jsonb(body)),
                )
            return {"id": str(row_id)}, 201

    else:
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        client.set(BASELINE_KEY, json.dumps({"tier": "clear", "score": 0}))
        record = _audit_writer() if mode == "floor" else None

        @app.post("/v1/lookups")
        def lookup() -> Any:
            request.get_json()
            value = client.get(BASELINE_KEY)
            if record is not None and value is not None:
                record(value)
            return Response(value, mimetype="application/json")

    return app


def factory() -> Any:
    """granian's workers build the app through this (`--server granian`)."""
    return make_app(os.environ["BASELINE_MODE"])


def _audit_writer() -> Any:
    import psycopg_pool

    pool = psycopg_pool.ConnectionPool(
        os.environ["DATABASE_URL"], min_size=1, max_size=8, kwargs={"autocommit": True}, open=True
    )

    def record(answer: bytes) -> None:
        with pool.connection() as conn:
            conn.execute(
                "INSERT INTO bench_floor_audit (id, response) VALUES (%s, %s::jsonb)",
                (uuid.uuid4(), answer.decode()),
            )

    return record


def create_table(mode: str) -> None:
    """Once, before gunicorn forks: workers that each ran CREATE TABLE IF NOT EXISTS at boot could race
    on a fresh database, and PostgreSQL refuses the loser with a unique violation in its catalogue, which
    made gunicorn halt the whole server ("Worker failed to boot") in the middle of a benchmark."""
    table = {"insert": BASELINE_TABLE, "floor": FLOOR_TABLE}.get(mode)
    if table is not None:
        import psycopg

        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            conn.execute(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("insert", "redis", "floor", "unaudited"), required=True)
    parser.add_argument("--bind", default="127.0.0.1:18090")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker-class", default="sync", choices=("sync", "gthread"))
    parser.add_argument("--server", default="gunicorn", choices=("gunicorn", "granian"))
    args = parser.parse_args()

    from ledger import server

    create_table(args.mode)
    if args.server == "granian":
        os.environ["BASELINE_MODE"] = args.mode  # read by each worker's factory after fork
        server.run_granian(args.bind, args.workers, args.threads, target="benchmarks.baseline_app:factory")
        return
    # Same options as `ledger serve`; only the WSGI application is swapped.
    server._Gunicorn.load = lambda _self: make_app(args.mode)  # type: ignore[method-assign,assignment]
    server.run_gunicorn(args.bind, args.workers, args.threads, args.worker_class)


if __name__ == "__main__":
    main()
