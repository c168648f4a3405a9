"""The member library against the real served API (`ledger serve` as a subprocess) and a real worker.

Every endpoint is called through `ledger_client.Client`, with identifiers tokenised on the member's side;
problem+json answers arrive as `ProblemError`; an injected 503 with `Retry-After` (a proxy in front of the
served API) is retried after the time it asks for, on safe calls only; and a webhook the server signed
verifies with the library's helper.
"""

from __future__ import annotations

import io
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from ledger_client import Client, ProblemError, TransportError, token_identifier, verify_webhook
from PIL import Image

from ledger.config import Settings
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from tests.receiver import Receiver
from tests.support import IDENTITY_KEY, ServedApp, free_port, integrate, wait_for

PHONE = "+86 138 0013 8000"
OCCURRED = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0).isoformat()


# Every test here runs on the worker's database, which the module's one served app uses.
pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def served(worker_settings: Settings) -> Iterator[ServedApp]:
    app = ServedApp(worker_settings, workers=1).start()
    yield app
    app.stop()


@pytest.fixture
def keys(rt: Runtime) -> dict[str, str]:
    members = {
        slug: platform_service.create_platform(rt, slug, slug.title(), "report,lookup").key
        for slug in ("alpha", "beta")
    }
    # Consumer rights belong to the operator's own account only (issue 22, M3).
    members["operator"] = platform_service.create_platform(
        rt, "operator", "Operator", "dispute", operator=True
    ).key
    return members


def _photo(seed: int) -> bytes:
    """A photo with structure at several scales, so that its PDQ quality is high enough to match."""
    rng = random.Random(seed)
    image = Image.new("RGB", (256, 256))
    for x in range(0, 256, 16):
        for y in range(0, 256, 16):
            block = Image.new("RGB", (16, 16), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
            image.paste(block, (x, y))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _incident(external_id: str) -> Any:
    return {
        "external_id": external_id,
        "category": "fabricated_evidence",
        "confirmation": "platform_review",
        "amount": {"value": 45_000, "currency": "CNY"},
        "occurred_at": OCCURRED,
        "consumer_notified_at": OCCURRED,
        "identifiers": [token_identifier("phone", PHONE, IDENTITY_KEY)],
    }


def test_every_endpoint_through_the_client(
    served: ServedApp, keys: dict[str, str], worker: Any, rt: Runtime
) -> None:
    alpha = Client(served.base, keys["alpha"])
    beta = Client(served.base, keys["beta"])
    operator = Client(served.base, keys["operator"])
    consumer = [token_identifier("phone", PHONE, IDENTITY_KEY)]

    assert alpha.health()["status"] == "ok"
    assert alpha.ready()["status"] == "ok"
    assert alpha.log_key()["algorithm"]

    created = alpha.report(_incident("order-1"))
    assert created["status"] == "active"
    # The receipt's leaf, once integrated, is provably in the log: the proof checks with the server's code.
    integrate(rt)
    first = alpha.log_checkpoint()
    proof = alpha.inclusion_proof(leaf_hash=created["receipt"]["leaf_hash"])
    alpha.verify_inclusion(proof)
    with pytest.raises(ValueError, match="root"):
        alpha.verify_inclusion({**proof, "root_hash": "00" * 32})
    assert alpha.report(_incident("order-1"))["id"] == created["id"]  # a replay, as a retry would be
    batch = alpha.report_batch([_incident("order-2"), {**_incident("order-3"), "amount": {"value": 0}}])  # type: ignore[typeddict-item]
    assert [item["status"] for item in batch] == [201, 422]
    assert alpha.get_incident(created["id"])["consumer_notified_at"] is not None
    added = alpha.add_evidence(created["id"], [("claim.png", _photo(3), "image/png")])
    assert added["stored"] == 1

    with pytest.raises(ProblemError) as refused:
        alpha.report({**_incident("order-4"), "consumer_notified_at": "2999-01-01T00:00:00+00:00"})
    assert refused.value.status == 422
    assert refused.value.type.startswith("http")
    assert "consumer_notified_at" in refused.value.errors
    assert "Art. 15" in refused.value.errors["consumer_notified_at"][0]
    with pytest.raises(ProblemError) as missing:
        beta.get_incident(created["id"])  # another platform's incident reads as missing
    assert missing.value.status == 404

    decided = wait_for(
        lambda: (
            (r := beta.lookup({"identifiers": consumer, "purpose": "refund_review"}))["decision"][
                "restrictions"
            ]
            and r
        )
    )
    assert decided["summary"]["incidents"] >= 1
    assert beta.get_lookup(decided["lookup_id"])["lookup_id"] == decided["lookup_id"]
    [item] = beta.lookup_batch(
        [{"identifiers": consumer, "purpose": "account_review", "operator_ref": "agent-7"}]
    )
    assert item["status"] == 200
    # The lookup is a leaf of the inquiry log: beta proves it, and that the leaf is of the answer it got.
    integrate(rt)
    assert beta.inquiry_log_key()["origin"].endswith("/inquiries")
    inquiry = beta.inquiry_inclusion_proof(lookup_id=decided["lookup_id"])
    beta.verify_inquiry_leaf(inquiry, decided)
    beta.verify_inclusion(inquiry)
    with pytest.raises(ValueError, match="not of this answer"):
        beta.verify_inquiry_leaf(inquiry, {**decided, "stale": not decided["stale"]})
    assert beta.inquiry_log_checkpoint(inquiry["tree_size"])["root_hash"] == inquiry["root_hash"]
    with pytest.raises(ProblemError) as foreign:
        alpha.inquiry_inclusion_proof(lookup_id=decided["lookup_id"])  # not alpha's lookup: unknown
    assert foreign.value.status == 404
    assert added["evidence"][0]["low_quality"] is False
    # Reference photos: a listing of alpha's, and a claim photo that is that listing, checked by beta.
    listing = alpha.add_reference_images("listing", "sku-client-1", [("listing.png", _photo(5), "image/png")])
    assert listing["held"] == 1
    assert (
        alpha.register_references([{"kind": "shipping", "reference": "o-1", "pdq": ["ab" * 32]}])[0]["added"]
        == 1
    )
    assert beta.remove_references([{"kind": "listing", "reference": "sku-client-1"}])[0]["removed"] == 0
    assert (
        alpha.replace_references([{"kind": "shipping", "reference": "o-1", "pdq": ["cd" * 32]}])[0]["held"]
        == 1
    )
    assert alpha.remove_references([{"kind": "shipping", "reference": "o-1"}])[0]["removed"] == 1
    derived = wait_for(
        lambda: beta.lookup_with_images(
            {"identifiers": consumer, "purpose": "refund_review"}, [("claim.png", _photo(5), "image/png")]
        )["evidence_matches"][0]["derived_from_reference"]
    )
    assert derived == {"kind": "listing", "distance": 0}
    # Each API process learns of new evidence by polling; the match follows within moments.
    wait_for(
        lambda: beta.lookup_with_images(
            {"identifiers": consumer, "purpose": "refund_review"}, [("claim.png", _photo(3), "image/png")]
        )["evidence_matches"][0]["matched"]
    )

    receiver = Receiver().start()
    try:
        endpoint = alpha.create_webhook_endpoint(f"{receiver.base}/alpha", ["dispute.opened"])
        assert endpoint["secret"].startswith("whsec_")
        assert [e["id"] for e in alpha.webhook_endpoints()] == [endpoint["id"]]

        [dispute] = operator.open_dispute(consumer, incident_id=created["id"], statement="物品确有破损")
        assert alpha.disputes("open")[0]["id"] == dispute["id"]
        [request] = wait_for(lambda: receiver.at("/alpha"))
        event = verify_webhook(endpoint["secret"], request.body, request.headers)
        assert event["type"] == "dispute.opened"
        assert event["data"]["respond_by"]
        upheld = alpha.respond_to_dispute(dispute["id"], "upheld", "merchant_evidence")
        assert upheld["status"] == "upheld"

        log = alpha.webhook_deliveries(endpoint["id"])
        delivery_id = log["deliveries"][0]["id"]
        assert alpha.redeliver_webhook(delivery_id)["status"] == "pending"
        wait_for(lambda: len(receiver.at("/alpha")) == 2)
        assert alpha.enable_webhook_endpoint(endpoint["id"])["status"] == "active"
        alpha.delete_webhook_endpoint(endpoint["id"])
        assert alpha.webhook_endpoints() == []
    finally:
        receiver.stop()

    report = operator.subject_report(consumer)
    assert {i["id"] for i in report["incidents"]} >= {created["id"]}
    assert report["free_reports"]["used"] == 1
    assert "个人信用记录报告" in operator.subject_report_html(consumer)
    assert alpha.retract(created["id"], "reported_in_error")["status"] == "retracted"
    integrate(rt)
    later = alpha.log_checkpoint()
    assert later["tree_size"] > first["tree_size"]
    assert alpha.log_checkpoint(first["tree_size"])["root_hash"] == first["root_hash"]
    consistency = alpha.consistency_proof(first["tree_size"], later["tree_size"])
    alpha.verify_consistency(consistency, first["root_hash"], later["root_hash"])


class FlakyProxy:
    """In front of the served API: the first `failures` requests get 503 problem+json with Retry-After,
    the rest are forwarded."""

    def __init__(self, upstream: str, failures: int, retry_after: str = "1") -> None:
        self.seen = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                proxy.seen += 1
                if proxy.seen <= failures:
                    payload = b'{"type":"https://ledger.example/problems/unavailable","title":"Service unavailable","status":503,"detail":"injected"}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/problem+json")
                    self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                forwarded = urllib.request.Request(  # noqa: S310 (the test's own served API)
                    upstream + self.path,
                    data=body or None,
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                    method=self.command,
                )
                try:
                    with urllib.request.urlopen(forwarded, timeout=10) as answer:  # noqa: S310
                        status, headers, payload = answer.status, answer.headers, answer.read()
                except urllib.error.HTTPError as exc:
                    status, headers, payload = exc.code, exc.headers, exc.read()
                self.send_response(status)
                self.send_header("Content-Type", headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_injected_503_is_retried_after_retry_after_on_safe_calls_only(
    served: ServedApp, keys: dict[str, str]
) -> None:
    waits: list[float] = []
    proxy = FlakyProxy(served.base, failures=2, retry_after="1")
    try:
        client = Client(
            proxy.base, keys["alpha"], sleep=lambda s: (waits.append(s), __import__("time").sleep(s))
        )
        created = client.report(_incident("retried-1"))  # safe: external_id makes it a replay
        assert created["status"] == "active"
        assert waits == [1.0, 1.0]  # Retry-After honoured, not the client's own backoff
        assert proxy.seen == 3

        proxy.seen, waits[:] = 0, []
        with pytest.raises(ProblemError) as unavailable:  # a lookup is recorded: not repeated on a 503
            client.lookup(
                {"identifiers": [token_identifier("phone", PHONE, IDENTITY_KEY)], "purpose": "refund_review"}
            )
        assert unavailable.value.status == 503
        assert unavailable.value.retry_after == 1.0
        assert unavailable.value.detail == "injected"
        assert (proxy.seen, waits) == (1, [])
    finally:
        proxy.stop()


def test_connection_errors_are_retried_with_backoff_on_safe_calls_only(keys: dict[str, str]) -> None:
    waits: list[float] = []
    closed = f"http://127.0.0.1:{free_port()}"
    client = Client(closed, keys["alpha"], max_retries=3, backoff=0.01, sleep=waits.append)
    with pytest.raises(TransportError):
        client.get_incident("00000000-0000-0000-0000-000000000000")
    assert len(waits) == 3
    assert waits[0] <= waits[1] * 2
    assert all(w <= 0.08 for w in waits)
    waits.clear()
    with pytest.raises(TransportError):
        client.open_dispute([{"type": "phone", "value": PHONE}], all_entries=True)
    assert waits == []
