"""The claim photo's metadata reader: every carrier and label value is found, unlabelled and stripped files
report none, malformed metadata is a clean finding, and nothing raises. Files are made by tests/photos.py
byte by byte (formats and sources named there)."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ledger.domain.image_metadata import (
    MAX_TEXT_BYTES,
    CaptureTime,
    ImageMetadata,
    c2pa_findings,
    read_metadata,
)
from tests import photos

PICTURE = photos.render(3, (160, 120))
JPEG = photos.encode(PICTURE, "JPEG")
PNG = photos.encode(PICTURE, "PNG")
WEBP = photos.encode(PICTURE, "WEBP", quality=80)
EXPECTED = {"1": "ai_generated", "2": "possibly", "3": "suspected"}
PRODUCER = "某某科技有限公司 AIGC-Gen 2.1"


def carriers(label_json: str) -> dict[str, tuple[str, bytes]]:
    """Every carrier of a GB 45438 label: name -> (the source the reader must report, the file)."""
    packet = photos.xmp(aigc=label_json)
    element = photos.xmp(aigc=label_json, element_form=True)
    return {
        "jpeg-xmp-attribute": ("xmp:TC260:AIGC", photos.jpeg_xmp(JPEG, packet)),
        "jpeg-xmp-element": ("xmp:TC260:AIGC", photos.jpeg_xmp(JPEG, element)),
        "png-itxt-xmp": ("xmp:TC260:AIGC", photos.png_xmp(PNG, packet)),
        "webp-xmp": ("xmp:TC260:AIGC", photos.webp_with(WEBP, xmp_packet=packet)),
        "png-text": (
            "png:tEXt",
            photos.png_with(PNG, photos.png_chunk(b"tEXt", b"AIGC\x00" + label_json.encode())),
        ),
        "png-ztxt": ("png:zTXt", photos.png_with(PNG, photos.png_ztxt("AIGC", label_json.encode()))),
        "png-itxt": ("png:iTXt", photos.png_with(PNG, photos.png_itxt("AIGC", label_json, compressed=True))),
        "jpeg-exif-ascii": (
            "exif:UserComment",
            photos.jpeg_exif(JPEG, photos.exif(comment=photos.user_comment(label_json, "ASCII"))),
        ),
        "jpeg-exif-unicode-be": (
            "exif:UserComment",
            photos.jpeg_exif(
                JPEG, photos.exif(comment=photos.user_comment(label_json, "UNICODE", True), big_endian=True)
            ),
        ),
        "jpeg-exif-unicode-le": (
            "exif:UserComment",
            photos.jpeg_exif(JPEG, photos.exif(comment=photos.user_comment(label_json, "UNICODE"))),
        ),
        "jpeg-exif-undefined": (
            "exif:UserComment",
            photos.jpeg_exif(JPEG, photos.exif(comment=photos.user_comment(label_json, "undefined"))),
        ),
        "png-exif": (
            "exif:UserComment",
            photos.png_with(
                PNG, photos.png_chunk(b"eXIf", photos.exif(comment=photos.user_comment(label_json)))
            ),
        ),
        "webp-exif": (
            "exif:UserComment",
            photos.webp_with(
                WEBP, tiff=photos.exif(comment=photos.user_comment(label_json), big_endian=True)
            ),
        ),
    }


CARRIERS = sorted(carriers(photos.gb_label()))


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("value", sorted(EXPECTED))
def test_every_carrier_and_label_value_is_found(carrier: str, value: str) -> None:
    source, data = carriers(photos.gb_label(value, PRODUCER))[carrier]
    found = read_metadata(data)
    assert [(f.source, f.label, f.producer, f.malformed) for f in found.labels] == [
        (source, EXPECTED[value], PRODUCER, None)
    ]
    assert found.ai_labelled is (value == "1")
    # The carrier is still an image Pillow opens: the bytes are a real file of its format.
    Image.open(io.BytesIO(data)).load()


@pytest.mark.parametrize(
    ("source_type", "label"),
    [(photos.TRAINED, "ai_generated"), (photos.COMPOSITE, "ai_edited"), (photos.CAPTURED, None)],
)
@pytest.mark.parametrize("element_form", [False, True])
def test_iptc_digital_source_type_in_xmp(source_type: str, label: str | None, element_form: bool) -> None:
    data = photos.jpeg_xmp(JPEG, photos.xmp(source_type=source_type, element_form=element_form))
    found = read_metadata(data)
    expected = [("xmp:Iptc4xmpExt:DigitalSourceType", label)] if label else []
    assert [(f.source, f.label) for f in found.labels] == expected


def test_several_carriers_are_all_reported() -> None:
    packet = photos.xmp(aigc=photos.gb_label("2"), source_type=photos.TRAINED)
    data = photos.jpeg_with(
        JPEG,
        (0xE1, b"Exif\x00\x00" + photos.exif(comment=photos.user_comment(photos.gb_label("1")))),
        (0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet),
    )
    labels = sorted((f.source, f.label) for f in read_metadata(data).labels)
    assert labels == [
        ("exif:UserComment", "ai_generated"),
        ("xmp:Iptc4xmpExt:DigitalSourceType", "ai_generated"),
        ("xmp:TC260:AIGC", "possibly"),
    ]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_unlabelled_files_report_no_label(fmt: str) -> None:
    found = read_metadata(photos.encode(PICTURE.convert("RGB"), fmt))
    assert found == ImageMetadata()


@pytest.mark.parametrize("carrier", CARRIERS)
def test_a_label_stripped_by_re_encoding_is_gone(carrier: str) -> None:
    """What a platform's re-encoder does: the pixels survive, the label does not (Art. 10's concern)."""
    _, data = carriers(photos.gb_label())[carrier]
    image = Image.open(io.BytesIO(data)).convert("RGB")
    for fmt in ("JPEG", "PNG"):
        assert read_metadata(photos.encode(image, fmt)).labels == ()


MALFORMED_JSON = [
    ("not json", "label is not JSON"),
    ('{"AIGC": "1"}', 'label has no "AIGC" object'),
    ('{"Label": "1"}', 'label has no "AIGC" object'),
    ('{"AIGC": {"Label": "9"}}', '"Label" is not "1", "2" or "3"'),
    ('{"AIGC": {"ContentProducer": "x"}}', '"Label" is not "1", "2" or "3"'),
    ('{"AIGC": {"Label": true}}', '"Label" is not "1", "2" or "3"'),
    ("[" * 5000 + "]" * 5000, "label is not JSON"),
]


@pytest.mark.parametrize(("text", "reason"), MALFORMED_JSON)
@pytest.mark.parametrize("carrier", CARRIERS)
def test_a_malformed_label_is_reported_as_malformed(carrier: str, text: str, reason: str) -> None:
    source, data = carriers(text)[carrier]
    if "exif" in carrier and "AIGC" not in text:
        # A UserComment without "AIGC" is someone's comment, not a label.
        assert read_metadata(data).labels == ()
        return
    found = read_metadata(data)
    assert [(f.source, f.label, f.malformed) for f in found.labels] == [(source, None, reason)]
    assert not found.ai_labelled


@pytest.mark.parametrize(
    "packet",
    [
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><TC260:AIGC>{"AIGC"</x:xmpmeta>',  # unbound prefixes
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&a; AIGC</x:xmpmeta>',
        b"TC260 AIGC and nothing like XML",
    ],
)
def test_unreadable_xmp_that_names_a_label_is_malformed(packet: bytes) -> None:
    found = read_metadata(photos.jpeg_xmp(JPEG, packet))
    assert [(f.source, f.label) for f in found.labels] == [("xmp:TC260:AIGC", None)]
    assert found.labels[0].malformed


def test_a_compressed_label_is_inflated_only_up_to_its_cap() -> None:
    bomb = photos.png_with(
        PNG, photos.png_chunk(b"zTXt", b"AIGC\x00\x00" + zlib.compress(b" " * (50 * 1024 * 1024)))
    )
    assert len(bomb) < 200_000
    found = read_metadata(bomb)
    assert [(f.source, f.label) for f in found.labels] == [("png:zTXt", None)]
    assert f"more than {MAX_TEXT_BYTES} bytes" in " ".join(found.malformed)


def test_an_xmp_packet_over_the_cap_is_malformed_not_parsed() -> None:
    packet = photos.xmp(aigc=photos.gb_label()) + b" " * (2 * 1024 * 1024)
    found = read_metadata(photos.png_xmp(PNG, packet))
    assert [(f.label, f.malformed) for f in found.labels] == [(None, "XMP packet over 1048576 bytes")]


def test_broken_containers_are_findings() -> None:
    cut = photos.jpeg_xmp(JPEG, photos.xmp(aigc=photos.gb_label()))[:40]
    assert read_metadata(cut).malformed == ("container: JPEG segment runs past the end of the file",)
    bad_exif = photos.jpeg_exif(JPEG, b"II*\x00" + struct.pack("<I", 10_000))
    assert read_metadata(bad_exif).malformed == ("exif: IFD offset outside the EXIF block",)


# -- capture time and software ---------------------------------------------------------------------------


def test_capture_time_software_and_offset() -> None:
    data = photos.jpeg_exif(
        JPEG, photos.exif(software="MTXX 美图秀秀 9.9", taken="2026:11:20 09:30:00", offset="+08:00")
    )
    found = read_metadata(data)
    assert found.software == "MTXX 美图秀秀 9.9"
    assert found.captured == CaptureTime(datetime(2026, 11, 20, 9, 30), timedelta(hours=8))
    assert found.captured.isoformat() == "2026-11-20T09:30:00+08:00"
    assert found.captured.before(datetime(2026, 11, 20, 1, 31, tzinfo=UTC))
    assert not found.captured.before(datetime(2026, 11, 20, 1, 30, tzinfo=UTC))


def test_capture_time_without_offset_is_read_in_the_callers_favour() -> None:
    """Without OffsetTimeOriginal the photo predates a moment only if it does at UTC-12, the latest
    instant its local time can mean: no consumer is accused by a time zone guess."""
    found = read_metadata(photos.jpeg_exif(JPEG, photos.exif(taken="2026:11:20 09:30:00"))).captured
    assert found is not None
    assert found.offset is None
    assert found.before(datetime(2026, 11, 20, 21, 31, tzinfo=UTC))
    assert not found.before(datetime(2026, 11, 20, 21, 30, tzinfo=UTC))


@pytest.mark.parametrize(
    ("taken", "captured", "malformed"),
    [
        ("    :  :     :  :  ", None, ()),
        ("2026:13:40 10:00:00", None, ("exif: DateTimeOriginal is not a valid date",)),
        ("yesterday", None, ("exif: DateTimeOriginal is not YYYY:MM:DD HH:MM:SS",)),
    ],
)
def test_unknown_or_bad_capture_times(taken: str, captured: object, malformed: tuple[str, ...]) -> None:
    found = read_metadata(photos.jpeg_exif(JPEG, photos.exif(taken=taken, software="X")))
    assert (found.captured, found.malformed, found.software) == (captured, malformed, "X")


@given(
    local=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
    offset=st.none() | st.integers(-12 * 60, 14 * 60).map(lambda m: timedelta(minutes=m)),
    moment=st.datetimes(
        min_value=datetime(1990, 1, 2), max_value=datetime(2089, 12, 31), timezones=st.just(UTC)
    ),
    later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
)
def test_predating_is_monotone_and_never_guesses_against_the_consumer(
    local: datetime, offset: timedelta | None, moment: datetime, later: timedelta
) -> None:
    captured = CaptureTime(local.replace(microsecond=0), offset)
    if captured.before(moment):
        assert captured.before(moment + later)
        # Whatever the real offset was, the photo was taken before the moment.
        for hours in (-12, 0, 8, 14):
            real = offset if offset is not None else timedelta(hours=hours)
            assert (captured.local - real).replace(tzinfo=UTC) < moment


# -- C2PA ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signer() -> object:
    pytest.importorskip("c2pa")
    return photos.c2pa_signer()


@pytest.mark.parametrize(
    ("source_type", "label"),
    [(photos.TRAINED, "ai_generated"), (photos.COMPOSITE, "ai_edited"), (photos.CAPTURED, None)],
)
@pytest.mark.parametrize(
    ("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")]
)
def test_c2pa_manifests_are_read_and_validated(
    signer: object, source_type: str | None, label: str | None, fmt: str, mime: str
) -> None:
    signed = photos.c2pa_signed(photos.encode(PICTURE, fmt), mime, source_type, signer, "TestGen")
    found = read_metadata(signed)
    if label is None:
        assert found.labels == ()
    else:
        assert [f.as_json() for f in found.labels] == [
            {
                "source": "c2pa",
                "label": label,
                "producer": "TestGen",
                "signature_valid": True,
                "malformed": None,
            }
        ]


def test_a_c2pa_manifest_whose_image_was_changed_is_invalid(signer: object) -> None:
    signed = bytearray(photos.c2pa_signed(JPEG, "image/jpeg", photos.TRAINED, signer))
    signed[-200] ^= 0xFF  # in the image data, after the manifest: the hard binding breaks
    found = read_metadata(bytes(signed))
    assert [(f.source, f.label, f.signature_valid) for f in found.labels] == [("c2pa", "ai_generated", False)]


def test_a_broken_c2pa_manifest_is_malformed() -> None:
    junk = photos.jpeg_with(JPEG, (0xEB, b"JP\x02\x11\x00\x00\x00\x01\x00\x00\x00\x20jumb" + b"\x00" * 40))
    found = read_metadata(junk)
    assert [(f.source, f.label) for f in found.labels] == [("c2pa", None)]
    assert found.labels[0].malformed


def test_c2pa_report_shapes_never_raise() -> None:
    assert c2pa_findings(None, None)[0].malformed
    assert (
        c2pa_findings({"manifests": {}, "active_manifest": "x"}, "Valid")[0].malformed == "no active manifest"
    )
    store = {
        "active_manifest": "m",
        "manifests": {"m": {"assertions": [{"label": "c2pa.actions", "data": 3}]}},
    }
    assert c2pa_findings(store, "Valid") == []
    assert c2pa_findings(store, "Invalid")[0].signature_valid is False


# -- robustness ------------------------------------------------------------------------------------------

LABELLED = [data for _, data in carriers(photos.gb_label()).values()]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_any_bytes_give_a_finding_never_an_exception(data: bytes) -> None:
    assert isinstance(read_metadata(data), ImageMetadata)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(LABELLED) - 1),
    cut=st.integers(0, 10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=8),
)
def test_damaged_labelled_files_never_raise(which: int, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(LABELLED[which])
    for position, mask in flips:
        data[position % len(data)] ^= mask
    found = read_metadata(bytes(data[: len(data) - cut % len(data)]))
    for finding in found.labels:
        assert (finding.label is None) == (finding.malformed is not None) or finding.source == "c2pa"


@given(label=st.sampled_from(sorted(EXPECTED)), producer=st.text(min_size=1, max_size=300))
def test_any_producer_round_trips_through_xmp(label: str, producer: str) -> None:
    found = read_metadata(photos.jpeg_xmp(JPEG, photos.xmp(aigc=photos.gb_label(label, producer))))
    assert [f.label for f in found.labels] == [EXPECTED[label]]
    kept = found.labels[0].producer
    assert kept is None or (len(kept) <= 200 and kept.isprintable())
