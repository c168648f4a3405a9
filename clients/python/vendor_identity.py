"""Build step: copy the server's pure code the client needs into it, so that members compute exactly what
the server does without a second copy of the rules that could drift:
- `ledger/identity.py` (normalising and tokenising) as `ledger_client/_identity.py`; the only change is
  the import of the exception type;
- `ledger/domain/merkle.py` (RFC 9162 proofs) as `ledger_client/_merkle.py`, unchanged.

    python clients/python/vendor_identity.py          # write the files
    python clients/python/vendor_identity.py --check  # exit 1 if one differs (tests/unit/test_client_identity.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "ledger" / "identity.py"
TARGET = HERE / "ledger_client" / "_identity.py"
MERKLE_SOURCE = HERE.parents[1] / "ledger" / "domain" / "merkle.py"
MERKLE_TARGET = HERE / "ledger_client" / "_merkle.py"
HEADER = (
    "# GENERATED from {source} by clients/python/vendor_identity.py: do not edit here.\n"
    "# A test fails when the two differ; change {source} and run the script.\n"
)
SERVER_IMPORT = "from ledger.errors import InvalidIdentifier\n"
CLIENT_IMPORT = "from ledger_client.errors import InvalidIdentifier\n"


def generated() -> dict[Path, str]:
    source = SOURCE.read_text(encoding="utf-8")
    if source.count(SERVER_IMPORT) != 1:
        raise SystemExit(f"{SOURCE} no longer imports InvalidIdentifier as expected; update this script")
    merkle = MERKLE_SOURCE.read_text(encoding="utf-8")
    if "from ledger" in merkle or "import ledger" in merkle:
        raise SystemExit(f"{MERKLE_SOURCE} imports the server now; the client cannot carry it as is")
    return {
        TARGET: HEADER.format(source="ledger/identity.py") + source.replace(SERVER_IMPORT, CLIENT_IMPORT),
        MERKLE_TARGET: HEADER.format(source="ledger/domain/merkle.py") + merkle,
    }


def main(argv: list[str]) -> int:
    files = generated()
    if "--check" in argv:
        stale = [t for t, text in files.items() if not t.is_file() or t.read_text(encoding="utf-8") != text]
        for target in stale:
            print(f"{target} is out of date: run python {Path(__file__).relative_to(HERE.parents[1])}")
        return 1 if stale else 0
    for target, text in files.items():
        target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
