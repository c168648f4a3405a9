"""The claim check on a lookup's photos: AI labels and capture time, through the real multipart route.

A first forged photo carries no history, so these tests use a buyer the ledger has never seen: whatever
raises the tier is the photo itself. Files come from tests/photos.py (exact carrier bytes).
"""

from __future__ import annotations

import io
import json
from typing import Any

import psycopg
import pytest

from ledger.config import Settings
from tests import photos
from tests.support import Member

UNKNOWN_BUYER = {"type": "phone", "value": "13700137001"}
LISTING = photos.render(11)
JPEG = photos.encode(LISTING, "JPEG")
PNG = photos.encode(LISTING, "PNG")
WEBP = photos.encode(LISTING, "WEBP", quality=85)
AI = photos.gb_label("1", "某AI绘图服务")
DELIVERED = "2026-11-20T18:00:00+08:00"


def post(client: Any, member: Member, request: Any, *images: bytes) -> Any:
    parts: dict[str, Any] = {"images": [(io.BytesIO(i), f"claim-{n}.jpg") for n, i in enumerate(images)]}
    parts["request"] = request if isinstance(request, str) else json.dumps(request)
    return client.post(
        "/v1/lookups/evidence", data=parts, headers=member.headers, content_type="multipart/form-data"
    )


def check(client: Any, member: Member, *images: bytes, **request: Any) -> dict[str, Any]:
    body = {"identifiers": [UNKNOWN_BUYER], "purpose": "refund_review", **request}
    response = post(client, member, body, *images)
    assert response.status_code == 200, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def codes(result: dict[str, Any]) -> list[str]:
    return [r["code"] for r in result["decision"]["reasons"]]


def rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url or "") as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


LABELLED = {
    "jpeg-xmp": photos.jpeg_xmp(JPEG, photos.xmp(aigc=AI)),
    "png-itxt-xmp": photos.png_xmp(PNG, photos.xmp(aigc=AI)),
    "webp-xmp": photos.webp_with(WEBP, xmp_packet=photos.xmp(aigc=AI)),
    "png-text": photos.png_with(PNG, photos.png_chunk(b"tEXt", b"AIGC\x00" + AI.encode())),
    "jpeg-exif": photos.jpeg_exif(JPEG, photos.exif(comment=photos.user_comment(AI, "UNICODE"))),
    "jpeg-iptc": photos.jpeg_xmp(JPEG, photos.xmp(source_type=photos.COMPOSITE)),
}


@pytest.mark.parametrize("carrier", sorted(LABELLED))
def test_an_ai_labelled_photo_raises_the_tier_for_an_unknown_buyer(
    client: Any, beta: Member, settings: Settings, carrier: str
) -> None:
    result = check(client, beta, LABELLED[carrier])
    assert codes(result) == ["EVIDENCE_AI_LABELLED"]
    assert result["decision"]["tier"] == "review"
    assert result["summary"]["incidents"] == 0
    [entry] = result["evidence_matches"]
    assert entry["matched"] is False
    [label] = entry["findings"]["labels"]
    assert label["label"] in ("ai_generated", "ai_edited")
    assert label["malformed"] is None
    notice = result["adverse_action"]
    assert "photos sent with your refund request" in notice["text_en"]
    assert "售后凭证图片" in notice["text_zh"]
    # The audit record keeps the findings with the answer, and the reason; never the image.
    [(response, reasons)] = rows(settings, "SELECT response, reasons FROM lookups")
    assert response["evidence_matches"][0]["findings"] == entry["findings"]
    assert list(reasons) == ["EVIDENCE_AI_LABELLED"]


def test_c2pa_ai_manifest_is_a_reason_with_its_signature_state(client: Any, beta: Member) -> None:
    pytest.importorskip("c2pa")
    signed = photos.c2pa_signed(JPEG, "image/jpeg", photos.TRAINED, photos.c2pa_signer(), "Image Creator")
    result = check(client, beta, signed)
    assert codes(result) == ["EVIDENCE_AI_LABELLED"]
    assert result["evidence_matches"][0]["findings"]["labels"] == [
        {
            "source": "c2pa",
            "label": "ai_generated",
            "producer": "Image Creator",
            "signature_valid": True,
            "malformed": None,
        }
    ]


@pytest.mark.parametrize(("value", "label"), [("2", "possibly"), ("3", "suspected")])
def test_possibly_and_suspected_labels_are_reported_not_reasons(
    client: Any, beta: Member, value: str, label: str
) -> None:
    result = check(client, beta, photos.jpeg_xmp(JPEG, photos.xmp(aigc=photos.gb_label(value))))
    assert codes(result) == []
    assert result["decision"]["tier"] == "clear"
    assert [f["label"] for f in result["evidence_matches"][0]["findings"]["labels"]] == [label]


