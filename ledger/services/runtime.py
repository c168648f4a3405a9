"""The handles every use case needs: settings, database, audit writer, cache, task queue and policy.

Built once per process (by `create_app`, the Celery worker or the CLI) and passed explicitly, so that
services are plain functions of their inputs.

It lives in the services layer, not beside `create_app`, because it is what every service takes and it
holds two objects of that layer, built on first use: the evidence matcher and the report quota gate.
Everything it opens comes from below (storage's pool, cache and queue; domain's policy and signers), so
api, console, workers and the CLI build one and pass it down, and nothing below services sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from ledger.config import Settings
from ledger.domain.note import Signer
from ledger.domain.policy import Policy, load_policy
from ledger.storage import audit
from ledger.storage.auth_failures import AuthFailures
from ledger.storage.db import Database
from ledger.storage.decision_cache import DecisionCache
from ledger.storage.group_commit import GroupCommit, Rows
from ledger.storage.pending_work import PendingWork
from ledger.storage.queue import TaskQueue
from ledger.storage.quota import Quotas
from ledger.storage.rebuild_markers import RebuildMarkers
from ledger.storage.redis_guard import GuardedRedis

if TYPE_CHECKING:
    from ledger.services.evidence import Matcher as EvidenceMatcher
    from ledger.services.platforms import QuotaGate


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def db(self) -> Database:
        settings = self.settings
        assert settings.database_url
        return Database(settings.database_url, settings.pool_min, settings.pool_max, settings.db_role)

    @cached_property
    def audit(self) -> GroupCommit:
        """The process's lookup audit writer: concurrent requests share one INSERT and one commit."""

        def flush(rows: Rows) -> None:
            with self.db.autocommit() as conn:
                audit.insert_many(conn, rows)

        return GroupCommit(flush)

    @cached_property
    def redis(self) -> GuardedRedis:
        """The process's Redis client and circuit breaker, shared by the five Redis jobs below."""
        assert self.settings.redis_url
        return GuardedRedis(self.settings.redis_url)

    @cached_property
    def cache(self) -> DecisionCache:
        """Decisions per token: written by scoring, read (with the quota, in one call) by lookups."""
        return DecisionCache(self.redis)

    @cached_property
    def quotas(self) -> Quotas:
        return Quotas(self.redis)

    @cached_property
    def auth_failures(self) -> AuthFailures:
        return AuthFailures(self.redis)

    @cached_property
    def pending(self) -> PendingWork:
        """Pending flags and the outbox relay's wake-up, set after commit."""
        return PendingWork(self.redis)

    @cached_property
    def rebuild(self) -> RebuildMarkers:
        """Whether this Redis holds every decision, and the rebuild that makes it so."""
        return RebuildMarkers(self.redis)

    @cached_property
    def queue(self) -> TaskQueue:
        assert self.settings.redis_url
        return TaskQueue(self.settings.redis_url)

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.settings.policy_path)

    @cached_property
    def log_signer(self) -> Signer:
        """The transparency log's Ed25519 key; its name is the log's origin (C2SP tlog-checkpoint)."""
        return Signer.from_seed(self.settings.log_origin, self.settings.log_signer_seed())

    @cached_property
    def evidence_matcher(self) -> EvidenceMatcher:
        """The process's evidence index (`services.evidence.Matcher`). Creating it reads nothing: the
        first lookup with evidence loads the index, so a process that never sees one never pays for it."""
        from ledger.services.evidence import Matcher  # evidence's use cases take a Runtime themselves

        return Matcher(self)

    @cached_property
    def inquiry_signer(self) -> Signer:
        """The inquiry log's signer: the same Ed25519 key, named by the inquiry log's origin."""
        return Signer.from_seed(self.settings.inquiry_log_origin, self.settings.log_signer_seed())

    @cached_property
    def report_gate(self) -> QuotaGate:
        """Which platforms' buckets this process saw empty after their last report (`QuotaGate`)."""
        from ledger.services.platforms import QuotaGate  # platforms' use cases take a Runtime themselves

        return QuotaGate()

    @cached_property
    def reference_matcher(self) -> EvidenceMatcher:
        """The process's reference photo index (`services.references.ReferenceMatcher`), loaded like
        the evidence index on the first lookup with evidence."""
        from ledger.services.references import ReferenceMatcher

        return ReferenceMatcher(self)

    @property
    def identity_key(self) -> str:
        assert self.settings.identity_key, "Settings.require_services() fills the identity key"
        return self.settings.identity_key

    @cached_property
    def token_key(self) -> bytes | None:
        """The server-only key that stored tokens are keyed with again (None: stored as members make them)."""
        key = self.settings.token_key
        return key.encode() if key else None

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.close()
