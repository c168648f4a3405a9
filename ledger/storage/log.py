"""The Merkle trees as stored: leaves with contiguous indices, complete interior nodes, signed checkpoints
and witness cosignatures (schema.sql, "The tree").

There are two logs with the same shape: the event log (`EVENTS`: a leaf per ledger event) and the inquiry
log (`INQUIRIES`: a leaf per lookup record). Each function that reads or writes one tree takes it as
`tree`, the event log by default.

Only the sequencer writes leaves, nodes and checkpoints; everything else reads. Interior nodes are stored
only from level `STORED_LEVEL` (8) up, one row per 256 leaves: a node below it is recomputed from the at most
256 leaves under it, which one range read of the leaf index returns. A proof therefore reads one range of
leaves and about log2(n) - 8 node rows, in two indexed queries (`nodes`), so serving one costs the same at
ten million leaves as at ten, while the sequencer writes a node row for every 256 leaves instead of one per
leaf (C2SP tlog-tiles makes the same trade with tiles of 256 hashes). Databases that stored every node keep
them; the rows below level 8 are simply no longer read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import tuple_row

from ledger.domain import merkle
from ledger.storage.db import Connection

# The sequencer's advisory lock: whoever holds it is the tree's one writer.
SEQUENCER_LOCK = 7311013
# Interior nodes of this level and above are stored; those below are recomputed from their leaves.
STORED_LEVEL = 8


@dataclass(frozen=True)
class Tree:
    """One log's tables (schema.sql). Table and column names are these constants, never input."""

    name: str
    leaves: str
    nodes: str
    checkpoints: str
    pending: str
    item: str  # the column naming what a leaf is of
    item_type: str
    order: str  # the pending table's column that orders leaves


EVENTS = Tree(
    "events", "log_leaves", "log_nodes", "log_checkpoints", "log_pending", "event_id", "bigint", "event_id"
)
INQUIRIES = Tree(
    "inquiries",
    "inquiry_leaves",
    "inquiry_nodes",
    "inquiry_checkpoints",
    "inquiry_pending",
    "lookup_id",
    "uuid",
    "seq",
)


