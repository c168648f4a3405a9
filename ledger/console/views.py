"""Routes of the operator console. Every view but sign-in and the static files needs a live session;
operator pages need the `admin` scope, the desk the `dispute` scope."""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from ledger import identity
from ledger.console import catalogue
from ledger.domain import labels
from ledger.errors import (
    CacheUnavailable,
    Forbidden,
    InvalidInput,
    LedgerError,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
)
from ledger.services import console, disputes, platforms, reliability
from ledger.services.disputes import selecting_tokens
from ledger.services.identifiers import tokenize_all
from ledger.services.platforms import KeyResolver
from ledger.services.runtime import Runtime

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

blp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

SESSION_COOKIE = "ccl_console"
PRE_COOKIE = "ccl_console_pre"  # the sign-in form's CSRF token, before any session exists
LANG_COOKIE = "ccl_lang"
MAX_IDENTIFIERS = 5
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PUBLIC_ENDPOINTS = frozenset({"console.static", "console.signin", "console.language"})


def _rt() -> Runtime:
    return cast(Runtime, current_app.extensions["ledger.runtime"])


def _resolver() -> KeyResolver:
    return cast(KeyResolver, current_app.extensions["ledger.keys"])


def _lang() -> str:
    lang = request.cookies.get(LANG_COOKIE, catalogue.DEFAULT_LANGUAGE)
    return lang if lang in catalogue.LANGUAGES else catalogue.DEFAULT_LANGUAGE


def _secure() -> bool:
    return _rt().settings.environment not in ("demo", "test")


def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        secure=_secure(),
        httponly=True,
        samesite="Strict",
    )


@blp.app_template_global("t")
def _t(key: str, **values: object) -> str:
    return catalogue.text(key, _lang(), **values)


@blp.app_template_global("label")
def _label(kind: str, code: str | None) -> str:
    return catalogue.label(kind, code, _lang())


@blp.app_template_filter("sparkline")
def _sparkline(values: list[float], width: int = 120, height: int = 28) -> str:
    """SVG polyline points for a sparkline, scaled to its own range (a flat line when constant)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / max(1, len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}" for i, v in enumerate(values)
    )


@blp.app_template_filter("when")
def _when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A time in Beijing time, as the subject report page shows it; the zone is named in page headings."""
    return value.astimezone(labels.BEIJING).strftime(fmt) if value else ""


# -- session plumbing --------------------------------------------------------------------------------
@blp.before_request
def _authenticate() -> Response | None:
    g.console_session = None
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    session_id = request.cookies.get(SESSION_COOKIE)
    session = console.load_session(_rt(), _resolver(), session_id) if session_id else None
    if session is None:
        if request.method == "GET" and not request.headers.get("HX-Request"):
            return cast(Response, redirect(url_for("console.signin")))
        return _page("error.html", 401, message=catalogue.text("role.anonymous", _lang()))
    g.console_session = session
    if request.method not in ("GET", "HEAD"):
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            console.safe_record(_rt(), session, _action_name(), "refused", {"reason": "csrf"})
            return _page("error.html", 403, message=catalogue.text("error.csrf", _lang()))
    return None


@blp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@blp.errorhandler(LedgerError)
def _ledger_error(error: LedgerError) -> Response:
    if isinstance(error, Unavailable | CacheUnavailable):
        return _page("error.html", 503, message=catalogue.text("error.unavailable", _lang()))
    return _page("error.html", error.status, message=error.detail)


@blp.errorhandler(CacheUnavailable)
def _cache_down(_: CacheUnavailable) -> Response:
    return _page("error.html", 503, message=catalogue.text("error.unavailable", _lang()))


def _action_name() -> str:
    return (request.endpoint or "unknown").rpartition(".")[2]


def _page(template: str, status: int = 200, **context: Any) -> Response:
    session = g.get("console_session")
    response = make_response(
        render_template(f"console/{template}", session=session, lang=_lang(), **context), status
    )
    return cast(Response, response)


def needs(scope: str) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            session: console.Session = g.console_session
            if not session.can(scope):
                console.safe_record(_rt(), session, _action_name(), "refused", {"reason": "scope"})
                return _page("error.html", 403, message=catalogue.text("error.forbidden", _lang()))
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def _session() -> console.Session:
    return cast(console.Session, g.console_session)


