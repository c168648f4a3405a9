"""What a claim photo's metadata says about it: AI-content labels, capture time and editing software.

Why: a forged "damage" photo is caught by its hash only once it is known. Its metadata can give it away
the first time. Since 2025-09-01 《人工智能生成合成内容标识办法》 Art. 6 has platforms check the implicit
label that generators must write (Art. 10 forbids removing it), in the form of GB 45438-2025 Annex E:
`{"AIGC":{"Label":"1|2|3","ContentProducer":…,"ProduceID":…,…}}`. It is carried

- in XMP as the property `TC260:AIGC` (namespace `http://www.tc260.org.cn/ns/AIGC/1.0/`): the JPEG APP1
  packet, the PNG `iTXt` chunk `XML:com.adobe.xmp`, the WebP `XMP ` chunk;
- in EXIF `UserComment` (0x9286), or a PNG `tEXt`/`zTXt`/`iTXt` chunk named `AIGC` (the TC260 practice
  guide, Annex B).

International generators write C2PA manifests (JUMBF in JPEG APP11, PNG `caBX`, WebP `C2PA`), whose
`c2pa.actions` give a `digitalSourceType`, and some write IPTC `Iptc4xmpExt:DigitalSourceType` in XMP.
C2PA manifests are read and validated with `c2pa-python` (the CAI's own library), offline: no remote
manifest and no OCSP is ever fetched. A photo whose EXIF `DateTimeOriginal` is before the delivery
cannot show the delivered goods, and EXIF `Software` names an editor.

Everything here reads untrusted bytes, so it only walks container structure (it never decodes pixels),
every length is checked against what is left, and every size is capped: a file can make this report
"malformed", never raise, and never allocate more than the caps below. A label that is present but cannot
be read is reported as malformed, never as absent: removing or breaking a label is itself a finding.
"""

from __future__ import annotations

import functools
import io
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from xml.etree import ElementTree

TC260_NS = "http://www.tc260.org.cn/ns/AIGC/1.0/"
IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XMP_JPEG_ID = b"http://ns.adobe.com/xap/1.0/\x00"
EXIF_JPEG_ID = b"Exif\x00\x00"

MAX_SEGMENTS = 4096  # container chunks walked before giving up: real files have a few dozen
MAX_XMP_BYTES = 1024 * 1024
MAX_TEXT_BYTES = 64 * 1024  # a tEXt/zTXt/iTXt `AIGC` value, decompressed
MAX_LABEL_JSON = 16 * 1024  # GB 45438 Annex E's fields are short; a larger label is malformed
MAX_IFD_ENTRIES = 1024
MAX_C2PA_BYTES = 8 * 1024 * 1024  # a manifest store, thumbnails included
MAX_TEXT_FIELD = 200  # producer and software are cut to this many characters

# GB 45438-2025 Annex E `Label`.
GB_LABELS = {"1": "ai_generated", "2": "possibly", "3": "suspected"}
# IPTC digital source types that mean a trained model made or changed the image (C2PA uses the same).
AI_SOURCE_TYPES = {
    "trainedAlgorithmicMedia": "ai_generated",
    "compositeWithTrainedAlgorithmicMedia": "ai_edited",
}
LABELS = ("ai_generated", "ai_edited", "possibly", "suspected")
# Labels that are a reason (EVIDENCE_AI_LABELLED): an explicit "generated" or a C2PA/IPTC AI source.
AI_LABELS = frozenset({"ai_generated", "ai_edited"})

EXIF_SOFTWARE = 0x0131
EXIF_IFD_POINTER = 0x8769
EXIF_DATETIME_ORIGINAL = 0x9003
EXIF_OFFSET_TIME_ORIGINAL = 0x9011
EXIF_USER_COMMENT = 0x9286


@dataclass(frozen=True)
class LabelFinding:
    """One AI label found in one carrier. `label` is None when the carrier held something unreadable
    (`malformed` says what); `signature_valid` is None unless the carrier is a signed C2PA manifest."""

    source: str
    label: str | None
    producer: str | None = None
    signature_valid: bool | None = None
    malformed: str | None = None

    @property
    def ai(self) -> bool:
        return self.label in AI_LABELS

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "label": self.label,
            "producer": self.producer,
            "signature_valid": self.signature_valid,
            "malformed": self.malformed,
        }


@dataclass(frozen=True)
class CaptureTime:
    """EXIF DateTimeOriginal as written (local time), with OffsetTimeOriginal when the file has it."""

    local: datetime  # naive
    offset: timedelta | None

    def earliest_utc(self) -> datetime:
        """The earliest instant it can mean: its own offset, or UTC+14 when it has none."""
        offset = self.offset if self.offset is not None else timedelta(hours=14)
        return (self.local - offset).replace(tzinfo=UTC)

    def latest_utc(self) -> datetime:
        """The latest instant it can mean: its own offset, or UTC-12 when it has none."""
        offset = self.offset if self.offset is not None else timedelta(hours=-12)
        return (self.local - offset).replace(tzinfo=UTC)

    def before(self, moment: datetime) -> bool:
        """Whether the photo was certainly taken before `moment` (aware), whatever the missing offset."""
        return self.latest_utc() < moment.astimezone(UTC)

    def isoformat(self) -> str:
        if self.offset is None:
            return self.local.isoformat()
        return self.local.replace(tzinfo=timezone(self.offset)).isoformat()


@dataclass(frozen=True)
class ImageMetadata:
    """What one image's metadata says. `malformed` lists metadata blocks that could not be read."""

    labels: tuple[LabelFinding, ...] = ()
    captured: CaptureTime | None = None
    software: str | None = None
    malformed: tuple[str, ...] = ()

    @property
    def ai_labelled(self) -> bool:
        return any(f.ai for f in self.labels)

    def as_json(self) -> dict[str, Any]:
        return {
            "labels": [f.as_json() for f in self.labels],
            "capture_time": self.captured.isoformat() if self.captured else None,
            "software": self.software,
            "malformed": list(self.malformed),
        }


class _Malformed(ValueError):
    pass


@dataclass
class _Blocks:
    """The raw metadata blocks found in a container, before interpretation."""

    xmp: list[bytes] = field(default_factory=list)
    exif: list[bytes] = field(default_factory=list)  # TIFF structures
    text: list[tuple[str, bytes]] = field(default_factory=list)  # (carrier, AIGC text chunk value)
    c2pa: bool = False
    c2pa_bytes: int = 0
    malformed: list[str] = field(default_factory=list)
    mime: str | None = None


def read_metadata(data: bytes) -> ImageMetadata:
    """Every label, the capture time and the software of an image, from its bytes. Never raises."""
    blocks = _Blocks()
    try:
        if data.startswith(b"\xff\xd8"):
            blocks.mime = "image/jpeg"
            _walk_jpeg(data, blocks)
        elif data.startswith(b"\x89PNG\r\n\x1a\n"):
            blocks.mime = "image/png"
            _walk_png(data, blocks)
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            blocks.mime = "image/webp"
            _walk_webp(data, blocks)
    except _Malformed as exc:
        blocks.malformed.append(f"container: {exc}")
    labels: list[LabelFinding] = []
    malformed = list(blocks.malformed)
    for packet in blocks.xmp:
        labels.extend(_xmp_labels(packet))
    for carrier, value in blocks.text:
        labels.append(_gb_label(carrier, value))
    captured: CaptureTime | None = None
    software: str | None = None
    for tiff in blocks.exif:
        try:
            tags = _exif_tags(tiff)
        except _Malformed as exc:
            malformed.append(f"exif: {exc}")
            continue
        if EXIF_USER_COMMENT in tags:
            comment = _user_comment(tags[EXIF_USER_COMMENT], tags[-1] == b">")
            if comment is not None and "AIGC" in comment:
                labels.append(_gb_label("exif:UserComment", comment.encode("utf-8")))
        software = software or _ascii(tags.get(EXIF_SOFTWARE))
        if captured is None and EXIF_DATETIME_ORIGINAL in tags:
            try:
                captured = _capture_time(tags[EXIF_DATETIME_ORIGINAL], tags.get(EXIF_OFFSET_TIME_ORIGINAL))
            except _Malformed as exc:
                malformed.append(f"exif: {exc}")
    if blocks.c2pa:
        labels.extend(_c2pa_labels(data, blocks))
    return ImageMetadata(tuple(labels), captured, software, tuple(malformed))


