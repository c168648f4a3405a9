"""PDQ perceptual hashes of evidence photos: the only form in which evidence images reach the ledger.

A forged "damage" photo is usually reused, re-encoded, resized or slightly cropped. PDQ (Meta's
perceptual hash, also used by ThreatExchange) maps such near copies to 256-bit hashes a few bits apart,
while unrelated photos land about 128 bits apart; ThreatExchange treats Hamming distance <= 31 as a
match. The image itself is decoded in memory, hashed and dropped: nothing here writes it anywhere.

This module is shared with partners' code, like `ledger.identity`: `ledger hash IMAGE...` runs it on a
partner's own machine, so that the photo never has to leave the partner at all. The hex form is the
one ThreatExchange uses (bit 0 of the PDQ vector is the most significant bit of the first hex digit).

**Two views of one photo.** ThreatExchange's tools (the C++ `pdq-photo-hasher`, python-threatexchange)
hash the pixels as the file stores them: they ignore the EXIF orientation tag and the alpha channel. A
person, and a platform that re-encodes an upload, sees the photo turned upright and any transparency
flattened. A phone photo tagged "rotate 90°" hashes about 128 bits apart under the two conventions, and a
semi-transparent PNG about 60. So an image gets its hash `as stored` (ThreatExchange's convention: the
file's pixel order, colour channels only) and, when it differs, also its hash `as displayed` (EXIF
orientation applied, transparency flattened onto white). The ledger stores and matches both, so a photo
matches its re-uploads whichever way they were re-encoded, and hashes made by ThreatExchange's tools
from the same file (docs/evidence.md has the measurements against ThreatExchange's reference images).

Decoding is where an upload costs the most, and a small file can decode to a huge raster (a one-colour
PNG of 7,745x7,745 is 190 KB on the wire and 180 MB decoded). So the decoded size is bounded from the
header before anything is decoded, per image and per request; JPEG is decoded already scaled down; every
other format is reduced by an integer factor, in its own mode, right after decoding and before the views
copy it; and only DECODE_CONCURRENCY decodes run at once in a process.

PDQ's own quality score (0..100) says how much structure the image has; below about 50 (a blank wall,
a dark frame) hashes collide by chance, so such images are accepted but marked low quality and never
matched on their own (see `ledger.domain.pdq_index` and the policy's `evidence.min_quality`).
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_BYTES = 10 * 1024 * 1024  # per uploaded image
MIN_SIDE = 64  # PDQ works on a 64x64 reduction; smaller images carry too little to hash
# Bytes of raster a decode may allocate, from the header (after JPEG's draft scaling): 48 MiB is a
# 16-megapixel RGB image. A request's images together may decode to at most MAX_REQUEST_DECODED_BYTES.
MAX_DECODED_BYTES = 48 * 1024 * 1024
MAX_REQUEST_DECODED_BYTES = 128 * 1024 * 1024
DECODE_CONCURRENCY = 2  # per process; further decodes wait their turn
_DECODES = threading.BoundedSemaphore(DECODE_CONCURRENCY)
_BYTES_PER_PIXEL = {
    "1": 1,
    "L": 1,
    "P": 1,
    "LA": 2,
    "PA": 2,
    "I;16": 2,
    "RGB": 3,
    "YCbCr": 3,
    "LAB": 3,
    "HSV": 3,
}
MAX_PIXELS = 60_000_000  # decompression-bomb guard, checked from the header before decoding
WORKING_SIDE = 1024  # larger images are reduced first: same hash within a few bits, 10x faster
MIN_QUALITY = 50  # PDQ guidance; the policy file's evidence.min_quality is the value that is applied
FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
HEX_LENGTH = 64
ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose applies it).
ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageRejected(ValueError):
    """The bytes are not a usable image. `reason` is safe to show a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageHash:
    """`hex` is the image as stored (ThreatExchange's convention); `displayed` is the image as shown (EXIF
    orientation applied, transparency flattened onto white), only when it differs from the stored one."""

    hex: str
    quality: int
    width: int
    height: int
    displayed: str | None = None

    @property
    def digest(self) -> bytes:
        return bytes.fromhex(self.hex)

    @property
    def digests(self) -> tuple[bytes, ...]:
        """Every view's hash: as stored, then as displayed when it differs."""
        if self.displayed is None:
            return (self.digest,)
        return (self.digest, bytes.fromhex(self.displayed))

    def low_quality(self, min_quality: int = MIN_QUALITY) -> bool:
        return self.quality < min_quality


def bits_to_hex(bits: np.ndarray) -> str:
    """A PDQ bit vector (256 values of 0/1) in ThreatExchange's hex form."""
    flat = np.asarray(bits, dtype=np.uint8).ravel()
    if flat.size != HEX_LENGTH * 4:
        raise ValueError("a PDQ hash has 256 bits")
    return np.packbits(flat).tobytes().hex()


def _views(image: Image.Image, orientation: int) -> tuple[Image.Image, Image.Image | None]:
    """The image as stored (RGB in the file's pixel order, alpha ignored, as ThreatExchange hashes it), and
    the image as displayed when that differs: turned by its EXIF orientation, transparency on white."""
    alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if alpha:
        rgba = image.convert("RGBA")
        transparent = rgba.getchannel("A").getextrema() != (255, 255)  # one band: (min, max)
        stored = rgba.convert("RGB")
    else:
        transparent = False
        stored = image.convert("RGB")
    if not transparent and orientation not in ORIENTATIONS:
        return stored, None
    displayed = stored
    if transparent:
        displayed = Image.new("RGB", rgba.size, (255, 255, 255))
        displayed.paste(rgba, mask=rgba.getchannel("A"))
    if orientation in ORIENTATIONS:
        displayed = displayed.transpose(ORIENTATIONS[orientation])
    return stored, displayed


