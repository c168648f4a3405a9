"""The short soak: `benchmarks/soak.py` for 45 seconds against a served instance, run in CI, on the
test session's PostgreSQL server and a Redis database of its own on the session's Redis server (it
flushes that database).

It fails unless every promise holds after the mixed load: no 5xx, every 201 in the ledger, every 200
lookup audited, scores equal to a from-scratch recompute, and `ledger verify` passing.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import PG_SERVER, ROOT, SOAK_REDIS_URL


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_short_soak_keeps_every_promise() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "soak.py"),
            "--seconds",
            "45",
            "--clients",
            "3",
            "--pg-server",
            PG_SERVER,
            "--redis-url",
            SOAK_REDIS_URL,
        ],
        capture_output=True,
        text=True,
        timeout=340,
        check=False,
        cwd=ROOT,
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "soak: PASS" in result.stdout