@pytest.mark.parametrize(
    "image",
    [
        photos.jpeg_xmp(JPEG, photos.xmp(aigc='{"AIGC":{"Label":"7"}}')),
        photos.png_with(PNG, photos.png_chunk(b"zTXt", b"AIGC\x00\x00not zlib at all")),
        photos.jpeg_xmp(JPEG, b"<x:xmpmeta><TC260:AIGC>{broken</x:xmpmeta>"),
        photos.jpeg_exif(JPEG, b"II*\x00\xff\xff\xff\x7f"),
    ],
    ids=["bad-label-value", "bad-zlib", "bad-xml", "bad-exif"],
)
def test_malformed_metadata_is_a_clean_finding_never_a_500(client: Any, beta: Member, image: bytes) -> None:
    result = check(client, beta, image)
    findings = result["evidence_matches"][0]["findings"]
    malformed = [f["malformed"] for f in findings["labels"] if f["malformed"]] + findings["malformed"]
    assert malformed, findings
    assert "EVIDENCE_AI_LABELLED" not in codes(result)


def test_unlabelled_and_stripped_photos_report_nothing(client: Any, beta: Member) -> None:
    result = check(client, beta, JPEG, PNG)
    for entry in result["evidence_matches"]:
        assert entry["findings"] == {
            "labels": [],
            "capture_time": None,
            "software": None,
            "malformed": [],
            "predates_delivery": False,
        }
    assert result["decision"]["tier"] == "clear"
    assert result["adverse_action"] is None


def photo_taken(taken: str, offset: str | None = "+08:00", software: str | None = None) -> bytes:
    return photos.jpeg_exif(JPEG, photos.exif(taken=taken, offset=offset, software=software))


def test_a_photo_taken_before_delivery_is_a_reason(client: Any, beta: Member) -> None:
    before = photo_taken("2026:11:20 17:59:00", software="Adobe Photoshop 26.0")
    result = check(client, beta, before, refund={"reference": "r-1", "delivered_at": DELIVERED})
    assert codes(result) == ["EVIDENCE_PREDATES_DELIVERY"]
    assert result["decision"]["tier"] == "review"
    findings = result["evidence_matches"][0]["findings"]
    assert findings["capture_time"] == "2026-11-20T17:59:00+08:00"
    assert findings["predates_delivery"] is True
    assert findings["software"] == "Adobe Photoshop 26.0"  # reported, and not a reason on its own


def test_a_photo_taken_after_delivery_or_without_a_delivery_time_is_fine(client: Any, beta: Member) -> None:
    after = photo_taken("2026:11:20 18:01:00", software="MTXX 美图秀秀")
    assert codes(check(client, beta, after, refund={"delivered_at": DELIVERED})) == []
    before = photo_taken("2026:11:19 08:00:00")
    assert codes(check(client, beta, before)) == []  # no delivered_at: nothing to compare with


def test_without_an_offset_the_capture_time_is_read_in_the_buyers_favour(client: Any, beta: Member) -> None:
    # 17:59 local could be as late as 05:59 the next day UTC (at UTC-12): not certainly before delivery.
    result = check(
        client, beta, photo_taken("2026:11:20 17:59:00", offset=None), refund={"delivered_at": DELIVERED}
    )
    assert codes(result) == []
    result = check(
        client, beta, photo_taken("2026:11:19 09:00:00", offset=None), refund={"delivered_at": DELIVERED}
    )
    assert codes(result) == ["EVIDENCE_PREDATES_DELIVERY"]


def test_every_finding_is_one_reason_whatever_the_number_of_photos(client: Any, beta: Member) -> None:
    early = photo_taken("2026:11:01 10:00:00")
    result = check(
        client, beta, LABELLED["jpeg-xmp"], LABELLED["png-text"], early, refund={"delivered_at": DELIVERED}
    )
    assert codes(result) == ["EVIDENCE_AI_LABELLED", "EVIDENCE_PREDATES_DELIVERY"]


def test_a_bad_delivery_time_is_refused_and_writes_nothing(
    client: Any, beta: Member, settings: Settings
) -> None:
    body = {
        "identifiers": [UNKNOWN_BUYER],
        "purpose": "refund_review",
        "refund": {"delivered_at": "yesterday"},
    }
    response = post(client, beta, body, LABELLED["jpeg-xmp"])
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert "request.refund.delivered_at" in response.get_json()["errors"]
    naive = {**body, "refund": {"delivered_at": "2026-11-20T18:00:00"}}
    assert post(client, beta, naive, LABELLED["jpeg-xmp"]).status_code == 422
    assert rows(settings, "SELECT count(*) FROM lookups") == [(0,)]


def test_the_json_lookup_takes_a_delivery_time_too(client: Any, beta: Member) -> None:
    body = {"identifiers": [UNKNOWN_BUYER], "purpose": "refund_review", "refund": {"delivered_at": DELIVERED}}
    response = client.post("/v1/lookups", json=body, headers=beta.headers)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["evidence_matches"] == []
