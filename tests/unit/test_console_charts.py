"""The pure parts of the console's charts: filling time grids, bucketing deadlines, drawing sparklines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ledger.console.views import _sparkline
from ledger.services.console import _days_left, _grid

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def test_a_grid_has_every_slot_in_order_with_zeros_where_nothing_happened() -> None:
    slots = [T0 + timedelta(minutes=i) for i in range(5)]
    rows = [
        {"minute": T0 + timedelta(minutes=1), "tier": "clear", "n": 3},
        {"minute": T0 + timedelta(minutes=4), "tier": "hold", "n": 2},
        {"minute": T0 + timedelta(minutes=4), "tier": "clear", "n": 1},
        {"minute": T0 - timedelta(minutes=9), "tier": "hold", "n": 7},  # outside the window: ignored
    ]
    grid = _grid(rows, "minute", "tier", slots, ["hold", "review", "clear"], "%H:%M")
    assert grid["labels"] == ["18:00", "18:01", "18:02", "18:03", "18:04"]  # Beijing time
    assert list(grid["series"]) == ["hold", "clear"]  # the policy's order, only tiers that occur
    assert grid["series"]["hold"] == [0, 0, 0, 0, 2]
    assert grid["series"]["clear"] == [0, 3, 0, 0, 1]


@given(st.lists(st.tuples(st.integers(-40, 60), st.integers(1, 50)), max_size=30))
def test_days_left_counts_every_open_dispute_once(rows: list[tuple[int, int]]) -> None:
    buckets = _days_left([{"days_left": d, "n": n} for d, n in rows], 30)
    assert sum(buckets["counts"]) == sum(n for _, n in rows)
    assert buckets["counts"][0] == sum(n for d, n in rows if d < 0)  # overdue first
    assert buckets["days"] == [-1, *range(31)]


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60))
def test_a_sparkline_stays_inside_its_box(values: list[float]) -> None:
    points = [tuple(map(float, p.split(","))) for p in _sparkline(values, 120, 28).split()]
    assert len(points) == len(values)
    assert all(0 <= x <= 120.01 and 0 <= y <= 28 for x, y in points)
