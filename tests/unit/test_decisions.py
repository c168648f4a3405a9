"""Combining cached subject scores into one refund-time decision (`ledger.domain.decisions.decide`).

A lookup can name identifiers of several subjects, or only a shared device. The decision must take the
most restrictive tier, keep every subject's reasons, say when several subjects matched, never let a
device on its own push a consumer past `review`, and drop the restrictions a return already satisfies.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.decisions import SATISFIED_BY_RETURN, SubjectView, decide
from ledger.domain.policy import load_policy

POLICY = load_policy()
TIERS = [t.name for t in POLICY.tiers]
DECISION_CODES = {"MULTIPLE_SUBJECTS_MATCHED", "DEVICE_LINKED", "EVIDENCE_REUSED"}
CODES = sorted(set(POLICY.reasons) - DECISION_CODES)  # the codes a subject's own score can carry


def view(
    subject_id: int = 1, tier: str = "review", score: int | None = None, **overrides: object
) -> SubjectView:
    values: dict[str, object] = {
        "subject_id": subject_id,
        "score": POLICY.tier(tier).min_score if score is None else score,
        "tier": tier,
        "reasons": ("FABRICATED_EVIDENCE_RECENT",),
        "incidents": 1,
        "platforms": 1,
        "last_incident_at": "2026-11-01T02:00:00+00:00",
        "policy_version": POLICY.version,
        "computed_at": "2026-11-25T00:00:00+00:00",
    }
    values.update(overrides)
    return SubjectView(**values)  # type: ignore[arg-type]


@st.composite
def views(draw: st.DrawFn) -> SubjectView:
    tier = draw(st.sampled_from(TIERS))
    low = POLICY.tier(tier).min_score
    higher = [t.min_score for t in POLICY.tiers if t.min_score > low]
    return view(
        subject_id=draw(st.integers(1, 6)),
        tier=tier,
        score=draw(st.integers(low, (min(higher) - 1) if higher else 100)),
        reasons=tuple(draw(st.lists(st.sampled_from(CODES), max_size=4, unique=True))),
        incidents=draw(st.integers(0, 20)),
        platforms=draw(st.integers(0, 5)),
        last_incident_at=draw(
            st.sampled_from([None, "2026-01-01T00:00:00+00:00", "2026-10-01T00:00:00+00:00"])
        ),
        computed_at=draw(st.sampled_from(["2026-11-24T00:00:00+00:00", "2026-11-25T00:00:00+00:00"])),
    )


KINDS = st.sampled_from([None, "refund_only", "return_and_refund"])


@settings(max_examples=200, deadline=None)
@given(st.lists(views(), max_size=6), st.lists(st.integers(0, 4), max_size=3), KINDS, st.booleans())
def test_decision_is_the_most_restrictive_with_every_reason(
    subjects: list[SubjectView], devices: list[int], kind: str | None, evidence: bool
) -> None:
    decision = decide(subjects, devices, kind, POLICY, evidence_matched=evidence)
    distinct = {s.subject_id: s for s in subjects}  # the same subject reached through two tokens counts once
    strongest = max((POLICY.rank(s.tier) for s in distinct.values()), default=0)
    assert POLICY.rank(decision.tier) >= strongest
    floors = [strongest]
    if not distinct and any(n >= POLICY.device_min_subjects for n in devices):
        floors.append(POLICY.rank(POLICY.device_max_tier))
    if evidence:
        floors.append(POLICY.rank(POLICY.evidence_min_tier))
    assert POLICY.rank(decision.tier) == max(floors)
    for s in distinct.values():
        assert set(s.reasons) <= set(decision.reasons)
    assert len(decision.reasons) == len(set(decision.reasons))
    assert ("MULTIPLE_SUBJECTS_MATCHED" in decision.reasons) == (len(distinct) > 1)
    assert ("EVIDENCE_REUSED" in decision.reasons) == evidence
    assert decision.score == max((s.score for s in distinct.values()), default=0)
    assert decision.incidents == sum(s.incidents for s in distinct.values())
    expected = POLICY.tier(decision.tier).restrictions
    if kind == "return_and_refund":
        expected = tuple(r for r in expected if r not in SATISFIED_BY_RETURN)
    assert decision.restrictions == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(views(), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_decision_does_not_depend_on_the_order_of_subjects(subjects: list[SubjectView], rnd: object) -> None:
    unique = list({s.subject_id: s for s in subjects}.values())
    shuffled = [*unique]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = decide(unique, [], None, POLICY), decide(shuffled, [], None, POLICY)
    assert (a.tier, a.score, set(a.reasons), a.incidents, a.platforms) == (
        b.tier,
        b.score,
        set(b.reasons),
        b.incidents,
        b.platforms,
    )


def test_no_match_is_clear() -> None:
    decision = decide([], [], None, POLICY)
    assert (decision.tier, decision.restrictions, decision.score, decision.reasons) == ("clear", (), 0, ())
    assert decision.computed_at is None
    assert decision.policy_version == POLICY.version


def test_most_restrictive_tier_and_union_of_reasons() -> None:
    decision = decide(
        [
            view(1, "review", reasons=("REFUND_ONLY_ABUSE", "DISPUTED_ENTRY_PRESENT")),
            view(2, "hold", score=85, reasons=("FABRICATED_EVIDENCE_RECENT", "MULTIPLE_PLATFORMS")),
        ],
        [],
        None,
        POLICY,
    )
    assert decision.tier == "hold"
    assert decision.score == 85
    assert set(decision.restrictions) == {
        "no_refund_only",
        "require_return",
        "no_auto_refund",
        "manual_review",
    }
    # The most severe subject's reasons come first, then the others', then the multiple-match note.
    assert decision.reasons == (
        "FABRICATED_EVIDENCE_RECENT",
        "MULTIPLE_PLATFORMS",
        "REFUND_ONLY_ABUSE",
        "DISPUTED_ENTRY_PRESENT",
        "MULTIPLE_SUBJECTS_MATCHED",
    )
    assert decision.incidents == 2
    assert decision.computed_at == "2026-11-25T00:00:00+00:00"


def test_one_subject_reached_through_two_identifiers_is_not_multiple() -> None:
    decision = decide([view(4, "return_required"), view(4, "return_required")], [], None, POLICY)
    assert "MULTIPLE_SUBJECTS_MATCHED" not in decision.reasons
    assert decision.incidents == 1


def test_summary_takes_the_latest_incident_and_oldest_computation() -> None:
    decision = decide(
        [
            view(1, last_incident_at="2026-01-01T00:00:00+00:00", computed_at="2026-11-25T00:00:00+00:00"),
            view(
                2,
                last_incident_at="2026-10-01T00:00:00+00:00",
                computed_at="2026-11-24T00:00:00+00:00",
                platforms=3,
            ),
        ],
        [],
        None,
        POLICY,
    )
    assert decision.last_incident_at == "2026-10-01T00:00:00+00:00"
    assert decision.computed_at == "2026-11-24T00:00:00+00:00"
    assert decision.platforms == 3


@pytest.mark.parametrize("tier", ["return_required", "hold"])
def test_return_and_refund_drops_what_a_return_satisfies(tier: str) -> None:
    refund_only = decide([view(tier=tier)], [], "refund_only", POLICY)
    with_return = decide([view(tier=tier)], [], "return_and_refund", POLICY)
    assert {"no_refund_only", "require_return"} <= set(refund_only.restrictions)
    assert not {"no_refund_only", "require_return"} & set(with_return.restrictions)
    assert set(with_return.restrictions) == set(refund_only.restrictions) - SATISFIED_BY_RETURN
    assert with_return.tier == refund_only.tier == tier


def test_device_only_match_is_capped_at_review() -> None:
    decision = decide([], [5], None, POLICY)
    assert decision.tier == "review"
    assert decision.restrictions == ("manual_review",)
    assert decision.reasons == ("DEVICE_LINKED",)
    assert decision.score == 0


def test_device_with_no_counting_subject_is_ignored() -> None:
    assert decide([], [0], None, POLICY).tier == "clear"


def test_device_never_raises_a_matched_subject() -> None:
    clear = decide([view(1, "clear", score=3, reasons=())], [9], None, POLICY)
    assert clear.tier == "clear"
    assert "DEVICE_LINKED" in clear.reasons
    hold = decide([view(1, "hold", score=90)], [9], None, POLICY)
    assert hold.tier == "hold"


def test_evidence_match_raises_to_at_least_review() -> None:
    assert decide([], [], None, POLICY, evidence_matched=True).tier == "review"
    assert decide([view(tier="hold", score=90)], [], None, POLICY, evidence_matched=True).tier == "hold"
    assert "EVIDENCE_REUSED" in decide([], [], None, POLICY, evidence_matched=True).reasons