# -- sign-in and out ---------------------------------------------------------------------------------
@blp.route("/signin", methods=["GET", "POST"])
def signin() -> Response:
    if request.method == "GET":
        token = secrets.token_urlsafe(32)
        response = _page("signin.html", csrf=token, notice=request.args.get("notice"))
        _set_cookie(response, PRE_COOKIE, token, 3600)
        return response
    sent = request.form.get("csrf_token", "")
    expected = request.cookies.get(PRE_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _page("error.html", 403, message=catalogue.text("error.csrf", _lang()))
    retry = secrets.token_urlsafe(32)
    try:
        session = console.sign_in(_rt(), _resolver(), request.form.get("key", ""), request.remote_addr or "")
    except Unauthorized:
        console.record_action(_rt(), None, None, "anonymous", "sign_in", "refused", {})
        response = _page("signin.html", 401, csrf=retry, error=catalogue.text("signin.failed", _lang()))
    except Forbidden:
        response = _page("signin.html", 403, csrf=retry, error=catalogue.text("signin.no_scope", _lang()))
    except QuotaExceeded as exc:
        response = _page("signin.html", 429, csrf=retry, error=catalogue.text("signin.too_many", _lang()))
        response.headers["Retry-After"] = str(exc.retry_after)
    else:
        response = cast(Response, redirect(url_for("console.home"), code=303))
        _set_cookie(response, SESSION_COOKIE, session.session_id, console.LIFETIME_SECONDS)
        response.delete_cookie(PRE_COOKIE, path="/console")
        return response
    _set_cookie(response, PRE_COOKIE, retry, 3600)
    return response


@blp.route("/signout", methods=["POST"])
def signout() -> Response:
    console.sign_out(_rt(), _session())
    response = cast(Response, redirect(url_for("console.signin", notice="signed_out"), code=303))
    response.delete_cookie(
        SESSION_COOKIE, path="/console", secure=_secure(), httponly=True, samesite="Strict"
    )
    return response


@blp.route("/language/<lang>")
def language(lang: str) -> Response:
    # Back to the page it was asked from: a path of the console only, never another site.
    back = request.args.get("next", "")
    if not back.startswith("/console/") or "//" in back or "\\" in back:
        back = url_for("console.home")
    response = cast(Response, redirect(back, code=303))
    if lang in catalogue.LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, lang, max_age=365 * 86400, path="/console", secure=_secure(), samesite="Strict"
        )
    return response


@blp.route("/")
def home() -> Response:
    target = "console.overview" if _session().can("admin") else "console.desk"
    return cast(Response, redirect(url_for(target)))


# -- operator pages ----------------------------------------------------------------------------------
@blp.route("/overview")
@needs("admin")
def overview() -> Response:
    charts = console.overview_snapshot(_rt())
    computed_at = datetime.fromisoformat(charts["computed_at"])
    return _page("overview.html", charts=charts, payloads=_chart_payloads(charts), computed_at=computed_at)


