"""The ledger's PDQ hashes against ThreatExchange's published reference hashes, and the two views of a
rotated or transparent photo.

ThreatExchange's tools hash an image as its file stores it: the C++ `pdq-photo-hasher` and
python-threatexchange ignore the EXIF orientation tag and the alpha channel. The ledger's hash `as stored`
follows that convention, so its distance to the published hash is only the decoder's and the 1,024 px
reduction's few bits; its hash `as displayed` (turned upright, transparency on white) is what a re-upload
that bakes the rotation or flattens the image hashes to. The expected distances below are measured with
the locked Pillow and pdqhash; ThreatExchange, like the policy, treats <= 31 bits as a match.
Images and hashes: tests/data/threatexchange/README.md.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from ledger.domain.pdq_hash import ImageHash, hash_image
from ledger.domain.pdq_index import hamming

DATA = Path(__file__).resolve().parents[1] / "data" / "threatexchange"
MATCH = 31

# file: (published hash, distance of the ledger's hash as stored, of its hash as displayed or None)
REFERENCE = {
    # pdq/sql/README.md: ThreatExchange's C++ pdq-photo-hasher
    "exif-rotn-1.jpg": ("f439d924da56a1d4c63973a56acfc926cd53d9341b18367d318666cf9b142649", 6, None),
    "exif-rotn-3.jpg": ("3acfa3cfab36b95e39cfa0023946790af441f1417d850401f7616005ffc17ff2", 4, 132),
    "exif-rotn-6.jpg": ("e9782aad54ae0b6365315ac278592d68d4b5434a5fcd7471f7abcb594b481a94", 8, 130),
    "exif-rotn-8.jpg": ("6b507c23b4adb07ec2fe2b4db52038b15e0c970fcaf3f049058ae8687bf9251e", 8, 128),
    "bridge-1-original.jpg": ("f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22", 6, None),
    "pen-and-coaster.png": ("1f811b9d2e7fbc6613c0c3f30e041f9df69b836303e10f067fcdfc12c02d01f9", 4, None),
    # python-threatexchange tests/hashing/test_pdq_hasher.py: pdqhash on Pillow's pixels
    "LA.png": ("accb6d39648035f8125c8ce6ba65007de7b54c67a2d93ef7b8f33b0611306715", 0, 60),
    "I16.png": ("de2ef0e99ecdfc1d248a0eb055f023d1d61e79c3920cbb55d561c02accab1763", 0, None),
    "rgb.jpeg": ("fb4eed46cb8a6c78819ca06b756c541f7b07ef6d02c82fccd00f862166272cda", 0, None),
}


def bits(a_hex: str, b_hex: str) -> int:
    return hamming(bytes.fromhex(a_hex), bytes.fromhex(b_hex))


def hashed(name: str) -> ImageHash:
    return hash_image((DATA / name).read_bytes(), max_bytes=None)


def reencoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return out.getvalue()


def nearest(a: ImageHash, b: ImageHash) -> int:
    """How an upload of `b` is matched against the stored hashes of `a`: the closest pair of views."""
    return min(bits(x.hex(), y.hex()) for x in a.digests for y in b.digests)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_hash_as_stored_matches_threatexchanges_published_hash(name: str) -> None:
    published, stored_bits, displayed_bits = REFERENCE[name]
    image = hashed(name)
    assert bits(image.hex, published) == stored_bits
    assert stored_bits <= MATCH
    if displayed_bits is None:
        assert image.displayed is None  # nothing to turn or flatten: one view
    else:
        assert image.displayed is not None
        assert bits(image.displayed, published) == displayed_bits
        assert displayed_bits > MATCH  # the view ThreatExchange's tools would never match


@pytest.mark.parametrize("name", ["exif-rotn-3.jpg", "exif-rotn-6.jpg", "exif-rotn-8.jpg"])
def test_a_rotated_photo_matches_its_reuploads_either_way(name: str) -> None:
    original = Image.open(DATA / name)
    assert original.getexif()[0x0112] == int(name[-5])
    photo = hashed(name)
    # A platform that turns the photo upright and drops the tag; one that drops the tag only.
    baked = hash_image(reencoded(ImageOps.exif_transpose(original)), max_bytes=None)
    stripped = hash_image(reencoded(original.convert("RGB")), max_bytes=None)
    for upload in (baked, stripped):
        assert upload.displayed is None
        assert nearest(photo, upload) <= 8
    assert photo.displayed is not None
    assert bits(baked.hex, photo.displayed) <= 8
    assert bits(stripped.hex, photo.hex) <= 8
    # With one view only, one of the two re-uploads would be missed.
    assert max(bits(baked.hex, photo.hex), bits(stripped.hex, photo.displayed)) > MATCH


def test_a_transparent_image_matches_its_flattened_reuploads() -> None:
    original = Image.open(DATA / "LA.png")
    assert original.mode == "LA"
    assert original.getchannel("A").getextrema()[0] < 255
    image = hashed("LA.png")
    rgba = original.convert("RGBA")
    on_white = Image.new("RGB", rgba.size, (255, 255, 255))
    on_white.paste(rgba, mask=rgba.getchannel("A"))
    flattened = hash_image(reencoded(on_white), max_bytes=None)  # e.g. a PNG re-saved as JPEG
    alpha_dropped = hash_image(reencoded(original.convert("RGB")), max_bytes=None)
    assert image.displayed is not None
    assert bits(flattened.hex, image.displayed) == 4
    assert bits(alpha_dropped.hex, image.hex) == 4
    assert bits(flattened.hex, image.hex) > MATCH
    assert bits(alpha_dropped.hex, image.displayed) > MATCH
    # Flattened onto black is neither view: documented as not matched (docs/evidence.md).
    on_black = Image.new("RGB", rgba.size, (0, 0, 0))
    on_black.paste(rgba, mask=rgba.getchannel("A"))
    assert nearest(image, hash_image(reencoded(on_black), max_bytes=None)) > MATCH


def test_an_opaque_alpha_channel_or_upright_tag_gives_one_view() -> None:
    assert hashed("pen-and-coaster.png").displayed is None  # RGBA, every pixel opaque
    assert hashed("exif-rotn-1.jpg").displayed is None  # orientation 1: already upright
