"""A simulated consortium with a known truth, to measure what the scoring policy does to a population.

Every part of the model is tested for its guarantees on its own; only a population shows the trade-off a
risk engineer asks about: how many honest consumers are restricted, how many abusers are stopped and
after how many incidents, and what a badly reporting member does. This script builds such a population
(honest consumers, opportunists, serial abusers moving between platforms, rings sharing a device or a
payment account), eight platforms (a careful reporter, a sloppy one, a malicious one, one that only looks
up, four ordinary ones), and runs 24 months day by day through the project's own decision code: the
linking rule (`ledger.domain.linking`, the rule the SQL follows), `assess`, `decide` and the reporter
reliability formula. Honest consumers dispute wrong entries; platforms answer by the truth, late or never,
and the SLA retracts what they leave unanswered.

Only consumers that some report touches are ever scored: the decision of a consumer whose identifiers
are in no incident is `clear` by construction of `decide` (the final pass checks this for every one of
them). That is what lets a million consumers run in minutes.

    python benchmarks/consortium_sim.py                      # 1,000,000 consumers, the default policy
    python benchmarks/consortium_sim.py --variants --consumers 200000
    python benchmarks/consortium_sim.py --consumers 50000 --seed 7 --json out.json

docs/decision-quality.md explains the model and the table. tests/unit/test_consortium_sim.py checks the
simulator's invariants; tests/e2e/test_consortium_served.py replays a scaled-down run through the served
API, the Celery worker and PostgreSQL and checks that every consumer gets the same decision.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import statistics
import sys
import time
import tomllib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ledger.domain.decisions import Decision, SubjectView, decide
from ledger.domain.linking import Linker
from ledger.domain.policy import DEFAULT_POLICY_PATH, Policy, parse_policy
from ledger.domain.scoring import COUNTING_STATUSES, IncidentFacts, assess

# The reliability formula, as services/reliability.py computes it (kept pure there; imported lazily so
# that this module does not need the storage layer to be importable in a bare interpreter).
from ledger.services.reliability import effective_trust

HONEST, OPPORTUNIST, SERIAL, RING_DEVICE, RING_PAYMENT = (
    "honest",
    "opportunist",
    "serial",
    "ring_device",
    "ring_payment",
)
ABUSER_KINDS = (OPPORTUNIST, SERIAL, RING_DEVICE, RING_PAYMENT)

# Token spaces: identifiers are integers so that every set and dict iterates in the same order in every
# process (string hashes are salted per process); `raw_identifier` turns them into API identifiers.
PHONE, PAY, RING_PAY, DEVICE, RING_DEVICE_TOKEN = range(5)
SPACE = 10**9


def token(space: int, n: int) -> int:
    return space * SPACE + n


def raw_identifier(tok: int) -> tuple[str, str]:
    """The identifier a platform would send for a simulated token: (type, value)."""
    space, n = divmod(tok, SPACE)
    if space == PHONE:
        return "phone", f"138{n:08d}"
    if space == PAY:
        return "payment_account", f"sim-pay-{n}"
    if space == RING_PAY:
        return "payment_account", f"sim-ring-pay-{n}"
    if space == DEVICE:
        return "device_id", f"sim-dev-{n}"
    return "device_id", f"sim-ring-dev-{n}"


@dataclass(frozen=True)
class PlatformSpec:
    name: str
    share: float  # of consumers' orders (and so of abuse attempts)
    detect: float  # share of successful abuses it confirms and reports
    error: float  # share of its reports that hit an honest consumer by mistake
    on_time: float  # share of disputes it answers (by the truth) within the SLA
    late: float  # share it answers after the SLA, when the entry was already retracted; the rest: never
    strong: float = 0.0  # share of its true reports confirmed by court, police or the consumer's admission
    malicious_per_day: float = 0.0  # false reports of a competitor's good customers, per million consumers
    malicious_upholds: float = 0.0  # share of disputes of its false reports it upholds anyway


PLATFORMS: tuple[PlatformSpec, ...] = (
    PlatformSpec("careful", 0.26, detect=0.65, error=0.005, on_time=0.95, late=0.03, strong=0.03),
    PlatformSpec("sloppy", 0.18, detect=0.55, error=0.10, on_time=0.60, late=0.25),
    PlatformSpec("malicious", 0.07, detect=0.30, error=0.0, on_time=0.50, late=0.10, malicious_per_day=4.0,
                 malicious_upholds=0.3),
    PlatformSpec("lookup_only", 0.13, detect=0.0, error=0.0, on_time=1.0, late=0.0),
    PlatformSpec("ordinary_a", 0.14, detect=0.45, error=0.02, on_time=0.85, late=0.10, strong=0.01),
    PlatformSpec("ordinary_b", 0.11, detect=0.45, error=0.02, on_time=0.80, late=0.10, strong=0.01),
    PlatformSpec("ordinary_c", 0.07, detect=0.40, error=0.02, on_time=0.75, late=0.15),
    PlatformSpec("ordinary_d", 0.04, detect=0.40, error=0.02, on_time=0.70, late=0.15),
)  # fmt: skip
SLOPPY, MALICIOUS, COMPETITOR = 1, 2, 0  # the malicious platform reports the careful one's customers

CATEGORY_MIX: dict[str, tuple[tuple[str, float], ...]] = {
    SERIAL: (("refund_only_abuse", 0.6), ("false_not_received", 0.25), ("false_damage_claim", 0.15)),
    OPPORTUNIST: (("false_damage_claim", 0.4), ("false_not_received", 0.4), ("refund_only_abuse", 0.2)),
    RING_DEVICE: (("fabricated_evidence", 0.3), ("false_not_received", 0.4), ("return_fraud", 0.3)),
    RING_PAYMENT: (("fabricated_evidence", 0.3), ("false_not_received", 0.4), ("return_fraud", 0.3)),
    HONEST: (("false_damage_claim", 0.4), ("false_not_received", 0.4), ("refund_only_abuse", 0.2)),
    "malice": (("false_damage_claim", 0.6), ("fabricated_evidence", 0.4)),
}
MEDIAN_YUAN = {SERIAL: 200.0, OPPORTUNIST: 150.0, RING_DEVICE: 600.0, RING_PAYMENT: 600.0, HONEST: 150.0,
               "malice": 800.0}  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """Everything that shapes the population and its behaviour. The seed makes a run repeatable."""

    consumers: int = 1_000_000
    days: int = 730
    seed: int = 1
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    opportunists: float = 0.015  # shares of all consumers
    serials: float = 0.004
    ring_members: float = 0.006
    ring_size: tuple[int, int] = (4, 12)
    ring_device_share: float = 0.5  # the other rings share a payment account
    serial_gap_days: float = 14.0  # mean days between a serial abuser's attempts
    ring_gap_days: float = 30.0
    honest_dispute: float = 0.8  # an honest consumer disputes a wrong entry (notified at the report)
    honest_dispute_days: float = 10.0  # mean delay
    abuser_dispute: float = 0.25  # an abuser disputes a true entry anyway
    review_stops: float = 0.5  # a manual review stops this share of abuse attempts
    sla_days: int = 30  # LEDGER_DISPUTE_DAYS
    platforms: tuple[PlatformSpec, ...] = PLATFORMS


@dataclass(eq=False)
class Incident:
    id: int
    consumer: int
    platform: int
    category: str
    confirmation: str
    amount_minor: int
    occurred_day: int
    reported_day: int
    true: bool
    strong: tuple[int, ...]
    device: int
    occurred_at: datetime
    status: str = "active"
    dispute: str | None = None  # open, upheld, retracted, expired
    disputed_day: int | None = None
    removed_day: int | None = None
    malice: bool = False
    rng: random.Random = field(default_factory=random.Random, repr=False)  # its own stream: see Sim.stream


@dataclass(eq=False)
class Consumer:
    idx: int
    kind: str
    strong: tuple[int, ...]
    device: int
    ring: int = -1
    attempts: int = 0  # successful abuses
    first_abuse_day: int | None = None
    first_restricted_day: int | None = None
    incidents_before: int | None = None  # successful abuses before the first restriction
    worst_rank: int = 0
    first_reported_day: int | None = None
    reported: list[Incident] = field(default_factory=list)
    c3_day: int | None = None  # the day of the 3rd reported incident with 2 or more platforms among them
    c3_rank: int | None = None
    alone_rank: dict[int, int] = field(default_factory=dict)  # platform -> worst rank from it alone


@dataclass(eq=False)
class Dispute:
    incident: Incident
    opened_day: int
    overturned: bool = False
    in_window: bool = True


class Sim:
    """One run: a scenario, a policy, and the state of the ledger as the days go by."""

    def __init__(self, scenario: Scenario, policy: Policy) -> None:
        self.sc = scenario
        self.policy = policy
        self.rng = random.Random(scenario.seed)
        self.linker = Linker()
        self.by_subject: dict[int, list[Incident]] = {}
        self.by_device: dict[int, list[Incident]] = {}
        self.consumers: dict[int, Consumer] = {}  # only consumers some event touched, and all abusers
        self.token_consumers: dict[int, list[int]] = {}  # shared tokens: ring payment accounts and devices
        self.incidents: list[Incident] = []
        self.trust = [1.0] * len(scenario.platforms)
        self.trust_at: dict[int, list[float]] = {}
        self.windows = [deque[Dispute]() for _ in scenario.platforms]
        self.disputed = [0] * len(scenario.platforms)
        self.overturned = [0] * len(scenario.platforms)
        self.late_answers = 0
        self.reported_by = [set[int]() for _ in scenario.platforms]
        self.events: dict[int, list[tuple[int, Any]]] = {}
        self.view_cache: dict[int, SubjectView] = {}
        self.cache_at: datetime | None = None
        self.shares = [p.share for p in scenario.platforms]
        self.abusers: list[Consumer] = []
        self.open_disputes: dict[int, Dispute] = {}
        self.events_made: list[int] = []

    # -- population ---------------------------------------------------------------------------------

    def consumer(self, idx: int) -> Consumer:
        c = self.consumers.get(idx)
        if c is None:  # an honest consumer, materialised the first time something concerns them
            c = Consumer(idx, HONEST, (token(PHONE, idx), token(PAY, idx)), token(DEVICE, idx))
            self.consumers[idx] = c
        return c

    def populate(self) -> None:
        sc, rng = self.sc, self.rng
        n_opp = round(sc.consumers * sc.opportunists)
        n_serial = round(sc.consumers * sc.serials)
        n_ring = round(sc.consumers * sc.ring_members)
        chosen = rng.sample(range(sc.consumers), n_opp + n_serial + n_ring)
        opp, serial, ring = (
            chosen[:n_opp],
            chosen[n_opp : n_opp + n_serial],
            chosen[n_opp + n_serial :],
        )
        for idx in opp:
            c = self._abuser(idx, OPPORTUNIST)
            home = self._platform()
            for _ in range(rng.choices((1, 2, 3), (0.7, 0.25, 0.05))[0]):
                p = home if rng.random() < 0.8 else self._platform()
                self._at(rng.randrange(sc.days), 0, (c.idx, p))
        for idx in serial:
            c = self._abuser(idx, SERIAL)
            day = rng.uniform(0, sc.days * 0.75)
            while day < sc.days:
                self._at(int(day), 0, (c.idx, self._platform()))
                day += rng.expovariate(1.0 / sc.serial_gap_days)
        ring_id, pos = 0, 0
        while pos < len(ring):
            size = rng.randint(*sc.ring_size)
            members = ring[pos : pos + size]
            pos += size
            by_device = rng.random() < sc.ring_device_share
            kind = RING_DEVICE if by_device else RING_PAYMENT
            shared = token(RING_DEVICE_TOKEN, ring_id) if by_device else token(RING_PAY, ring_id)
            self.token_consumers[shared] = list(members)
            start = rng.uniform(0, sc.days * 0.75)
            for idx in members:
                c = self._abuser(idx, kind)
                c.ring = ring_id
                if by_device:
                    c.device = shared
                else:
                    c.strong = (token(PHONE, idx), shared)
                day = start + rng.expovariate(1.0 / sc.ring_gap_days)
                while day < sc.days:
                    self._at(int(day), 0, (c.idx, self._platform()))
                    day += rng.expovariate(1.0 / sc.ring_gap_days)
            ring_id += 1
        per_day = sc.platforms[MALICIOUS].malicious_per_day * sc.consumers / 1_000_000
        for day in range(sc.days):
            for _ in range(_poisson(rng, per_day)):
                self._at(day, 1, ("malice", MALICIOUS))

    def _abuser(self, idx: int, kind: str) -> Consumer:
        c = Consumer(idx, kind, (token(PHONE, idx), token(PAY, idx)), token(DEVICE, idx))
        self.consumers[idx] = c
        self.abusers.append(c)
        return c

    def _platform(self) -> int:
        return self.rng.choices(range(len(self.shares)), self.shares)[0]

    def _honest(self, rng: random.Random) -> int:
        while True:
            idx = rng.randrange(self.sc.consumers)
            c = self.consumers.get(idx)
            if c is None or c.kind == HONEST:
                return idx

    def _at(self, day: int, phase: int, event: Any) -> None:
        if phase == 0 or event[0] == "malice":  # give every attempt and malicious report its own stream
            event = (*event, len(self.events_made))
            self.events_made.append(day)
        self.events.setdefault(day, []).append((phase, event))

    def stream(self, kind: str, n: int) -> random.Random:
        """The random numbers of one attempt or one report, the same in every run of this seed whatever
        the policy decides elsewhere (common random numbers): a variant changes only what its decisions
        change, not the luck of the draw."""
        return random.Random(f"{self.sc.seed}:{kind}:{n}")

    # -- decisions ----------------------------------------------------------------------------------

    def at(self, day: float) -> datetime:
        return self.sc.start + timedelta(days=day)

    def facts(self, incidents: Iterable[Incident]) -> list[IncidentFacts]:
        return [
            IncidentFacts(
                platform_id=i.platform + 1,
                category=i.category,
                confirmation=i.confirmation,
                amount_minor=i.amount_minor,
                currency="CNY",
                occurred_at=i.occurred_at,
                status=i.status,
                platform_trust=self.trust[i.platform],
            )
            for i in incidents
        ]

    def view(self, subject: int, now: datetime) -> SubjectView:
        if self.cache_at != now:
            self.view_cache.clear()
            self.cache_at = now
        cached = self.view_cache.get(subject)
        if cached is None:
            a = assess(self.facts(self.by_subject[subject]), now, self.policy)
            cached = SubjectView(
                subject_id=subject,
                score=a.score,
                tier=a.tier,
                reasons=a.reasons,
                incidents=a.incidents,
                platforms=a.platforms,
                last_incident_at=a.last_incident_at.isoformat() if a.last_incident_at else None,
                policy_version=self.policy.version,
                computed_at=now.isoformat(),
            )
            self.view_cache[subject] = cached
        return cached

    def device_subjects(self, device: int) -> int:
        """How many distinct subjects have counting incidents on this device (`device_subject_counts`)."""
        found = self.by_device.get(device)
        if not found:
            return 0
        roots = {self.linker.subject_of[i.strong[0]] for i in found if i.status in COUNTING_STATUSES}
        return len(roots)

    def decision(self, c: Consumer, now: datetime) -> Decision:
        """What a platform's lookup with all of this consumer's identifiers answers."""
        views = [self.view(s, now) for s in sorted(self.linker.subjects_of(c.strong))]
        dev = self.device_subjects(c.device)
        return decide(views, [dev] if dev else [], None, self.policy)

    def invalidate(self, subjects: Iterable[int]) -> None:
        for s in subjects:
            self.view_cache.pop(s, None)

    # -- the days -----------------------------------------------------------------------------------

    def run(self) -> None:
        self.populate()
        marks = {90, 180, 365, self.sc.days - 1}
        for day in range(self.sc.days):
            todays = self.events.pop(day, [])
            touched: set[int] = set()
            devices: set[int] = set()
            # Phase 0: abuse attempts, each decided by a lookup with yesterday's ledger.
            now = self.at(day + 0.5)
            for phase, event in todays:
                if phase == 0:
                    self.attempt(day, now, *event)
            # Phase 1: reports, disputes, answers and SLA expiries, in the order they were scheduled.
            for phase, event in todays:
                if phase == 1:
                    self.apply(day, event, touched, devices)
            raised = self.refresh_trust(day)
            # Phase 2: who is restricted now (only what rose can make a first or a worst restriction).
            now = self.at(day + 0.9)
            self.cache_at = None
            for idx in self.affected(touched, devices, raised):
                self.track(self.consumers[idx], day, now)
            if day in marks:
                self.trust_at[day + 1] = list(self.trust)

    def attempt(self, day: int, now: datetime, idx: int, platform: int, attempt_id: int) -> None:
        c = self.consumers[idx]
        d = self.decision(c, now)
        rank = self.policy.rank(d.tier)
        if rank:
            self._restricted(c, day)
        if "no_refund_only" in d.restrictions:
            return
        rng = self.stream("attempt", attempt_id)
        if "manual_review" in d.restrictions and rng.random() < self.sc.review_stops:
            return
        c.attempts += 1
        if c.first_abuse_day is None:
            c.first_abuse_day = day
        spec = self.sc.platforms[platform]
        if rng.random() < spec.detect:
            delay = 1 + int(rng.expovariate(1.0 / 7.0))
            self.schedule(day + delay, ("report", idx, platform, day, True, attempt_id))

    def schedule(self, day: int, event: tuple[Any, ...]) -> None:
        if day < self.sc.days:
            self._at(day, 1, event)

    def apply(self, day: int, event: Any, touched: set[int], devices: set[int]) -> None:
        if event[0] == "malice":
            rng = self.stream("malice", event[2])
            victim = self._honest_of(COMPETITOR, rng)
            inc = self.report(day, victim, MALICIOUS, day, False, rng, kind="malice")
            inc.malice = True
            touched.add(self.linker.subject_of[inc.strong[0]])
            devices.add(inc.device)
        elif event[0] == "report":
            _, idx, platform, occurred, true, attempt_id = event
            rng = self.stream("report", attempt_id)
            inc = self.report(day, idx, platform, occurred, true, rng)
            touched.add(self.linker.subject_of[inc.strong[0]])
            devices.add(inc.device)
            spec = self.sc.platforms[platform]
            if true and spec.error and rng.random() < spec.error / (1.0 - spec.error):
                rng = self.stream("error", attempt_id)
                wrong = self.report(day, self._honest(rng), platform, day - rng.randrange(0, 14), False, rng)
                touched.add(self.linker.subject_of[wrong.strong[0]])
                devices.add(wrong.device)
        elif event[0] == "open":
            self.open_dispute(day, event[1])
        elif event[0] == "answer":
            _, inc, outcome = event
            if inc.dispute == "open":
                self.close_dispute(day, inc, outcome)
                if outcome == "upheld":
                    touched.add(self.linker.subject_of[inc.strong[0]])
                    devices.add(inc.device)
        elif event[0] == "sla":
            inc = event[1]
            if inc.dispute == "open":
                self.close_dispute(day, inc, "expired")

    def _honest_of(self, platform: int, rng: random.Random) -> int:
        del platform  # every consumer may shop anywhere; the competitor's customers are a random draw
        return self._honest(rng)

    def report(
        self, day: int, idx: int, platform: int, occurred: int, true: bool, rng: random.Random, kind: str = ""
    ) -> Incident:
        c = self.consumer(idx)
        mix = CATEGORY_MIX[kind or c.kind]
        category = rng.choices([m[0] for m in mix], [m[1] for m in mix])[0]
        spec = self.sc.platforms[platform]
        if true and rng.random() < spec.strong:
            confirmation = rng.choice(("court_or_police", "consumer_admission"))
        else:
            confirmation = "merchant_evidence" if rng.random() < 0.45 else "platform_review"
        median = MEDIAN_YUAN[kind or c.kind]
        yuan = max(10.0, median * math.exp(rng.gauss(0.0, 0.9)))
        occurred = max(0, occurred)
        inc = Incident(
            id=len(self.incidents),
            consumer=idx,
            platform=platform,
            category=category,
            confirmation=confirmation,
            amount_minor=round(yuan) * 100,
            occurred_day=occurred,
            reported_day=day,
            true=true,
            strong=c.strong,
            device=c.device,
            occurred_at=self.at(occurred + 0.5),
            rng=rng,
        )
        self.incidents.append(inc)
        root, merged = self.linker.link(
            ("phone" if t // SPACE == PHONE else "payment_account", t) for t in c.strong
        )
        bucket = self.by_subject.setdefault(root, [])
        for other in merged:
            bucket.extend(self.by_subject.pop(other))
        bucket.append(inc)
        self.by_device.setdefault(c.device, []).append(inc)
        self.reported_by[platform].add(idx)
        c.reported.append(inc)
        if c.first_reported_day is None:
            c.first_reported_day = day
        if c.c3_day is None and len(c.reported) >= 3 and len({i.platform for i in c.reported}) >= 2:
            c.c3_day = day
        # The consumer is notified of the entry; who disputes, and when.
        wants, mean = (
            (self.sc.honest_dispute, self.sc.honest_dispute_days)
            if not true
            else (self.sc.abuser_dispute, 5.0)
        )
        if rng.random() < wants:
            self.schedule(day + 1 + int(rng.expovariate(1.0 / mean)), ("open", inc))
        return inc

    def open_dispute(self, day: int, inc: Incident) -> None:
        if inc.status not in COUNTING_STATUSES or inc.dispute is not None:
            return
        inc.status, inc.dispute, inc.disputed_day = "disputed", "open", day
        self.view_cache.pop(self.linker.subject_of[inc.strong[0]], None)
        d = Dispute(inc, day)
        self.windows[inc.platform].append(d)
        self.disputed[inc.platform] += 1
        self.open_disputes[inc.id] = d
        spec, rng = self.sc.platforms[inc.platform], inc.rng
        sla = self.sc.sla_days
        draw = rng.random()
        if inc.malice:
            if draw < spec.malicious_upholds:
                self.schedule(day + rng.randint(1, sla - 1), ("answer", inc, "upheld"))
            else:
                self.schedule(day + sla, ("sla", inc))
        elif draw < spec.on_time:
            outcome = "upheld" if inc.true else "retracted"
            self.schedule(day + rng.randint(1, sla - 1), ("answer", inc, outcome))
        else:
            if draw < spec.on_time + spec.late:
                self.late_answers += 1
            self.schedule(day + sla, ("sla", inc))

    def close_dispute(self, day: int, inc: Incident, outcome: str) -> None:
        inc.dispute = outcome
        d = self.open_disputes.pop(inc.id)
        if outcome == "upheld":
            inc.status = "active"
        else:
            inc.status, inc.removed_day = "retracted", day
            d.overturned = True
            if d.in_window:
                self.overturned[inc.platform] += 1
        self.view_cache.pop(self.linker.subject_of[inc.strong[0]], None)

    def refresh_trust(self, day: int) -> list[int]:
        """Effective trust per platform, from the disputes opened in the policy's window, as
        services/reliability.py computes it. Returns the platforms whose trust rose."""
        raised = []
        w = self.policy.trust_window_days
        for p, window in enumerate(self.windows):
            while window and window[0].opened_day <= day - w:
                old = window.popleft()
                old.in_window = False
                self.disputed[p] -= 1
                if old.overturned:
                    self.overturned[p] -= 1
            value = effective_trust(
                1.0,
                self.disputed[p],
                self.overturned[p],
                self.policy.trust_prior_a,
                self.policy.trust_prior_b,
                self.policy.trust_min,
            )
            if value > self.trust[p]:
                raised.append(p)
            self.trust[p] = value
        return raised

    def affected(self, touched: set[int], devices: set[int], raised: list[int]) -> list[int]:
        out: set[int] = set()
        for touched_subject in touched:
            s = touched_subject
            while s in self.linker.merged_into:  # merged away since it was touched today
                s = self.linker.merged_into[s]
            for tok in self.linker.tokens_of[s]:
                out.update(self.token_consumers.get(tok, ()))
                space, n = divmod(tok, SPACE)
                if space in (PHONE, PAY):
                    out.add(n)
        for dev in devices:
            members = self.token_consumers.get(dev)
            if members is not None:
                out.update(members)
        for p in raised:
            keep = set()
            for idx in self.reported_by[p]:
                c = self.consumers[idx]
                live = any(i.platform == p and i.status in COUNTING_STATUSES for i in c.reported)
                if live and (c.kind == HONEST or c.first_restricted_day is None):
                    keep.add(idx)
            self.reported_by[p] = keep
            out |= keep
        return sorted(i for i in out if i in self.consumers)

    def track(self, c: Consumer, day: int, now: datetime) -> None:
        d = self.decision(c, now)
        rank = self.policy.rank(d.tier)
        if rank:
            self._restricted(c, day)
        c.worst_rank = max(c.worst_rank, rank)
        if c.c3_day == day and c.c3_rank is None:
            c.c3_rank = rank
        if c.kind == HONEST and rank:
            platforms = {
                i.platform
                for s in self.linker.subjects_of(c.strong)
                for i in self.by_subject[s]
                if i.status in COUNTING_STATUSES
            }
            if len(platforms) == 1:
                (p,) = platforms
                c.alone_rank[p] = max(c.alone_rank.get(p, 0), rank)

    def _restricted(self, c: Consumer, day: int) -> None:
        if c.first_restricted_day is None:
            c.first_restricted_day = day
            c.incidents_before = c.attempts

    # -- the end ------------------------------------------------------------------------------------

    def final(self, at: datetime | None = None) -> dict[int, Decision]:
        """Every consumer's decision at the end (or at `at`): those no report touched are decided too."""
        now = at or self.at(self.sc.days)
        self.cache_at = None
        out: dict[int, Decision] = {}
        empty = decide([], [], None, self.policy)
        for idx in range(self.sc.consumers):
            c = self.consumers.get(idx)
            if c is None:
                strong = (token(PHONE, idx), token(PAY, idx))
                dev = token(DEVICE, idx)
                if self.linker.subjects_of(strong) or self.device_subjects(dev):
                    raise AssertionError(f"consumer {idx} is in the ledger but was never materialised")
                out[idx] = empty
            else:
                out[idx] = self.decision(c, now)
        return out


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