def _reduced(image: Image.Image) -> Image.Image:
    if max(image.size) > WORKING_SIDE:
        image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
    return image


def decoded_bytes(image: Image.Image) -> int:
    """The raster size decoding `image` will allocate, from its header (and any draft scaling)."""
    width, height = image.size
    return width * height * _BYTES_PER_PIXEL.get(image.mode, 4)


def _decode(image_bytes: bytes) -> tuple[Image.Image, Image.Image | None, int, int]:
    with warnings.catch_warnings():
        # Pillow warns (rather than fails) on large images; MAX_PIXELS below is the limit we apply.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image: Image.Image = Image.open(io.BytesIO(image_bytes))
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
            raise ImageRejected(
                "not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)"
            ) from None
    if image.format not in FORMATS:
        raise ImageRejected("not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(f"too small: {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} are needed")
    if width * height > MAX_PIXELS:
        raise ImageRejected(f"too many pixels: {width}x{height}; at most {MAX_PIXELS:,} are accepted")
    try:
        if image.format in ("JPEG", "MPO"):
            # Let the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding: the cheapest reduction.
            image.draft("RGB", (WORKING_SIDE, WORKING_SIDE))
        if decoded_bytes(image) > MAX_DECODED_BYTES:
            raise ImageRejected(
                f"decodes to too large a raster: {width}x{height} {image.mode}; at most "
                f"{MAX_DECODED_BYTES // (1024 * 1024)} MB decoded are accepted"
            )
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
        image.load()
        factor = max(image.size) // WORKING_SIDE
        if factor >= 2:
            # Shrink in the decoded mode before the views copy the full raster. P and 1 have no box
            # filter; nearest keeps their palette, and PDQ works on a 64x64 reduction anyway.
            if image.mode in ("P", "1"):
                size = (max(1, image.width // factor), max(1, image.height // factor))
                image = image.resize(size, Image.Resampling.NEAREST)
            else:
                image = image.reduce(factor)
        stored, displayed = _views(image, orientation)
        stored = _reduced(stored)
        displayed = _reduced(displayed) if displayed is not None else None
    except ImageRejected:
        raise  # the decoded-size bound, said as such (ImageRejected is a ValueError)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        # Pillow reports a cut-off file as OSError("image file is truncated ...").
        raise ImageRejected("the image is truncated or corrupt") from None
    return stored, displayed, width, height


def hash_image(image_bytes: bytes, max_bytes: int | None = MAX_IMAGE_BYTES) -> ImageHash:
    """Decode in memory and hash. Raises ImageRejected for anything that is not a usable image."""
    if not image_bytes:
        raise ImageRejected("the file is empty")
    if max_bytes is not None and len(image_bytes) > max_bytes:
        raise ImageRejected(f"larger than {max_bytes // (1024 * 1024)} MB")
    import pdqhash  # compiled extension; imported here so that `ledger --help` stays fast

    with _DECODES:  # a bounded number of decodes per process
        stored, displayed, width, height = _decode(image_bytes)
        bits, quality = pdqhash.compute(np.asarray(stored))
        as_stored = bits_to_hex(bits)
        as_displayed = None
        if displayed is not None:
            shown_bits, _ = pdqhash.compute(np.asarray(displayed))
            as_displayed = bits_to_hex(shown_bits)
    return ImageHash(as_stored, int(quality), width, height, as_displayed)


def _header_bytes(image_bytes: bytes) -> int:
    """What decoding would allocate, from the header alone (0 when the header is unreadable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(image_bytes))
            if image.format in ("JPEG", "MPO"):
                image.draft("RGB", (WORKING_SIDE, WORKING_SIDE))
            return decoded_bytes(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return 0


def hash_images(
    images: list[bytes], max_bytes: int | None = MAX_IMAGE_BYTES
) -> list[ImageHash | ImageRejected]:
    """Hash a request's images in turn. Every header is read first, so that a request whose images
    together would decode to more than MAX_REQUEST_DECODED_BYTES is refused before any is decoded.
    Returns a hash or the reason for each image, in order."""
    sizes = [_header_bytes(i) if i and (max_bytes is None or len(i) <= max_bytes) else 0 for i in images]
    too_much = sum(s for s in sizes if s <= MAX_DECODED_BYTES) > MAX_REQUEST_DECODED_BYTES
    results: list[ImageHash | ImageRejected] = []
    for image_bytes, size in zip(images, sizes, strict=True):
        if too_much and 0 < size <= MAX_DECODED_BYTES:
            limit = MAX_REQUEST_DECODED_BYTES // (1024 * 1024)
            results.append(ImageRejected(f"the images together decode to more than {limit} MB"))
            continue
        try:
            results.append(hash_image(image_bytes, max_bytes))
        except ImageRejected as exc:
            results.append(exc)
    return results


def pdq_hash(image_bytes: bytes) -> tuple[str, int]:
    """The PDQ hash of an image as stored (ThreatExchange's convention), as (64 lowercase hex characters,
    quality 0..100). `hash_image` also gives the hash as displayed."""
    hashed = hash_image(image_bytes, max_bytes=None)
    return hashed.hex, hashed.quality
