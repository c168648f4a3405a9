"""The `ledger` command: set up, administer, run and verify the service.

Every subcommand has --help and prints JSON with --json. Configuration errors print one line naming
the setting and exit 2, never a traceback. Heavy modules are imported inside commands so that
`ledger --help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from datetime import date, datetime
from functools import wraps
from typing import Any, TypeVar

import click

from ledger.config import Settings
from ledger.errors import LedgerError

F = TypeVar("F", bound=Callable[..., Any])

# The Celery app, named as Celery's `--app` option takes it: ledger/ never imports workers/ (it sends tasks
# by name too), so `ledger worker` and `ledger beat` hand Celery the name and Celery imports it.
CELERY_APP = "workers.app:app"


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return None  # digests and salts are never printed
    return str(value)


def emit(as_json: bool, payload: Any, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(payload, default=_default, ensure_ascii=False, sort_keys=True))
    else:
        click.echo(
            text if text is not None else json.dumps(payload, default=_default, ensure_ascii=False, indent=2)
        )


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(func)


def runtime() -> Any:
    """The runtime of a command that needs PostgreSQL, Redis and the identity key."""
    from ledger.services.runtime import Runtime

    return Runtime(Settings.from_env().require_services())


def database_runtime() -> Any:
    """The runtime of a command that only reads PostgreSQL (verify, listings, reports): DATABASE_URL is
    all it asks for, so an operator can point it at the demo's database or a replica. Commands that
    change state keep the full check (`runtime`), so a production misconfiguration stops them first."""
    from ledger.services.runtime import Runtime

    return Runtime(Settings.from_env().require_database())


def handled(func: F) -> F:
    """Turn domain and configuration errors into one clear line and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LedgerError as exc:
            click.echo(f"error: {exc.detail}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group(help="Consumer Credit Ledger: a consortium ledger of confirmed refund fraud.")
def main() -> None:
    import logging

    level = os.environ.get("LEDGER_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # its INFO lines replay whole initdb runs


# -- database ----------------------------------------------------------------------------------------
@main.group(help="Database setup.")
def db() -> None:
    pass


@db.command(
    "init",
    help="Apply schema.sql (idempotent: safe to run twice). Upgrades a database of the release before the "
    "transparency log in place: its chain becomes the log's first leaves.",
)
@json_option
@handled
def db_init(as_json: bool) -> None:
    from ledger.storage.db import SCHEMA_PATH, apply_schema

    settings = Settings.from_env()
    if not settings.database_url:
        raise LedgerError("DATABASE_URL is not set")
    from ledger.storage.upgrade import UpgradeRefused

    try:
        queued = apply_schema(settings.database_url)
    except UpgradeRefused as exc:
        raise LedgerError(str(exc)) from None
    except Exception as exc:
        raise LedgerError(f"could not apply the schema: {type(exc).__name__}") from None
    text = "schema applied"
    if queued:
        text += (
            f"; upgraded: {queued} chained events queued as the log's first leaves (run `ledger sequencer`)"
        )
    emit(as_json, {"applied": str(SCHEMA_PATH.name), "upgraded_events": queued}, text)


# -- platforms and keys ------------------------------------------------------------------------------
@main.group(help="Member platforms.")
def platforms() -> None:
    pass


@platforms.command("create", help="Admit a platform and print its first API key (shown once).")
@click.argument("slug")
@click.option("--name", required=True, help="Display name.")
@click.option(
    "--scopes",
    default=None,
    help="Comma list: report,lookup for a member (the default); dispute,admin for the operator.",
)
@click.option(
    "--operator",
    is_flag=True,
    help="The consortium operator's own account: the only one that may hold dispute or admin keys.",
)
@json_option
@handled
def platforms_create(slug: str, name: str, scopes: str | None, operator: bool, as_json: bool) -> None:
    from ledger.services import platforms as svc

    issued = svc.create_platform(
        runtime(), slug, name, scopes or ("dispute" if operator else "report,lookup"), operator=operator
    )
    emit(
        as_json,
        {
            "platform": issued.platform,
            "key_id": issued.key_id,
            "key": issued.key,
            "scopes": list(issued.scopes),
        },
        f"platform {issued.platform} created\nkey id: {issued.key_id}\nAPI key (shown once): {issued.key}",
    )


@platforms.command("list", help="List member platforms.")
@json_option
@handled
def platforms_list(as_json: bool) -> None:
    from ledger.services import platforms as svc

    rows = svc.list_platforms(database_runtime())
    text = (
        "\n".join(
            f"{r['slug']:<20} {r['name']:<30} trust={r['operator_trust']:.2f} effective={r['effective_trust']:.2f} "
            f"keys={r['active_keys']}"
            for r in rows
        )
        or "no platforms"
    )
    emit(as_json, rows, text)


@platforms.command(
    "trust", help="Set the operator's trust in a platform (0.2 to 1.0) and rescore its subjects."
)
@click.argument("slug")
@click.argument("trust", type=float)
@json_option
@handled
def platforms_trust(slug: str, trust: float, as_json: bool) -> None:
    from ledger.services import platforms as svc
    from ledger.services import reliability

    rt = runtime()
    platform_id = svc.set_trust(rt, slug, trust)
    changed = reliability.refresh(rt, platform_ids=[platform_id])
    emit(
        as_json,
        {"platform": slug, "operator_trust": trust, "rescored_platforms": changed},
        f"{slug}: trust {trust}",
    )


@platforms.command("rate-limit", help="Set a platform's per-key rate limit (requests/s and burst).")
@click.argument("slug")
@click.option("--per-second", type=int, required=True)
@click.option("--burst", type=int, required=True)
@json_option
@handled
def platforms_rate_limit(slug: str, per_second: int, burst: int, as_json: bool) -> None:
    from ledger.services import platforms as svc

    svc.set_rate_limit(runtime(), slug, per_second, burst)
    emit(as_json, {"platform": slug, "per_second": per_second, "burst": burst}, "rate limit set")


@main.group(help="API keys.")
def keys() -> None:
    pass


@keys.command("rotate", help="Issue a new key for a platform (printed once).")
@click.argument("slug")
@click.option(
    "--scopes", default=None, help="Scopes of the new key (default: the platform's current scopes)."
)
@click.option("--revoke-old", is_flag=True, help="Revoke the platform's other keys at once.")
@json_option
@handled
def keys_rotate(slug: str, scopes: str | None, revoke_old: bool, as_json: bool) -> None:
    from ledger.services import platforms as svc

    issued = svc.rotate_key(runtime(), slug, scopes, revoke_old)
    emit(
        as_json,
        {
            "platform": issued.platform,
            "key_id": issued.key_id,
            "key": issued.key,
            "scopes": list(issued.scopes),
        },
        f"key id: {issued.key_id}\nAPI key (shown once): {issued.key}",
    )


@keys.command("revoke", help="Revoke one key by its key id. Refused everywhere within a second.")
@click.argument("key_id")
@json_option
@handled
def keys_revoke(key_id: str, as_json: bool) -> None:
    from ledger.services import platforms as svc

    svc.revoke_key(runtime(), key_id)
    emit(as_json, {"revoked": key_id}, f"key {key_id} revoked")


# -- running -----------------------------------------------------------------------------------------
@main.command("serve", help="Serve the API with a production WSGI server (granian or gunicorn).")
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
# Defaults chosen by measurement on 2 cores (docs/performance.md): granian, 2 workers x 8 threads, served
# the most lookups and single reports; more threads per process also make larger audit group commits.
@click.option("--server", default="granian", show_default=True, type=click.Choice(["granian", "gunicorn"]))
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int, help="Threads per worker process.")
@click.option(
    "--worker-class",
    default="gthread",
    show_default=True,
    type=click.Choice(["sync", "gthread"]),
    help="gunicorn only.",
)
@json_option
@handled
def serve(bind: str, server: str, workers: int, threads: int, worker_class: str, as_json: bool) -> None:
    from ledger import server as servers

    Settings.from_env().require_services()  # fail fast, with one line, before forking workers
    if server == "gunicorn" and worker_class == "sync":
        threads = 1  # gunicorn silently runs gthread when a sync worker is given threads > 1
    if as_json:
        emit(
            True,
            {
                "bind": bind,
                "server": server,
                "workers": workers,
                "threads": threads,
                "worker_class": worker_class,
            },
        )
    servers.run(server, bind, workers, threads, worker_class)


@main.command("worker", help="Run a Celery worker.", context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", default=2, show_default=True, type=int)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@json_option
@handled
def worker(concurrency: int, celery_args: tuple[str, ...], as_json: bool) -> None:
    Settings.from_env().require_services()
    if as_json:
        emit(True, {"concurrency": concurrency})
    _celery(["worker", "--loglevel=INFO", f"--concurrency={concurrency}", "-Q", "ledger", *celery_args])


@main.command(
    "beat", help="Run the Celery beat scheduler.", context_settings={"ignore_unknown_options": True}
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@json_option
@handled
def beat(celery_args: tuple[str, ...], as_json: bool) -> None:
    Settings.from_env().require_services()
    if as_json:
        emit(True, {"beat": True})
    schedule = os.path.join(os.environ.get("LEDGER_STATE_DIR", "."), ".celerybeat-schedule")
    _celery(["beat", "--loglevel=INFO", "-s", schedule, *celery_args])


def _celery(argv: list[str]) -> None:
    """Run Celery's own command line in this process on CELERY_APP, as `Celery.start` does."""
    from celery.bin.celery import celery

    with contextlib.suppress(click.exceptions.Exit):  # Celery's way of saying it is done
        celery.main(args=["--app", CELERY_APP, *argv], standalone_mode=False)


@main.command(
    "sequencer",
    help="Run the transparency log's sequencer: the one writer of the Merkle tree. A second one waits as a "
    "standby.",
)
@click.option(
    "--once", is_flag=True, help="Integrate what is pending, sign, and exit (if no sequencer runs)."
)
@json_option
@handled
def sequencer(once: bool, as_json: bool) -> None:
    import signal
    import threading

    from ledger.services import sequencer as svc

    rt = runtime()
    if once:
        try:
            added = svc.integrate_now(rt)
        except svc.TreeMismatch as exc:
            click.echo(f"error: {exc}; refusing to sign (run `ledger verify`)", err=True)
            sys.exit(1)
        if added < 0:
            raise LedgerError("another sequencer holds the log; it integrates pending leaves itself")
        emit(as_json, {"integrated": added}, f"integrated {added} leaves")
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if as_json:
        emit(
            True,
            {
                "sequencer": True,
                "origin": rt.settings.log_origin,
                "inquiry_origin": rt.settings.inquiry_log_origin,
            },
        )
    try:
        svc.run(rt, stop)
    except svc.TreeMismatch as exc:
        click.echo(f"error: {exc}; refusing to sign (run `ledger verify`)", err=True)
        sys.exit(1)


# -- verification ------------------------------------------------------------------------------------
@main.command(
    "verify",
    help="Re-verify the transparency log (every leaf against its event, every stored node, every signed "
    "checkpoint) and the inquiry log (every leaf against its lookup record, likewise). Exit 1 names the first "
    "bad entry.",
)
@json_option
@handled
def verify(as_json: bool) -> None:
    from ledger.services import verification

    rt = database_runtime()
    result = verification.verify(rt)
    verification.record_run(rt, result)
    if result.ok:
        emit(
            as_json,
            result.as_dict(),
            f"ok: {result.leaves} leaves (root {result.root_hash}), {result.pending} pending, "
            f"{result.checkpoints} checkpoints; inquiry log: {result.lookups} lookup records, "
            f"{result.inquiry_tree_size} leaves (root {result.inquiry_root_hash}), {result.inquiry_pending} "
            f"pending, {result.inquiry_checkpoints} checkpoints",
        )
        return
    emit(as_json, result.as_dict(), f"FAILED: first bad {result.problem}")
    sys.exit(1)


@main.group("log", help="The transparency log: keys and remote verification.")
def log_group() -> None:
    pass


@log_group.command("keygen", help="Print a new Ed25519 log key for LEDGER_LOG_KEY (base64 seed).")
@json_option
def log_keygen(as_json: bool) -> None:
    import base64

    from ledger.domain.note import Signer

    seed = os.urandom(32)
    origin = Settings.from_env().log_origin
    vkey = Signer.from_seed(origin, seed).verifier.vkey()
    key = base64.b64encode(seed).decode()
    emit(as_json, {"log_key": key, "vkey": vkey}, f"LEDGER_LOG_KEY={key}\nverifier key: {vkey}")


@log_group.command(
    "verify-remote",
    help="As a member: check the log at URL from the checkpoint saved in --state, with no database. Fails "
    "on a bad signature, a fork, a leaf not included, or a promise past its MMD.",
)
@click.argument("url")
@click.option(
    "--state", "state_path", required=True, type=click.Path(dir_okay=False), help="JSON state file."
)
@click.option("--vkey", help="The log's verifier key (trusted on first use and saved in --state if absent).")
@click.option(
    "--api-key", envvar="LEDGER_API_KEY", help="Your API key, for inclusion proofs (or LEDGER_API_KEY)."
)
@click.option(
    "--receipts",
    type=click.Path(exists=True, dir_okay=False),
    help="A JSON file of receipts (the `receipt` objects of your 201s) to check for inclusion.",
)
@click.option("--leaf", "leaves", multiple=True, help="A leaf hash (hex) to check for inclusion; repeatable.")
@click.option("--witness-key", help="Cosign the new checkpoint with this Ed25519 seed (base64) as a witness.")
@click.option("--witness-name", default="witness.invalid/member", show_default=True)
@json_option
@handled
def log_verify_remote(
    url: str,
    state_path: str,
    vkey: str | None,
    api_key: str | None,
    receipts: str | None,
    leaves: tuple[str, ...],
    witness_key: str | None,
    witness_name: str,
    as_json: bool,
) -> None:
    from ledger.services import verify_remote

    report = verify_remote.run(
        url,
        state_path,
        vkey=vkey,
        api_key=api_key,
        receipts_path=receipts,
        leaves=list(leaves),
        witness_seed=witness_key,
        witness_name=witness_name,
    )
    if report["ok"]:
        emit(
            as_json,
            report,
            f"ok: checkpoint {report['tree_size']} verified, consistent with {report['previous_size']}; "
            f"{report['included']} leaves included, {report['pending']} pending within their MMD",
        )
        return
    emit(as_json, report, f"FAILED: {report['problem']}")
    sys.exit(1)


def _when(value: str | None) -> datetime | None:
    """--now for the clock-driven jobs, so they can be run (and tested) with a frozen clock."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise LedgerError("--now must be an ISO 8601 timestamp with a time zone") from None
    if parsed.tzinfo is None:
        raise LedgerError("--now must include a time zone offset")
    return parsed


@platforms.command("stats", help="Volume, dispute rate, overturn rate and effective trust per platform.")
@json_option
@handled
def platforms_stats(as_json: bool) -> None:
    from ledger.services import reliability

    rows = reliability.stats(database_runtime())
    text = (
        "\n".join(
            f"{r['slug']:<20} reported={r['reported']:<7} disputed={r['disputed']:<5} dispute_rate={r['dispute_rate']:.1%} "
            f"overturn_rate={r['overturn_rate']:.1%} trust={r['operator_trust']:.2f} effective={r['effective_trust']:.2f}"
            for r in rows
        )
        or "no platforms"
    )
    emit(as_json, rows, text)


@main.group(help="Disputes (consumer rights).")
def disputes() -> None:
    pass


@disputes.command("expire", help="The SLA job: retract incidents whose dispute passed respond_by unanswered.")
@click.option("--now", default=None, help="Run as if it were this time (ISO 8601 with offset).")
@json_option
@handled
def disputes_expire(now: str | None, as_json: bool) -> None:
    from ledger.services import disputes as svc

    count = svc.expire_overdue(runtime(), _when(now))
    emit(as_json, {"expired": count}, f"{count} disputes expired; their incidents were retracted")


@main.group(help="Retention and erasure.")
def retention() -> None:
    pass


@retention.command(
    "run", help="Expire incidents past retention (erasing their tokens) and old lookup tokens."
)
@click.option("--now", default=None, help="Run as if it were this time (ISO 8601 with offset).")
@json_option
@handled
def retention_run(now: str | None, as_json: bool) -> None:
    from ledger.services import retention as svc

    result = svc.run(runtime(), _when(now))
    emit(as_json, result, ", ".join(f"{k}={v}" for k, v in result.items()))


# -- scoring jobs (CLI twins of the periodic tasks) --------------------------------------------------
@main.command("rescore", help="Recompute scores synchronously.")
@click.option("--all", "everything", is_flag=True, help="Every subject.")
@click.option("--subject", "token", default=None, help="The subject holding this identity token.")
@click.option("--due", is_flag=True, help="Only subjects whose tier can drop through decay (the daily job).")
@click.option("--stale-policy", is_flag=True, help="Subjects scored under another policy version.")
@json_option
@handled
def rescore(everything: bool, token: str | None, due: bool, stale_policy: bool, as_json: bool) -> None:
    from ledger.services import scoring

    rt = runtime()
    if everything:
        count = scoring.rescore_all(rt)
    elif token:
        count = scoring.rescore_token(rt, token.strip().lower())
    elif due:
        count = scoring.rescore_due(rt)
    elif stale_policy:
        count = scoring.rescore_stale_policy(rt, max_chunks=10**9)
    else:
        raise LedgerError("say what to rescore: --all, --subject TOKEN, --due or --stale-policy")
    emit(as_json, {"rescored": count}, f"rescored {count} subjects")


@main.group(help="The transactional outbox.")
def outbox() -> None:
    pass


@outbox.command(
    "flush", help="Process every pending outbox row now, in this process (or --send them to workers)."
)
@click.option("--send", is_flag=True, help="Re-send overdue rows to the workers instead (the beat task).")
@json_option
@handled
def outbox_flush(send: bool, as_json: bool) -> None:
    from ledger.services import outbox_work

    rt = runtime()
    count = outbox_work.sweep_outbox(rt) if send else outbox_work.flush_outbox(rt)
    emit(as_json, {"sent" if send else "processed": count}, f"{'sent' if send else 'processed'} {count}")


@main.group(help="Signed webhooks (docs/webhooks.md).")
def webhooks() -> None:
    pass


def _platform_id(rt: Any, slug: str) -> int:
    from ledger.errors import NotFound
    from ledger.storage.platforms import platform_by_slug

    with rt.db.transaction() as conn:
        row = platform_by_slug(conn, slug)
    if row is None:
        raise NotFound(f"no platform {slug!r}")
    return int(row["id"])


@webhooks.command("add", help="Register an endpoint for a platform; prints its secret, once.")
@click.argument("platform")
@click.argument("url")
@click.option(
    "--events",
    default="dispute.opened,dispute.resolved,incident.retracted,subject.cleared",
    show_default=True,
    help="Comma-separated event types.",
)
@json_option
@handled
def webhooks_add(platform: str, url: str, events: str, as_json: bool) -> None:
    from ledger.services import webhooks as svc

    rt = runtime()
    created = svc.register(rt, _platform_id(rt, platform), url, [e.strip() for e in events.split(",") if e])
    emit(
        as_json,
        created,
        f"endpoint {created['id']} for {platform}: {url}\nsecret (shown once): {created['secret']}",
    )


@webhooks.command("list", help="A platform's endpoints (never their secrets).")
@click.argument("platform")
@json_option
@handled
def webhooks_list(platform: str, as_json: bool) -> None:
    from ledger.storage import webhooks as store

    rt = runtime()
    platform_id = _platform_id(rt, platform)
    with rt.db.transaction() as conn:
        rows = store.endpoints_of(conn, platform_id)
    emit(as_json, {"endpoints": rows})


@webhooks.command("deliveries", help="The delivery log of an endpoint.")
@click.argument("endpoint_id", type=click.UUID)
@click.option("--limit", default=100, show_default=True)
@json_option
@handled
def webhooks_deliveries(endpoint_id: Any, limit: int, as_json: bool) -> None:
    from ledger.services import webhooks as svc

    emit(as_json, svc.deliveries(runtime(), None, endpoint_id, limit))


@webhooks.command("redeliver", help="Send a delivery again now, whatever became of it.")
@click.argument("delivery_id", type=click.UUID)
@json_option
@handled
def webhooks_redeliver(delivery_id: Any, as_json: bool) -> None:
    from ledger.services import webhooks as svc

    emit(as_json, svc.redeliver(runtime(), None, delivery_id), f"delivery {delivery_id} queued again")


@webhooks.command("enable", help="Turn a disabled endpoint back on.")
@click.argument("endpoint_id", type=click.UUID)
@json_option
@handled
def webhooks_enable(endpoint_id: Any, as_json: bool) -> None:
    from ledger.services import webhooks as svc

    emit(as_json, svc.enable(runtime(), None, endpoint_id), f"endpoint {endpoint_id} enabled")


@webhooks.command("sweep", help="Send every due delivery to the workers (the beat task), or --here.")
@click.option("--here", is_flag=True, help="Attempt them in this process instead: no worker needed.")
@json_option
@handled
def webhooks_sweep(here: bool, as_json: bool) -> None:
    from ledger.services import webhooks as svc

    rt = runtime()
    count = svc.deliver_due_now(rt) if here else svc.sweep(rt)
    emit(as_json, {"attempted" if here else "sent": count}, f"{count} deliveries")


@main.group(help="The Redis cache of decisions.")
def cache() -> None:
    pass


@cache.command("rebuild", help="Rewrite every stored score into Redis from PostgreSQL.")
@json_option
@handled
def cache_rebuild(as_json: bool) -> None:
    from ledger.services import cache_rebuild

    count = cache_rebuild.rebuild_cache(runtime())
    emit(as_json, {"tokens_written": count}, f"wrote {count} tokens")


@main.group(help="Operator reports on lookups.")
def lookups() -> None:
    pass


@lookups.command("fishing", help="Per platform and purpose: lookups made without a refund reference.")
@click.option("--days", default=30, show_default=True, type=int)
@json_option
@handled
def lookups_fishing(days: int, as_json: bool) -> None:
    from ledger.services import lookups as svc

    rows = svc.fishing_report(database_runtime(), days)
    text = (
        "\n".join(
            f"{r['slug']:<20} lookups={r['lookups']:<8} without_reference={r['without_reference']:<8} "
            f"share={r['share_without_reference']:.1%} "
            + " ".join(
                f"{p}={c['lookups']}/{c['without_reference']}" for p, c in sorted(r["by_purpose"].items())
            )
            for r in rows
        )
        or "no lookups"
    )
    emit(as_json, rows, text)


@main.group(help="The operator console (/console).")
def console() -> None:
    pass


@console.command("refresh", help="Recompute the overview's charts now (beat does it every 30 s).")
@json_option
@handled
def console_refresh(as_json: bool) -> None:
    from ledger.services import console as svc

    totals = svc.refresh_overview(runtime())["totals"]
    emit(as_json, totals, ", ".join(f"{k}={v}" for k, v in totals.items()))


# -- the demo ----------------------------------------------------------------------------------------
@main.command(
    "demo",
    help="Run the whole service locally: embedded PostgreSQL/Redis for unset DATABASE_URL/REDIS_URL, "
    "two demo platforms, the API, a worker and beat. Ctrl-C stops everything it started.",
)
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Where the API listens.")
@click.option("--workers", default=2, show_default=True, type=int, help="API worker processes.")
@click.option(
    "--state-dir",
    default=".ledger",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where embedded servers keep their data, and where logs go.",
)
@json_option
@handled
def demo(bind: str, workers: int, state_dir: str, as_json: bool) -> None:
    from ledger.demo import run_demo

    sys.exit(run_demo(state_dir, bind, workers, as_json))


def read_photos(images: tuple[str, ...]) -> list[dict[str, Any]]:
    """What `ledger hash` and `ledger inspect` both read from each file, locally: the PDQ hashes and
    quality, the AI labels, capture time and software; or why the file is not a usable image."""
    from ledger.domain.image_metadata import read_metadata
    from ledger.domain.pdq_hash import ImageRejected, hash_image
    from ledger.domain.policy import load_policy

    min_quality = load_policy(Settings.from_env().policy_path).evidence_min_quality
    results: list[dict[str, Any]] = []
    for path in images:
        with open(path, "rb") as handle:
            data = handle.read()
        try:
            hashed = hash_image(data, max_bytes=None)
        except ImageRejected as exc:
            results.append({"path": path, "error": exc.reason})
            continue
        results.append(
            {
                "path": path,
                "pdq": hashed.hex,
                "pdq_displayed": hashed.displayed,
                "quality": hashed.quality,
                "low_quality": hashed.low_quality(min_quality),
                **read_metadata(data).as_json(),
            }
        )
    return results


# -- evidence hashes ---------------------------------------------------------------------------------
@main.command(
    "hash",
    help="Print the PDQ hash and quality of each image, so that a partner can report or look up evidence "
    "by hash and no photo ever leaves it: the hash as stored (ThreatExchange's convention) and, for a "
    "rotated or transparent image, also the hash as displayed; send both. Any AI-content label is flagged "
    "(`ledger inspect` shows every finding; --json has them all). Needs no database. Exit 2 if any file is "
    "not a usable image.",
)
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@json_option
@handled
def hash_images(images: tuple[str, ...], as_json: bool) -> None:
    results = read_photos(images)
    if as_json:
        emit(True, results)
    for r in [] if as_json else results:
        if "pdq" in r:
            click.echo(f"{r['pdq']}  quality={r['quality']}{' LOW' if r['low_quality'] else ''}  {r['path']}")
            if r["pdq_displayed"]:  # send both in evidence.pdq (docs/evidence.md: two views of one photo)
                click.echo(f"{r['pdq_displayed']}  as displayed  {r['path']}")
            for found in r["labels"]:  # a warning worth seeing before the claim is approved
                what = found["label"] or "MALFORMED"
                click.echo(f"AI label {what} via {found['source']}  {r['path']}  (ledger inspect shows more)")
        else:
            click.echo(f"error: {r['path']}: {r['error']}", err=True)
    if any("error" in r for r in results):
        sys.exit(2)


@main.command(
    "inspect",
    help="Print what the ledger's claim check reads from each photo, on your own machine: the PDQ hash (as "
    "stored, and as displayed for a rotated or transparent image), every AI-content label (GB 45438-2025 in "
    "XMP, EXIF UserComment or PNG text; IPTC DigitalSourceType; C2PA, read offline), the EXIF capture time and "
    "Software. Send the hashes in evidence.pdq; the labels and times are yours to act on (docs/evidence.md). "
    "Needs no database. Exit 2 if any file is not a usable image.",
)
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@json_option
@handled
def inspect_images(images: tuple[str, ...], as_json: bool) -> None:
    results = read_photos(images)
    if as_json:
        emit(True, results)
    for r in [] if as_json else results:
        if "error" in r:
            click.echo(f"error: {r['path']}: {r['error']}", err=True)
            continue
        click.echo(r["path"])
        click.echo(f"  pdq           {r['pdq']}  quality={r['quality']}{' LOW' if r['low_quality'] else ''}")
        if r["pdq_displayed"]:
            click.echo(f"  as displayed  {r['pdq_displayed']}")
        for found in r["labels"]:
            what = found["label"] or f"MALFORMED ({found['malformed']})"
            extra = (
                "" if found["signature_valid"] is None else f"  signature_valid={found['signature_valid']}"
            )
            click.echo(
                f"  AI label      {what}  via {found['source']}  producer={found['producer'] or '-'}{extra}"
            )
        if not r["labels"]:
            click.echo("  AI label      none found")
        click.echo(f"  captured      {r['capture_time'] or 'unknown'}")
        click.echo(f"  software      {r['software'] or '-'}")
        for problem in r["malformed"]:
            click.echo(f"  unreadable    {problem}")
    if any("error" in r for r in results):
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
