"""Consumer Credit Ledger: a consortium ledger of confirmed refund fraud.

`create_app` only wires things together: settings, the runtime (pool, cache, queue, policy), the API
with its blueprints and the one problem+json error envelope.
"""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from ledger.config import Settings

__all__ = ["create_app"]

JSON_TYPES = ("application/json",)
# Evidence photo uploads (docs/evidence.md); these views check for multipart/form-data themselves.
MULTIPART_ENDPOINTS: frozenset[str] = frozenset(
    {"incidents.IncidentEvidence", "lookups.LookupEvidence", "references.ReferenceImages"}
)


def create_app(settings: Settings | None = None) -> Flask:
    from ledger import console
    from ledger.api import disputes, incidents, log, lookups, openapi, problems, references, system, webhooks
    from ledger.api.json_provider import Utf8JsonProvider
    from ledger.services.platforms import KeyResolver
    from ledger.services.runtime import Runtime

    settings = (settings or Settings.from_env()).require_services()
    app = Flask(__name__)
    app.json = Utf8JsonProvider(app)  # Chinese as UTF-8, not \u escapes (ledger/api/json_provider.py)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="Consumer Credit Ledger",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # Swagger UI from the package's own static folder, vendored from the npm lock in ledger/assets-src
        # (scripts/vendor_assets.py): /docs loads with no request leaving the server. No validator badge,
        # which Swagger UI would otherwise fetch from validator.swagger.io.
        OPENAPI_SWAGGER_UI_URL="/static/vendor/swagger-ui-dist/",
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None, "showExtensions": True, "tryItOutEnabled": False},
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "info": {"description": problems.API_DESCRIPTION},
        },
    )
    if settings.trusted_proxy_hops:
        # The client address (brute-force protection) comes from X-Forwarded-For only as far back as the
        # configured proxies append it; anything a client wrote further left is ignored.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops)  # type: ignore[method-assign]
    rt = Runtime(settings)
    app.extensions["ledger.runtime"] = rt
    app.extensions["ledger.keys"] = KeyResolver(rt)

    api = problems.ProblemApi(app, spec_kwargs={"marshmallow_plugin": openapi.Plugin()})
    app.extensions["ledger.api"] = api
    for module in (system, incidents, lookups, references, disputes, log, webhooks):
        api.register_blueprint(module.blp)
    problems.register(app)
    app.register_blueprint(console.blp)

    @app.before_request
    def _require_json() -> Response | None:
        if (
            request.method in ("POST", "PUT", "PATCH")
            and request.endpoint not in MULTIPART_ENDPOINTS
            and request.blueprint != "console"  # HTML forms; the console checks its own CSRF token
        ):
            mimetype = request.mimetype or ""
            if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
                return problems.problem(415, None, "send the body as application/json")
        return None

    return app
