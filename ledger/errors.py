"""Domain exceptions.

Services and the domain raise these; the API layer maps each to one RFC 9457 problem in one place
(`ledger/api/problems.py`). Messages are safe to show a client: they never contain raw identifiers.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class. `status` and `title` are the HTTP mapping the API uses."""

    status = 400
    title = "Bad request"
    type_slug = "bad-request"

    def __init__(self, detail: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class ConfigError(LedgerError):
    title = "Configuration error"
    type_slug = "configuration"
    status = 500


class InvalidInput(LedgerError):
    status = 422
    title = "Unprocessable content"
    type_slug = "validation"


class InvalidIdentifier(InvalidInput):
    """An identifier failed normalisation. `reason` never contains the raw value."""

    def __init__(self, id_type: str, reason: str) -> None:
        super().__init__(f"invalid {id_type}: {reason}")
        self.id_type = id_type
        self.reason = reason


class NotFound(LedgerError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(LedgerError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"


class Unauthorized(LedgerError):
    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"


class Forbidden(LedgerError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class QuotaExceeded(LedgerError):
    status = 429
    title = "Too many requests"
    type_slug = "rate-limited"

    def __init__(self, detail: str, retry_after: int, limit: int, remaining: int = 0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.limit = limit
        self.remaining = remaining


class Unavailable(LedgerError):
    status = 503
    title = "Service unavailable"
    type_slug = "unavailable"

    def __init__(self, detail: str, retry_after: int = 2) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Contention(Unavailable):
    """A transaction lost a serialization or deadlock race; running it again is the fix."""

    def __init__(self, detail: str = "a concurrent change interfered; retry", retry_after: int = 1) -> None:
        super().__init__(detail, retry_after)
