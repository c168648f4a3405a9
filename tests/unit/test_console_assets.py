"""The console's vendored front-end files are exactly the files of the npm packages its lock pins.

The offline check compares the committed files with MANIFEST.json and the manifest with the lock; the
full check installs the lock with `npm ci` (which refuses a tarball whose hash differs from the lock's
integrity) and compares every vendored file byte for byte."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vendor_assets.py"
ASSETS = ROOT / "ledger" / "console" / "assets-src"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=300
    )


@pytest.mark.process
def test_committed_files_match_the_manifest_and_the_lock() -> None:
    done = run("check", "--offline")
    assert done.returncode == 0, done.stderr


@pytest.mark.process
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_committed_files_equal_the_locked_packages_files() -> None:
    done = run("check")
    assert done.returncode == 0, done.stderr


def test_an_edited_vendored_file_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "console"
    shutil.copytree(ASSETS.parent, copy, ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import vendor_assets
    finally:
        sys.path.pop(0)
    vendored = copy / "static" / "vendor" / "htmx.org" / "dist" / "htmx.min.js"
    vendored.write_bytes(vendored.read_bytes() + b"\n/* injected */")
    (copy / "static" / "vendor" / "extra.js").write_text("alert(1)")
    problems = vendor_assets.check_offline(copy / "assets-src")
    assert any("htmx.min.js" in p and "differs" in p for p in problems)
    assert any("extra.js" in p for p in problems)


def test_the_lock_pins_every_package_with_an_integrity_hash_and_no_download_address() -> None:
    import json

    lock = json.loads((ASSETS / "package-lock.json").read_text())
    packages = {k: v for k, v in lock["packages"].items() if k}
    assert packages
    for name, entry in packages.items():
        assert entry["integrity"].startswith("sha512-"), name
        assert "resolved" not in entry, name
    manifest = json.loads((ASSETS.parent / "static" / "vendor" / "MANIFEST.json").read_text())
    declared = json.loads((ASSETS / "package.json").read_text())["dependencies"]
    for entry in manifest.values():
        if entry["package"] in declared:
            assert declared[entry["package"]] == entry["version"]  # exact pins, no ranges