# -- the table --------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def measure(sim: Sim, decisions: dict[int, Decision]) -> dict[str, Any]:
    policy, sc = sim.policy, sim.sc
    rank = {t.name: policy.rank(t.name) for t in policy.tiers}
    hold = rank[policy.tiers[0].name]
    rr = rank.get("return_required", hold)
    n_abusers = len(sim.abusers)
    n_honest = sc.consumers - n_abusers
    honest_seen = [c for c in sim.consumers.values() if c.kind == HONEST]
    end_rank = {idx: rank[d.tier] for idx, d in decisions.items()}
    honest_end = sum(1 for c in honest_seen if end_rank[c.idx] > 0)
    honest_hold_end = sum(1 for c in honest_seen if end_rank[c.idx] >= hold)
    honest_worst = sum(1 for c in honest_seen if max(c.worst_rank, end_rank[c.idx]) > 0)
    honest_hold_worst = sum(1 for c in honest_seen if max(c.worst_rank, end_rank[c.idx]) >= hold)
    untouched_restricted = sum(
        1 for idx, r in end_rank.items() if r and idx not in sim.consumers
    )  # always 0: see Sim.final
    out: dict[str, Any] = {
        "seed": sc.seed,
        "consumers": sc.consumers,
        "honest": n_honest,
        "incidents": len(sim.incidents),
        "wrong_incidents": sum(1 for i in sim.incidents if not i.true),
        "honest_restricted_end": honest_end / n_honest,
        "honest_restricted_end_n": honest_end,
        "honest_restricted_worst": honest_worst / n_honest,
        "honest_restricted_worst_n": honest_worst,
        "honest_hold_end_n": honest_hold_end,
        "honest_hold_worst_n": honest_hold_worst,
        "untouched_restricted": untouched_restricted,
    }
    for kind in ABUSER_KINDS:
        group = [c for c in sim.abusers if c.kind == kind]
        caught = [c for c in group if c.first_restricted_day is not None and c.first_abuse_day is not None]
        out[kind] = {
            "n": len(group),
            "restricted_end": sum(1 for c in group if end_rank[c.idx] > 0) / max(1, len(group)),
            "return_required_end": sum(1 for c in group if end_rank[c.idx] >= rr) / max(1, len(group)),
            "ever_restricted": sum(1 for c in group if c.first_restricted_day is not None)
            / max(1, len(group)),
            "median_incidents_before": _median([c.incidents_before or 0 for c in caught]),
            "median_days_before": _median(
                [max(0, (c.first_restricted_day or 0) - (c.first_abuse_day or 0)) for c in caught]
            ),
            "median_incidents_total": _median([c.attempts for c in group]),
        }
    serial = [c for c in sim.abusers if c.kind == SERIAL and c.c3_day is not None]
    out[SERIAL]["reached_3rd_corroborated"] = len(serial)
    out[SERIAL]["restricted_by_3rd_corroborated"] = sum(
        1 for c in serial if c.first_restricted_day is not None and c.first_restricted_day <= (c.c3_day or 0)
    ) / max(1, len(serial))
    out[SERIAL]["return_required_by_3rd_corroborated"] = sum(
        1 for c in serial if (c.c3_rank or 0) >= rr
    ) / max(1, len(serial))
    for kind in (RING_DEVICE, RING_PAYMENT):
        group = [c for c in sim.abusers if c.kind == kind]
        ahead = [
            c
            for c in group
            if c.first_restricted_day is not None
            and (c.first_reported_day is None or c.first_restricted_day < c.first_reported_day)
        ]
        out[kind]["restricted_before_own_report"] = len(ahead) / max(1, len(group))
    for p, label in ((SLOPPY, "sloppy"), (MALICIOUS, "malicious")):
        alone = [c.alone_rank[p] for c in honest_seen if p in c.alone_rank]
        ends = [
            c
            for c in honest_seen
            if end_rank[c.idx] > 0
            and {i.platform for i in c.reported if i.status in COUNTING_STATUSES} == {p}
        ]
        out[label] = {
            "honest_restricted_worst_n": len(alone),
            "honest_beyond_review_worst_n": sum(1 for r in alone if r > rank.get("review", 1)),
            "max_tier_alone": max(alone, default=0),
            "honest_restricted_end_n": len(ends),
            "trust": {str(day): round(v[p], 3) for day, v in sorted(sim.trust_at.items())},
        }
    out["careful_trust"] = {str(day): round(v[COMPETITOR], 3) for day, v in sorted(sim.trust_at.items())}
    wrong = [i for i in sim.incidents if not i.true]
    true = [i for i in sim.incidents if i.true]
    end = sc.days
    out["disputes"] = {
        "wrong_entries": len(wrong),
        "wrong_removed_by_dispute": sum(1 for i in wrong if i.dispute == "retracted") / max(1, len(wrong)),
        "wrong_removed_by_sla": sum(1 for i in wrong if i.dispute == "expired") / max(1, len(wrong)),
        "wrong_median_days_visible": _median(
            [(i.removed_day if i.removed_day is not None else end) - i.reported_day for i in wrong]
        ),
        "true_removed_by_sla": sum(1 for i in true if i.dispute == "expired") / max(1, len(true)),
        "late_answers": sim.late_answers,
    }
    names = [t.name for t in reversed(policy.tiers)]
    out["tier_names"] = names
    return out


