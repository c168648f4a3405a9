"""Decompression bombs built on the fly, a row at a time, so that making one costs the test nothing.

The PNG byte format is from the PNG specification (ISO/IEC 15948, W3C PNG 3rd edition): signature,
IHDR, an optional eXIf chunk (a TIFF-structured EXIF block), IDAT (zlib of filter byte + row), IEND;
each chunk's CRC-32 covers its type and data.
"""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _exif_orientation(orientation: int) -> bytes:
    """A minimal big-endian TIFF header with one IFD entry: Orientation (0x0112, SHORT, 1 value)."""
    return (
        b"MM\x00\x2a"
        + struct.pack(">I", 8)
        + struct.pack(">H", 1)
        + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
        + struct.pack(">I", 0)
    )


def png_bomb(side: int = 7745, rgb: tuple[int, int, int] = (200, 30, 30), orientation: int = 6) -> bytes:
    """A one-colour RGB PNG of side x side pixels with an EXIF orientation: a few hundred KB on the wire."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    row = b"\x00" + bytes(rgb) * side
    compressor = zlib.compressobj(6)
    block = row * 64
    parts = [compressor.compress(block) for _ in range(side // 64)]
    parts.append(compressor.compress(row * (side % 64)))
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"eXIf", _exif_orientation(orientation))
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )
