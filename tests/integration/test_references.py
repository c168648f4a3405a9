"""Reference photos: registration, the derivation check in lookups, isolation between platforms, and attacks.

The pictures are rendered by tests/photos.py: a listing photo, forgeries painted onto it (the fraud), and
genuine photos of the same kind of object shot differently (a new background, a 10% crop, a rotation).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from PIL import Image

from ledger.config import Settings
from ledger.domain.pdq_hash import pdq_hash
from ledger.services import references, retention
from ledger.services.runtime import Runtime
from tests import photos
from tests.support import Member

UNKNOWN_BUYER = {"type": "phone", "value": "13700137002"}
LISTING = photos.render(21)
LISTING_JPEG = photos.encode(LISTING, quality=92)
LISTING_HASH = pdq_hash(LISTING_JPEG)[0]
FORGED = photos.encode(photos.forgery(LISTING, seed=3), quality=70)
GENUINE = {
    "new background": photos.encode(photos.render(21, background=99)),
    "crop 10%": photos.encode(LISTING.crop((80, 60, 800, 600)).resize((800, 600))),
    "rotated": photos.encode(LISTING.rotate(15, expand=False, fillcolor=(128, 128, 128))),
    "another object": photos.encode(photos.render(22)),
}


def register(client: Any, member: Member, *items: dict[str, Any], path: str = "") -> Any:
    return client.post(f"/v1/references{path}", json={"references": list(items)}, headers=member.headers)


def listing(reference: str = "sku-1", *hashes: str, kind: str = "listing") -> dict[str, Any]:
    return {"kind": kind, "reference": reference, "pdq": list(hashes or (LISTING_HASH,))}


def check(client: Any, member: Member, rt: Runtime, *images: bytes) -> dict[str, Any]:
    rt.reference_matcher.current(max_age=0)  # what any API process sees within a second
    parts = {
        "request": json.dumps({"identifiers": [UNKNOWN_BUYER], "purpose": "refund_review"}),
        "images": [(io.BytesIO(i), f"claim-{n}.jpg") for n, i in enumerate(images)],
    }
    response = client.post(
        "/v1/lookups/evidence", data=parts, headers=member.headers, content_type="multipart/form-data"
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def codes(result: dict[str, Any]) -> list[str]:
    return [r["code"] for r in result["decision"]["reasons"]]


def platform_id(settings: Settings, member: Member) -> int:
    return int(scalar(settings, f"SELECT id FROM platforms WHERE slug = '{member.slug}'"))  # test-made slugs


def scalar(settings: Settings, sql: str) -> Any:
    with psycopg.connect(settings.database_url or "") as conn:
        row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None


def test_a_forgery_of_another_platforms_listing_is_caught_first_time(
    client: Any, alpha: Member, beta: Member, rt: Runtime
) -> None:
    response = register(client, alpha, listing("sku-a-77"))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["results"] == [
        {"kind": "listing", "reference": "sku-a-77", "added": 1, "removed": 0, "held": 1, "expires_at": None}
    ]
    result = check(client, beta, rt, FORGED, GENUINE["another object"])
    first, second = result["evidence_matches"]
    assert first["derived_from_reference"]["kind"] == "listing"
    assert 0 < first["derived_from_reference"]["distance"] <= 31
    assert second["derived_from_reference"] is None
    assert codes(result) == ["EVIDENCE_DERIVED_FROM_LISTING"]
    assert result["decision"]["tier"] == "review"
    assert result["summary"]["incidents"] == 0
    # Never the platform, never the reference.
    text = json.dumps(result)
    for secret in ("sku-a-77", alpha.slug, "platform_id", 'reference": "sku'):
        assert secret not in text


def test_the_listing_itself_is_distance_zero(client: Any, alpha: Member, beta: Member, rt: Runtime) -> None:
    register(client, alpha, listing())
    [entry] = check(client, beta, rt, LISTING_JPEG)["evidence_matches"]
    assert entry["derived_from_reference"] == {"kind": "listing", "distance": 0}


@pytest.mark.parametrize("shot", sorted(GENUINE))
def test_genuine_photos_are_not_derived(
    client: Any, alpha: Member, beta: Member, rt: Runtime, shot: str
) -> None:
    register(client, alpha, listing())
    result = check(client, beta, rt, GENUINE[shot])
    assert result["evidence_matches"][0]["derived_from_reference"] is None
    assert codes(result) == []


def test_shipping_photos_count_only_for_their_own_platform(
    client: Any, alpha: Member, beta: Member, rt: Runtime
) -> None:
    response = register(client, alpha, listing("order-9", kind="shipping"))
    expires = datetime.fromisoformat(response.get_json()["results"][0]["expires_at"])
    assert timedelta(days=179) < expires - datetime.now(UTC) <= timedelta(days=180)
    assert codes(check(client, beta, rt, FORGED)) == []
    own = check(client, alpha, rt, FORGED)
    assert codes(own) == ["EVIDENCE_DERIVED_FROM_SHIPPING"]
    assert own["evidence_matches"][0]["derived_from_reference"]["kind"] == "shipping"


def test_shipping_references_expire(client: Any, alpha: Member, rt: Runtime, settings: Settings) -> None:
    register(client, alpha, listing("order-9", kind="shipping"), listing("sku-1"))
    assert references.expire(rt, datetime.now(UTC) + timedelta(days=179)) == 0
    # The daily retention job lapses them.
    assert retention.run(rt, datetime.now(UTC) + timedelta(days=181))["shipping_references_expired"] == 1
    assert scalar(settings, "SELECT count(*) FROM reference_photos") == 1  # the listing stays
    assert scalar(settings, "SELECT count(*) FROM ledger_events WHERE kind = 'reference_expired'") == 1
    [entry] = check(client, alpha, rt, FORGED)["evidence_matches"]
    assert entry["derived_from_reference"]["kind"] == "listing"


def test_remove_and_replace_change_only_your_own_references(
    client: Any, alpha: Member, beta: Member, rt: Runtime, settings: Settings
) -> None:
    register(client, alpha, listing("sku-1"))
    # The attack: another platform names alpha's reference.
    removed = register(client, beta, {"kind": "listing", "reference": "sku-1"}, path="/remove")
    assert removed.status_code == 200
    assert removed.get_json()["results"] == [{"kind": "listing", "reference": "sku-1", "removed": 0}]
    other = "0" * 64
    replaced = register(client, beta, listing("sku-1", other), path="/replace")
    assert replaced.status_code == 200
    assert (
        scalar(
            settings,
            f"SELECT count(*) FROM reference_photos WHERE platform_id = {platform_id(settings, alpha)}",
        )
        == 1
    )
    assert codes(check(client, beta, rt, FORGED)) == ["EVIDENCE_DERIVED_FROM_LISTING"]
    # The owner replaces and then removes its own.
    assert (
        register(client, alpha, listing("sku-1", other), path="/replace").get_json()["results"][0]["held"]
        == 1
    )
    assert codes(check(client, beta, rt, FORGED)) == []
    register(client, alpha, listing("sku-1", LISTING_HASH))
    assert codes(check(client, beta, rt, FORGED)) == ["EVIDENCE_DERIVED_FROM_LISTING"]
    gone = register(client, alpha, {"kind": "listing", "reference": "sku-1"}, path="/remove")
    assert gone.get_json()["results"][0]["removed"] == 2
    assert codes(check(client, beta, rt, FORGED)) == []


def test_every_change_is_a_ledger_event_without_the_reference_or_hashes(
    client: Any, alpha: Member, settings: Settings
) -> None:
    register(client, alpha, listing("sku-secret-1"))
    register(client, alpha, listing("sku-secret-1"))  # nothing new: no event
    register(client, alpha, listing("sku-secret-1", "1" * 64), path="/replace")
    register(client, alpha, {"kind": "listing", "reference": "sku-secret-1"}, path="/remove")
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute(
            "SELECT kind, platform_id, payload::text FROM ledger_events WHERE kind LIKE 'reference%' ORDER BY id"
        ).fetchall()
    alpha_id = platform_id(settings, alpha)
    assert [(k, p) for k, p, _ in rows] == [
        ("reference_added", alpha_id),
        ("reference_replaced", alpha_id),
        ("reference_removed", alpha_id),
    ]
    for _, _, payload in rows:
        assert "sku-secret-1" not in payload
        assert LISTING_HASH not in payload


def test_a_batch_of_a_thousand_references(client: Any, alpha: Member, settings: Settings) -> None:
    items = [listing(f"sku-{n}", f"{n:064x}") for n in range(1000)]
    response = register(client, alpha, *items)
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["results"]) == 1000
    assert scalar(settings, "SELECT count(*) FROM reference_photos") == 1000
    assert scalar(settings, "SELECT count(*) FROM ledger_events WHERE kind = 'reference_added'") == 1000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"references": [listing("sku-1", "zz" * 32)]}, "references.0.pdq.0"),
        ({"references": [{**listing(), "kind": "warehouse"}]}, "references.0.kind"),
        ({"references": [listing("")]}, "references.0.reference"),
        ({"references": [listing("sku-1", *[f"{n:064x}" for n in range(51)])]}, "references.0.pdq"),
        ({"references": [listing(f"s{n}") for n in range(1001)]}, "references"),
        ({"references": [listing("sku-1"), listing("sku-2", "nothex")]}, "references.1.pdq.0"),
        ({"references": [], "platform": "beta"}, "references"),
    ],
)
def test_bad_registrations_are_refused_and_store_nothing(
    client: Any, alpha: Member, settings: Settings, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/references", json=body, headers=alpha.headers)
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert scalar(settings, "SELECT count(*) FROM reference_photos") == 0
    assert scalar(settings, "SELECT count(*) FROM ledger_events") == 0


def test_too_many_hashes_for_one_reference_across_calls_is_refused_whole(
    client: Any, alpha: Member, settings: Settings
) -> None:
    assert register(client, alpha, listing("sku-1", *[f"{n:064x}" for n in range(50)])).status_code == 200
    response = register(client, alpha, listing("sku-2"), listing("sku-1", "f" * 64))
    assert response.status_code == 422
    assert scalar(settings, "SELECT count(*) FROM reference_photos") == 50  # sku-2 was not kept either


def test_registration_needs_the_report_scope(client: Any, make_platform: Any) -> None:
    reader = make_platform("reader-only", "lookup")
    assert register(client, reader, listing()).status_code == 403
    assert client.post("/v1/references", json={"references": [listing()]}).status_code == 401


def post_images(client: Any, member: Member, request: Any, *images: bytes) -> Any:
    parts: dict[str, Any] = {"images": [(io.BytesIO(i), f"listing-{n}.jpg") for n, i in enumerate(images)]}
    if request is not None:
        parts["request"] = json.dumps(request)
    return client.post(
        "/v1/references/images", data=parts, headers=member.headers, content_type="multipart/form-data"
    )


def test_reference_photos_as_images(
    client: Any, alpha: Member, beta: Member, rt: Runtime, settings: Settings
) -> None:
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo tagged "rotate 90°"
    LISTING.save(rotated, "JPEG", exif=exif.tobytes())
    response = post_images(
        client, alpha, {"kind": "listing", "reference": "sku-img"}, LISTING_JPEG, rotated.getvalue()
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["hashes"][0]["hash"] == LISTING_HASH
    assert body["hashes"][1]["displayed_hash"] is not None
    # The rotated file stores the same pixels: its view as stored is the listing's hash; as displayed, new.
    assert body["held"] == 2
    assert codes(check(client, beta, rt, FORGED)) == ["EVIDENCE_DERIVED_FROM_LISTING"]
    assert scalar(settings, "SELECT max(length(pdq)) FROM reference_photos") == 32


@pytest.mark.parametrize(
    ("request_part", "images", "field"),
    [
        (None, [LISTING_JPEG], "request"),
        ({"kind": "listing"}, [LISTING_JPEG], "request.reference"),
        ({"kind": "listing", "reference": "x"}, [b"not an image"], "images.0"),
        ({"kind": "listing", "reference": "x"}, [], "images"),
    ],
)
def test_bad_image_registrations_keep_the_uploads_4xx_and_store_nothing(
    client: Any, alpha: Member, settings: Settings, request_part: Any, images: list[bytes], field: str
) -> None:
    response = post_images(client, alpha, request_part, *images)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]
    assert scalar(settings, "SELECT count(*) FROM reference_photos") == 0
    assert client.post("/v1/references/images", json={}, headers=alpha.headers).status_code == 415