def run(scenario: Scenario, policy: Policy) -> tuple[Sim, dict[int, Decision], dict[str, Any]]:
    sim = Sim(scenario, policy)
    sim.run()
    decisions = sim.final()
    return sim, decisions, measure(sim, decisions)


# -- policy variants --------------------------------------------------------------------------------


def load_raw(path: Path = DEFAULT_POLICY_PATH) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def variant_policy(raw: dict[str, Any], changes: dict[str, Any]) -> Policy:
    """The policy with some numbers changed: keys are dotted paths ('decay.half_life_days'), or
    'tiers.NAME.min_score'."""
    data = copy.deepcopy(raw)
    for path, value in changes.items():
        parts = path.split(".")
        if parts[0] == "tiers":
            next(t for t in data["tiers"] if t["name"] == parts[1])[parts[2]] = value
            continue
        node = data
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    data["version"] = f"{data['version']}+{json.dumps(changes, sort_keys=True)}"
    return parse_policy(data)


VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("single-platform cap at return_required", {"fairness.single_platform_max_tier": "return_required"}),
    ("single-platform cap at clear", {"fairness.single_platform_max_tier": "clear"}),
    ("review from score 30", {"tiers.review.min_score": 30}),
    ("review from score 15", {"tiers.review.min_score": 15}),
    ("score scale 2", {"score.scale": 2.0}),
    ("score scale 4", {"score.scale": 4.0}),
    ("half-life 90 days", {"decay.half_life_days": 90.0}),
    ("half-life 365 days", {"decay.half_life_days": 365.0}),
    ("corroboration step 0.25", {"corroboration.step": 0.25}),
    ("corroboration step 1.0", {"corroboration.step": 1.0}),
    ("trust prior 2+4 (faster)", {"trust.prior_b": 4.0}),
    ("trust prior 4+16 (slower)", {"trust.prior_a": 4.0, "trust.prior_b": 16.0}),
    ("disputed weight 0", {"status.disputed": 0.0}),
    ("device max tier clear", {"devices.max_tier": "clear"}),
    # The policy before this tuning (2026-11-25.1): both changes undone.
    (
        "previous default (cap return_required, scale 2)",
        {"fairness.single_platform_max_tier": "return_required", "score.scale": 2.0},
    ),
)
SCENARIO_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("SLA 20 days (cn profile)", {"sla_days": 20}),
    ("honest consumers dispute half as often", {"honest_dispute": 0.4}),
)


