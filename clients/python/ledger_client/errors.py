"""The client's exceptions: one for every problem+json answer, one for an identifier it cannot tokenise."""

from __future__ import annotations

from typing import Any


class LedgerClientError(Exception):
    """Base class of everything this library raises on purpose."""


class ProblemError(LedgerClientError):
    """An RFC 9457 problem+json answer (or any non-2xx answer), with its parts as attributes."""

    def __init__(
        self,
        status: int,
        type: str = "about:blank",
        title: str = "",
        detail: str = "",
        errors: dict[str, list[str]] | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors: dict[str, list[str]] = errors or {}
        self.retry_after = retry_after
        self.body = body


class TransportError(LedgerClientError):
    """The server could not be reached, or stopped answering, after every allowed retry."""


class InvalidIdentifier(LedgerClientError, ValueError):
    """An identifier failed normalisation. `reason` never contains the raw value."""

    def __init__(self, id_type: str, reason: str) -> None:
        super().__init__(f"invalid {id_type}: {reason}")
        self.id_type = id_type
        self.reason = reason
