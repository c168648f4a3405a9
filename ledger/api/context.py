"""Per-request access to the process's Runtime and the authenticated principal."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, request

from ledger.services.platforms import KeyResolver, Principal
from ledger.services.runtime import Runtime

F = TypeVar("F", bound=Callable[..., Any])


def runtime() -> Runtime:
    return cast(Runtime, current_app.extensions["ledger.runtime"])


def principal() -> Principal:
    return cast(Principal, g.principal)


def requires(scope: str) -> Callable[[F], F]:
    """Authenticate the bearer key (401) and check its scope (403) before the view runs."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            resolver = cast(KeyResolver, current_app.extensions["ledger.keys"])
            who = resolver.resolve(request.headers.get("Authorization"), request.remote_addr or "")
            who.require(scope)
            g.principal = who
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