def try_lock_sequencer(conn: Connection) -> bool:
    """Take the sequencer's lock on this session if it is free; it is held until the session ends."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (SEQUENCER_LOCK,)).fetchone()
    return bool(row and row["ok"])


def unlock_sequencer(conn: Connection) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (SEQUENCER_LOCK,))


def tree_size(conn: Connection, tree: Tree = EVENTS) -> int:
    row = conn.execute(f"SELECT coalesce(max(idx) + 1, 0) AS size FROM {tree.leaves}").fetchone()
    return int(row["size"]) if row else 0


def nodes(
    conn: Connection, wanted: Iterable[tuple[int, int]], tree: Tree = EVENTS
) -> dict[tuple[int, int], bytes]:
    """Subtree hashes by (level, index), level 0 being a leaf hash: stored nodes from `STORED_LEVEL` up,
    and the rest recomputed from the leaves under them, all read in one query. A node that cannot be had
    is left out."""
    wanted = set(wanted)
    low = [(level, idx) for level, idx in wanted if level < STORED_LEVEL]
    high = [(level, idx) for level, idx in wanted if level >= STORED_LEVEL]
    if not wanted:
        return {}
    chunks = sorted({(idx << level) >> STORED_LEVEL for level, idx in low})
    # Leaves as level 0, then the stored nodes; tuples, not dicts: up to 256 rows per chunk. Each chunk is
    # its own range with plain bounds: a range computed in SQL from an array is estimated at a tenth of
    # the table, which at 10,000,000 leaves made the plan costly enough to be JIT-compiled (0.2 s).
    width = 1 << STORED_LEVEL
    leaf_ranges = [
        f"SELECT 0::smallint, idx, leaf_hash FROM {tree.leaves} WHERE idx >= %s AND idx < %s"
    ] * len(chunks)
    stored = f"""SELECT n.level, n.idx, n.hash FROM {tree.nodes} n
                 JOIN unnest(%s::smallint[], %s::bigint[]) AS w (level, idx) ON n.level = w.level AND n.idx = w.idx"""
    params: list[Any] = [bound for chunk in chunks for bound in (chunk * width, (chunk + 1) * width)]
    params += [[level for level, _ in high], [idx for _, idx in high]]
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(" UNION ALL ".join([*leaf_ranges, stored]), params).fetchall()
    known = {(level, idx): bytes(h) for level, idx, h in rows}
    for chunk in chunks:
        # Every complete subtree of the block, bottom up, from its leaves in order (a block at the right
        # edge of the tree has fewer than 256): about 255 hashes, a fraction of a millisecond.
        first = chunk * width
        level_hashes: list[bytes] = []
        while (0, first + len(level_hashes)) in known and len(level_hashes) < width:
            level_hashes.append(known[(0, first + len(level_hashes))])
        for level in range(1, STORED_LEVEL):
            level_hashes = [
                merkle.node_hash(a, b) for a, b in zip(level_hashes[::2], level_hashes[1::2], strict=False)
            ]
            base = first >> level
            known.update({(level, base + i): h for i, h in enumerate(level_hashes)})
    return {n: known[n] for n in wanted if n in known}


def stored_nodes(created: Iterable[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    """The nodes, of those a batch created, that are kept (`STORED_LEVEL` and above)."""
    return [n for n in created if n[0] >= STORED_LEVEL]


def move_pending(conn: Connection, first_index: int, limit: int, tree: Tree = EVENTS) -> list[bytes]:
    """Move up to `limit` pending leaves, oldest first, into the tree at indices `first_index`.., in the
    caller's transaction and in one statement; returns their hashes in index order. The rows taken are
    deleted by their ctid (a TID scan): with `IN (subquery)` the planner hash-joined the whole pending
    table, a sequential scan of the backlog for every batch."""
    rows = conn.execute(
        f"""WITH taken AS (
                DELETE FROM {tree.pending} WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM {tree.pending} ORDER BY {tree.order} LIMIT %s FOR UPDATE SKIP LOCKED))
                RETURNING {tree.order} AS o, {tree.item} AS item, leaf_hash),
            placed AS (
                INSERT INTO {tree.leaves} (idx, {tree.item}, leaf_hash)
                SELECT %s + row_number() OVER (ORDER BY o) - 1, item, leaf_hash FROM taken
                RETURNING idx, leaf_hash)
            SELECT leaf_hash FROM placed ORDER BY idx""",
        (limit, first_index),
    ).fetchall()
    return [bytes(row["leaf_hash"]) for row in rows]


def add_nodes(conn: Connection, new_nodes: Sequence[tuple[int, int, bytes]], tree: Tree = EVENTS) -> None:
    """Store interior nodes (level, index, hash); the caller passes only those that are kept."""
    if new_nodes:
        conn.execute(
            f"""INSERT INTO {tree.nodes} (level, idx, hash)
               SELECT * FROM unnest(%b::smallint[], %b::bigint[], %b::bytea[])""",
            ([n[0] for n in new_nodes], [n[1] for n in new_nodes], [n[2] for n in new_nodes]),
        )


def oldest_pending(conn: Connection, tree: Tree = EVENTS) -> datetime | None:
    """When the oldest pending leaf was received (the smallest id is close enough: ids follow time)."""
    sql = (
        """SELECT e.at FROM log_pending p JOIN ledger_events e ON e.id = p.event_id
           ORDER BY p.event_id LIMIT 1"""
        if tree is EVENTS
        else """SELECT k.at FROM inquiry_pending p JOIN lookups k ON k.id = p.lookup_id ORDER BY p.seq LIMIT 1"""
    )
    row = conn.execute(sql).fetchone()
    return row["at"] if row else None


def pending_age_seconds(conn: Connection) -> float:
    """How long the oldest pending event has waited, by the server's clock now (not the transaction's
    start); 0 with nothing pending."""
    row = conn.execute(
        """SELECT coalesce(extract(epoch FROM clock_timestamp() - min(e.at)), 0)::float8 AS age
           FROM (SELECT event_id FROM log_pending ORDER BY event_id LIMIT 1) p
           JOIN ledger_events e ON e.id = p.event_id"""
    ).fetchone()
    return max(0.0, float(row["age"])) if row else 0.0


def pending_count(conn: Connection, tree: Tree = EVENTS) -> int:
    row = conn.execute(f"SELECT count(*) AS n FROM {tree.pending}").fetchone()
    return int(row["n"]) if row else 0


def record_key(conn: Connection, vkey: str) -> None:
    conn.execute("INSERT INTO log_keys (vkey) VALUES (%s) ON CONFLICT DO NOTHING", (vkey,))


def recorded_keys(conn: Connection) -> list[str]:
    return [r["vkey"] for r in conn.execute("SELECT vkey FROM log_keys ORDER BY first_used").fetchall()]


def add_checkpoint(conn: Connection, size: int, root: bytes, note: str, tree: Tree = EVENTS) -> None:
    conn.execute(
        f"""INSERT INTO {tree.checkpoints} (tree_size, root_hash, note) VALUES (%s, %s, %s)
           ON CONFLICT (tree_size) DO NOTHING""",
        (size, root, note),
    )


def latest_checkpoint(conn: Connection, tree: Tree = EVENTS) -> dict[str, Any] | None:
    return conn.execute(
        f"SELECT tree_size, root_hash, note, signed_at FROM {tree.checkpoints} ORDER BY tree_size DESC LIMIT 1"
    ).fetchone()


def checkpoint_at(conn: Connection, size: int, tree: Tree = EVENTS) -> dict[str, Any] | None:
    return conn.execute(
        f"SELECT tree_size, root_hash, note, signed_at FROM {tree.checkpoints} WHERE tree_size = %s", (size,)
    ).fetchone()


def checkpoint_covering(conn: Connection, index: int) -> dict[str, Any] | None:
    """The first checkpoint that includes leaf `index`."""
    return conn.execute(
        """SELECT tree_size, root_hash, note, signed_at FROM log_checkpoints WHERE tree_size > %s
           ORDER BY tree_size LIMIT 1""",
        (index,),
    ).fetchone()


def iter_checkpoints(conn: Connection, tree: Tree = EVENTS) -> list[dict[str, Any]]:
    return conn.execute(
        f"SELECT tree_size, root_hash, note FROM {tree.checkpoints} ORDER BY tree_size"
    ).fetchall()


def cosignature_lines(conn: Connection, size: int) -> list[str]:
    return [
        row["line"]
        for row in conn.execute(
            "SELECT line FROM log_cosignatures WHERE tree_size = %s ORDER BY received_at, cosigner", (size,)
        ).fetchall()
    ]


def add_cosignature(
    conn: Connection, size: int, cosigner: str, line: str, signed_time: int, platform_id: int
) -> bool:
    row = conn.execute(
        """INSERT INTO log_cosignatures (tree_size, cosigner, line, signed_time, platform_id)
           VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tree_size, cosigner) DO NOTHING RETURNING tree_size""",
        (size, cosigner, line, signed_time, platform_id),
    ).fetchone()
    return row is not None


def leaf_for_platform(
    conn: Connection, platform_id: int, *, index: int | None = None, leaf_hash: bytes | None = None
) -> dict[str, Any] | None:
    """A leaf of one of this platform's events, by index or hash; None for any other (so it reads as
    unknown). A platform's events are those it recorded, and every event on an incident it reported."""
    # The leaf is found first, by its own index (MATERIALIZED), then its owner is checked: with one flat
    # join, the generic plan of the prepared statement could start from the platform's events instead.
    where = "idx = %s" if index is not None else "leaf_hash = %s"
    return conn.execute(
        f"""WITH l AS MATERIALIZED (SELECT idx, leaf_hash, event_id FROM log_leaves WHERE {where} LIMIT 1)
            SELECT l.idx, l.leaf_hash, l.event_id FROM l
            JOIN ledger_events e ON e.id = l.event_id
            LEFT JOIN incidents i ON i.id = e.incident_id
            WHERE coalesce(e.platform_id, i.platform_id) = %s""",
        (index if index is not None else leaf_hash, platform_id),
    ).fetchone()


