"""The consortium simulator's own invariants, on small populations, and the pure linking rule it follows.

The table in docs/decision-quality.md is only worth something if the simulator is right about the things
that must hold whatever the policy: nobody is restricted without an entry, a run repeats from its seed,
wrong entries leave only through disputes, and its subjects are exactly the connected components of the
strong identifiers (the rule `services.linking.link_incidents` applies in SQL).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import consortium_sim as cs
from ledger.domain.linking import LINKING_TYPES, Linker
from ledger.domain.policy import load_policy
from ledger.identity import STRONG_TYPES

POLICY = load_policy()
SMALL = cs.Scenario(consumers=4_000, days=240, seed=3, opportunists=0.03, serials=0.01, ring_members=0.02)
PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def small() -> tuple[cs.Sim, dict[int, object], dict[str, object]]:
    return cs.run(SMALL, POLICY)


def test_a_consumer_no_entry_touches_is_never_restricted(small: tuple[cs.Sim, dict, dict]) -> None:
    sim, decisions, _ = small
    in_ledger = {i.consumer for i in sim.incidents}
    ring_devices = {c.idx for c in sim.abusers if c.kind == cs.RING_DEVICE and sim.device_subjects(c.device)}
    for idx, decision in decisions.items():
        if idx not in in_ledger and idx not in ring_devices and sim.consumers.get(idx, None) is None:
            assert decision.tier == "clear", idx
    honest_untouched = [c for c in sim.consumers.values() if c.kind == cs.HONEST and not c.reported]
    assert all(c.worst_rank == 0 and decisions[c.idx].tier == "clear" for c in honest_untouched)
    assert len(decisions) == SMALL.consumers


def test_an_honest_consumer_is_never_restricted_without_an_entry_about_them(
    small: tuple[cs.Sim, dict, dict],
) -> None:
    sim, decisions, table = small
    for c in sim.consumers.values():
        if c.kind == cs.HONEST and not any(i.status in ("active", "disputed") for i in c.reported):
            assert decisions[c.idx].tier == "clear"
    assert table["untouched_restricted"] == 0


def test_the_same_seed_gives_the_same_table() -> None:
    scenario = replace(SMALL, consumers=2_000, days=150)
    _, _, first = cs.run(scenario, POLICY)
    _, _, second = cs.run(scenario, POLICY)
    assert first == second
    _, _, other = cs.run(replace(scenario, seed=scenario.seed + 1), POLICY)
    assert other != first


def test_wrong_entries_leave_only_through_a_dispute_and_true_ones_are_never_retracted_by_their_reporter(
    small: tuple[cs.Sim, dict, dict],
) -> None:
    sim, _, _ = small
    for i in sim.incidents:
        if i.status == "retracted":
            assert i.dispute in ("retracted", "expired")
            assert i.removed_day is not None
            assert i.removed_day >= i.reported_day
        if i.true:
            assert i.dispute != "retracted"  # a platform answers by the truth: it upholds what is true
        if i.dispute == "upheld" and not i.true:
            assert i.malice  # only the malicious reporter upholds a wrong entry
        assert i.occurred_day <= i.reported_day


def test_only_the_malicious_and_erring_reporters_hit_honest_consumers(
    small: tuple[cs.Sim, dict, dict],
) -> None:
    sim, _, _ = small
    for i in sim.incidents:
        victim = sim.consumers[i.consumer]
        if victim.kind == cs.HONEST:
            assert not i.true
            assert i.malice or sim.sc.platforms[i.platform].error > 0
        else:
            assert i.true
    assert not any(i.platform == 3 for i in sim.incidents)  # the lookup-only platform never reports


def test_effective_trust_stays_within_the_policy_range(small: tuple[cs.Sim, dict, dict]) -> None:
    sim, _, table = small
    for values in sim.trust_at.values():
        assert all(POLICY.trust_min <= v <= 1.0 for v in values)
    # The careful reporter is rarely overturned; the malicious one is, through the SLA.
    last = str(max(int(d) for d in table["careful_trust"]))
    assert table["careful_trust"][last] > table["malicious"]["trust"][last]


def test_the_sloppy_reporter_errs_about_as_often_as_it_should() -> None:
    sim, _, _ = cs.run(replace(SMALL, consumers=20_000, days=365), POLICY)
    mine = [i for i in sim.incidents if i.platform == cs.SLOPPY]
    wrong = sum(1 for i in mine if not i.true) / len(mine)
    assert 0.06 < wrong < 0.14, wrong


def test_subjects_are_the_connected_components_of_strong_identifiers(
    small: tuple[cs.Sim, dict, dict],
) -> None:
    sim, _, _ = small
    # Brute force: union incidents that share any strong token.
    parent = list(range(len(sim.incidents)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[int, int] = {}
    for i in sim.incidents:
        for tok in i.strong:
            if tok in first:
                parent[find(i.id)] = find(first[tok])
            else:
                first[tok] = i.id
    components: dict[int, set[int]] = {}
    for i in sim.incidents:
        components.setdefault(find(i.id), set()).add(i.id)
    simulated = {frozenset(i.id for i in incidents) for incidents in sim.by_subject.values()}
    assert simulated == {frozenset(c) for c in components.values()}


def test_payment_rings_become_one_subject_and_device_rings_never_merge(
    small: tuple[cs.Sim, dict, dict],
) -> None:
    sim, _, _ = small
    for c in sim.abusers:
        if not c.reported:
            continue
        subject = sim.linker.subject_of[c.strong[0]]
        mates = [
            m for m in sim.abusers if m.ring == c.ring and m.ring >= 0 and m.reported and m.kind == c.kind
        ]
        if c.kind == cs.RING_PAYMENT:
            assert all(sim.linker.subject_of[m.strong[0]] == subject for m in mates)
        elif c.kind == cs.RING_DEVICE:
            assert all(sim.linker.subject_of[m.strong[0]] != subject for m in mates if m is not c)


@PROPERTY
@given(
    seed=st.integers(0, 10_000),
    consumers=st.integers(300, 2_500),
    days=st.integers(20, 200),
    sla=st.integers(5, 40),
)
def test_invariants_hold_for_any_small_population(seed: int, consumers: int, days: int, sla: int) -> None:
    scenario = replace(SMALL, seed=seed, consumers=consumers, days=days, sla_days=sla)
    sim, decisions, table = cs.run(scenario, POLICY)
    assert len(decisions) == consumers
    assert table["untouched_restricted"] == 0
    assert table["honest_restricted_worst_n"] >= table["honest_restricted_end_n"]
    for c in sim.consumers.values():
        if c.kind == cs.HONEST and not c.reported:
            assert decisions[c.idx].tier == "clear"
        if c.first_restricted_day is not None:
            assert c.incidents_before is not None
            assert c.incidents_before <= c.attempts
    for i in sim.incidents:
        if i.dispute == "expired":
            assert i.removed_day == i.disputed_day + sla  # type: ignore[operator]


# -- the linking rule -------------------------------------------------------------------------------


def test_the_linking_types_are_the_strong_identifier_types() -> None:
    assert frozenset(STRONG_TYPES) == LINKING_TYPES


def test_linker_mirrors_the_sql_rule_for_the_surviving_subject() -> None:
    linker = Linker()
    a, _ = linker.link([("phone", "p1"), ("email", "e1")])  # subject 1, two tokens
    b, _ = linker.link([("phone", "p2")])  # subject 2, one token
    assert (a, b) == (1, 2)
    root, merged = linker.link([("phone", "p2"), ("email", "e1"), ("device_id", "d")])
    assert (root, merged) == (1, [2])  # the larger subject survives
    assert linker.subjects_of(["p1", "p2", "e1"]) == {1}
    assert "d" not in linker.subject_of  # devices never link
    c, _ = linker.link([("phone", "p3")])
    d, _ = linker.link([("phone", "p4")])
    root, merged = linker.link([("phone", "p3"), ("phone", "p4")])
    assert (root, merged) == (min(c, d), [max(c, d)])  # a tie keeps the lowest id
    e, _ = linker.link([("device_id", "d")])
    assert e not in (a, c, d)  # no strong identifier: a new subject


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), min_size=0, max_size=4), min_size=1, max_size=40), st.randoms())
def test_the_partition_is_the_same_whatever_the_order(incidents: list[list[int]], rnd: object) -> None:
    def partition(order: list[int]) -> set[frozenset[int]]:
        linker = Linker()
        subject_of_incident = {}
        for n in order:
            subject_of_incident[n], _ = linker.link([("phone", t) for t in incidents[n]])
        groups: dict[int, set[int]] = {}
        for n, first in subject_of_incident.items():
            s = first
            while s in linker.merged_into:
                s = linker.merged_into[s]
            groups.setdefault(s, set()).add(n)
        return {frozenset(g) for g in groups.values()}

    order = list(range(len(incidents)))
    shuffled = order[:]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert partition(order) == partition(shuffled)
