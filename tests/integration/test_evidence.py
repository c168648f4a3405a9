"""Evidence image matching end to end: the same forged "damage" photo, reused across claims and platforms,
is caught, and nothing about the photo but its 32-byte PDQ hash is ever kept.

The photos are real images drawn here with Pillow: a vase on a table, and a copy with a crack drawn onto
it standing in for the AI-edited forgery. The forgery is then re-encoded, resized and slightly cropped the
way a fraudster reusing it would. Everything runs on the real PostgreSQL and Redis of the test session;
the test that mixes evidence with a known consumer's score uses the real Celery worker.
"""

from __future__ import annotations

import io
import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
import redis
import werkzeug.formparser
from PIL import Image, ImageDraw, ImageOps

from ledger import create_app
from ledger.config import Settings
from ledger.domain.pdq_hash import hash_image, pdq_hash
from ledger.domain.pdq_index import EvidenceIndex, hamming
from ledger.services import retention
from ledger.services.evidence import Matcher
from ledger.services.runtime import Runtime
from tests import support
from tests.support import ROOT, Member, report, run_ledger, wait_for

PROBLEM = "application/problem+json"
UNKNOWN_BUYER = {"type": "phone", "value": "13700137000"}  # never reported: a fresh account
PHONE = {"type": "phone", "value": "13800138000"}
MATCH_KEYS = {
    "derived_from_reference",
    "findings",
    "hash",
    "displayed_hash",
    "quality",
    "low_quality",
    "matched",
    "best_distance",
    "category",
    "platforms",
}


# -- the photos ---------------------------------------------------------------------------------------------


