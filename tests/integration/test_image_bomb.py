"""The image bomb (M2): a 190 KB PNG that decodes to 180 MB, uploaded before the quota was charged.

The review's PNG (7,745 x 7,745, one colour, EXIF orientation 6) cost 1.7 s of CPU and 690 MB to hash,
five of them in one request 7.1 s, and the worker kept 563 MB afterwards. Now the upload is charged
before its body is read, and the decoded size is bounded from the header, per image and per request.
Memory is measured in a fresh subprocess (its peak RSS), never time.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from functools import cache
from typing import Any

import pytest

from ledger.domain.pdq_hash import MAX_DECODED_BYTES
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from tests.bombs import png_bomb
from tests.support import ROOT, Member, audit_count

PHONE = {"type": "phone", "value": "13800138000"}
REQUEST = json.dumps({"identifiers": [PHONE], "purpose": "refund_review"})


@cache
def bomb() -> bytes:
    return png_bomb(7745, orientation=6)


def post_images(client: Any, member: Member, *images: bytes, request: str = REQUEST) -> Any:
    parts = {"request": request, "images": [(io.BytesIO(i), f"claim-{n}.png") for n, i in enumerate(images)]}
    return client.post(
        "/v1/lookups/evidence", data=parts, headers=member.headers, content_type="multipart/form-data"
    )


def test_five_bombs_are_refused_from_their_headers(client: Any, alpha: Member, rt: Runtime) -> None:
    assert len(bomb()) < 256 * 1024
    response = post_images(client, alpha, *[bomb()] * 5)
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert sorted(errors) == [f"images.{n}" for n in range(5)]
    assert "decodes to too large a raster" in errors["images.0"][0]
    assert audit_count(rt) == 0


def test_the_quota_is_charged_before_the_body_is_read(client: Any, alpha: Member, rt: Runtime) -> None:
    platform_service.set_rate_limit(rt, "alpha", 1, 6)
    bombs = [bomb()] * 5
    # An upload costs 1 + 5 image units, charged before the body is read. Spend the bucket on lookups.
    lookups = [
        client.post(
            "/v1/lookups", json={"identifiers": [PHONE], "purpose": "refund_review"}, headers=alpha.headers
        ).status_code
        for _ in range(6)
    ]
    assert lookups == [200] * 6
    refused = post_images(client, alpha, *bombs)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    # A body that is not even multipart is refused the same way: the server never looked at it.
    garbage = client.post(
        "/v1/lookups/evidence",
        data=b"--x\r\nnot a form",
        headers={**alpha.headers, "Content-Type": "multipart/form-data; boundary=y"},
    )
    assert garbage.status_code == 429
    assert audit_count(rt) == 6


PROBE = """
import resource, sys
from ledger.domain.pdq_hash import hash_images
from tests.bombs import png_bomb
images = [png_bomb(int(side), orientation=6) for side in sys.argv[1].split(",")]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = hash_images(images)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print([getattr(r, "reason", None) for r in results])
print((after - before) * 1024)
"""


def peak_growth(*sides: int) -> tuple[list[str | None], int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(map(str, sides))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    reasons, growth = done.stdout.strip().splitlines()[-2:]
    return eval(reasons), int(growth)  # noqa: S307 (our own subprocess's repr of a list of str/None)


@pytest.mark.process
def test_hashing_five_bombs_allocates_no_raster() -> None:
    reasons, growth = peak_growth(*[7745] * 5)
    assert all(r and "too large a raster" in r for r in reasons)
    assert growth < 16 * 1024 * 1024


@pytest.mark.process
def test_the_largest_accepted_image_stays_within_its_bound() -> None:
    """An image just under the per-image cap is hashed, upright, in bounded memory: the decoded raster
    and the working copies made after it was reduced, never a second full-size copy of it."""
    side = 4000  # 48,000,000 bytes of RGB: just under MAX_DECODED_BYTES
    assert side * side * 3 <= MAX_DECODED_BYTES
    reasons, growth = peak_growth(side)
    assert reasons == [None]
    assert growth < 2.5 * MAX_DECODED_BYTES


@pytest.mark.process
def test_a_request_cannot_add_up_large_images() -> None:
    """Three images each under the cap, together over the per-request bound: none is decoded."""
    reasons, growth = peak_growth(4000, 4000, 4000)
    assert all(r and "together decode" in r for r in reasons)
    assert growth < 16 * 1024 * 1024