def leaf_of_event(conn: Connection, event_id: int) -> dict[str, Any] | None:
    return conn.execute("SELECT idx, leaf_hash FROM log_leaves WHERE event_id = %s", (event_id,)).fetchone()


def leaves_by_hash(conn: Connection, leaf_hashes: Sequence[bytes]) -> list[dict[str, Any]]:
    """Every stored leaf (idx, leaf_hash) with one of these hashes. By hash only (log_leaves_hash); a bound
    on idx in SQL could tempt a primary-key range scan, so callers compare the index themselves."""
    return conn.execute(
        "SELECT idx, leaf_hash FROM log_leaves WHERE leaf_hash = ANY(%s)", (list(leaf_hashes),)
    ).fetchall()


def leaves_with_events(conn: Connection, after: int, batch: int) -> list[dict[str, Any]]:
    """A page of leaves after index `after`, each with its event row's columns (None where the event
    row is gone) and the stored leaf hash as `stored`: what `ledger verify` re-derives and compares."""
    return conn.execute(
        """SELECT l.idx, l.leaf_hash AS stored, e.id, e.kind, e.incident_id, e.platform_id, e.at, e.payload,
                  e.leaf_hash, e.prev_hash, e.entry_hash
           FROM log_leaves l LEFT JOIN ledger_events e ON e.id = l.event_id
           WHERE l.idx > %s ORDER BY l.idx LIMIT %s""",
        (after, batch),
    ).fetchall()