def _one(job: tuple[str, Scenario, dict[str, Any], Path]) -> tuple[str, dict[str, Any], float]:
    name, scenario, changes, path = job
    started = time.perf_counter()
    policy = variant_policy(load_raw(path), changes)
    _, _, table = run(scenario, policy)
    return name, table, time.perf_counter() - started


# -- printing ---------------------------------------------------------------------------------------


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def num(x: float | None) -> str:
    return "n/a" if x is None else (f"{x:g}" if isinstance(x, float) else str(x))


def detail_table(t: dict[str, Any]) -> str:
    names = t["tier_names"]
    rows = [
        "| group | measure | value |",
        "|---|---|---|",
        f"| honest ({t['honest']:,}) | restricted at the end | {pct(t['honest_restricted_end'], 4)} "
        f"({t['honest_restricted_end_n']}) |",
        f"| honest | restricted at the worst point | {pct(t['honest_restricted_worst'], 4)} "
        f"({t['honest_restricted_worst_n']}) |",
        f"| honest | at `{names[-1]}` at the end / at the worst point | {t['honest_hold_end_n']} / "
        f"{t['honest_hold_worst_n']} |",
    ]
    for kind in ABUSER_KINDS:
        g = t[kind]
        rows.append(
            f"| {kind} ({g['n']:,}) | restricted at the end (any / `return_required` or more) | "
            f"{pct(g['restricted_end'], 1)} / {pct(g['return_required_end'], 1)} |"
        )
        rows.append(
            f"| {kind} | median incidents / days of abuse before the first restriction | "
            f"{num(g['median_incidents_before'])} / {num(g['median_days_before'])} "
            f"(ever restricted: {pct(g['ever_restricted'], 1)}) |"
        )
    s = t[SERIAL]
    rows.append(
        f"| serial | restricted by the 3rd corroborated incident (any / `return_required` or more) | "
        f"{pct(s['restricted_by_3rd_corroborated'], 1)} / {pct(s['return_required_by_3rd_corroborated'], 1)} "
        f"of {s['reached_3rd_corroborated']:,} |"
    )
    for kind in (RING_DEVICE, RING_PAYMENT):
        rows.append(
            f"| {kind} | restricted before their own first report (through the linked identifier) | "
            f"{pct(t[kind]['restricted_before_own_report'], 1)} |"
        )
    for label in ("sloppy", "malicious"):
        r = t[label]
        trust = ", ".join(f"day {d}: {v}" for d, v in r["trust"].items())
        rows.append(
            f"| {label} reporter alone | honest restricted at the worst point / beyond `review` / at the end | "
            f"{r['honest_restricted_worst_n']} / {r['honest_beyond_review_worst_n']} / "
            f"{r['honest_restricted_end_n']} (highest tier: `{names[r['max_tier_alone']]}`) |"
        )
        rows.append(f"| {label} reporter | effective trust | {trust} |")
    careful = ", ".join(f"day {d}: {v}" for d, v in t["careful_trust"].items())
    rows.append(f"| careful reporter | effective trust | {careful} |")
    d = t["disputes"]
    rows.append(
        f"| wrong entries ({d['wrong_entries']:,}) | removed by a dispute / by the SLA | "
        f"{pct(d['wrong_removed_by_dispute'], 1)} / {pct(d['wrong_removed_by_sla'], 1)} |"
    )
    rows.append(
        f"| wrong entries | median days visible (an entry still visible counts to the end) | "
        f"{num(d['wrong_median_days_visible'])} |"
    )
    rows.append(
        f"| true entries | removed by the SLA (left unanswered) | {pct(d['true_removed_by_sla'], 2)} |"
    )
    return "\n".join(rows)


