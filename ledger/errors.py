"""Domain exceptions, and the one vocabulary of problems every error is reported in.

Services and the domain raise these; the API layer maps each to one RFC 9457 problem in one place
(`ledger/api/problems.py`). Messages are safe to show a client: they never contain raw identifiers.

`PROBLEM_TYPES` is the vocabulary: one `type` per kind of error, with one status and one title, whichever
layer noticed it. A 422 from a marshmallow schema and a 422 from the domain are the same kind (the
request is invalid), so a client that switches on `type` sees one value. The OpenAPI document and
docs/errors.md are generated from, or checked against, this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

PROBLEM_TYPE_BASE = "https://ledger.example/problems/"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str
    meaning: str

    @property
    def uri(self) -> str:
        return PROBLEM_TYPE_BASE + self.slug


PROBLEM_TYPES: dict[str, ProblemType] = {
    p.slug: p
    for p in (
        ProblemType(
            "invalid-json",
            400,
            "Malformed JSON body",
            "The body is not JSON, or is nested too deeply to read.",
        ),
        ProblemType(
            "bad-request", 400, "Bad request", "The request could not be read at all (other than its JSON)."
        ),
        ProblemType(
            "unauthorized",
            401,
            "Unauthorized",
            "No API key, a malformed `Authorization` header, or an unknown or revoked key.",
        ),
        ProblemType(
            "forbidden", 403, "Forbidden", "The key is valid but lacks the scope the operation needs."
        ),
        ProblemType(
            "not-found",
            404,
            "Not found",
            "No such path, or no such resource that you may see (another platform's is the same as none).",
        ),
        ProblemType(
            "method-not-allowed", 405, "Method not allowed", "The path exists but not with this method."
        ),
        ProblemType(
            "conflict",
            409,
            "Conflict",
            "The request is valid but contradicts the current state: a reused `external_id` with a different body, an entry already disputed, a dispute already answered.",
        ),
        ProblemType(
            "payload-too-large",
            413,
            "Content too large",
            "The body exceeds `LEDGER_MAX_BODY_BYTES`, or an upload its limits.",
        ),
        ProblemType(
            "unsupported-media-type",
            415,
            "Unsupported media type",
            "The body is not `application/json` (or `multipart/form-data` where an upload is expected).",
        ),
        ProblemType(
            "validation",
            422,
            "Unprocessable content",
            "A field is missing, malformed or out of range; `errors` maps each field path to its reasons. Schema checks and domain checks (identifiers, images) alike.",
        ),
        ProblemType(
            "rate-limited",
            429,
            "Too many requests",
            "The key's rate limit or daily quota is used up; `Retry-After` says when to retry.",
        ),
        ProblemType(
            "internal", 500, "Internal server error", "An unexpected error; nothing was half-written."
        ),
        ProblemType("configuration", 500, "Configuration error", "The server is misconfigured."),
        ProblemType(
            "unavailable",
            503,
            "Service unavailable",
            "PostgreSQL (or, where it is needed, Redis) cannot be reached, or a concurrent change interfered; retry after `Retry-After`.",
        ),
    )
}


class CacheUnavailable(Exception):
    """Redis could not be reached (ledger/storage/redis_guard.py). Not a problem type: every caller
    handles it, by falling back to PostgreSQL, by leaving the work to the outbox relay's poll, or (the
    console) by showing its own 503 page."""


class LedgerError(Exception):
    """Base class. `type_slug` names the problem type; `status` and `title` come from PROBLEM_TYPES."""

    type_slug: ClassVar[str] = "bad-request"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Take status and title from the vocabulary. A subclass that states its own and disagrees fails
        at import, loudly, rather than sending a second title for the same type."""
        super().__init_subclass__(**kwargs)
        kind = PROBLEM_TYPES[cls.type_slug]
        own = {k: v for k, v in vars(cls).items() if k in ("status", "title")}
        if own and own != {k: getattr(kind, k) for k in own}:
            raise TypeError(
                f"{cls.__name__}: {own} disagrees with problem type {kind.slug!r} in PROBLEM_TYPES"
            )
        cls.status, cls.title = kind.status, kind.title

    def __init__(self, detail: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class ConfigError(LedgerError):
    type_slug = "configuration"


class InvalidInput(LedgerError):
    type_slug = "validation"


class InvalidIdentifier(InvalidInput):
    """An identifier failed normalisation. `reason` never contains the raw value."""

    def __init__(self, id_type: str, reason: str) -> None:
        super().__init__(f"invalid {id_type}: {reason}")
        self.id_type = id_type
        self.reason = reason


class NotFound(LedgerError):
    type_slug = "not-found"


class Conflict(LedgerError):
    type_slug = "conflict"


class Unauthorized(LedgerError):
    type_slug = "unauthorized"


class Forbidden(LedgerError):
    type_slug = "forbidden"


class QuotaExceeded(LedgerError):
    type_slug = "rate-limited"

    def __init__(self, detail: str, retry_after: int, limit: int, remaining: int = 0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.limit = limit
        self.remaining = remaining


class Unavailable(LedgerError):
    type_slug = "unavailable"

    def __init__(self, detail: str, retry_after: int = 2) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Contention(Unavailable):
    """A transaction lost a serialization or deadlock race; running it again is the fix."""

    def __init__(self, detail: str = "a concurrent change interfered; retry", retry_after: int = 1) -> None:
        super().__init__(detail, retry_after)