def iter_leaves(conn: Connection, after: int, batch: int) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT idx, event_id, leaf_hash FROM log_leaves WHERE idx > %s ORDER BY idx LIMIT %s", (after, batch)
    ).fetchall()


def inquiry_for_platform(
    conn: Connection, platform_id: int, *, index: int | None = None, lookup_id: Any = None
) -> dict[str, Any] | None:
    """A leaf of the inquiry log, by index or lookup id, if it is one of this platform's own lookups; None
    for any other (so that it reads as unknown)."""
    where = "idx = %s" if index is not None else "lookup_id = %s"
    return conn.execute(
        f"""WITH l AS MATERIALIZED (SELECT idx, leaf_hash, lookup_id FROM inquiry_leaves WHERE {where} LIMIT 1)
            SELECT l.idx, l.leaf_hash, k.id, k.platform_id, k.key_id, k.purpose, k.tokens_commitment, k.tier,
                   k.reasons, k.at, k.operator_ref, k.response
            FROM l JOIN lookups k ON k.id = l.lookup_id WHERE k.platform_id = %s""",
        (index if index is not None else lookup_id, platform_id),
    ).fetchone()


_RECORD = """k.id, k.platform_id, k.key_id, k.purpose, k.refund_ref, k.tokens, k.salt, k.tokens_commitment, k.tier,
             k.reasons, k.response, k.at, k.leaf_hash, k.operator_ref"""


def inquiry_leaves_with_records(conn: Connection, after: int, batch: int) -> list[dict[str, Any]]:
    """Inquiry leaves after index `after`, each with its lookup record (its columns None when the record
    is gone): `stored` is the leaf's hash, `leaf_of` the lookup id it names."""
    return conn.execute(
        f"""SELECT l.idx, l.leaf_hash AS stored, l.lookup_id AS leaf_of, {_RECORD}
            FROM inquiry_leaves l LEFT JOIN lookups k ON k.id = l.lookup_id
            WHERE l.idx > %s ORDER BY l.idx LIMIT %s""",
        (after, batch),
    ).fetchall()


def pending_inquiries_with_records(conn: Connection) -> list[dict[str, Any]]:
    """Pending inquiry leaves, oldest first, each with its lookup record, as `inquiry_leaves_with_records`."""
    return conn.execute(
        f"""SELECT p.lookup_id AS leaf_of, p.leaf_hash AS stored, {_RECORD}
            FROM inquiry_pending p LEFT JOIN lookups k ON k.id = p.lookup_id ORDER BY p.seq"""
    ).fetchall()
