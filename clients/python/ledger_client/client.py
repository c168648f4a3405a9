"""The HTTP client: one method per endpoint, typed, with retries only where repeating is safe.

Retries, with exponential backoff and jitter:
- 429 on any call: the server refused it before doing anything, and says when to come back
  (`Retry-After`, honoured up to `max_retry_after`);
- 503 and connection errors only on calls that are safe to repeat: reads, reports (the `external_id`
  makes a repeated report a replay), retractions and evidence uploads (both idempotent). A lookup, a
  dispute or a subject report is not repeated on its own: each leaves a record (and a subject report
  counts against the consumer's free ones), so the caller decides.

It uses urllib from the standard library, so installing it brings no HTTP stack, no Flask, no database
driver. Every non-2xx answer raises `ProblemError` with the problem's `status`, `type`, `detail` and
field `errors`.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from ledger_client import _merkle
from ledger_client.errors import ProblemError, TransportError
from ledger_client.types import (
    BatchItem,
    Dispute,
    Identifier,
    Incident,
    IncidentCreated,
    IncidentView,
    Lookup,
    LookupBatchItem,
    LookupResult,
    WebhookEndpoint,
)

Image = bytes | tuple[str, bytes, str]  # raw bytes, or (filename, bytes, content type)
RETRY_STATUSES_SAFE = frozenset({429, 503})
RETRY_STATUSES_UNSAFE = frozenset({429})


class Client:
    """A member platform's connection to the ledger.

    >>> ledger = Client("https://ledger.example", api_key="ccl_...")  # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 4,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = "ledger-client/0.1",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = f"Bearer {api_key}"
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self.user_agent = user_agent

    # -- transport ---------------------------------------------------------------------------------------

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return ceiling / 2 + random.random() * ceiling / 2

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        safe: bool,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        raw: bytes | None = None,
        accept: str = "application/json",
    ) -> Any:
        """Send one API call, retrying as the module docstring says; the decoded JSON answer (or text)."""
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Authorization": self._auth, "Accept": accept, "User-Agent": self.user_agent}
        if data is not None:
            headers["Content-Type"] = content_type
        retry_on = RETRY_STATUSES_SAFE if safe else RETRY_STATUSES_UNSAFE
        attempt = 0
        while True:
            req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as response:  # noqa: S310
                    payload = response.read()
                    kind = response.headers.get_content_type()
                    if response.status == 204 or not payload:
                        return None
                    return json.loads(payload) if kind.endswith("json") else payload.decode()
            except urllib.error.HTTPError as exc:
                problem = _problem(exc)
                if problem.status in retry_on and attempt < self.max_retries:
                    self._sleep(self._delay(attempt, problem.retry_after))
                    attempt += 1
                    continue
                raise problem from None
            except (urllib.error.URLError, OSError) as exc:
                if safe and attempt < self.max_retries:
                    self._sleep(self._delay(attempt, None))
                    attempt += 1
                    continue
                raise TransportError(f"{method} {path}: {type(exc).__name__}") from exc

    # -- incidents ---------------------------------------------------------------------------------------

    def report(self, incident: Incident) -> IncidentCreated:
        """Report a confirmed incident; repeating it with the same `external_id` and body is a replay."""
        return cast(IncidentCreated, self.request("POST", "/v1/incidents", incident, safe=True))

    def report_batch(self, incidents: Sequence[Incident]) -> list[BatchItem]:
        """Report up to 1,000 incidents; one result per item, in order."""
        answer = self.request("POST", "/v1/incidents/batch", {"incidents": list(incidents)}, safe=True)
        return cast(list[BatchItem], answer["results"])

    def get_incident(self, incident_id: str) -> IncidentView:
        return cast(IncidentView, self.request("GET", f"/v1/incidents/{incident_id}", safe=True))

    def retract(self, incident_id: str, reason: str) -> IncidentCreated:
        answer = self.request("POST", f"/v1/incidents/{incident_id}/retract", {"reason": reason}, safe=True)
        return cast(IncidentCreated, answer)

    def add_evidence(self, incident_id: str, images: Sequence[Image]) -> dict[str, Any]:
        """Upload 1 to 5 evidence photos; the server keeps only their PDQ hashes."""
        body, content_type = _multipart([("images", image) for image in images])
        return cast(
            dict[str, Any],
            self.request(
                "POST",
                f"/v1/incidents/{incident_id}/evidence",
                safe=True,
                raw=body,
                content_type=content_type,
            ),
        )

    # -- reference photos (what you sell and ship) --------------------------------------------------------

    def register_references(self, references: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Add PDQ hashes of your listing or shipping photos: up to 1,000 `{kind, reference, pdq}` items.
        Adding the same hashes again changes nothing, so this is retried like a read."""
        answer = self.request("POST", "/v1/references", {"references": list(references)}, safe=True)
        return cast(list[dict[str, Any]], answer["results"])

    def replace_references(self, references: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Each named reference of yours holds exactly the given hashes afterwards."""
        answer = self.request("POST", "/v1/references/replace", {"references": list(references)}, safe=True)
        return cast(list[dict[str, Any]], answer["results"])

    def remove_references(self, references: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
        """Remove your references (`{kind, reference}` items); one you do not hold gives `removed: 0`."""
        answer = self.request("POST", "/v1/references/remove", {"references": list(references)}, safe=True)
        return cast(list[dict[str, Any]], answer["results"])

    def add_reference_images(self, kind: str, reference: str, images: Sequence[Image]) -> dict[str, Any]:
        """Register 1 to 5 photos under one reference; the server keeps only their PDQ hashes."""
        parts: list[tuple[str, Image | str]] = [
            ("request", json.dumps({"kind": kind, "reference": reference}))
        ]
        parts += [("images", image) for image in images]
        body, content_type = _multipart(parts)
        return cast(
            dict[str, Any],
            self.request("POST", "/v1/references/images", safe=True, raw=body, content_type=content_type),
        )

    # -- lookups -----------------------------------------------------------------------------------------

    def lookup(self, lookup: Lookup) -> LookupResult:
        """Decide whether to restrict a refund. Not repeated on a 503: every answered lookup is recorded."""
        return cast(LookupResult, self.request("POST", "/v1/lookups", lookup, safe=False))

    def lookup_batch(self, lookups: Sequence[Lookup]) -> list[LookupBatchItem]:
        answer = self.request("POST", "/v1/lookups/batch", {"lookups": list(lookups)}, safe=False)
        return cast(list[LookupBatchItem], answer["results"])

    def lookup_with_images(self, lookup: Lookup, images: Sequence[Image]) -> LookupResult:
        """A lookup with evidence photos, matched against confirmed forged evidence."""
        parts: list[tuple[str, Image | str]] = [("request", json.dumps(lookup))]
        parts += [("images", image) for image in images]
        body, content_type = _multipart(parts)
        return cast(
            LookupResult,
            self.request("POST", "/v1/lookups/evidence", safe=False, raw=body, content_type=content_type),
        )

    def get_lookup(self, lookup_id: str) -> LookupResult:
        return cast(LookupResult, self.request("GET", f"/v1/lookups/{lookup_id}", safe=True))

    # -- disputes and the subject report (the operator's consumer channel) --------------------------------

    def open_dispute(
        self,
        identifiers: Sequence[Identifier],
        *,
        incident_id: str | None = None,
        all_entries: bool = False,
        statement: str | None = None,
        contact_ref: str | None = None,
    ) -> list[Dispute]:
        body: dict[str, Any] = {"identifiers": list(identifiers)}
        if incident_id is not None:
            body["incident_id"] = incident_id
        if all_entries:
            body["all_entries"] = True
        if statement is not None:
            body["statement"] = statement
        if contact_ref is not None:
            body["contact_ref"] = contact_ref
        return cast(list[Dispute], self.request("POST", "/v1/disputes", body, safe=False)["disputes"])

    def disputes(self, status: str | None = None) -> list[Dispute]:
        """Disputes about your incidents, earliest deadline first."""
        query = {"status": status} if status else None
        return cast(list[Dispute], self.request("GET", "/v1/disputes", safe=True, query=query)["disputes"])

    def respond_to_dispute(self, dispute_id: str, outcome: str, basis: str | None = None) -> Dispute:
        body: dict[str, Any] = {"outcome": outcome}
        if basis is not None:
            body["basis"] = basis
        return cast(Dispute, self.request("POST", f"/v1/disputes/{dispute_id}/response", body, safe=False))

    def subject_report(self, identifiers: Sequence[Identifier]) -> dict[str, Any]:
        """Everything held about a consumer, as JSON. Not repeated on its own: each report counts against
        the consumer's free ones."""
        body = {"identifiers": list(identifiers)}
        return cast(dict[str, Any], self.request("POST", "/v1/subjects/report", body, safe=False))

    def subject_report_html(self, identifiers: Sequence[Identifier], *, lang: str = "zh") -> str:
        """The same report as the printable page (Chinese, or `lang="en"`), as HTML text."""
        return cast(
            str,
            self.request(
                "POST",
                "/v1/subjects/report/html",
                {"identifiers": list(identifiers)},
                safe=False,
                query={"lang": lang},
                accept="text/html",
            ),
        )

    # -- the ledger and the service -----------------------------------------------------------------------

    # -- the transparency log (docs/transparency.md) ------------------------------------------------------

    def log_checkpoint(self, tree_size: int | None = None) -> dict[str, Any]:
        """The latest signed checkpoint, or the one signed at `tree_size`."""
        path = "/v1/log/checkpoint" if tree_size is None else f"/v1/log/checkpoints/{tree_size}"
        return cast(dict[str, Any], self.request("GET", path, safe=True))

    def log_key(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", "/v1/log/key", safe=True))

    def inclusion_proof(
        self, *, leaf_hash: str | None = None, index: int | None = None, tree_size: int | None = None
    ) -> dict[str, Any]:
        """An inclusion proof for one of your own leaves (by its hash from the receipt, or its index)."""
        query = {"leaf_hash": leaf_hash} if leaf_hash is not None else {"index": str(index)}
        if tree_size is not None:
            query["tree_size"] = str(tree_size)
        return cast(dict[str, Any], self.request("GET", "/v1/log/inclusion", safe=True, query=query))

    def consistency_proof(self, old_size: int, new_size: int) -> dict[str, Any]:
        query = {"from": str(old_size), "to": str(new_size)}
        return cast(dict[str, Any], self.request("GET", "/v1/log/consistency", safe=True, query=query))

    def cosign(self, tree_size: int, cosigner: str, signature: str) -> dict[str, Any]:
        """Submit a witness cosignature of the checkpoint at `tree_size` (C2SP tlog-cosignature)."""
        body = {"tree_size": tree_size, "cosigner": cosigner, "signature": signature}
        return cast(dict[str, Any], self.request("POST", "/v1/log/cosignatures", body, safe=True))

    def verify_inclusion(self, proof: Mapping[str, Any]) -> None:
        """Check an inclusion proof against its root with the server's own RFC 9162 code (vendored); raises
        `ProofError` (a ValueError) if it does not hold. Checking the checkpoint note's signature against
        `log_key()` is up to the caller (`ledger log verify-remote` does it)."""
        _merkle.verify_inclusion(
            int(proof["leaf_index"]),
            int(proof["tree_size"]),
            bytes.fromhex(proof["leaf_hash"]),
            [bytes.fromhex(h) for h in proof["proof"]],
            bytes.fromhex(proof["root_hash"]),
        )

    def verify_consistency(self, proof: Mapping[str, Any], old_root: str, new_root: str) -> None:
        """Check that the log at `proof["to"]` only appended to the log at `proof["from"]`."""
        _merkle.verify_consistency(
            int(proof["from"]),
            int(proof["to"]),
            bytes.fromhex(old_root),
            bytes.fromhex(new_root),
            [bytes.fromhex(h) for h in proof["proof"]],
        )

    # -- the inquiry log: one leaf per lookup record (docs/transparency.md, "The inquiry log") -------------

    def inquiry_log_checkpoint(self, tree_size: int | None = None) -> dict[str, Any]:
        """The inquiry log's latest signed checkpoint, or the one signed at `tree_size`."""
        path = (
            "/v1/log/inquiries/checkpoint"
            if tree_size is None
            else f"/v1/log/inquiries/checkpoints/{tree_size}"
        )
        return cast(dict[str, Any], self.request("GET", path, safe=True))

    def inquiry_log_key(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", "/v1/log/inquiries/key", safe=True))

    def inquiry_inclusion_proof(
        self, *, lookup_id: str | None = None, index: int | None = None, tree_size: int | None = None
    ) -> dict[str, Any]:
        """An inclusion proof for one of your own lookups (by its lookup id, or its leaf index), with the
        leaf itself; check it with `verify_inquiry_leaf` and `verify_inclusion`."""
        query = {"lookup_id": lookup_id} if lookup_id is not None else {"index": str(index)}
        if tree_size is not None:
            query["tree_size"] = str(tree_size)
        return cast(
            dict[str, Any], self.request("GET", "/v1/log/inquiries/inclusion", safe=True, query=query)
        )

    def inquiry_consistency_proof(self, old_size: int, new_size: int) -> dict[str, Any]:
        query = {"from": str(old_size), "to": str(new_size)}
        return cast(
            dict[str, Any], self.request("GET", "/v1/log/inquiries/consistency", safe=True, query=query)
        )

    @staticmethod
    def verify_inquiry_leaf(proof: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        """Check that an inquiry proof's leaf is of `answer` (the lookup's answer as you received it) and
        that `leaf_hash` is that leaf's hash; raises `ProofError` (a ValueError) if not. The service sends
        the answer with sorted keys, no whitespace and UTF-8 text, so encoding the parsed answer that way
        gives back the bytes it sent."""
        sent = json.dumps(answer, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        leaf = str(proof["leaf"]).encode()
        fields = json.loads(leaf)
        if (
            fields.get("id") != answer.get("lookup_id")
            or fields.get("response") != hashlib.sha256(sent).hexdigest()
        ):
            raise _merkle.ProofError("the leaf is not of this answer")
        if _merkle.leaf_hash(leaf).hex() != proof["leaf_hash"]:
            raise _merkle.ProofError("the leaf hash is not the hash of the leaf")

    def health(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", "/healthz", safe=True))

    def ready(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", "/readyz", safe=True))

    # -- webhooks -----------------------------------------------------------------------------------------

    def create_webhook_endpoint(self, url: str, events: Iterable[str]) -> WebhookEndpoint:
        """Register an endpoint; keep the returned `secret`, it is never shown again."""
        body = {"url": url, "events": list(events)}
        return cast(WebhookEndpoint, self.request("POST", "/v1/webhooks/endpoints", body, safe=False))

    def webhook_endpoints(self) -> list[WebhookEndpoint]:
        answer = self.request("GET", "/v1/webhooks/endpoints", safe=True)
        return cast(list[WebhookEndpoint], answer["endpoints"])

    def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        self.request("DELETE", f"/v1/webhooks/endpoints/{endpoint_id}", safe=True)

    def enable_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        answer = self.request("POST", f"/v1/webhooks/endpoints/{endpoint_id}/enable", {}, safe=True)
        return cast(WebhookEndpoint, answer)

    def webhook_deliveries(self, endpoint_id: str) -> dict[str, Any]:
        answer = self.request("GET", f"/v1/webhooks/endpoints/{endpoint_id}/deliveries", safe=True)
        return cast(dict[str, Any], answer)

    def redeliver_webhook(self, delivery_id: str) -> dict[str, Any]:
        answer = self.request("POST", f"/v1/webhooks/deliveries/{delivery_id}/redeliver", {}, safe=True)
        return cast(dict[str, Any], answer)


def _problem(exc: urllib.error.HTTPError) -> ProblemError:
    raw = exc.read()
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode(errors="replace")
    retry_after: float | None = None
    header = exc.headers.get("Retry-After") if exc.headers else None
    if header is not None:
        try:
            retry_after = max(0.0, float(header))
        except ValueError:
            retry_after = None  # an HTTP date: fall back to the client's own backoff
    if isinstance(body, dict):
        return ProblemError(
            status=int(body.get("status", exc.code)),
            type=str(body.get("type", "about:blank")),
            title=str(body.get("title", exc.reason or "")),
            detail=str(body.get("detail", "")),
            errors=body.get("errors") or {},
            retry_after=retry_after,
            body=body,
        )
    return ProblemError(status=exc.code, title=str(exc.reason or ""), retry_after=retry_after, body=body)


def _multipart(parts: Sequence[tuple[str, Image | str]]) -> tuple[bytes, str]:
    """multipart/form-data: text parts as JSON, images as file parts with a filename."""
    boundary = f"ledger-client-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for index, (name, part) in enumerate(parts):
        chunks.append(f"--{boundary}\r\n".encode())
        if isinstance(part, str):
            chunks.append(f'Content-Disposition: form-data; name="{name}"\r\n'.encode())
            chunks.append(b"Content-Type: application/json\r\n\r\n" + part.encode() + b"\r\n")
            continue
        filename, content, kind = part if isinstance(part, tuple) else (f"image-{index}", part, "image/jpeg")
        chunks.append(f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode())
        chunks.append(f"Content-Type: {kind}\r\n\r\n".encode() + content + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"
