"""`ledger inspect`: what the claim check reads from a photo, printed on the partner's own machine."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ledger.cli import main
from ledger.domain.pdq_hash import pdq_hash
from tests import photos

PICTURE = photos.render(5, (320, 240))


def test_inspect_prints_hash_labels_capture_time_and_software(tmp_path: Path) -> None:
    labelled = photos.jpeg_with(
        photos.encode(PICTURE),
        (
            0xE1,
            b"Exif\x00\x00"
            + photos.exif(software="Adobe Photoshop 26.0", taken="2026:11:20 09:30:00", offset="+08:00"),
        ),
        (0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + photos.xmp(aigc=photos.gb_label("1", "某生成服务"))),
    )
    (tmp_path / "claim.jpg").write_bytes(labelled)
    (tmp_path / "broken.png").write_bytes(
        photos.png_with(photos.encode(PICTURE, "PNG"), photos.png_text("AIGC", "{oops"))
    )
    (tmp_path / "not-an-image.txt").write_bytes(b"hello")
    files = [str(tmp_path / n) for n in ("claim.jpg", "broken.png", "not-an-image.txt")]
    result = CliRunner().invoke(main, ["inspect", "--json", *files])
    assert result.exit_code == 2
    claim, broken, bad = json.loads(result.stdout)
    assert claim["pdq"] == pdq_hash(labelled)[0]
    assert claim["labels"] == [
        {
            "source": "xmp:TC260:AIGC",
            "label": "ai_generated",
            "producer": "某生成服务",
            "signature_valid": None,
            "malformed": None,
        }
    ]
    assert (claim["capture_time"], claim["software"]) == ("2026-11-20T09:30:00+08:00", "Adobe Photoshop 26.0")
    assert broken["labels"][0]["malformed"] == "label is not JSON"
    assert "error" in bad
    text = CliRunner().invoke(main, ["inspect", files[0]]).stdout
    assert "AI label      ai_generated  via xmp:TC260:AIGC" in text
    assert "captured      2026-11-20T09:30:00+08:00" in text
    assert "software      Adobe Photoshop 26.0" in text


def test_hash_flags_an_ai_label_and_carries_the_findings_in_json(tmp_path: Path) -> None:
    labelled = photos.jpeg_xmp(photos.encode(PICTURE), photos.xmp(source_type=photos.TRAINED))
    (tmp_path / "claim.jpg").write_bytes(labelled)
    (tmp_path / "plain.jpg").write_bytes(photos.encode(PICTURE))
    text = CliRunner().invoke(main, ["hash", str(tmp_path / "claim.jpg"), str(tmp_path / "plain.jpg")])
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 3  # two hashes and one label line, for the labelled file only
    assert lines[1].startswith("AI label ai_generated via xmp:Iptc4xmpExt:DigitalSourceType")
    [claim, plain] = json.loads(
        CliRunner()
        .invoke(main, ["hash", "--json", str(tmp_path / "claim.jpg"), str(tmp_path / "plain.jpg")])
        .stdout
    )
    assert claim["labels"][0]["label"] == "ai_generated"
    assert plain["labels"] == []
