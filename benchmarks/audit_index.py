"""What the GIN index on `lookups.tokens` costs each audit record, in PostgreSQL's own CPU.

Every audit INSERT maintains three indexes: the primary key, `(platform_id, at)` and the GIN index on
`tokens`, which the subject access report uses to find a consumer's lookups over every linked identifier
(`audit.for_tokens`). This script inserts the same records, built as the service builds them
(benchmarks/audit_options.py's `make_record`), through the service's own `audit.insert_many` on one
autocommit connection, in batches of --batch (1 = one commit per lookup; larger = group commit), into
two fresh databases: one with schema.sql as it is, one without `lookups_tokens`. It reads the backend's
CPU from /proc/<pid>/stat before and after, so the figures are PostgreSQL's work only (plus the WAL
writer's share, not counted). It also times the subject report's query (`for_tokens`) with and without
the index over the rows written.

With --inquiry-leaf it compares, instead, the statement as the service writes it (each record and its
pending leaf in the inquiry log, one statement) against the same records inserted alone, both with the
GIN index: what the inquiry log costs PostgreSQL per record.

    .venv/bin/python benchmarks/audit_index.py [--records 20000] [--batch 1,8] [--database bench_gin]
    .venv/bin/python benchmarks/audit_index.py --inquiry-leaf
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg.rows import dict_row

from benchmarks import _common as c
from benchmarks.audit_options import make_record, runtime

TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def insert_alone(conn: Any, rows: Any) -> None:
    """The records of `audit.insert_many` without their pending inquiry leaves (a comparison only)."""
    from ledger.storage import audit

    one_row = "(%s, %s, %s, %s, %s, %s::text[], %s, %s, %s, %s::text[], %s::jsonb, %s, %s, %s)"
    conn.execute(
        f"INSERT INTO lookups ({audit.COLUMNS}) VALUES {', '.join([one_row] * len(rows))}",
        [
            value
            for r in rows
            for value in (
                r["id"], r["platform_id"], r["key_id"], r["purpose"], r["refund_ref"], audit.text_array(r["tokens"]),
                r["salt"], r["tokens_commitment"], r["tier"], audit.text_array(r["reasons"]), r["response"], r["at"],
                r["leaf_hash"], r.get("operator_ref"),
            )
        ],
    )  # fmt: skip


def measure(url: str, records: int, batch: int, with_gin: bool, with_leaf: bool = True) -> dict[str, float]:
    from datetime import UTC, datetime, timedelta

    from ledger.storage import audit

    rt = runtime(url)
    try:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            if not with_gin:
                conn.execute("DROP INDEX IF EXISTS lookups_tokens")
            platform_id = conn.execute(
                "INSERT INTO platforms (slug, name) VALUES (%s, 'Bench') RETURNING id",
                (f"bench-gin-{batch}",),
            ).fetchone()["id"]  # type: ignore[index]
            rows = [make_record(rt, platform_id, n) for n in range(records)]
            pid = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]  # type: ignore[index]
            cpu, wall = backend_cpu(pid), time.perf_counter()
            write = audit.insert_many if with_leaf else insert_alone
            for start in range(0, records, batch):
                write(conn, rows[start : start + batch])  # type: ignore[arg-type]
            cpu, wall = backend_cpu(pid) - cpu, time.perf_counter() - wall
            probe = [r["tokens"][0] for r in rows[:: max(1, records // 200)]]
            since = datetime.now(UTC) - timedelta(days=1)
            started = time.perf_counter()
            for token in probe:
                audit.for_tokens(conn, [token], since)  # type: ignore[arg-type]
            query_ms = (time.perf_counter() - started) / len(probe) * 1000
    finally:
        rt.close()
    return {"cpu_us": cpu / records * 1e6, "wall_us": wall / records * 1e6, "query_ms": query_ms}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--database", default="bench_gin", help="prefix of the scratch databases' names")
    parser.add_argument(
        "--inquiry-leaf", action="store_true", help="compare with and without the pending leaf"
    )
    args = parser.parse_args()
    if args.inquiry_leaf:
        c.say(f"the inquiry log's pending leaf, per audit record; {args.records} records per run; {c.load()}")
        for batch in (int(x) for x in args.batch.split(",")):
            for with_leaf in (True, False):
                with c.bench_database(f"{args.database}_{os.getpid()}_{batch}_leaf{int(with_leaf)}") as url:
                    r = measure(url, args.records, batch, True, with_leaf)
                c.say(
                    f"batch {batch:>3}, {'record + pending leaf' if with_leaf else 'record alone':<22}: PostgreSQL "
                    f"backend CPU {r['cpu_us']:6.1f} µs per record, wall {r['wall_us']:6.1f} µs   ({c.load()})"
                )
        return 0
    c.say(f"GIN index cost per audit record; {args.records} records per run; {c.load()}")
    for batch in (int(x) for x in args.batch.split(",")):
        for with_gin in (True, False):
            name = f"{args.database}_{os.getpid()}_{batch}_{int(with_gin)}"
            with c.bench_database(name) as url:
                r = measure(url, args.records, batch, with_gin)
            c.say(
                f"batch {batch:>3}, {'with' if with_gin else 'without'} the GIN index: PostgreSQL backend CPU "
                f"{r['cpu_us']:6.1f} µs per record, wall {r['wall_us']:6.1f} µs per record; the subject "
                f"report's query for one token {r['query_ms']:.2f} ms   ({c.load()})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
