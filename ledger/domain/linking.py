"""The identity linking rule as a pure function, so that a simulation can follow the rule the database does.

The served system links in SQL (`services.linking.link_incidents` over `storage.subjects`): every
incident's strong identifiers (id card, phone, e-mail, payment account) belong to one subject; when an
incident's strong identifiers already belong to several subjects, those subjects become one, kept under
the subject with the most linked identifiers (the lowest id on a tie); an incident with no known strong
identifier starts a new subject. Device identifiers never link. `Linker` applies the same rule in memory,
with the same choice of surviving subject and the same numbering when incidents arrive in the same order.
Decisions depend only on which incidents end up together, and that partition is the same whatever the
order (connectivity does not depend on it); tests/e2e/test_consortium_served.py checks a served run
against this class decision by decision.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

# The identifier types that link, as `ledger.identity.STRONG_TYPES` (a unit test keeps the two equal; the
# domain imports nothing outside itself).
LINKING_TYPES = frozenset(("id_card", "phone", "email", "payment_account"))


@dataclass
class Linker:
    """A flat union-find: every strong token points straight at its subject, as `identity_links` does."""

    subject_of: dict[Hashable, int] = field(default_factory=dict)
    tokens_of: dict[int, list[Hashable]] = field(default_factory=dict)
    merged_into: dict[int, int] = field(default_factory=dict)
    next_id: int = 1

    def link(self, identifiers: Iterable[tuple[str, Hashable]]) -> tuple[int, list[int]]:
        """Link one incident's (type, token) identifiers. Returns its subject and the subjects merged into it."""
        pairs = [(t, tok) for t, tok in identifiers if t in LINKING_TYPES]
        found = sorted({self.subject_of[tok] for _, tok in pairs if tok in self.subject_of})
        merged: list[int] = []
        if not found:
            root = self.next_id
            self.next_id += 1
            self.tokens_of[root] = []
        elif len(found) == 1:
            root = found[0]
        else:
            root = max(found, key=lambda s: (len(self.tokens_of[s]), -s))
            merged = [s for s in found if s != root]
            for other in merged:
                for tok in self.tokens_of.pop(other):
                    self.subject_of[tok] = root
                    self.tokens_of[root].append(tok)
                self.merged_into[other] = root
        for _, tok in pairs:
            if tok not in self.subject_of:  # ON CONFLICT (token) DO NOTHING
                self.subject_of[tok] = root
                self.tokens_of[root].append(tok)
        return root, merged

    def subjects_of(self, tokens: Iterable[Hashable]) -> set[int]:
        """The live subjects any of these tokens belongs to (the lookup's `identity_links` read)."""
        return {self.subject_of[tok] for tok in tokens if tok in self.subject_of}
