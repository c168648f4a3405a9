"""Per-request access to the process's Runtime and the authenticated principal."""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, request

from ledger.services.platforms import KeyResolver, Principal, charge
from ledger.services.runtime import Runtime

F = TypeVar("F", bound=Callable[..., Any])


def runtime() -> Runtime:
    return cast(Runtime, current_app.extensions["ledger.runtime"])


def principal() -> Principal:
    return cast(Principal, g.principal)


def requires(scope: str, *alternatives: str, cost: int = 1, charged_after: bool = False) -> Callable[[F], F]:
    """Authenticate the bearer key (401), check its scope, or one of the alternatives (403), and charge
    `cost` units to the platform's request bucket (429), all before the view runs. Lookups pass 0: they
    are charged per identifier in the same Redis call that reads their decisions. Reports pass 0 and
    `charged_after`: they are charged after their work, in the Redis call that flags their tokens
    (services/incidents.py), and are refused here, before their body is read, while this process last saw
    the platform's bucket empty (`QuotaGate`).

    It also documents both: the operation gets the bearer security requirement and `x-required-scope`
    in the OpenAPI document (OpenAPI 3.0 has no scopes for bearer tokens), which /docs/reference shows."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            resolver = cast(KeyResolver, current_app.extensions["ledger.keys"])
            who = resolver.resolve(request.headers.get("Authorization"), request.remote_addr or "")
            accepted = next((s for s in (scope, *alternatives) if s in who.scopes), scope)
            who.require(accepted)
            if cost:
                charge(runtime(), who, cost)
            if charged_after:
                runtime().report_gate.check(who)
            g.principal = who
            return view(*args, **kwargs)

        # flask-smorest reads `_apidoc["manual_doc"]` verbatim into the operation; copy, never mutate, the
        # dict `wraps` shared with the view.
        apidoc = deepcopy(getattr(wrapper, "_apidoc", {}))
        apidoc.setdefault("manual_doc", {}).update(
            {"x-required-scope": " or ".join((scope, *alternatives)), "security": [{"bearerAuth": []}]}
        )
        wrapper._apidoc = apidoc  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate
