"""Test photos and metadata, written byte by byte to the formats they imitate, never downloaded.

Why a module: the label reader's unit tests, the lookup's integration tests and the benchmark need the
same files, and each carrier's exact bytes matter (a label the reader finds only in Pillow's own output
proves little). Sources of the formats:

- GB 45438-2025 《网络安全技术 人工智能生成合成内容标识方法》 Annex E: the label's JSON fields, and XMP
  property `TC260:AIGC` in namespace `http://www.tc260.org.cn/ns/AIGC/1.0/`;
- TC260-PG-20252A 实践指南 Annex B: EXIF `UserComment` and the PNG text chunk named `AIGC`;
- XMP Specification Part 3 (Adobe, 2020): the JPEG APP1 namespace string, the PNG `iTXt` keyword
  `XML:com.adobe.xmp`, the WebP `XMP ` chunk (with Google's WebP container specification: VP8X flags);
- EXIF 2.32 (CIPA DC-008): tags 0x0131, 0x8769, 0x9003, 0x9011, 0x9286 and UserComment's character code;
- PNG (ISO/IEC 15948, W3C PNG 3rd ed.): chunk layout and CRC, tEXt/zTXt/iTXt, eXIf;
- C2PA 2.x, through c2pa-python (the Content Authenticity Initiative's library), signed with an
  ES256 certificate chain that these tests make.

The pictures are rendered: an object (a vase, a box, a mug) with texture on a background, so that PDQ
has structure to hash; `forgery` paints cracks and stains onto a rendered listing photo.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import struct
import zlib
from xml.sax.saxutils import quoteattr

from PIL import Image, ImageDraw, ImageFilter

TC260_NS = "http://www.tc260.org.cn/ns/AIGC/1.0/"
IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
CAPTURED = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


def gb_label(label: str = "1", producer: str = "001191440300MA5XXXXXXX") -> str:
    """A GB 45438-2025 Annex E label, every field present, as a generator writes it."""
    return json.dumps(
        {
            "AIGC": {
                "Label": label,
                "ContentProducer": producer,
                "ProduceID": "20251103-0001",
                "ReservedCode1": "",
                "ContentPropagator": "",
                "PropagateID": "",
                "ReservedCode2": "",
            }
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


# -- pictures --------------------------------------------------------------------------------------------


def render(seed: int, size: tuple[int, int] = (800, 600), background: int | None = None) -> Image.Image:
    """A product-like photo: a textured object on a textured background, reproducible from `seed`."""
    rng = random.Random(seed)
    bg_seed = seed if background is None else background
    bg_rng = random.Random(bg_seed * 7919 + 1)
    w, h = size
    base = tuple(bg_rng.randrange(60, 220) for _ in range(3))
    image = Image.new("RGB", size, base)
    draw = ImageDraw.Draw(image)
    for _ in range(40):  # background texture: planks, tiles, shadows
        x0, y0 = bg_rng.randrange(-w // 4, w), bg_rng.randrange(-h // 4, h)
        colour = tuple(max(0, min(255, c + bg_rng.randrange(-50, 50))) for c in base)
        draw.rectangle(
            (x0, y0, x0 + bg_rng.randrange(20, w // 2), y0 + bg_rng.randrange(10, h // 3)), fill=colour
        )
    cx, cy = w // 2 + rng.randrange(-w // 10, w // 10), h // 2 + rng.randrange(-h // 10, h // 10)
    body = tuple(rng.randrange(0, 256) for _ in range(3))
    rx, ry = w // 5 + rng.randrange(0, w // 10), h // 3 + rng.randrange(0, h // 10)
    if rng.random() < 0.5:
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=body, outline=(20, 20, 20), width=4)
    else:
        draw.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=body, outline=(20, 20, 20), width=4)
    for _ in range(12):  # the object's own pattern: stripes and dots
        y = cy - ry + rng.randrange(0, 2 * ry)
        colour = tuple(rng.randrange(0, 256) for _ in range(3))
        draw.line(
            (cx - rx + 10, y, cx + rx - 10, y + rng.randrange(-20, 20)),
            fill=colour,
            width=rng.randrange(3, 12),
        )
    return image.filter(ImageFilter.GaussianBlur(1.2))


def forgery(listing: Image.Image, seed: int = 0) -> Image.Image:
    """The fraud: the listing photo with a crack painted on and a half-transparent stain."""
    rng = random.Random(seed)
    image = listing.convert("RGBA")
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    w, h = image.size
    x, y = w // 2 + rng.randrange(-w // 8, w // 8), h // 3
    for _ in range(10):
        nx, ny = x + rng.randrange(-20, 20), y + rng.randrange(5, 20)
        draw.line((x, y, nx, ny), fill=(20, 20, 20, 230), width=2)
        x, y = nx, ny
    sx, sy = w // 2 + rng.randrange(-w // 6, w // 6), 2 * h // 3
    draw.ellipse((sx - 22, sy - 12, sx + 22, sy + 12), fill=(110, 80, 40, 120))
    return Image.alpha_composite(image, overlay).convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        options.setdefault("quality", 85)
    image.save(out, fmt, **options)
    return out.getvalue()


# -- XMP -------------------------------------------------------------------------------------------------


def xmp(aigc: str | None = None, source_type: str | None = None, element_form: bool = False) -> bytes:
    """An XMP packet with `TC260:AIGC` and/or `Iptc4xmpExt:DigitalSourceType`, as an attribute of
    rdf:Description (the form exiftool writes) or, with `element_form`, as child elements."""
    attributes, children = [], []
    if aigc is not None:
        if element_form:
            children.append(f"<TC260:AIGC>{_escape(aigc)}</TC260:AIGC>")
        else:
            attributes.append(f"TC260:AIGC={quoteattr(aigc)}")
    if source_type is not None:
        if element_form:
            children.append(f"<Iptc4xmpExt:DigitalSourceType>{source_type}</Iptc4xmpExt:DigitalSourceType>")
        else:
            attributes.append(f"Iptc4xmpExt:DigitalSourceType={quoteattr(source_type)}")
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="ledger tests">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        f'  <rdf:Description rdf:about="" xmlns:TC260="{TC260_NS}" xmlns:Iptc4xmpExt="{IPTC_EXT_NS}"'
        f" {' '.join(attributes)}>{''.join(children)}</rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
    return packet.encode("utf-8")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- EXIF ------------------------------------------------------------------------------------------------


def user_comment(text: str, code: str = "ASCII", big_endian: bool = False) -> bytes:
    """EXIF UserComment: 8-byte character code, then the text."""
    if code == "ASCII":
        return b"ASCII\x00\x00\x00" + text.encode("utf-8")
    if code == "UNICODE":
        return b"UNICODE\x00" + text.encode("utf-16-be" if big_endian else "utf-16-le")
    return b"\x00" * 8 + text.encode("utf-8")  # undefined


def exif(
    *,
    software: str | None = None,
    taken: str | None = None,
    offset: str | None = None,
    comment: bytes | None = None,
    big_endian: bool = False,
) -> bytes:
    """A TIFF structure (what follows `Exif\\0\\0`): IFD0 with Software and the Exif IFD pointer, and the
    Exif IFD with DateTimeOriginal, OffsetTimeOriginal and UserComment."""
    o = ">" if big_endian else "<"
    ifd0: list[tuple[int, int, bytes]] = []
    if software is not None:
        ifd0.append((0x0131, 2, software.encode("utf-8") + b"\x00"))
    sub: list[tuple[int, int, bytes]] = []
    if taken is not None:
        sub.append((0x9003, 2, taken.encode("ascii") + b"\x00"))
    if offset is not None:
        sub.append((0x9011, 2, offset.encode("ascii") + b"\x00"))
    if comment is not None:
        sub.append((0x9286, 7, comment))
    header = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(o + "I", 8)
    n0 = len(ifd0) + 1
    ifd0_size = 2 + 12 * n0 + 4
    sub_offset = 8 + ifd0_size
    sub_size = 2 + 12 * len(sub) + 4
    data_offset = sub_offset + sub_size
    blob = bytearray()

    def entries(items: list[tuple[int, int, bytes]], extra: list[bytes]) -> bytes:
        nonlocal blob
        out = bytearray()
        for tag, kind, value in sorted(items):
            if len(value) <= 4:
                out += struct.pack(o + "HHI", tag, kind, len(value)) + value.ljust(4, b"\x00")
            else:
                out += struct.pack(o + "HHII", tag, kind, len(value), data_offset + len(blob))
                blob += value + (b"\x00" if len(value) % 2 else b"")
        for e in extra:
            out += e
        return bytes(out)

    pointer = struct.pack(o + "HHII", 0x8769, 4, 1, sub_offset)
    # IFD0's pointer entry sorts after 0x0131: written last, as the tags are in ascending order.
    first = struct.pack(o + "H", n0) + entries(ifd0, [pointer]) + struct.pack(o + "I", 0)
    second = struct.pack(o + "H", len(sub)) + entries(sub, []) + struct.pack(o + "I", 0)
    return header + first + second + bytes(blob)


# -- carriers --------------------------------------------------------------------------------------------


def jpeg_with(jpeg: bytes, *segments: tuple[int, bytes]) -> bytes:
    """Insert APPn segments (marker, payload) right after SOI."""
    assert jpeg[:2] == b"\xff\xd8"
    inserted = b"".join(b"\xff" + bytes([m]) + struct.pack(">H", len(p) + 2) + p for m, p in segments)
    return jpeg[:2] + inserted + jpeg[2:]


def jpeg_xmp(jpeg: bytes, packet: bytes) -> bytes:
    return jpeg_with(jpeg, (0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet))


def jpeg_exif(jpeg: bytes, tiff: bytes) -> bytes:
    return jpeg_with(jpeg, (0xE1, b"Exif\x00\x00" + tiff))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with(png: bytes, *chunks: bytes) -> bytes:
    """Insert chunks right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    return png[:33] + b"".join(chunks) + png[33:]


def png_text(keyword: str, text: str) -> bytes:
    return png_chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + text.encode("latin-1", "strict"))


def png_ztxt(keyword: str, text: bytes) -> bytes:
    return png_chunk(b"zTXt", keyword.encode("latin-1") + b"\x00\x00" + zlib.compress(text))


def png_itxt(keyword: str, text: str, compressed: bool = False) -> bytes:
    body = text.encode("utf-8")
    if compressed:
        body = zlib.compress(body)
    return png_chunk(
        b"iTXt", keyword.encode("latin-1") + b"\x00" + bytes([int(compressed), 0]) + b"\x00\x00" + body
    )


def png_xmp(png: bytes, packet: bytes) -> bytes:
    return png_with(png, png_itxt("XML:com.adobe.xmp", packet.decode("utf-8")))


def webp_with(webp: bytes, *, xmp_packet: bytes | None = None, tiff: bytes | None = None) -> bytes:
    """A simple (VP8 or VP8L) WebP turned into the extended format: VP8X with the XMP/EXIF flags, the
    image chunk, then `EXIF` and `XMP ` chunks, as the WebP container specification orders them."""
    assert webp[:4] == b"RIFF"
    assert webp[8:12] == b"WEBP"
    image = Image.open(io.BytesIO(webp))
    width, height = image.size
    image_chunk = webp[12:]
    assert image_chunk[:4] in (b"VP8 ", b"VP8L"), "already extended"
    flags = (0x04 if xmp_packet is not None else 0) | (0x08 if tiff is not None else 0)
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([flags, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = vp8x + image_chunk
    if tiff is not None:
        body += _riff_chunk(b"EXIF", tiff)
    if xmp_packet is not None:
        body += _riff_chunk(b"XMP ", xmp_packet)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


# -- C2PA ------------------------------------------------------------------------------------------------


def c2pa_signer() -> object:
    """A c2pa-python Signer with a fresh ES256 test CA and signing certificate (made here, trusted by
    no one: the ledger holds no trust list, so it reports signature validity, not trust)."""
    import c2pa
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ledger tests"),
            ]
        )

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=not sign,
            crl_sign=not sign,
            encipher_only=False,
            decipher_only=False,
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    window = (now - dt.timedelta(days=1), now + dt.timedelta(days=30))
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("ledger test CA"))
        .issuer_name(name("ledger test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(window[0])
        .not_valid_after(window[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("ledger test generator"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(window[0])
        .not_valid_after(window[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return c2pa.Signer.from_info(
        c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=private, ta_url=None)
    )


def c2pa_signed(
    image: bytes, mime: str, source_type: str | None, signer: object, generator: str = "TestGen"
) -> bytes:
    """`image` with a C2PA manifest whose c2pa.created action has `source_type` (None: no source type)."""
    import c2pa

    action: dict[str, str] = {"action": "c2pa.created"}
    if source_type is not None:
        action["digitalSourceType"] = source_type
    manifest = {
        "claim_generator_info": [{"name": generator, "version": "1.0"}],
        "title": "claim photo",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
    }
    out = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, mime, io.BytesIO(image), out)
    return out.getvalue()