# -- containers ------------------------------------------------------------------------------------------


def _walk_jpeg(data: bytes, blocks: _Blocks) -> None:
    position = 2
    for _ in range(MAX_SEGMENTS):
        if position + 4 > len(data):
            return  # metadata ends before the image data in any JPEG we read; a cut file has none left
        if data[position] != 0xFF:
            raise _Malformed("JPEG marker expected")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no metadata after this
            return
        (length,) = struct.unpack_from(">H", data, position + 2)
        if length < 2 or position + 2 + length > len(data):
            raise _Malformed("JPEG segment runs past the end of the file")
        body = data[position + 4 : position + 2 + length]
        if marker == 0xE1 and body.startswith(EXIF_JPEG_ID):
            blocks.exif.append(body[len(EXIF_JPEG_ID) :])
        elif marker == 0xE1 and body.startswith(XMP_JPEG_ID):
            blocks.xmp.append(body[len(XMP_JPEG_ID) :])
        elif marker == 0xEB and body[:2] == b"JP" and b"jumb" in body[:32]:
            # JPEG XT / JUMBF (ISO 19566-5): C2PA stores its manifest store here, over several segments.
            _note_c2pa(body, blocks)
        position += 2 + length
    raise _Malformed("too many JPEG segments")


def _walk_png(data: bytes, blocks: _Blocks) -> None:
    position = 8
    for _ in range(MAX_SEGMENTS):
        if position + 8 > len(data):
            return
        length, kind = struct.unpack_from(">I4s", data, position)
        if position + 12 + length > len(data):
            raise _Malformed(f"PNG chunk {kind!r} runs past the end of the file")
        body = data[position + 8 : position + 8 + length]
        if kind == b"IEND":
            return
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            _png_text(kind.decode(), body, blocks)
        elif kind == b"eXIf":
            blocks.exif.append(body)
        elif kind == b"caBX":
            _note_c2pa(body, blocks)
        position += 12 + length
    raise _Malformed("too many PNG chunks")


def _png_text(kind: str, body: bytes, blocks: _Blocks) -> None:
    keyword, sep, rest = body.partition(b"\x00")
    if not sep:
        if keyword in (b"AIGC", b"XML:com.adobe.xmp"):
            blocks.malformed.append(f"png {kind} {keyword.decode('latin-1')}: no keyword separator")
        return
    if keyword not in (b"AIGC", b"XML:com.adobe.xmp"):
        return
    name = keyword.decode("latin-1")
    try:
        if kind == "tEXt":
            value = rest
        elif kind == "zTXt":
            if not rest or rest[0] != 0:
                raise _Malformed("unknown compression method")
            value = _inflate(rest[1:], MAX_TEXT_BYTES if name == "AIGC" else MAX_XMP_BYTES)
        else:  # iTXt: compression flag, method, language tag \0, translated keyword \0, text
            if len(rest) < 2:
                raise _Malformed("truncated")
            flag, method = rest[0], rest[1]
            _, _, tail = rest[2:].partition(b"\x00")
            _, sep2, text = tail.partition(b"\x00")
            if not sep2:
                raise _Malformed("truncated")
            limit = MAX_TEXT_BYTES if name == "AIGC" else MAX_XMP_BYTES
            if flag == 1:
                if method != 0:
                    raise _Malformed("unknown compression method")
                value = _inflate(text, limit)
            else:
                value = text
    except _Malformed as exc:
        if name == "AIGC":
            blocks.text.append((f"png:{kind}", b""))  # read as a malformed label below
            blocks.malformed.append(f"png {kind} AIGC: {exc}")
        else:
            blocks.malformed.append(f"xmp: {exc}")
        return
    if name == "AIGC":
        blocks.text.append((f"png:{kind}", value))
    else:
        blocks.xmp.append(value)


