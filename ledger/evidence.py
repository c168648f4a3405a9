"""PDQ perceptual hashes of evidence photos: the only form in which evidence images reach the ledger.

A forged "damage" photo is usually reused, re-encoded, resized or slightly cropped. PDQ (Meta's
perceptual hash, also used by ThreatExchange) maps such near copies to 256-bit hashes a few bits apart,
while unrelated photos land about 128 bits apart; ThreatExchange treats Hamming distance <= 31 as a
match. The image itself is decoded in memory, hashed and dropped: nothing here writes it anywhere.

This module is shared with partners' code, like `ledger.identity`: `ledger hash IMAGE...` runs it on a
partner's own machine, so that the photo never has to leave the partner at all. The hex form is the
one ThreatExchange uses (bit 0 of the PDQ vector is the most significant bit of the first hex digit).

PDQ's own quality score (0..100) says how much structure the image has; below about 50 (a blank wall,
a dark frame) hashes collide by chance, so such images are accepted but marked low quality and never
matched on their own (see `ledger.domain.pdq_index` and the policy's `evidence.min_quality`).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_BYTES = 10 * 1024 * 1024  # per uploaded image
MIN_SIDE = 64  # PDQ works on a 64x64 reduction; smaller images carry too little to hash
MAX_PIXELS = 60_000_000  # decompression-bomb guard, checked from the header before decoding
WORKING_SIDE = 1024  # larger images are reduced first: same hash within a few bits, 10x faster
MIN_QUALITY = 50  # PDQ guidance; the policy file's evidence.min_quality is the value that is applied
FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
HEX_LENGTH = 64


class ImageRejected(ValueError):
    """The bytes are not a usable image. `reason` is safe to show a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageHash:
    hex: str
    quality: int
    width: int
    height: int

    @property
    def digest(self) -> bytes:
        return bytes.fromhex(self.hex)

    def low_quality(self, min_quality: int = MIN_QUALITY) -> bool:
        return self.quality < min_quality


def bits_to_hex(bits: np.ndarray) -> str:
    """A PDQ bit vector (256 values of 0/1) in ThreatExchange's hex form."""
    flat = np.asarray(bits, dtype=np.uint8).ravel()
    if flat.size != HEX_LENGTH * 4:
        raise ValueError("a PDQ hash has 256 bits")
    return np.packbits(flat).tobytes().hex()


def _decode(image_bytes: bytes) -> tuple[Image.Image, int, int]:
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
        image.load()
        image = ImageOps.exif_transpose(image)  # hash what a person sees, not the sensor's orientation
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
        else:
            image = image.convert("RGB")
        if max(image.size) > WORKING_SIDE:
            image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        # Pillow reports a cut-off file as OSError("image file is truncated ...").
        raise ImageRejected("the image is truncated or corrupt") from None
    return image, width, height


def hash_image(image_bytes: bytes, max_bytes: int | None = MAX_IMAGE_BYTES) -> ImageHash:
    """Decode in memory and hash. Raises ImageRejected for anything that is not a usable image."""
    if not image_bytes:
        raise ImageRejected("the file is empty")
    if max_bytes is not None and len(image_bytes) > max_bytes:
        raise ImageRejected(f"larger than {max_bytes // (1024 * 1024)} MB")
    image, width, height = _decode(image_bytes)
    import pdqhash  # compiled extension; imported here so that `ledger --help` stays fast

    bits, quality = pdqhash.compute(np.asarray(image))
    return ImageHash(bits_to_hex(bits), int(quality), width, height)


def pdq_hash(image_bytes: bytes) -> tuple[str, int]:
    """The PDQ hash of an image, as (64 lowercase hex characters, quality 0..100)."""
    hashed = hash_image(image_bytes, max_bytes=None)
    return hashed.hex, hashed.quality
