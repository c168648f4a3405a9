"""The documented patterns mean the same to Python (the server) and to ECMAScript (JSON Schema, so every
JavaScript client, gateway and most generated validators).

Python's `\\A…\\Z` are not anchors in ECMAScript, and Python's `$` also matches before a trailing newline,
so the server and a client could each accept a string the other refuses. `ledger.api.openapi.Pattern`
documents `^…$` and checks with `fullmatch`. Here both engines judge the same strings: Node.js runs the
documented pattern (with and without the `u` flag, as ajv and plain `RegExp` do) when it is installed.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import ValidationError

from ledger.api import schemas
from ledger.api.openapi import Pattern

PATTERNS = {"currency": schemas.CURRENCY, "pdq": schemas.PDQ, "token": schemas.TOKEN}
VALID = {"currency": "CNY", "pdq": "ab" * 32, "token": "0123456789abcdef" * 4}
# Characters that tell the engines apart: line terminators ($ and \Z differ), the letters of \A and \Z,
# Unicode digits and letters (\d, \w and case folding differ), a non-BMP character (the `u` flag).
TRICKY = [
    "\n",
    "\r",
    "\u2028",
    "A",
    "Z",
    "a",
    "F",
    "f",
    "0",
    "٣",
    "Ａ",
    "é",
    "\U0001f600",
    " ",
    "\t",
    "$",
    "^",
]


def accepts(pattern: Pattern, value: str) -> bool:
    try:
        pattern(value)
    except ValidationError:
        return False
    return True


def corpus(name: str) -> list[str]:
    """Valid values, and each valid value with one tricky character inserted, replaced or appended."""
    valid = VALID[name]
    rng = random.Random(name)
    values = {
        valid,
        valid.upper(),
        "",
        valid[:-1],
        valid + valid[-1],
        f"A{valid}Z",
        f"{valid}\n",
        f"\n{valid}",
    }
    for char in TRICKY:
        for _ in range(6):
            at = rng.randrange(len(valid) + 1)
            values.add(valid[:at] + char + valid[at:])
            if at < len(valid):
                values.add(valid[:at] + char + valid[at + 1 :])
        values.add(valid + char)
    return sorted(values)


def test_the_issue_examples_under_python() -> None:
    assert accepts(schemas.CURRENCY, "CNY")
    assert not accepts(schemas.CURRENCY, "ACNYZ")
    assert not accepts(schemas.CURRENCY, "CNY\n")
    assert schemas.CURRENCY.regex.pattern == "^[A-Z]{3}$"


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_documented_pattern_has_no_python_only_syntax(name: str) -> None:
    documented = PATTERNS[name].regex.pattern
    assert documented.startswith("^")
    assert documented.endswith("$")
    for python_only in ("\\A", "\\Z", "\\z", "(?P<", "(?i", "\\d", "\\w", "\\s"):
        assert python_only not in documented


@given(st.text(max_size=80))
def test_python_check_is_a_whole_string_match(value: str) -> None:
    for pattern in PATTERNS.values():
        assert accepts(pattern, value) == (pattern.full.fullmatch(value) is not None)
        assert accepts(pattern, value + "\n") is False


def test_alternation_is_grouped_before_anchoring() -> None:
    either = Pattern("ab|cd", error="no")
    assert either.regex.pattern == "^(?:ab|cd)$"
    assert accepts(either, "ab")
    assert accepts(either, "cd")
    assert not accepts(either, "abx")
    assert not accepts(either, "xcd")


NODE_JUDGE = """
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = cases.map(([pattern, flags, value]) => new RegExp(pattern, flags).test(value));
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.process
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_python_and_ecmascript_agree_on_every_string() -> None:
    cases = [
        (pattern.regex.pattern, flags, value)
        for name, pattern in PATTERNS.items()
        for value in corpus(name)
        for flags in ("", "u")
    ]
    done = subprocess.run(
        ["node", "-e", NODE_JUDGE],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ecmascript = json.loads(done.stdout)
    assert len(ecmascript) == len(cases)
    by_name = {pattern.regex.pattern: pattern for pattern in PATTERNS.values()}
    disagreements = [
        (source, flags, value)
        for (source, flags, value), verdict in zip(cases, ecmascript, strict=True)
        if verdict != accepts(by_name[source], value)
    ]
    assert disagreements == []
    judged = dict(zip([(s, f, v) for s, f, v in cases], ecmascript, strict=True))
    currency = schemas.CURRENCY.regex.pattern
    assert judged[(currency, "", "CNY")] is True
    assert judged[(currency, "", "ACNYZ")] is False
    assert judged[(currency, "", "CNY\n")] is False
