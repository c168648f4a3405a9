"""Vendor front-end files from npm packages into the repository, and check that they are unchanged.

The console (and any other page the app serves) must work with no network beyond the app itself, and
the README's set-up must need no Node.js. So the few browser files we use are committed, and this script
is the only way they change. An assets folder holds:

  package.json, package-lock.json  the pinned packages; the lock carries each tarball's sha512 integrity
  vendor.json                      which files of which package to serve, and where they go (`target`)

`sync` runs `npm ci --ignore-scripts` in a temporary copy of the folder (npm refuses a tarball whose
hash differs from the lock), copies the chosen files to `target` and writes `target/MANIFEST.json`: each
file's SHA-256 with its package, version and integrity. `check` does the same install and fails if any
committed file differs from the locked package's file, or if a file is missing or extra. `check
--offline` needs no npm: it checks the committed files against MANIFEST.json and MANIFEST.json against
the lock, so an edited file or a lock bumped without a `sync` is caught even where npm is absent.

Usage: python scripts/vendor_assets.py {sync,check} [--offline] [ASSETS_DIR ...]
(default: ledger/console/assets-src and ledger/assets-src)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIRS = (
    ROOT / "ledger" / "console" / "assets-src",  # htmx and Chart.js for /console
    ROOT / "ledger" / "assets-src",  # Swagger UI for /docs
)
MANIFEST = "MANIFEST.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _config(assets: Path) -> tuple[dict[str, list[str]], Path, dict[str, Any]]:
    vendor = json.loads((assets / "vendor.json").read_text())
    lock = json.loads((assets / "package-lock.json").read_text())
    return vendor["files"], (assets / vendor["target"]).resolve(), lock["packages"]


def _installed(assets: Path, workdir: Path) -> Path:
    """`npm ci` of the folder's lock in `workdir`; returns its node_modules."""
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(assets / name, workdir / name)
    subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=workdir,
        check=True,
    )
    return workdir / "node_modules"


def _expected(files: dict[str, list[str]], modules: Path) -> dict[str, Path]:
    """Target-relative path -> the locked package's file."""
    return {
        f"{package}/{name}": modules / package / name for package, names in files.items() for name in names
    }


def _committed(target: Path) -> set[str]:
    return {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file() and p.name != MANIFEST}


def sync(assets: Path) -> None:
    files, target, locked = _config(assets)
    with tempfile.TemporaryDirectory() as tmp:
        modules = _installed(assets, Path(tmp))
        if target.exists():
            shutil.rmtree(target)
        manifest: dict[str, Any] = {}
        for rel, source in sorted(_expected(files, modules).items()):
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            package = next(p for p in files if rel.startswith(p + "/"))
            entry = locked[f"node_modules/{package}"]
            manifest[rel] = {
                "package": package,
                "version": entry["version"],
                "integrity": entry["integrity"],
                "sha256": _sha256(dest),
            }
        (target / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"vendored {len(manifest)} files into {target.relative_to(ROOT)}")


def check_offline(assets: Path) -> list[str]:
    files, target, locked = _config(assets)
    problems: list[str] = []
    manifest_path = target / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path.relative_to(ROOT)} is missing: run `sync`"]
    manifest = json.loads(manifest_path.read_text())
    wanted = {f"{p}/{n}" for p, names in files.items() for n in names}
    if set(manifest) != wanted:
        problems.append(
            f"MANIFEST.json lists {sorted(set(manifest) ^ wanted)} unlike vendor.json: run `sync`"
        )
    for rel, entry in sorted(manifest.items()):
        lock_entry = locked.get(f"node_modules/{entry['package']}", {})
        if (lock_entry.get("version"), lock_entry.get("integrity")) != (entry["version"], entry["integrity"]):
            problems.append(f"{rel}: vendored from {entry['package']}@{entry['version']}, not the locked one")
        path = target / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif _sha256(path) != entry["sha256"]:
            problems.append(
                f"{rel}: differs from the file vendored from {entry['package']}@{entry['version']}"
            )
    extra = _committed(target) - set(manifest)
    problems.extend(f"{rel}: not from any locked package" for rel in sorted(extra))
    return problems


def check(assets: Path) -> list[str]:
    files, target, _ = _config(assets)
    problems = check_offline(assets)
    with tempfile.TemporaryDirectory() as tmp:
        modules = _installed(assets, Path(tmp))
        for rel, source in sorted(_expected(files, modules).items()):
            path = target / rel
            if path.is_file() and path.read_bytes() != source.read_bytes():
                problems.append(f"{rel}: differs from the locked package's file")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("sync", "check"))
    parser.add_argument("--offline", action="store_true", help="check against MANIFEST.json only (no npm)")
    parser.add_argument("assets", nargs="*", type=Path, default=list(DEFAULT_DIRS))
    args = parser.parse_intermixed_args(argv)  # `check --offline DIR` as well as `check DIR --offline`
    failed = False
    for folder in args.assets:
        assets = folder.resolve()
        if args.command == "sync":
            sync(assets)
            continue
        problems = check_offline(assets) if args.offline else check(assets)
        for problem in problems:
            print(f"{assets.relative_to(ROOT)}: {problem}", file=sys.stderr)
        failed = failed or bool(problems)
        if not problems:
            print(f"{assets.relative_to(ROOT)}: vendored files match the lock")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