def _chart_payloads(charts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Chart.js data for the four overview charts, labelled in the page's language."""
    lang = _lang()

    def series(kind: str, grid: dict[str, Any]) -> dict[str, Any]:
        return {
            "labels": grid["labels"],
            "datasets": [
                {"label": catalogue.label(kind, code, lang), "code": code, "data": values}
                for code, values in grid["series"].items()
            ],
        }

    tiers = charts["tiers"]
    days = charts["disputes"]
    return {
        "lookups": series("tier", charts["lookups"]),
        "reports": series("category", charts["reports"]),
        "tiers": {
            "labels": [catalogue.label("tier", code, lang) for code in tiers["labels"]],
            "datasets": [
                {
                    "label": catalogue.text("overview.total_scored", lang),
                    "codes": tiers["labels"],
                    "data": [tiers["counts"][code] for code in tiers["labels"]],
                }
            ],
        },
        "disputes": {
            "labels": [
                catalogue.text("overview.overdue", lang)
                if d < 0
                else f"{d} {catalogue.text('overview.days', lang)}"
                for d in days["days"]
            ],
            "datasets": [{"label": catalogue.text("overview.total_open", lang), "data": days["counts"]}],
        },
    }


@blp.route("/disputes")
@needs("admin")
def disputes_queue() -> Response:
    queue = console.disputes_queue(_rt())
    if request.headers.get("HX-Request"):
        return _page("_queue.html", queue=queue)
    return _page("disputes.html", queue=queue)


def _platforms_page(status: int = 200, **context: Any) -> Response:
    rt = _rt()
    return _page(
        "platforms.html",
        status,
        platforms=console.platforms_page(rt),
        scopes=platforms.SCOPES,
        trust_min=rt.policy.trust_min,
        trust_max=rt.policy.trust_max,
        **context,
    )


@blp.route("/platforms")
@needs("admin")
def platforms_list() -> Response:
    return _platforms_page(notice=request.args.get("notice"))


def _acted(action: str, detail: dict[str, Any], run: Callable[[], Any]) -> Any:
    """Run an operator action and record it, with its outcome, under the session's key."""
    session = _session()
    try:
        result = run()
    except LedgerError as exc:
        console.safe_record(_rt(), session, action, "refused" if exc.status < 500 else "failed", detail)
        raise
    console.record(_rt(), session, action, "ok", detail)
    return result


def _scopes_from_form() -> list[str]:
    return [s for s in platforms.SCOPES if request.form.get(f"scope_{s}")]


@blp.route("/platforms", methods=["POST"])
@needs("admin")
def platform_create() -> Response:
    slug = request.form.get("slug", "").strip()
    scopes = _scopes_from_form()
    try:
        issued = _acted(
            "create_platform",
            {"platform": slug, "scopes": scopes},
            lambda: platforms.create_platform(_rt(), slug, request.form.get("name", ""), scopes),
        )
    except (InvalidInput, LedgerError) as exc:
        if exc.status >= 500:
            raise
        return _platforms_page(exc.status, error=exc.detail)
    return _platforms_page(issued=issued)


@blp.route("/platforms/<slug>/keys", methods=["POST"])
@needs("admin")
def key_issue(slug: str) -> Response:
    scopes = _scopes_from_form() or None
    try:
        issued = _acted(
            "issue_key",
            {"platform": slug, "scopes": scopes or "current"},
            lambda: platforms.rotate_key(_rt(), slug, scopes, revoke_old=False),
        )
    except LedgerError as exc:
        if exc.status >= 500:
            raise
        return _platforms_page(exc.status, error=exc.detail)
    return _platforms_page(issued=issued)


@blp.route("/keys/<key_id>/revoke", methods=["POST"])
@needs("admin")
def key_revoke(key_id: str) -> Response:
    try:
        _acted("revoke_key", {"key_id": key_id}, lambda: platforms.revoke_key(_rt(), key_id))
    except LedgerError as exc:
        if exc.status >= 500:
            raise
        return _platforms_page(exc.status, error=exc.detail)
    if request.headers.get("HX-Request"):
        return _page("_revoked.html", key_id=key_id)
    return cast(Response, redirect(url_for("console.platforms_list", notice="revoked"), code=303))


def _int_field(name: str) -> int | None:
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number", {name: ["not an integer"]}) from None
    if value < 1:
        raise InvalidInput(f"{name} must be at least 1", {name: ["below 1"]})
    return value


@blp.route("/platforms/<slug>/rate-limit", methods=["POST"])
@needs("admin")
def rate_limit(slug: str) -> Response:
    try:
        per_second, burst = _int_field("per_second"), _int_field("burst")
        _acted(
            "set_rate_limit",
            {"platform": slug, "per_second": per_second, "burst": burst},
            lambda: platforms.set_rate_limit(_rt(), slug, per_second, burst),
        )
    except LedgerError as exc:
        if exc.status >= 500:
            raise
        return _platforms_page(exc.status, error=exc.detail)
    return cast(Response, redirect(url_for("console.platforms_list", notice="saved"), code=303))


@blp.route("/platforms/<slug>/trust", methods=["POST"])
@needs("admin")
def trust(slug: str) -> Response:
    raw = request.form.get("trust", "").strip()
    try:
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput("trust must be a number", {"trust": ["not a number"]}) from None

        def run() -> None:
            platform_id = platforms.set_trust(_rt(), slug, value)
            reliability.refresh(_rt(), platform_ids=[platform_id])

        _acted("set_trust", {"platform": slug, "trust": value}, run)
    except LedgerError as exc:
        if exc.status >= 500:
            raise
        return _platforms_page(exc.status, error=exc.detail)
    return cast(Response, redirect(url_for("console.platforms_list", notice="saved"), code=303))


@blp.route("/purpose")
@needs("admin")
def purpose() -> Response:
    return _page("purpose.html", rows=console.fishing(_rt(), 30))


@blp.route("/ledger")
@needs("admin")
def ledger_status() -> Response:
    return _page("ledger.html", ledger=console.ledger_status(_rt()), actions=console.recent_actions(_rt()))


# -- the consumer desk -------------------------------------------------------------------------------
@blp.route("/desk")
@needs("dispute")
def desk() -> Response:
    return _page("desk.html", id_types=identity.IDENTIFIER_TYPES, rows=MAX_IDENTIFIERS)


def _identifiers_from_form() -> list[dict[str, str]]:
    items = []
    for i in range(MAX_IDENTIFIERS):
        value = request.form.get(f"value_{i}", "")
        if value.strip():
            id_type = request.form.get(f"type_{i}", "")
            if id_type not in identity.IDENTIFIER_TYPES:
                raise InvalidInput("unknown identifier type", {f"identifiers.{i}.type": ["unknown type"]})
            items.append({"type": id_type, "value": value})
    return items


@blp.route("/desk/report", methods=["POST"])
@needs("dispute")
def desk_lookup() -> Response:
    """Tokenise at once and keep only the tokens (in the session); the page that follows is a GET that
    renders from them, so no raw identifier is ever sent back to the browser."""
    rt, session = _rt(), _session()
    lang = _lang()
    try:
        items = _identifiers_from_form()
        if not items:
            raise InvalidInput(catalogue.text("desk.empty", lang))
        # A device id never selects a consumer's entries (it is shared); tokens are stored re-keyed.
        tokens = selecting_tokens(tokenize_all(items, rt.identity_key, token_key=rt.token_key))
    except InvalidInput as exc:
        errors = [
            catalogue.text("desk.invalid", lang, n=int(field.split(".")[1]) + 1, reason="; ".join(reasons))
            for field, reasons in sorted((exc.errors or {}).items())
        ] or [exc.detail]
        console.safe_record(rt, session, "subject_report", "refused", {"reason": "invalid_identifiers"})
        return _page(
            "desk.html", 422, id_types=identity.IDENTIFIER_TYPES, rows=MAX_IDENTIFIERS, errors=errors
        )
    console.remember_desk_tokens(rt, session, tokens)
    return cast(Response, redirect(url_for("console.desk_report"), code=303))


@blp.route("/desk/report")
@needs("dispute")
def desk_report() -> Response:
    rt, session = _rt(), _session()
    if not session.desk_tokens:
        return cast(Response, redirect(url_for("console.desk")))
    report = console.desk_report(rt, console.principal_of(_resolver(), session), list(session.desk_tokens))
    console.record(rt, session, "subject_report", "ok", {"incidents": len(report["incidents"])})
    return _page("report.html", report=report, done=request.args.get("opened"), by=request.args.get("by"))


@blp.route("/desk/dispute", methods=["POST"])
@needs("dispute")
def desk_dispute() -> Response:
    rt, session = _rt(), _session()
    if not session.desk_tokens:
        return _page("error.html", 409, message=catalogue.text("desk.expired", _lang()))
    which = request.form.get("incident", "all")
    body: dict[str, Any] = {
        "statement": request.form.get("statement", "").strip()[:500] or None,
        "contact_ref": request.form.get("contact_ref", "").strip()[:128] or None,
    }
    if which == "all":
        body["all_entries"] = True
    else:
        try:
            from uuid import UUID

            body["incident_id"] = UUID(which)
        except ValueError:
            raise InvalidInput(
                "incident must be an incident id or 'all'", {"incident": ["invalid"]}
            ) from None
    principal = console.principal_of(_resolver(), session)
    created = _acted(
        "open_dispute",
        {"incident": which},
        lambda: disputes.open_dispute_for_tokens(rt, principal, list(session.desk_tokens), body),
    )
    by = min(d["respond_by"] for d in created)
    return cast(
        Response,
        redirect(url_for("console.desk_report", opened=len(created), by=_when(by)), code=303),
    )