def comparison_table(results: Sequence[tuple[str, dict[str, Any]]]) -> str:
    head = (
        "| run | honest end | honest worst | honest hold (end/worst) | malicious alone beyond review | "
        "serial by 3rd corr. | serial median incidents | opportunist end | ring (device/payment) end | "
        "wrong removed | wrong median days |"
    )
    rows = [head, "|" + "---|" * 11]
    for name, t in results:
        d = t["disputes"]
        rows.append(
            f"| {name} | {pct(t['honest_restricted_end'], 4)} | {pct(t['honest_restricted_worst'], 4)} | "
            f"{t['honest_hold_end_n']}/{t['honest_hold_worst_n']} | "
            f"{t['malicious']['honest_beyond_review_worst_n']} | "
            f"{pct(t[SERIAL]['restricted_by_3rd_corroborated'], 1)} | "
            f"{num(t[SERIAL]['median_incidents_before'])} | {pct(t[OPPORTUNIST]['restricted_end'], 1)} | "
            f"{pct(t[RING_DEVICE]['restricted_end'], 1)} / {pct(t[RING_PAYMENT]['restricted_end'], 1)} | "
            f"{pct(d['wrong_removed_by_dispute'] + d['wrong_removed_by_sla'], 1)} | "
            f"{num(d['wrong_median_days_visible'])} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consumers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY_PATH)
    parser.add_argument("--variants", action="store_true", help="also run every policy and scenario variant")
    parser.add_argument("--jobs", type=int, default=2, help="processes for the variants")
    parser.add_argument(
        "--only", action="append", default=[], help="run only the variants named (repeatable)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=JSON",
        help="a policy change for every run, e.g. decay.half_life_days=90 (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="write every table as JSON here")
    args = parser.parse_args(argv)

    scenario = Scenario(consumers=args.consumers, seed=args.seed)
    raw = load_raw(args.policy)
    base = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    started, cpu = time.perf_counter(), time.process_time()
    policy = variant_policy(raw, base) if base else parse_policy(raw)
    sim, _, table = run(scenario, policy)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"# Decision quality: {args.consumers:,} consumers over {scenario.days} days, seed {args.seed}, "
          f"policy {policy.version}")  # fmt: skip
    print(
        f"\n{len(sim.consumers):,} consumers touched by an incident or an attempt, {table['incidents']:,} "
        f"incidents ({table['wrong_incidents']:,} wrong); run time {elapsed:.1f} s wall, {cpu:.1f} s CPU "
        f"(target: 1,000,000 consumers in 600 s wall on a 2-core machine)\n"
    )
    print(detail_table(table))
    results: list[tuple[str, dict[str, Any]]] = [("default policy", table)]
    if args.variants:
        jobs = [(name, scenario, {**base, **changes}, args.policy) for name, changes in VARIANTS]
        jobs += [
            (name, replace(scenario, **changes), base, args.policy) for name, changes in SCENARIO_VARIANTS
        ]
        if args.only:
            jobs = [job for job in jobs if job[0] in args.only]
        if args.jobs > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
                done = pool.map(_one, jobs)
        else:
            done = [_one(job) for job in jobs]
        for name, t, _ in done:
            results.append((name, t))
        print(
            f"\n## Variants (seed {args.seed}, {args.consumers:,} consumers; one change each from the default)\n"
        )
        print(comparison_table(results))
    if args.json:
        args.json.write_text(
            json.dumps({"elapsed_s": elapsed, "cpu_s": cpu, "results": dict(results)}, indent=1, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
