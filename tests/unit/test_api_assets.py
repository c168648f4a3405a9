"""Swagger UI, which /docs serves, is exactly the files of the npm package the lock pins.

The same check as the console's assets (scripts/vendor_assets.py): offline against MANIFEST.json and the
lock; with npm, `npm ci` of the lock (which refuses a tarball whose sha512 differs from the lock's
integrity) and a byte-for-byte comparison of every vendored file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vendor_assets.py"
ASSETS = ROOT / "ledger" / "assets-src"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args, str(ASSETS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.mark.process
def test_swagger_ui_matches_the_manifest_and_the_lock() -> None:
    done = run("check", "--offline")
    assert done.returncode == 0, done.stderr


@pytest.mark.process
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed (.ci/run installs it)")
def test_swagger_ui_equals_the_locked_packages_files() -> None:
    done = run("check")
    assert done.returncode == 0, done.stderr


def test_the_lock_pins_swagger_ui_exactly_with_an_integrity_hash() -> None:
    lock = json.loads((ASSETS / "package-lock.json").read_text())
    declared = json.loads((ASSETS / "package.json").read_text())["dependencies"]
    entry = lock["packages"]["node_modules/swagger-ui-dist"]
    assert entry["integrity"].startswith("sha512-")
    assert declared["swagger-ui-dist"] == entry["version"]  # an exact pin, no range
    manifest = json.loads((ROOT / "ledger" / "static" / "vendor" / "MANIFEST.json").read_text())
    assert {m["package"] for m in manifest.values()} == {"swagger-ui-dist"}
    assert "swagger-ui-dist/swagger-ui-bundle.js" in manifest