def vase_photo(size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A shaded vase and an apple on a table against a lit wall, with a little sensor noise."""
    width, height = size
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    wall = 200 - 60 * (xx / width) - 40 * (yy / height)
    img = np.stack([wall, wall * 0.95, wall * 0.85], axis=-1)
    table = yy > height * 0.68
    img[table] = np.stack([110 + 20 * (xx / width), 75 + 10 * (xx / width), 45 + 0 * xx], axis=-1)[table]
    cx, cy, rx, ry = width * 0.5, height * 0.5, width * 0.16, height * 0.28
    shade = np.clip(1.1 - 0.6 * ((xx - cx + rx * 0.4) / rx) ** 2, 0.3, 1.2)
    glaze = np.stack([40 * shade, 90 * shade, 170 * shade], axis=-1)
    body = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
    neck = (np.abs(xx - cx) < rx * 0.35) & (yy > cy - ry * 1.45) & (yy < cy - ry * 0.8)
    img[body | neck] = glaze[body | neck]
    shadow = ((xx - cx - rx * 0.6) / (rx * 1.4)) ** 2 + ((yy - height * 0.8) / (height * 0.05)) ** 2 < 1
    img[shadow & table] *= 0.6
    apple = (xx - width * 0.22) ** 2 + (yy - height * 0.62) ** 2 < (width * 0.06) ** 2
    img[apple] = np.array([190, 40, 35])
    img += rng.normal(0, 3, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def with_crack(photo: Image.Image) -> Image.Image:
    """The forgery: the same photo with a dark crack drawn down the vase."""
    forged = photo.copy()
    draw = ImageDraw.Draw(forged)
    cx, cy = forged.width * 0.5, forged.height * 0.5
    path = [
        (cx - 10, cy - 120),
        (cx + 8, cy - 60),
        (cx - 12, cy - 10),
        (cx + 15, cy + 50),
        (cx - 5, cy + 110),
    ]
    draw.line(path, fill=(20, 18, 15), width=6)
    draw.line([(cx + 8, cy - 60), (cx + 60, cy - 40)], fill=(20, 18, 15), width=4)
    draw.line([(cx - 12, cy - 10), (cx - 55, cy + 15)], fill=(20, 18, 15), width=4)
    return forged


def unrelated_photo() -> Image.Image:
    """Another claim's honest photo: a cardboard box on a dark floor."""
    img = Image.new("RGB", (800, 600), (40, 42, 48))
    draw = ImageDraw.Draw(img)
    draw.polygon([(150, 420), (520, 470), (700, 330), (330, 290)], fill=(190, 150, 100))
    draw.polygon([(150, 420), (150, 200), (330, 80), (330, 290)], fill=(160, 120, 80))
    draw.polygon([(330, 290), (330, 80), (700, 120), (700, 330)], fill=(205, 165, 115))
    draw.rectangle([420, 150, 600, 190], fill=(240, 240, 235))
    return img


def encode(photo: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    out = io.BytesIO()
    photo.save(out, fmt, **options)
    return out.getvalue()


def crop_margin(photo: Image.Image, pixels: int) -> Image.Image:
    return photo.crop((pixels, pixels, photo.width - pixels, photo.height - pixels))


FORGED = with_crack(vase_photo())
FORGED_PNG = encode(FORGED)
FORGED_HASH, FORGED_QUALITY = pdq_hash(FORGED_PNG)
REUSED = {  # how a fraudster passes the same forgery off again
    "jpeg": encode(FORGED, "JPEG", quality=60),
    "half_size": encode(FORGED.resize((400, 300)), "JPEG", quality=85),
    "crop_1_percent": encode(crop_margin(FORGED, 8), "PNG"),
}
UNRELATED_PNG = encode(unrelated_photo())
FLAT_PNG = encode(Image.new("RGB", (400, 300), (128, 128, 128)))  # nothing to hash: quality 0


def distance(a_hex: str, b_hex: str) -> int:
    return hamming(bytes.fromhex(a_hex), bytes.fromhex(b_hex))


# -- helpers ------------------------------------------------------------------------------------------------


def upload(client: Any, member: Member, incident_id: str, *images: bytes, name: str = "images") -> Any:
    files = [(io.BytesIO(image), f"photo-{n}.bin") for n, image in enumerate(images)]
    return client.post(
        f"/v1/incidents/{incident_id}/evidence",
        data={name: files},
        headers=member.headers,
        content_type="multipart/form-data",
    )


def lookup(
    client: Any, member: Member, *pdq: str, identifiers: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """A lookup (tests.support.lookup) for an unknown buyer unless told, carrying these PDQ hashes."""
    evidence = {"evidence": {"pdq": list(pdq)}} if pdq else {}
    return support.lookup(client, member, *(identifiers or [UNKNOWN_BUYER]), **evidence)


def post_image_lookup(client: Any, member: Member, request: Any, *images: bytes) -> Any:
    parts: dict[str, Any] = {
        "images": [(io.BytesIO(image), f"claim-{n}.jpg") for n, image in enumerate(images)]
    }
    if request is not None:
        parts["request"] = request if isinstance(request, str) else json.dumps(request)
    return client.post(
        "/v1/lookups/evidence", data=parts, headers=member.headers, content_type="multipart/form-data"
    )


def image_lookup(client: Any, member: Member, *images: bytes, **request: Any) -> dict[str, Any]:
    body = {"identifiers": [UNKNOWN_BUYER], "purpose": "refund_review", **request}
    response = post_image_lookup(client, member, body, *images)
    assert response.status_code == 200, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def reasons(result: dict[str, Any]) -> list[str]:
    return [r["code"] for r in result["decision"]["reasons"]]


def stored_evidence(settings: Settings) -> list[tuple[bytes, int]]:
    with psycopg.connect(settings.database_url or "") as conn:
        return [
            (bytes(r[0]), r[1]) for r in conn.execute("SELECT pdq, quality FROM incident_evidence").fetchall()
        ]


def count(settings: Settings, table: str) -> int:
    with psycopg.connect(settings.database_url or "") as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # test-owned table names only
        return int(row[0]) if row else 0


@pytest.fixture
def gamma(make_platform: Any) -> Member:
    return make_platform("gamma", "report,lookup")  # type: ignore[no-any-return]


@pytest.fixture
def second_process(settings: Settings, app: Any) -> Iterator[Any]:
    """Another API process's view: its own Runtime, hence its own in-memory evidence index."""
    other = create_app(settings)
    other.config["TESTING"] = True
    yield other.test_client()
    other.extensions["ledger.runtime"].close()


# -- hashing ------------------------------------------------------------------------------------------------


def test_reused_forgery_hashes_within_31_bits_and_an_unrelated_photo_does_not() -> None:
    assert len(FORGED_HASH) == 64
    assert FORGED_QUALITY >= 50
    for how, image in REUSED.items():
        reused_hash, _ = pdq_hash(image)
        assert distance(FORGED_HASH, reused_hash) <= 31, how
    assert distance(FORGED_HASH, pdq_hash(UNRELATED_PNG)[0]) > 64
    flat_hash, flat_quality = pdq_hash(FLAT_PNG)
    assert flat_quality < 50
    assert len(flat_hash) == 64


def test_large_photos_are_reduced_before_hashing_to_nearly_the_same_hash() -> None:
    big = FORGED.resize((3200, 2400), Image.Resampling.LANCZOS)
    hashed = hash_image(encode(big, "JPEG", quality=90))
    assert (hashed.width, hashed.height) == (3200, 2400)
    assert distance(hashed.hex, FORGED_HASH) <= 16


# -- reporting evidence -------------------------------------------------------------------------------------


def test_upload_stores_only_the_hash_and_quality(client: Any, alpha: Member, settings: Settings) -> None:
    incident = report(client, alpha, "order-1")
    response = upload(client, alpha, incident["id"], FORGED_PNG, FLAT_PNG)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["stored"] == 2
    assert [(e["hash"], e["low_quality"], e["added"]) for e in body["evidence"]] == [
        (FORGED_HASH, False, True),
        (pdq_hash(FLAT_PNG)[0], True, True),
    ]
    assert sorted(stored_evidence(settings)) == sorted(
        [(bytes.fromhex(FORGED_HASH), FORGED_QUALITY), (bytes.fromhex(pdq_hash(FLAT_PNG)[0]), 0)]
    )
    again = upload(client, alpha, incident["id"], FORGED_PNG)  # a retry stores nothing new
    assert again.status_code == 200
    assert again.get_json()["evidence"][0]["added"] is False
    assert len(stored_evidence(settings)) == 2
    shown = client.get(f"/v1/incidents/{incident['id']}", headers=alpha.headers).get_json()
    assert FORGED_HASH in shown["evidence"]["pdq"]
    with psycopg.connect(settings.database_url or "") as conn:
        kinds = [r[0] for r in conn.execute("SELECT kind FROM ledger_events ORDER BY id").fetchall()]
    assert kinds == ["reported", "evidence_added"]  # hash-chained like the report itself


def test_only_the_reporting_platform_can_add_evidence(
    client: Any, alpha: Member, beta: Member, settings: Settings
) -> None:
    incident = report(client, alpha, "order-1")
    for who, incident_id in ((beta, incident["id"]), (alpha, "00000000-0000-4000-8000-000000000000")):
        response = upload(client, who, incident_id, FORGED_PNG)
        assert response.status_code == 404
        assert response.mimetype == PROBLEM
    assert stored_evidence(settings) == []


def test_evidence_cannot_be_added_to_a_retracted_incident(
    client: Any, alpha: Member, settings: Settings
) -> None:
    incident = report(client, alpha, "order-1")
    client.post(
        f"/v1/incidents/{incident['id']}/retract", json={"reason": "reported_in_error"}, headers=alpha.headers
    )
    response = upload(client, alpha, incident["id"], FORGED_PNG)
    assert response.status_code == 409
    assert stored_evidence(settings) == []


def noise_png(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG", compress_level=0)


BAD_UPLOADS = {
    "not_an_image": ([b"%PDF-1.7 this is a document, not a photo" * 20], "images.0", "not an image"),
    "truncated_jpeg": ([REUSED["jpeg"][: len(REUSED["jpeg"]) // 2]], "images.0", "truncated"),
    "truncated_png": ([FORGED_PNG[: len(FORGED_PNG) // 3]], "images.0", "truncated"),
    "too_small": ([FORGED_PNG, encode(FORGED.resize((48, 36)))], "images.1", "too small"),
    "too_large": ([noise_png(2000, 1800)], "images.0", "larger than 10 MB"),
    "empty": ([b""], "images.0", "empty"),
    "six_images": ([REUSED["jpeg"]] * 6, "images", "at most 5"),
    "no_image": ([], "images", "1 to 5"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_uploads_are_refused_naming_the_part_and_store_nothing(
    case: str, client: Any, alpha: Member, settings: Settings
) -> None:
    images, field, reason = BAD_UPLOADS[case]
    if case == "too_large":
        assert len(images[0]) > 10 * 1024 * 1024
    incident = report(client, alpha, "order-1")
    events_before = count(settings, "ledger_events")
    response = upload(client, alpha, incident["id"], *images)
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == PROBLEM
    problem = response.get_json()
    assert reason in " ".join(problem["errors"][field])
    assert stored_evidence(settings) == []
    assert count(settings, "ledger_events") == events_before


def test_upload_needs_multipart_and_known_parts(client: Any, alpha: Member, settings: Settings) -> None:
    incident = report(client, alpha, "order-1")
    as_json = client.post(
        f"/v1/incidents/{incident['id']}/evidence", json={"pdq": [FORGED_HASH]}, headers=alpha.headers
    )
    assert as_json.status_code == 415
    assert as_json.mimetype == PROBLEM
    wrong_part = upload(client, alpha, incident["id"], FORGED_PNG, name="photo")
    assert wrong_part.status_code == 422
    assert set(wrong_part.get_json()["errors"]) == {"photo"}
    unauthenticated = client.post(
        f"/v1/incidents/{incident['id']}/evidence",
        data={"images": [(io.BytesIO(FORGED_PNG), "a.png")]},
        content_type="multipart/form-data",
    )
    assert unauthenticated.status_code == 401
    assert stored_evidence(settings) == []


def test_uploads_are_never_spooled_to_disk(
    client: Any, alpha: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Werkzeug's own form parser writes file parts over 500 KB to a temporary file; ours must not."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("an upload was about to be written to a temporary file")

    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile", refuse)
    monkeypatch.setattr(werkzeug.formparser, "default_stream_factory", refuse)
    monkeypatch.setattr("werkzeug.wrappers.request.default_stream_factory", refuse)
    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    monkeypatch.setattr("tempfile.NamedTemporaryFile", refuse)
    monkeypatch.setattr("tempfile.mkstemp", refuse)
    big_photo = encode(FORGED.resize((1600, 1200)), "PNG", compress_level=0)
    assert len(big_photo) > 2 * 1024 * 1024
    incident = report(client, alpha, "order-1")
    assert upload(client, alpha, incident["id"], big_photo).status_code == 201
    assert image_lookup(client, alpha, big_photo)["evidence_matches"][0]["matched"]


# -- matching in lookups ------------------------------------------------------------------------------------


def test_a_reused_forgery_is_caught_for_an_unknown_buyer_on_another_platform(
    client: Any, alpha: Member, beta: Member
) -> None:
    report(client, alpha, "order-1", evidence={"pdq": [FORGED_HASH]})
    result = image_lookup(client, beta, *REUSED.values(), UNRELATED_PNG)
    matches = result["evidence_matches"]
    assert [m["matched"] for m in matches] == [True, True, True, False]
    for m, image in zip(matches, [*REUSED.values(), UNRELATED_PNG], strict=True):
        assert set(m) == MATCH_KEYS
        assert m["hash"] == pdq_hash(image)[0]
    for m in matches[:3]:
        assert m["best_distance"] == distance(m["hash"], FORGED_HASH) <= 31
        assert (m["category"], m["platforms"], m["low_quality"]) == ("fabricated_evidence", 1, False)
    assert (matches[3]["best_distance"], matches[3]["category"], matches[3]["platforms"]) == (None, None, 0)
    assert "EVIDENCE_REUSED" in reasons(result)
    assert result["decision"]["tier"] == "review"
    assert result["decision"]["restrictions"] == ["manual_review"]
    assert result["summary"]["incidents"] == 0  # nothing is known about the buyer: the photo is the signal
    replay = client.get(f"/v1/lookups/{result['lookup_id']}", headers=beta.headers).get_json()
    assert replay["evidence_matches"] == matches


def test_submitted_hashes_match_images_uploaded_by_the_reporter(
    client: Any, alpha: Member, beta: Member
) -> None:
    incident = report(client, alpha, "order-1")
    assert upload(client, alpha, incident["id"], REUSED["jpeg"]).status_code == 201
    result = lookup(client, beta, pdq_hash(REUSED["crop_1_percent"])[0], pdq_hash(UNRELATED_PNG)[0])
    assert [m["matched"] for m in result["evidence_matches"]] == [True, False]
    assert [m["quality"] for m in result["evidence_matches"]] == [None, None]
    assert "EVIDENCE_REUSED" in reasons(result)


def test_an_image_lookup_may_carry_hashes_too_hashes_first(client: Any, alpha: Member, beta: Member) -> None:
    report(client, alpha, "order-1", evidence={"pdq": [FORGED_HASH]})
    result = image_lookup(client, beta, REUSED["half_size"], evidence={"pdq": [pdq_hash(UNRELATED_PNG)[0]]})
    assert [(m["hash"], m["matched"]) for m in result["evidence_matches"]] == [
        (pdq_hash(UNRELATED_PNG)[0], False),
        (pdq_hash(REUSED["half_size"])[0], True),
    ]
    assert "EVIDENCE_REUSED" in reasons(result)


def test_an_unrelated_photo_changes_nothing(client: Any, alpha: Member, beta: Member) -> None:
    report(client, alpha, "order-1", evidence={"pdq": [FORGED_HASH]})
    result = image_lookup(client, beta, UNRELATED_PNG)
    assert result["decision"]["tier"] == "clear"
    assert "EVIDENCE_REUSED" not in reasons(result)
    assert result["adverse_action"] is None


def test_the_platforms_own_earlier_incident_counts(client: Any, alpha: Member) -> None:
    report(client, alpha, "order-1", evidence={"pdq": [FORGED_HASH]})
    result = lookup(client, alpha, pdq_hash(REUSED["jpeg"])[0])
    assert result["evidence_matches"][0]["matched"]
    assert "EVIDENCE_REUSED" in reasons(result)


def test_matches_count_platforms_but_never_name_them(
    client: Any, alpha: Member, beta: Member, gamma: Member
) -> None:
    first = report(client, alpha, "order-1", evidence={"pdq": [FORGED_HASH]})
    second = report(
        client,
        beta,
        "order-9",
        category="false_damage_claim",
        evidence={"pdq": [pdq_hash(REUSED["jpeg"])[0]]},
    )
    third = report(client, beta, "order-10", evidence={"pdq": [pdq_hash(REUSED["half_size"])[0]]})
    response = client.post(
        "/v1/lookups",
        json={"identifiers": [UNKNOWN_BUYER], "purpose": "refund_review", "evidence": {"pdq": [FORGED_HASH]}},
        headers=gamma.headers,
    )
    match = response.get_json()["evidence_matches"][0]
    assert (match["best_distance"], match["category"], match["platforms"]) == (0, "fabricated_evidence", 2)
    text = response.get_data(as_text=True).lower()
    for secret in ("alpha", "beta", first["id"], second["id"], third["id"], "order-1", "order-9"):
        assert secret.lower() not in text


def test_low_quality_hashes_are_kept_but_never_matched_on_their_own(
    client: Any, alpha: Member, beta: Member
) -> None:
    incident = report(client, alpha, "order-1")
    assert upload(client, alpha, incident["id"], FLAT_PNG).status_code == 201
    flat_hash = pdq_hash(FLAT_PNG)[0]
    by_hash = lookup(client, beta, flat_hash)
    assert by_hash["evidence_matches"][0]["matched"] is False
    by_image = image_lookup(client, beta, FLAT_PNG)
    entry = by_image["evidence_matches"][0]
    assert (entry["low_quality"], entry["matched"], entry["quality"]) == (True, False, 0)
    assert "EVIDENCE_REUSED" not in reasons(by_image)
    assert by_image["decision"]["tier"] == "clear"


def test_retraction_removes_the_match(client: Any, alpha: Member, beta: Member) -> None:
    incident = report(client, alpha, "order-1", evidence={"pdq": [FORGED_HASH]})
    assert lookup(client, beta, FORGED_HASH)["evidence_matches"][0]["matched"]
    retracted = client.post(
        f"/v1/incidents/{incident['id']}/retract",
        json={"reason": "overturned_on_review"},
        headers=alpha.headers,
    )
    assert retracted.status_code == 200
    result = wait_for(
        lambda: (r := lookup(client, beta, FORGED_HASH))["evidence_matches"][0]["matched"] is False and r,
        timeout=5,
    )
    assert result["decision"]["tier"] == "clear"
    assert "EVIDENCE_REUSED" not in reasons(result)


@pytest.mark.process
def test_expiry_removes_the_match_and_the_hash(
    client: Any, alpha: Member, beta: Member, rt: Runtime, settings: Settings
) -> None:
    report(client, alpha, "order-1", evidence={"pdq": [FORGED_HASH]})
    assert lookup(client, beta, FORGED_HASH)["evidence_matches"][0]["matched"]
    later = datetime.now(UTC) + timedelta(days=rt.settings.retention_days + 60)
    # No worker watches this test's database, so no row is locked: one run expires the incident.
    assert retention.expire_incidents(rt, later)["expired"] == 1
    wait_for(lambda: lookup(client, beta, FORGED_HASH)["evidence_matches"][0]["matched"] is False, timeout=5)
    assert stored_evidence(settings) == []
    assert count(settings, "evidence_changes") > 0
    # Erased for good: no table but the lookup audit trail (which records what beta asked) holds the hash.
    dump = subprocess.run(
        ["pg_dump", "--data-only", "--exclude-table-data=lookups", settings.database_url or ""],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "COPY public.evidence_changes" in dump
    assert FORGED_HASH not in dump


def test_another_api_process_sees_new_evidence_within_5_seconds(
    client: Any, second_process: Any, alpha: Member, beta: Member
) -> None:
    # The second process loads its index now, before the evidence exists ...
    assert lookup(second_process, beta, FORGED_HASH)["evidence_matches"][0]["matched"] is False
    incident = report(client, alpha, "order-1")
    assert upload(client, alpha, incident["id"], FORGED_PNG).status_code == 201
    # ... and picks the new hash up from the change log, not by reloading.
    wait_for(lambda: lookup(second_process, beta, FORGED_HASH)["evidence_matches"][0]["matched"], timeout=5)
    client.post(
        f"/v1/incidents/{incident['id']}/retract", json={"reason": "reported_in_error"}, headers=alpha.headers
    )
    wait_for(
        lambda: lookup(second_process, beta, FORGED_HASH)["evidence_matches"][0]["matched"] is False,
        timeout=5,
    )


def test_merges_run_in_the_background_and_keep_changes_made_meanwhile(
    client: Any, alpha: Member, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny delta the second refresh merges in a thread; a retraction applied while that merge is
    still building must survive the swap, and the lookups answered meanwhile stay exact."""
    photos = [FORGED_PNG, UNRELATED_PNG, REUSED["half_size"]]
    hashes = [pdq_hash(photo)[0] for photo in photos]
    matcher = Matcher(rt, delta_limit=1)
    assert len(matcher.current()) == 0
    incidents = []
    for n, digest in enumerate(hashes):
        incidents.append(report(client, alpha, f"order-{n}", evidence={"pdq": [digest]}))
    release = threading.Event()
    original = EvidenceIndex.merged

    def slow_merge(index: EvidenceIndex) -> EvidenceIndex:
        assert release.wait(10)
        return original(index)

    monkeypatch.setattr(EvidenceIndex, "merged", slow_merge)
    index = matcher.current(max_age=0)  # 3 new hashes > delta_limit: a merge starts in the background
    assert matcher.merging
    assert len(index) == 3
    assert index.match(bytes.fromhex(hashes[1])).matched
    retracted = client.post(
        f"/v1/incidents/{incidents[1]['id']}/retract",
        json={"reason": "reported_in_error"},
        headers=alpha.headers,
    )
    assert retracted.status_code == 200
    during = matcher.current(max_age=0)  # applied to the unmerged index, and queued for replay
    assert not during.match(bytes.fromhex(hashes[1])).matched
    release.set()
    matcher.wait_for_merge(10)
    assert not matcher.merging
    after = matcher.current()
    assert len(after.delta) == 0  # everything is in the rebuilt base ...
    assert len(after) == 2
    assert not after.match(bytes.fromhex(hashes[1])).matched  # ... and the retraction was replayed
    assert after.match(bytes.fromhex(hashes[0])).best_distance == 0


def test_evidence_adds_to_a_known_consumers_score(
    client: Any, alpha: Member, beta: Member, worker: Any
) -> None:
    report(
        client,
        alpha,
        "order-1",
        category="refund_only_abuse",
        amount={"value": 10_000, "currency": "CNY"},
        evidence={"pdq": [FORGED_HASH]},
    )
    scored = wait_for(
        lambda: (
            (r := lookup(client, beta, identifiers=[PHONE]))["decision"]["score"] > 0 and not r["stale"] and r
        )
    )
    assert "EVIDENCE_REUSED" not in reasons(scored)
    assert scored["evidence_matches"] == []
    with_photo = lookup(client, beta, pdq_hash(REUSED["jpeg"])[0], identifiers=[PHONE])
    assert "EVIDENCE_REUSED" in reasons(with_photo)
    assert set(reasons(scored)) < set(reasons(with_photo))
    assert with_photo["decision"]["tier"] in ("review", "return_required", "hold")
    assert with_photo["summary"] == scored["summary"]


def test_batch_lookups_match_evidence_per_item(client: Any, alpha: Member, beta: Member) -> None:
    report(client, alpha, "order-1", evidence={"pdq": [FORGED_HASH]})
    base = {"identifiers": [UNKNOWN_BUYER], "purpose": "refund_review"}
    response = client.post(
        "/v1/lookups/batch",
        json={"lookups": [{**base, "evidence": {"pdq": [FORGED_HASH]}}, base]},
        headers=beta.headers,
    )
    results = [item["lookup"] for item in response.get_json()["results"]]
    assert "EVIDENCE_REUSED" in reasons(results[0])
    assert results[1]["evidence_matches"] == []
    assert results[1]["decision"]["tier"] == "clear"


def test_a_lookup_without_evidence_never_builds_the_index(client: Any, alpha: Member, rt: Runtime) -> None:
    report(client, alpha, "order-1", evidence={"pdq": [FORGED_HASH]})
    assert lookup(client, alpha)["evidence_matches"] == []
    assert not rt.evidence_matcher.built
    lookup(client, alpha, FORGED_HASH)
    assert rt.evidence_matcher.built


@pytest.mark.parametrize(
    ("request_part", "images", "field"),
    [
        (None, [REUSED["jpeg"]], "request"),
        ("{not json", [REUSED["jpeg"]], "request"),
        ({"identifiers": [UNKNOWN_BUYER]}, [REUSED["jpeg"]], "request.purpose"),
        ({"identifiers": [UNKNOWN_BUYER], "purpose": "refund_review"}, [b"GIF89a-not-really"], "images.0"),
        ({"identifiers": [UNKNOWN_BUYER], "purpose": "refund_review"}, [REUSED["jpeg"]] * 6, "images"),
    ],
)
def test_bad_image_lookups_get_422_and_leave_no_audit_record(
    request_part: Any, images: list[bytes], field: str, client: Any, beta: Member, settings: Settings
) -> None:
    response = post_image_lookup(client, beta, request_part, *images)
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == PROBLEM
    assert field in response.get_json()["errors"]
    assert count(settings, "lookups") == 0


def test_image_lookups_need_the_lookup_scope(client: Any, make_platform: Any) -> None:
    reporter = make_platform("reporter", "report")
    response = post_image_lookup(
        client, reporter, {"identifiers": [UNKNOWN_BUYER], "purpose": "refund_review"}, REUSED["jpeg"]
    )
    assert response.status_code == 403


# -- no image at rest ---------------------------------------------------------------------------------------


@pytest.mark.process
def test_no_image_bytes_at_rest(client: Any, alpha: Member, beta: Member, settings: Settings) -> None:
    """After uploads and image lookups, the database holds 32-byte hashes and no fragment of any photo."""
    photos = [FORGED_PNG, REUSED["jpeg"], REUSED["half_size"], UNRELATED_PNG]
    incident = report(client, alpha, "order-1")
    assert upload(client, alpha, incident["id"], FORGED_PNG, REUSED["jpeg"]).status_code == 201
    image_lookup(client, beta, REUSED["half_size"], UNRELATED_PNG)
    dump = subprocess.run(
        ["pg_dump", "--no-owner", "--data-only", settings.database_url or ""],
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    assert FORGED_HASH.encode() in dump  # the hash is what is kept (bytea is dumped as hex)
    for photo in photos:
        for start in range(64, len(photo) - 64, max(64, len(photo) // 20)):
            fragment = photo[start : start + 24]
            assert fragment not in dump
            assert fragment.hex().encode() not in dump
    with psycopg.connect(settings.database_url or "") as conn:
        longest = conn.execute("""SELECT max(octet_length(pdq)) FROM incident_evidence""").fetchone()
        bytea_columns = conn.execute(
            """SELECT table_name, column_name FROM information_schema.columns
               WHERE table_schema = 'public' AND data_type = 'bytea'"""
        ).fetchall()
        for table, column in bytea_columns:  # salts, digests and hashes: nothing photo-sized
            widest = conn.execute(
                f'SELECT coalesce(max(octet_length("{column}")), 0) FROM "{table}"'
            ).fetchone()
            assert widest is not None
            assert widest[0] <= 32, (table, column)
    assert longest == (32,)
    cache = redis.Redis.from_url(settings.redis_url or "")
    for key in cache.scan_iter(count=1000):
        if cache.type(key) == b"string":
            value = cache.get(key) or b""
            assert not any(photo[100:124] in value for photo in photos)


# -- the contract and the CLI -------------------------------------------------------------------------------


def test_openapi_documents_both_multipart_endpoints(client: Any) -> None:
    spec = client.get("/openapi.json").get_json()
    upload_body = spec["paths"]["/v1/incidents/{incident_id}/evidence"]["post"]["requestBody"]["content"]
    assert upload_body["multipart/form-data"]["schema"]["properties"]["images"]["maxItems"] == 5
    lookup_body = spec["paths"]["/v1/lookups/evidence"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]
    assert lookup_body["encoding"]["request"]["contentType"] == "application/json"
    assert lookup_body["schema"]["properties"]["request"]["$ref"].endswith("/Lookup")
    assert "Lookup" in spec["components"]["schemas"]
    result = spec["components"]["schemas"]["LookupResult"]["properties"]["evidence_matches"]
    assert result["items"]["$ref"].endswith("/EvidenceMatch")
    assert set(spec["components"]["schemas"]["EvidenceMatch"]["properties"]) == MATCH_KEYS


def test_ledger_hash_prints_the_same_hashes_as_the_server(tmp_path: Any, settings: Settings) -> None:
    forged, reused, broken = tmp_path / "forged.png", tmp_path / "reused.jpg", tmp_path / "notes.txt"
    forged.write_bytes(FORGED_PNG)
    reused.write_bytes(REUSED["jpeg"])
    broken.write_text("not a photo")
    done = run_ledger(settings, "hash", "--json", str(forged), str(reused))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert [(p["pdq"], p["quality"], p["low_quality"]) for p in printed] == [
        (FORGED_HASH, FORGED_QUALITY, False),
        (*pdq_hash(REUSED["jpeg"]), False),
    ]
    text = run_ledger(settings, "hash", str(forged), str(broken))
    assert text.returncode == 2
    assert text.stdout.startswith(FORGED_HASH)
    assert "notes.txt" in text.stderr
    assert "not an image" in text.stderr


# -- the two views of a photo (docs/evidence.md) ------------------------------------------------------------

TE_DATA = ROOT / "tests" / "data" / "threatexchange"
# ThreatExchange's own hash of exif-rotn-6.jpg (pdq/sql/README.md; tests/data/threatexchange/README.md)
TE_ROTN_6 = "e9782aad54ae0b6365315ac278592d68d4b5434a5fcd7471f7abcb594b481a94"


def test_a_rotated_photo_is_stored_in_both_views_and_matches_threatexchange_and_reuploads(
    client: Any, alpha: Member, beta: Member, settings: Settings
) -> None:
    photo = (TE_DATA / "exif-rotn-6.jpg").read_bytes()
    incident = report(client, alpha, "rotated")
    added = upload(client, alpha, incident["id"], photo)
    assert added.status_code == 201, added.get_json()
    [entry] = added.get_json()["evidence"]
    assert entry["displayed_hash"] is not None
    assert added.get_json()["stored"] == 2
    assert {h.hex() for h, _ in stored_evidence(settings)} == {entry["hash"], entry["displayed_hash"]}

    # A hash made by ThreatExchange's tools from the same file, sent as a hash.
    [by_tool] = lookup(client, beta, TE_ROTN_6)["evidence_matches"]
    assert by_tool["matched"]
    assert by_tool["best_distance"] == 8
    assert by_tool["displayed_hash"] is None

    # A re-upload with the rotation baked in and the tag dropped, sent as an image.
    upright = Image.open(io.BytesIO(photo))
    baked = encode(ImageOps.exif_transpose(upright).convert("RGB"), "JPEG", quality=85)
    [by_image] = image_lookup(client, beta, baked)["evidence_matches"]
    assert by_image["matched"]
    assert by_image["best_distance"] <= 8
    # The original file itself: both of its views are asked about and matched exactly.
    [same] = image_lookup(client, beta, photo)["evidence_matches"]
    assert (same["hash"], same["displayed_hash"]) == (entry["hash"], entry["displayed_hash"])
    assert same["best_distance"] == 0


def test_ledger_hash_prints_both_views_of_a_rotated_photo(settings: Settings) -> None:
    path = TE_DATA / "exif-rotn-6.jpg"
    expected = hash_image(path.read_bytes(), max_bytes=None)
    assert expected.displayed is not None
    done = run_ledger(settings, "hash", "--json", str(path))
    assert done.returncode == 0, done.stderr
    [printed] = json.loads(done.stdout)
    assert (printed["pdq"], printed["pdq_displayed"]) == (expected.hex, expected.displayed)
    text = run_ledger(settings, "hash", str(path))
    assert text.returncode == 0, text.stderr
    assert [line.split()[0] for line in text.stdout.splitlines()] == [expected.hex, expected.displayed]
