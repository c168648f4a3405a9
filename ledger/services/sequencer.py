"""`ledger sequencer`: the one writer of the Merkle trees, the event log and the inquiry log.

Reports commit their events with a pending leaf each, and lookups their audit records with a pending leaf
each, and neither takes a log-wide lock; this process orders them afterwards, each log into its own tree
with its own origin (the inquiry log's checkpoints are signed with the same key under that origin). It holds a PostgreSQL advisory lock on its own connection for as long as it runs, so a second
sequencer waits as a standby and takes over when the first dies (the lock goes with its connection, and
so do any writes it had in flight). Every batch is one transaction: take pending leaves, give them the next
contiguous indices, store the leaves and the new complete interior nodes that are kept (level 8 and up,
ledger/storage/log.py). Only after that commits does it
sign a checkpoint of the new root, so no signed root ever covers an uncommitted leaf.

On start it rebuilds the tree's right frontier from the stored nodes and checks it against the latest
signed checkpoint; if they disagree (a leaf was changed or cut) it refuses to sign anything, since any
new checkpoint would fork the log.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.domain import merkle, note
from ledger.errors import Unavailable
from ledger.services.runtime import Runtime
from ledger.storage import log as log_store
from ledger.storage.db import session

log = logging.getLogger("ledger.sequencer")


class TreeMismatch(RuntimeError):
    """The stored tree does not match what was signed; the sequencer must not sign again."""


@dataclass
class _Log:
    """One tree the sequencer writes: its tables, its signer (whose name is the log's origin) and the
    right frontier of what is stored."""

    tree: log_store.Tree
    signer: note.Signer
    compact: merkle.CompactRange = field(default_factory=merkle.CompactRange)


@dataclass
class Sequencer:
    rt: Runtime
    stop: threading.Event = field(default_factory=threading.Event)
    integrated: int = 0
    _last_lag_log: float = 0.0
    logs: list[_Log] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.logs:
            self.logs = [
                _Log(log_store.EVENTS, self.rt.log_signer),
                _Log(log_store.INQUIRIES, self.rt.inquiry_signer),
            ]

    @property
    def compact(self) -> merkle.CompactRange:
        """The event log's frontier."""
        return self.logs[0].compact

    def run(self) -> None:
        """Run until `stop` is set: wait for the lock, then integrate. Reconnects after a lost database."""
        while not self.stop.is_set():
            try:
                with session(self.rt.settings.database_url or "", connect_timeout=3) as conn:
                    if not self._acquire(conn):
                        return
                    self._load(conn)
                    self._loop(conn)
            except Unavailable as exc:
                # The lock went with the connection: reconnect, wait for it again, reload the frontier.
                log.warning("sequencer lost the database (%s); reconnecting", exc.detail)
                self.stop.wait(1.0)

    def _acquire(self, conn: Any) -> bool:
        announced = False
        while not self.stop.is_set():
            if log_store.try_lock_sequencer(conn):
                log.info("sequencer is the log's writer")
                return True
            if not announced:
                log.info("another sequencer holds the log; waiting as a standby")
                announced = True
            self.stop.wait(0.5)
        return False

    def _load(self, conn: Any) -> None:
        for one in self.logs:
            self._load_one(conn, one)

    def _load_one(self, conn: Any, one: _Log) -> None:
        tree = one.tree
        log_store.record_key(conn, one.signer.verifier.vkey())
        size = log_store.tree_size(conn, tree)
        frontier = merkle.CompactRange.frontier_nodes(size)
        stored = log_store.nodes(conn, frontier, tree)
        missing = [n for n in frontier if n not in stored]
        if missing:
            raise TreeMismatch(f"the stored {tree.name} tree of size {size} lacks nodes {missing[:3]}")
        one.compact = merkle.CompactRange(size, [stored[n] for n in frontier])
        latest = log_store.latest_checkpoint(conn, tree)
        if latest is not None:
            signed = int(latest["tree_size"])
            if signed > size:
                raise TreeMismatch(
                    f"a {tree.name} checkpoint was signed at size {signed} but the tree has {size} leaves"
                )
            if signed > 0:
                parts = log_store.nodes(conn, merkle.perfect_subtrees(0, signed), tree)
                old_root = merkle.range_hash([parts[n] for n in merkle.perfect_subtrees(0, signed)])
                if old_root != bytes(latest["root_hash"]):
                    raise TreeMismatch(
                        f"the stored {tree.name} tree does not match the checkpoint at size {signed}"
                    )
        if latest is None or int(latest["tree_size"]) < size:
            self._sign(conn, one)  # leaves committed before a crash, never signed
        log.info("sequencer loaded the %s tree of %d leaves", tree.name, size)

    def _loop(self, conn: Any) -> None:
        interval = self.rt.settings.log_batch_ms / 1000
        batch = self.rt.settings.log_batch_max
        while not self.stop.is_set():
            started = time.monotonic()
            added = [self._integrate_one(conn, one, batch) for one in self.logs]
            self._watch_lag(conn)
            if max(added) < batch:
                self.stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def integrate(self, conn: Any, limit: int) -> int:
        """One batch of each log; returns how many leaves were integrated in all."""
        return sum(self._integrate_one(conn, one, limit) for one in self.logs)

    def _integrate_one(self, conn: Any, one: _Log, limit: int) -> int:
        """One batch: leaves and nodes in one transaction, then a checkpoint signed after the commit."""
        # Any failure leaves the in-memory frontier ahead of the database; `run` then reconnects and
        # reloads it (`_load`) before integrating again, or stops on a TreeMismatch.
        tree = one.tree
        with conn.transaction():
            size = log_store.tree_size(conn, tree)
            if size != one.compact.size:
                raise TreeMismatch(
                    f"the {tree.name} tree has {size} leaves, the sequencer expected {one.compact.size}"
                )
            leaves = log_store.move_pending(conn, size, limit, tree)
            if not leaves:
                return 0
            new_nodes: list[tuple[int, int, bytes]] = []
            for leaf in leaves:
                new_nodes.extend(one.compact.append(leaf))
            log_store.add_nodes(conn, log_store.stored_nodes(new_nodes), tree)
        self._sign(conn, one)
        self.integrated += len(leaves)
        return len(leaves)

    def _sign(self, conn: Any, one: _Log) -> None:
        checkpoint = note.Checkpoint(one.signer.verifier.name, one.compact.size, one.compact.root())
        signed = note.sign_note(checkpoint.text(), one.signer)
        log_store.add_checkpoint(conn, checkpoint.size, checkpoint.root, signed, one.tree)

    def _watch_lag(self, conn: Any) -> None:
        now = time.monotonic()
        if now - self._last_lag_log < 5.0:
            return
        for one in self.logs:
            oldest = log_store.oldest_pending(conn, one.tree)
            if oldest is None:
                continue
            lag = (datetime.now(UTC) - oldest).total_seconds()
            if lag > self.rt.settings.log_mmd_seconds:
                self._last_lag_log = now
                log.warning(
                    "%s log lag %.1f s exceeds the maximum merge delay of %d s",
                    one.tree.name,
                    lag,
                    self.rt.settings.log_mmd_seconds,
                )


def run(rt: Runtime, stop: threading.Event | None = None) -> None:
    Sequencer(rt, stop or threading.Event()).run()


def integrate_now(rt: Runtime, limit: int = 100_000) -> int:
    """Integrate everything pending and sign, once, if no sequencer is running (`ledger sequencer --once`,
    tests, the upgrade). Returns how many leaves were integrated; -1 when another sequencer holds the log."""
    with session(rt.settings.database_url or "") as conn:
        if not log_store.try_lock_sequencer(conn):
            return -1
        try:
            seq = Sequencer(rt)
            seq._load(conn)
            total = 0
            while True:
                added = seq.integrate(conn, limit)
                total += added
                if added == 0:
                    return total
        finally:
            log_store.unlock_sequencer(conn)