def _inflate(compressed: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(compressed, limit + 1)
    except zlib.error:
        raise _Malformed("not valid zlib data") from None
    if len(out) > limit:
        raise _Malformed(f"decompresses to more than {limit} bytes")
    return out


def _walk_webp(data: bytes, blocks: _Blocks) -> None:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = min(len(data), 8 + riff_size)
    position = 12
    for _ in range(MAX_SEGMENTS):
        if position + 8 > end:
            return
        kind, length = struct.unpack_from("<4sI", data, position)
        if position + 8 + length > end:
            raise _Malformed(f"WebP chunk {kind!r} runs past the end of the file")
        body = data[position + 8 : position + 8 + length]
        if kind == b"XMP ":
            blocks.xmp.append(body)
        elif kind == b"EXIF":
            blocks.exif.append(body[len(EXIF_JPEG_ID) :] if body.startswith(EXIF_JPEG_ID) else body)
        elif kind == b"C2PA":
            _note_c2pa(body, blocks)
        position += 8 + length + (length & 1)  # chunks are padded to an even size
    raise _Malformed("too many WebP chunks")


def _note_c2pa(body: bytes, blocks: _Blocks) -> None:
    blocks.c2pa = True
    blocks.c2pa_bytes += len(body)


# -- XMP -------------------------------------------------------------------------------------------------


_XMP_PACKET = re.compile(rb"<x:xmpmeta\b.*?</x:xmpmeta>|<rdf:RDF\b.*?</rdf:RDF>", re.DOTALL)


def _xmp_labels(packet: bytes) -> list[LabelFinding]:
    if len(packet) > MAX_XMP_BYTES:
        return _xmp_malformed(packet, f"XMP packet over {MAX_XMP_BYTES} bytes")
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:
        return _xmp_malformed(packet, "XMP with a DOCTYPE or entity declaration")  # no entity expansion
    found = _XMP_PACKET.search(packet)
    if found is None:
        return _xmp_malformed(packet, "no XMP packet")
    try:
        # S314: a packet with a DOCTYPE was refused above, so there is no entity to expand or fetch.
        root = ElementTree.fromstring(found.group(0))  # noqa: S314
    except ElementTree.ParseError:
        return _xmp_malformed(packet, "XMP is not well-formed XML")
    labels: list[LabelFinding] = []
    for element in root.iter():
        for name, value in element.attrib.items():
            labels.extend(_xmp_property(name, value))
        if isinstance(element.tag, str):
            text = element.text or element.attrib.get(f"{{{RDF_NS}}}resource") or ""
            if element.tag in (f"{{{TC260_NS}}}AIGC", f"{{{IPTC_EXT_NS}}}DigitalSourceType"):
                labels.extend(_xmp_property(element.tag, text.strip()))
    return labels


def _xmp_property(name: str, value: str) -> list[LabelFinding]:
    if name == f"{{{TC260_NS}}}AIGC":
        return [_gb_label("xmp:TC260:AIGC", value.encode("utf-8"))]
    if name == f"{{{IPTC_EXT_NS}}}DigitalSourceType":
        label = AI_SOURCE_TYPES.get(value.rstrip("/").rsplit("/", 1)[-1])
        return [LabelFinding("xmp:Iptc4xmpExt:DigitalSourceType", label)] if label else []
    return []


def _xmp_malformed(packet: bytes, reason: str) -> list[LabelFinding]:
    """An unreadable XMP packet is a malformed label only if it names a label's property."""
    if b"tc260" in packet.lower() or b"AIGC" in packet:
        return [LabelFinding("xmp:TC260:AIGC", None, malformed=reason)]
    if b"DigitalSourceType" in packet:
        return [LabelFinding("xmp:Iptc4xmpExt:DigitalSourceType", None, malformed=reason)]
    return []


# -- GB 45438-2025 Annex E ------------------------------------------------------------------------------


def _gb_label(source: str, raw: bytes) -> LabelFinding:
    if not raw:
        return LabelFinding(source, None, malformed="empty or unreadable label")
    if len(raw) > MAX_LABEL_JSON:
        return LabelFinding(source, None, malformed=f"label over {MAX_LABEL_JSON} bytes")
    try:
        text = raw.decode("utf-8")
        # Some writers put the inner object alone; Annex E wraps it in {"AIGC": …}.
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return LabelFinding(source, None, malformed="label is not JSON")
    body = document.get("AIGC") if isinstance(document, dict) else None
    if not isinstance(body, dict):
        return LabelFinding(source, None, malformed='label has no "AIGC" object')
    raw_label = body.get("Label")
    label = GB_LABELS.get(str(raw_label)) if isinstance(raw_label, str | int) else None
    producer = _cut(body.get("ContentProducer"))
    if label is None:
        return LabelFinding(source, None, producer, malformed='"Label" is not "1", "2" or "3"')
    return LabelFinding(source, label, producer)


def _cut(value: object) -> str | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = "".join(ch for ch in str(value) if ch.isprintable()).strip()
    return text[:MAX_TEXT_FIELD] or None


# -- EXIF (TIFF structure) -------------------------------------------------------------------------------

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_WANTED = {EXIF_SOFTWARE, EXIF_DATETIME_ORIGINAL, EXIF_OFFSET_TIME_ORIGINAL, EXIF_USER_COMMENT}


def _exif_tags(tiff: bytes) -> dict[int, bytes]:
    """The raw values of the tags this module reads, from IFD0 and the Exif IFD."""
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        raise _Malformed("not a TIFF header")
    tags: dict[int, bytes] = {}
    (ifd0,) = struct.unpack_from(order + "I", tiff, 4)
    exif_ifd = _read_ifd(tiff, order, ifd0, tags)
    if exif_ifd is not None:
        _read_ifd(tiff, order, exif_ifd, tags)
    tags[-1] = order.encode()  # the byte order, for UCS-2 user comments
    return tags


def _read_ifd(tiff: bytes, order: str, offset: int, tags: dict[int, bytes]) -> int | None:
    if offset < 8 or offset + 2 > len(tiff):
        raise _Malformed("IFD offset outside the EXIF block")
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    if count > MAX_IFD_ENTRIES or offset + 2 + 12 * count > len(tiff):
        raise _Malformed("IFD runs past the EXIF block")
    pointer: int | None = None
    for entry in range(count):
        tag, kind, n, value = struct.unpack_from(order + "HHI4s", tiff, offset + 2 + 12 * entry)
        if tag == EXIF_IFD_POINTER and kind in (4, 13) and n == 1:
            (pointer,) = struct.unpack(order + "I", value)
            continue
        if tag not in _WANTED:
            continue
        size = _TYPE_SIZES.get(kind, 1) * n
        if size <= 4:
            tags[tag] = value[:size]
        else:
            (start,) = struct.unpack(order + "I", value)
            if start + size > len(tiff):
                raise _Malformed(f"tag 0x{tag:04x} runs past the EXIF block")
            tags[tag] = tiff[start : start + size]
    return pointer


def _ascii(raw: bytes | None) -> str | None:
    if not raw:
        return None
    return _cut(raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace"))


def _user_comment(raw: bytes, big_endian: bool) -> str | None:
    """EXIF UserComment: an 8-byte character code, then the text (EXIF 2.32, 4.6.5)."""
    code, text = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        # UCS-2 in the TIFF byte order, though some writers add a BOM or write UTF-8 anyway.
        if text.startswith((b"\xff\xfe", b"\xfe\xff")):
            decoded = text.decode("utf-16", errors="replace")
        else:
            decoded = text.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
            if "AIGC" not in decoded:
                decoded = text.decode("utf-8", errors="replace")
    elif code.startswith(b"JIS"):
        return None
    else:  # "ASCII\0\0\0", undefined (eight NULs), or no code at all: read as UTF-8
        body = text if code.startswith(b"ASCII") or code == b"\x00" * 8 else raw
        decoded = body.decode("utf-8", errors="replace")
    return decoded.rstrip("\x00 ").strip()


_EXIF_TIME = re.compile(r"(\d{4}):(\d{2}):(\d{2}) (\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")


def _capture_time(raw: bytes, raw_offset: bytes | None) -> CaptureTime | None:
    text = raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
    if not text or set(text) <= {" ", ":", "0"}:
        return None  # EXIF's "unknown" is blanks or zeros
    found = _EXIF_TIME.fullmatch(text)
    if found is None:
        raise _Malformed("DateTimeOriginal is not YYYY:MM:DD HH:MM:SS")
    try:
        year, month, day, hour, minute, second = (int(part) for part in found.groups())
        local = datetime(year, month, day, hour, minute, second)  # EXIF time is local, offset apart
    except ValueError:
        raise _Malformed("DateTimeOriginal is not a valid date") from None
    offset: timedelta | None = None
    if raw_offset:
        offset_text = raw_offset.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
        matched = _EXIF_OFFSET.fullmatch(offset_text)
        if matched is not None and int(matched.group(2)) <= 14 and int(matched.group(3)) < 60:
            sign = -1 if matched.group(1) == "-" else 1
            offset = sign * timedelta(hours=int(matched.group(2)), minutes=int(matched.group(3)))
    return CaptureTime(local, offset)


# -- C2PA ------------------------------------------------------------------------------------------------


def _c2pa_labels(data: bytes, blocks: _Blocks) -> list[LabelFinding]:
    if blocks.c2pa_bytes > MAX_C2PA_BYTES:
        return [LabelFinding("c2pa", None, malformed=f"manifest store over {MAX_C2PA_BYTES} bytes")]
    try:
        report = _c2pa_report(data, blocks.mime or "image/jpeg")
    except Exception as exc:  # the library reports a broken manifest by raising anything
        return [LabelFinding("c2pa", None, malformed=f"manifest cannot be read ({type(exc).__name__})")]
    if report is None:
        return [LabelFinding("c2pa", None, malformed="c2pa-python is not installed; manifest not read")]
    store, state = report
    return c2pa_findings(store, state)


def c2pa_findings(store: Any, state: str | None) -> list[LabelFinding]:
    """Labels from a C2PA manifest store (c2pa-python's JSON report) and its validation state.

    The active manifest's actions give the image's own digital source type. `signature_valid` is False
    when the library found the manifest invalid (a broken signature, or a hash that no longer matches the
    image), True when the signature and hashes check out. Whether the signer is trusted is another
    question: the ledger holds no trust list, so a valid signature by an unknown signer is still valid."""
    if not isinstance(store, dict):
        return [LabelFinding("c2pa", None, malformed="manifest store is not an object")]
    manifests = store.get("manifests")
    active = manifests.get(store.get("active_manifest")) if isinstance(manifests, dict) else None
    if not isinstance(active, dict):
        return [LabelFinding("c2pa", None, malformed="no active manifest")]
    valid = None if state is None else state.lower() in ("valid", "trusted")
    producer = None
    generators = active.get("claim_generator_info")
    if isinstance(generators, list) and generators and isinstance(generators[0], dict):
        producer = _cut(generators[0].get("name"))
    producer = producer or _cut(active.get("claim_generator"))
    labels: list[str] = []
    for assertion in active.get("assertions") or []:
        if not isinstance(assertion, dict) or not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        payload = assertion.get("data")
        actions = payload.get("actions") if isinstance(payload, dict) else None
        for action in actions if isinstance(actions, list) else []:
            source = action.get("digitalSourceType") if isinstance(action, dict) else None
            label = AI_SOURCE_TYPES.get(str(source or "").rstrip("/").rsplit("/", 1)[-1])
            if label:
                labels.append(label)
    if not labels:
        return [LabelFinding("c2pa", None, producer, valid)] if valid is False else []
    # "generated" outranks "edited" when a manifest says both.
    label = "ai_generated" if "ai_generated" in labels else "ai_edited"
    return [LabelFinding("c2pa", label, producer, valid)]


OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}


@functools.cache
def _c2pa() -> Any:
    """The c2pa module, or None without it. A 23 MB native library: loaded on the first photo that
    carries a manifest."""
    try:
        import c2pa
    except ImportError:
        return None
    return c2pa


def _c2pa_report(data: bytes, mime: str) -> tuple[Any, str | None] | None:
    """c2pa-python's report of the manifest store, and its validation state; None without the library.
    Its settings never let it fetch a remote manifest or a certificate's revocation status."""
    c2pa = _c2pa()
    if c2pa is None:
        return None
    context = c2pa.Context(c2pa.Settings.from_dict(OFFLINE))
    with c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
        return json.loads(reader.json()), reader.get_validation_state()
