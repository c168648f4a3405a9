"""Where a lookup's CPU goes in the API process, part by part, each against the whole in the same run.

A diagnostic for issue 14's part 3 (cut what sits between the one Redis round trip and the audit wait),
not a target of its own. It calls the ledger's WSGI app directly, in one thread, as `ledger serve` would
(with PROMETHEUS_MULTIPROC_DIR set, so metrics are written the way the served workers write them), and
measures `time.process_time` per lookup with one part taken away at a time:

- as served: the whole request, Flask, flask-smorest, webargs, authentication and the service;
- with the lookup counters' `labels()` called on every lookup (ledger/metrics.py keeps the children);
- without the metrics: the lookup's counters and histogram replaced by nothing;
- the service alone: `lookups.lookup_many` called with the parsed body and the principal, no Flask;
- the service without its audit write: the same, `rt.audit.write` replaced by nothing;
- JSON encoding: the answer's `json.dumps` alone, on the answers of the run.

Variants run in interleaved rounds (A, B, C, ..., A, B, C, ...) and the median and minimum of the rounds
are printed, so that the machine's other work, which moves every round, moves every variant alike. On a
loaded machine CPU time still moves by tens of percent; `--instructions` counts instructions instead,
which do not move with the load: each variant runs in its own process under valgrind's callgrind, which
counts only inside the measured requests (each is called through `operator.call`, a C function nothing
else on the path calls, given to callgrind as `--toggle-collect`). The database must be one
`benchmarks/lookup.py --keep` left (the same 1,000,000 incidents and Redis cache); the lookups made here
are real and recorded.

    .venv/bin/python benchmarks/lookup_cost.py --database bench_lookup [-n 1000] [--rounds 5]
    .venv/bin/python benchmarks/lookup_cost.py --database bench_lookup --instructions [-n 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import operator
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as c
from benchmarks.lookup import body_pool


def _plain_call(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


# How each measured request is called: `operator.call` (the C function callgrind counts inside) in the
# measured run, a plain call in the warm-up, so that nothing of the warm-up is counted.
_call: list[Callable[..., Any]] = [_plain_call]


class _Nothing:
    """Stands in for a prometheus metric: every call does nothing."""

    def labels(self, *_: Any, **__: Any) -> _Nothing:
        return self

    def inc(self, *_: Any) -> None:
        return None

    def observe(self, *_: Any) -> None:
        return None


@contextlib.contextmanager
def without_metrics() -> Iterator[None]:
    from ledger import metrics

    saved = {name: getattr(metrics, name) for name in ("LOOKUPS", "FISHING", "LOOKUP_LATENCY")}
    for name in saved:
        setattr(metrics, name, _Nothing())
    metrics._LOOKUP_COUNTERS.clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(metrics, name, value)
        metrics._LOOKUP_COUNTERS.clear()


@contextlib.contextmanager
def labels_every_time() -> Iterator[None]:
    from ledger import metrics

    kept = metrics.count_lookup

    def count_lookup(tier: str, purpose: str, referenced: bool) -> None:
        metrics.LOOKUPS.labels(tier, purpose).inc()
        if not referenced:
            metrics.FISHING.labels(purpose).inc()

    metrics.count_lookup = count_lookup
    try:
        yield
    finally:
        metrics.count_lookup = kept


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=1000, help="lookups per variant and round (default 1,000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", default="bench_lookup")
    parser.add_argument("--subjects", type=int, default=300_000)
    parser.add_argument("--instructions", action="store_true", help="count instructions under callgrind")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one variant, inside callgrind
    args = parser.parse_args()
    if args.instructions:
        return count_instructions(args)

    url = c.db_url(args.database)
    env = c.ledger_env(url)
    os.environ.update(env)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lookup-cost-")

    from werkzeug.test import EnvironBuilder

    from ledger import create_app
    from ledger.api import schemas
    from ledger.config import Settings
    from ledger.services import lookups

    c.say(f"CPU per lookup in the API process, in-process, {args.rounds} interleaved rounds; {c.load()}")
    key = c.member(env, f"bench-cost-{int(time.time())}", "lookup")
    app = create_app(Settings.from_env())
    rt = app.extensions["ledger.runtime"]
    principal = app.extensions["ledger.keys"].resolve(f"Bearer {key}", "127.0.0.1")
    bodies, _ = body_pool(args.subjects, args.n, 0.10, seed=23)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    environs = [
        EnvironBuilder(path="/v1/lookups", method="POST", data=b, headers=headers).get_environ()
        for b in bodies
    ]
    parsed = [schemas.LOOKUP_SCHEMA.load(json.loads(b)) for b in bodies]
    answers: list[dict[str, Any]] = []

    def one_served(environ: dict[str, Any], statuses: list[str]) -> None:
        for _ in app(environ, lambda status, _headers, _exc=None: statuses.append(status)):
            pass

    def served() -> None:
        statuses: list[str] = []
        for environ in environs:
            _call[0](one_served, dict(environ, **{"wsgi.input": _fresh_input(environ)}), statuses)
        bad = [s for s in statuses if not s.startswith("200")]
        assert not bad, bad[:3]

    def served_without_metrics() -> None:
        with without_metrics():
            served()

    def served_labels_every_time() -> None:
        with labels_every_time():
            served()

    def one_service(request: dict[str, Any]) -> None:
        [outcome] = lookups.lookup_many(rt, principal, [request])
        if len(answers) < args.n:
            answers.append(outcome.body)

    def service() -> None:
        with app.app_context():
            for request in parsed:
                _call[0](one_service, request)

    def service_without_audit() -> None:
        real = rt.audit.write
        rt.audit.write = lambda _rows: None
        try:
            service()
        finally:
            rt.audit.write = real

    def encoding() -> None:
        for body in answers:
            _call[0](json.dumps, body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    variants: dict[str, Callable[[], None]] = {
        "as served (Flask, flask-smorest, webargs, auth, service)": served,
        "as served, with labels() on every lookup": served_labels_every_time,
        "as served, without the metrics": served_without_metrics,
        "the service alone (lookup_many)": service,
        "the service alone, without its audit write": service_without_audit,
        "the answer's JSON encoding alone": encoding,
    }
    served()  # warm-up: connections, caches, the policy
    service()
    _call[0] = operator.call  # counted from here on (inside callgrind); the rounds below time it instead
    if args.only:  # inside callgrind: the counted run (the warm-up above ran the same code uncounted)
        variants[args.only]()
        rt.close()
        return 0
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            cpu = time.process_time()
            run()
            times[name].append((time.process_time() - cpu) / args.n * 1e6)
    rt.close()
    whole = statistics.median(times[next(iter(variants))])
    c.say(f"{'variant (CPU per lookup)':<60}{'median µs':>10}{'min µs':>9}{'of as served':>14}")
    for name, values in times.items():
        median = statistics.median(values)
        c.say(f"{name:<60}{median:>10.0f}{min(values):>9.0f}{median / whole:>14.0%}")
    c.say(f"({c.load()} at the end)")
    return 0


VARIANTS = (
    "as served (Flask, flask-smorest, webargs, auth, service)",
    "as served, with labels() on every lookup",
    "as served, without the metrics",
    "the service alone (lookup_many)",
    "the service alone, without its audit write",
    "the answer's JSON encoding alone",
)


def count_instructions(args: argparse.Namespace) -> int:
    """Each variant in its own process under callgrind; instructions per lookup, counted only inside the
    measured requests."""
    import re
    import subprocess

    c.say(f"instructions per lookup in the API process (callgrind), {args.n} lookups per variant; {c.load()}")
    counts: dict[str, float] = {}
    for name in VARIANTS:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=_operator_call",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                __file__,
                "--database",
                args.database,
                "-n",
                str(args.n),
                "--subjects",
                str(args.subjects),
                "--only",
                name,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"Collected : (\d+)", out.stderr)
        if out.returncode != 0 or not found:
            raise SystemExit(f"callgrind run of {name!r} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        counts[name] = int(found.group(1)) / args.n
        c.say(f"  {name:<60}{counts[name] / 1000:>10.0f} k instructions   ({c.load()})")
    whole = counts[VARIANTS[0]]
    c.say(f"{'variant (instructions per lookup)':<60}{'k instr':>10}{'of as served':>14}")
    for name, value in counts.items():
        c.say(f"{name:<60}{value / 1000:>10.0f}{value / whole:>14.0%}")
    return 0


def _fresh_input(environ: dict[str, Any]) -> Any:
    import io

    stream = environ["wsgi.input"]
    stream.seek(0)
    return io.BytesIO(stream.read())


if __name__ == "__main__":
    sys.exit(main())
